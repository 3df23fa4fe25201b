"""WinCLIP's sliding windows: window index sets, coverage matrix, harmonic aggregation, window embeddings.

Shapes: B images, h x w patch grid, N = h * w patches (row-major, patch (r, c) has index r * w + c),
s window side in patches, W = (h - s + 1) * (w - s + 1) windows at stride 1, Cv vision width,
D joint embedding width.

- ``window_indices(grid, s)`` -> [W, s*s]: the patch indices of every s x s window, windows in
  row-major order of their top-left patch.
- ``coverage_matrix(windows, N)`` -> C [W, N] with C[j, p] = 1 iff window j contains patch p.
- ``harmonic_aggregation(scores [B, W], C)`` -> [B, N], the harmonic mean of the scores of the
  windows that cover each patch (computed once per scale as one matmul, no loop over patches):

      a_p = n_p / sum_j C[j, p] / max(x_j, eps),   n_p = sum_j C[j, p]

- ``encode_windows(backbone, images, windows)`` -> per scale [B, W, D]: the embedding of every
  window by *masked attention*. Window j is the token sequence (CLS, its s*s patch tokens), each
  token carrying its own positional embedding, run through all transformer blocks; the output CLS
  goes through ln_post and proj like the image embedding. This is exactly the full sequence with an
  attention mask that lets CLS and the window's tokens attend only to each other (LayerNorm and MLP
  act per token), at (1 + s*s) / (1 + N) of the cost; the test suite checks the equality. All
  windows of all images of one scale run as one batch of B * W short sequences.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def window_indices(grid: tuple[int, int], size: int) -> torch.Tensor:
    """[W, size*size] patch indices of the size x size windows at stride 1 over an h x w grid."""
    h, w = grid
    if not 1 <= size <= min(h, w):
        raise ValueError(f"window size {size} does not fit the {h}x{w} patch grid")
    rows = torch.arange(h - size + 1).view(-1, 1, 1, 1) + torch.arange(size).view(1, 1, -1, 1)
    cols = torch.arange(w - size + 1).view(1, -1, 1, 1) + torch.arange(size).view(1, 1, 1, -1)
    return (rows * w + cols).reshape(-1, size * size)


def coverage_matrix(windows: torch.Tensor, n_patches: int) -> torch.Tensor:
    """C [W, N] float, C[j, p] = 1 iff window j (a row of ``windows``) contains patch p."""
    cov = torch.zeros(windows.shape[0], n_patches, dtype=torch.float32, device=windows.device)
    return cov.scatter_(1, windows, 1.0)


def harmonic_aggregation(scores: torch.Tensor, coverage: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-patch harmonic mean of the scores [B, W] of the windows covering it -> [B, N].

    Scores are clamped at ``eps`` (a zero distance gives a patch score of at most n_p * eps)."""
    cov = coverage.to(scores.device, torch.float32)
    return cov.sum(0) / (scores.float().clamp_min(eps).reciprocal() @ cov)


def encode_windows(backbone, images: torch.Tensor, windows: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Window embeddings [B, W_s, D] (not normalised) for every scale's index set [W_s, s*s]."""
    visual = backbone.model.visual
    with torch.no_grad(), backbone.autocast():
        x = visual._embeds(images.to(backbone.device))            # [B, 1+N, Cv] (pos-embedded, ln_pre)
        b = x.shape[0]
        out = []
        for idx in windows:
            idx = idx.to(x.device)
            seq_idx = torch.cat([idx.new_zeros(idx.shape[0], 1), idx + 1], dim=1)  # CLS + window tokens
            seq = x[:, seq_idx].flatten(0, 1)                      # [B*W, 1+s*s, Cv]
            pooled, _ = visual._pool(visual.transformer(seq))      # CLS after ln_post
            emb = pooled @ visual.proj if visual.proj is not None else pooled
            out.append(emb.view(b, idx.shape[0], -1).float())
    return out
