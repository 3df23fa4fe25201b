"""WinCLIP / WinCLIP+ as anomalib 2.x computes it (``preset: paper``), and the workbench variant,
written from the formulas with explicit loops over windows and patches (no fsadlib.maps, no
fsadlib.methods.winclip code). Only the frozen open_clip tower of the shared backbone is used.

anomalib (``models/image/winclip``), for an image with CLS embedding e, window embeddings w_j^s
(window j of side s: the sequence CLS + its tokens through the transformer, ln_post, proj) and
patch tokens x_p (``output_tokens``: ln_post of the last block, no proj):
    T_s   = mean over the 7 x 21 (normal) or 4 x 21 (anomalous) prompts of E(prompt)   (not normalised)
    p(x)  = softmax(cos(e, [T_n, T_a]) / 0.07)[1]
    Z_s(p) = n_p / sum_{j covers p} 1 / softmax(cos(w_j^s, T) / 0.07)[1]
    M0    = (S + 1) / (1 / p(x) + sum_s 1 / Z_s)
    d(u, R) = min_r (1 - cos(u, r)) / 2
    Mf(p) = mean( d(x_p, R_p), HA_s d(w^s, R_s) for each s )
    M     = (M0 + Mf) / 2,  score = (p(x) + max_p Mf) / 2
The workbench differs only in: T_s = norm(mean norm(E(prompt))) over 22 templates, x_p the raw
block tokens, M = M0 + Mf.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fsadlib.prompts import class_name
from fsadlib.prompts.ensemble import ABNORMAL_STATES_WINCLIP, NORMAL_STATES, TEMPLATES_WINCLIP

ANOMALIB_TEMPLATES = [
    "a cropped photo of the {}.", "a close-up photo of a {}.", "a close-up photo of the {}.",
    "a bright photo of a {}.", "a bright photo of the {}.", "a dark photo of the {}.", "a dark photo of a {}.",
    "a jpeg corrupted photo of the {}.", "a jpeg corrupted photo of the {}.", "a blurry photo of the {}.",
    "a blurry photo of a {}.", "a photo of a {}.", "a photo of the {}.", "a photo of a small {}.",
    "a photo of the small {}.", "a photo of a large {}.", "a photo of the large {}.",
    "a photo of the {} for visual inspection.", "a photo of a {} for visual inspection.",
    "a photo of the {} for anomaly detection.", "a photo of a {} for anomaly detection.",
]
TEMPERATURE = 0.07


def text_embeddings(backbone, category: str, paper: bool) -> torch.Tensor:
    """[2, D] (normal, anomalous) class embeddings."""
    name = class_name(category)
    templates = ANOMALIB_TEMPLATES if paper else TEMPLATES_WINCLIP
    rows = []
    for states in (NORMAL_STATES, ABNORMAL_STATES_WINCLIP):
        prompts = [t.format(s.format(name)) for s in states for t in templates]
        emb = backbone.encode_text(prompts)
        rows.append(emb.mean(0) if paper else F.normalize(emb, dim=-1).mean(0))
    return torch.stack(rows)


def windows_of(grid: int, side: int) -> list[list[int]]:
    """Patch indices of every side x side window at stride 1, row-major over the top-left patch."""
    return [[(r + i) * grid + c + j for i in range(side) for j in range(side)]
            for r in range(grid - side + 1) for c in range(grid - side + 1)]


@torch.no_grad()
def encode(backbone, images: torch.Tensor, sides, patch_layer: int, paper: bool):
    """(e [B, D], per side the window embeddings [B, W, D], patch tokens [B, N, C])."""
    visual = backbone.model.visual
    x = visual._embeds(images)                                    # CLS + patches, ln_pre applied
    h = x
    for i, block in enumerate(visual.transformer.resblocks, start=1):
        h = block(h)
        if i == patch_layer:
            tokens = h[:, 1:]
    e = visual.ln_post(h[:, 0]) @ visual.proj
    patches = visual.ln_post(tokens) if paper else tokens
    grid = backbone.grid[0]
    windows = []
    for side in sides:
        index = torch.tensor([[0] + [p + 1 for p in win] for win in windows_of(grid, side)])  # [W, 1 + s*s]
        seq = x[:, index].flatten(0, 1)                          # every window of every image, one batch
        cls = visual.ln_post(visual.transformer(seq)[:, 0]) @ visual.proj
        windows.append(cls.view(x.shape[0], index.shape[0], -1))
    return e, windows, patches


def anomalous_prob(u: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    cos = F.cosine_similarity(u[..., None, :], text, dim=-1)
    return (cos / TEMPERATURE).softmax(-1)[..., 1]


def harmonic_per_patch(scores: torch.Tensor, grid: int, side: int) -> torch.Tensor:
    """scores [B, W] of the side x side windows -> [B, N]: harmonic mean of the covering windows."""
    wins = windows_of(grid, side)
    out = []
    for p in range(grid * grid):
        covering = [j for j, w in enumerate(wins) if p in w]
        out.append(len(covering) / sum(1 / scores[:, j] for j in covering))
    return torch.stack(out, 1)


def association(u: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """d(u, R) = min_r (1 - cos(u, r)) / 2: u [B, M, C], bank [R, C] -> [B, M]."""
    cos = F.normalize(u, dim=-1) @ F.normalize(bank, dim=-1).T
    return ((1 - cos) / 2).amin(-1)


@torch.no_grad()
def winclip(backbone, images: torch.Tensor, category: str, supports: torch.Tensor | None,
            sides=(2, 3), patch_layer: int = 12, paper: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(score [B], map [B, S, S]) of WinCLIP (``supports`` None) or WinCLIP+."""
    text = text_embeddings(backbone, category, paper)
    grid = backbone.grid[0]
    e, windows, patches = encode(backbone, images, sides, patch_layer, paper)
    p = anomalous_prob(e, text)
    inverse = 1 / p[:, None]
    for side, w in zip(sides, windows):
        inverse = inverse + 1 / harmonic_per_patch(anomalous_prob(w, text), grid, side)
    m0 = (len(sides) + 1) / inverse
    score, patch_map = p, m0
    if supports is not None:
        _, sup_windows, sup_patches = encode(backbone, supports, sides, patch_layer, paper)
        maps = [association(patches, sup_patches.reshape(-1, sup_patches.shape[-1]))]
        for side, w, sw in zip(sides, windows, sup_windows):
            maps.append(harmonic_per_patch(association(w, sw.reshape(-1, sw.shape[-1])), grid, side))
        mf = sum(maps) / len(maps)
        patch_map = (m0 + mf) / 2 if paper else m0 + mf
        score = (p + mf.amax(1)) / 2
    size = backbone.image_size
    up = F.interpolate(patch_map.view(-1, 1, grid, grid), size=(size, size), mode="bilinear", align_corners=False)
    return score, up[:, 0]
