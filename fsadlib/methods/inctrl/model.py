"""InCTRL (Zhu & Pang, CVPR 2024): in-context residual learning with few-shot normal prompts.

Per query image x with k normal prompt images P_1..P_k of its category (L tapped blocks, N = h*w
patches, Cv vision width, D joint width; shapes for a batch of B queries):

1. Patch residuals. Raw tokens q_l [B, N, Cv] of the query and p_l [k*N, Cv] of the prompts at
   every tapped block l (no ln_post, CLS dropped):
       r_l(i) = min_j (1 - cos(q_l(i), p_l(j))) / 2,     M = mean_l r_l   [B, N],   s_p = max_i M(i)
   (:func:`fsadlib.maps.nearest_distance`: one normalised matmul and a min-reduce per layer).
2. Image residual. CLS embeddings e (ln_post + proj, not normalised) through the adapter
   psi(e) = ReLU(W2 ReLU(W1 e)) (D -> D/4 -> D, no bias):
       F = mean_k psi(e(P_k)) - psi(e(x))   [B, D],       s_i = eta_i(F)   [B]
3. Text prior from the state x template ensemble (7 x 22 normal, 4 x 22 anomalous prompts, cached):
       s_a = softmax(100 [cos(e, t_n), cos(e, t_a)])[anomalous]   [B]
4. Holistic head over the residual map shifted by both image-level scores:
       s_h = eta_h(M + s_i + s_a)   (the scalars broadcast over the N patches; the ablation flags
                                     ``image_residual`` / ``text_prior`` = 0 drop s_i / s_a here)
5. Final score s = (s_h + s_p) / 2; the anomaly map is M on the h x w grid, upsampled bilinearly.

eta_* = Linear(d, 128) -> ReLU -> BN -> Linear(128, 64) -> ReLU -> BN -> Linear(64, 1) -> sigmoid,
with d = D for eta_i and d = N (225 at 240 px) for eta_h, taken from the backbone's grid.

``legacy_reshape`` reproduces the public code's batch layout bug (see :func:`legacy_layout`): with
more than one query per batch it mixes layers with queries and prompts of different queries.
``preset: paper`` switches on the public code's three quirks at once: ``legacy_reshape`` here, the
double sigmoid of the loss and prompts that may include the query (``train.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from fsadlib.clip import BackboneConfig
from fsadlib.layout import per_k_dir
from fsadlib.maps import nearest_distance, to_map
from fsadlib.methods.base import AnomalyMethod, check_preset
from fsadlib.methods.output import AnomalyOutput
from fsadlib.prompts import ensemble_text_features
from fsadlib.prompts.ensemble import ABNORMAL_STATES_WINCLIP, NORMAL_STATES, TEMPLATES_WINCLIP
from fsadlib.protocol import Protocol


@dataclass(frozen=True)
class InctrlConfig:
    """Paper configuration (ViT-B-16-plus-240, laion400m_e32, 240 px, blocks 7/9/11)."""

    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(
        arch="ViT-B-16-plus-240", pretrained="laion400m_e32", image_size=240))
    layers: tuple[int, ...] = (7, 9, 11)      # 1-based blocks whose raw outputs give patch residuals
    adapter_reduction: int = 4                # psi: D -> D / 4 -> D
    head_hidden: tuple[int, int] = (128, 64)  # hidden widths of eta_i and eta_h
    text_scale: float = 100.0                 # logit scale of the text prior
    legacy_reshape: int = 0                   # 1 = the public code's reshape instead of permute
    text_prior: int = 1                       # ablation: 0 = drop s_a from the holistic head's input
    image_residual: int = 1                   # ablation: 0 = drop s_i (input and loss term)
    preset: str = "workbench"                 # paper = legacy_reshape, double sigmoid, query among prompts

    @property
    def paper(self) -> bool:
        return self.preset == "paper"

    def __post_init__(self) -> None:
        check_preset(self.preset, "inctrl")
        if not self.layers:
            raise ValueError("inctrl.layers must name at least one block")
        if self.adapter_reduction < 1 or len(self.head_hidden) != 2 or min(self.head_hidden) < 1:
            raise ValueError("inctrl.adapter_reduction must be >= 1 and inctrl.head_hidden two widths >= 1")


class ScoringHead(nn.Module):
    """eta: [B, d] -> [B] in (0, 1): Linear -> ReLU -> BN -> Linear -> ReLU -> BN -> Linear -> sigmoid."""

    def __init__(self, dim_in: int, hidden: tuple[int, int]) -> None:
        super().__init__()
        h1, h2 = hidden
        self.net = nn.Sequential(nn.Linear(dim_in, h1), nn.ReLU(), nn.BatchNorm1d(h1),
                                 nn.Linear(h1, h2), nn.ReLU(), nn.BatchNorm1d(h2), nn.Linear(h2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x)).squeeze(-1)


class Adapter(nn.Module):
    """psi: [..., D] -> [..., D], ReLU(W2 ReLU(W1 x)) with W1 [D/r, D], W2 [D, D/r], no bias."""

    def __init__(self, dim: int, reduction: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim // reduction, bias=False), nn.ReLU(),
                                 nn.Linear(dim // reduction, dim, bias=False), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Encoded(NamedTuple):
    """Frozen-backbone features of images: tokens [L, *batch, N, Cv], embedding [*batch, D]."""

    tokens: torch.Tensor
    embedding: torch.Tensor


class InctrlScores(NamedTuple):
    """All scores of a batch: final s, image s_i, holistic s_h, patch s_p, text s_a [B]; map M [B, N]."""

    final: torch.Tensor
    image: torch.Tensor
    holistic: torch.Tensor
    patch: torch.Tensor
    text: torch.Tensor
    patch_map: torch.Tensor


def legacy_layout(query: Encoded, prompts: Encoded) -> tuple[Encoded, Encoded]:
    """The public code's batch layout, expressed in ours (query tokens [L, B, N, C], prompt tokens
    [L, B, k, N, C], prompt embeddings [B, k, D]).

    The public forward stacks layers first and orders prompt images shot-major (row s*B + b), then
    uses ``reshape`` where a permute is needed: query tokens [L, B, N, C] -> [B, L, N, C], prompt
    tokens [L, k*B, N, C] -> [B, L, k*N, C], prompt embeddings [k*B, D] -> [B, k, D]. For B = 1 this
    is the identity; for B > 1 query b "layer" l holds another query's layer, and its prompts mix
    layers and other queries' prompts.
    """
    n_layers, b, n, c = query.tokens.shape
    k = prompts.tokens.shape[2]
    q = query.tokens.reshape(b, n_layers, n, c).transpose(0, 1)
    flat = prompts.tokens.transpose(1, 2).reshape(n_layers, k * b, n, c)          # shot-major rows
    p = flat.reshape(b, n_layers, k, n, c).transpose(0, 1)
    e = prompts.embedding.transpose(0, 1).reshape(k * b, -1).reshape(b, k, -1)
    return Encoded(q, query.embedding), Encoded(p, e)


class Inctrl(AnomalyMethod):
    """InCTRL behind the common interface; see the module docstring for the math."""

    name = "inctrl"
    Config = InctrlConfig
    few_shot = True
    class_names: ClassVar[dict[str, str]] = {}  # the public code: the category key, "_" -> " ", nothing else
    category_attributes = ("category", "prompts", "text")

    @classmethod
    def trained_path(cls, protocol: Protocol, k: int, seed: int, category: str | None = None) -> Path:
        """``models/inctrl/<target>/trained_on_<aux>/k<k>/final.pt``: one model per k (the paper trains k in {2, 4, 8})."""
        return per_k_dir(cls.training_dir(protocol), k) / "final.pt"

    def __init__(self, config: InctrlConfig, backbone_model=None) -> None:
        super().__init__(config, backbone_model)
        bb = self.backbone
        bb._check_layers(config.layers, "inctrl.layers")
        self.adapter = Adapter(bb.embed_dim, config.adapter_reduction)
        self.image_head = ScoringHead(bb.embed_dim, tuple(config.head_hidden))
        self.holistic_head = ScoringHead(bb.grid[0] * bb.grid[1], tuple(config.head_hidden))
        self.prompts: Encoded | None = None   # per-category cache: tokens [L, k, N, Cv], embedding [k, D]
        self.text: torch.Tensor | None = None  # per-category cache: [2, D]

    # -- features -----------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> Encoded:
        """images [B, 3, S, S] -> tokens [L, B, N, Cv], embedding [B, D] (frozen backbone)."""
        feats = self.backbone.encode_image(images, layers=self.config.layers)
        return Encoded(torch.stack(feats.tokens), feats.embedding)

    def text_features(self, category_key: str) -> torch.Tensor:
        """[2, D] unit-norm (normal, anomalous) ensemble of ``display_name(category_key)`` ("_" -> " ",
        as the public code; the prompt embeddings are cached on the backbone)."""
        return ensemble_text_features(self.backbone, self.display_name(category_key), NORMAL_STATES,
                                      ABNORMAL_STATES_WINCLIP, TEMPLATES_WINCLIP)

    def setup_category(self, category_key: str, supports: torch.Tensor | None = None) -> None:
        """Cache the k normal prompts' features [L, k, N, Cv] / [k, D] and the text ensemble."""
        if supports is None or supports.ndim != 4 or supports.shape[0] < 1:
            raise ValueError(f"inctrl needs supports [k, 3, S, S] of normal images for '{category_key}', "
                             f"got {None if supports is None else tuple(supports.shape)}")
        self.setup_category_encoded(category_key, self.encode_supports(supports))

    def encode_support(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt images [B, 3, S, S] -> (tokens [B, L, N, Cv] (images first), embedding [B, D]) of
        :meth:`encode` (:meth:`~fsadlib.methods.base.AnomalyMethod.encode_supports` calls it per chunk)."""
        enc = self.encode(images)
        return enc.tokens.transpose(0, 1), enc.embedding

    def setup_category_encoded(self, category_key: str, support_features: tuple[torch.Tensor, torch.Tensor]
                               ) -> None:
        """The category's state from the k prompts' :meth:`encode_support` rows (tokens [k, L, N, Cv],
        embedding [k, D]): prompts tokens [L, k, N, Cv] / embedding [k, D] and the text ensemble."""
        tokens, embedding = support_features
        self.prompts = Encoded(tokens.transpose(0, 1).contiguous(), embedding)
        self.text = self.text_features(category_key)
        self.category = category_key

    # -- scoring ------------------------------------------------------------------------------
    def score(self, query: Encoded, prompts: Encoded, text: torch.Tensor) -> InctrlScores:
        """Scores of B queries. ``prompts``: shared by all queries (tokens [L, k, N, Cv], embedding
        [k, D]) or one set per query ([L, B, k, N, Cv], [B, k, D]); ``text``: [2, D] or [B, 2, D]."""
        n_layers, b = query.tokens.shape[:2]
        shared = prompts.tokens.ndim == 4
        if self.config.legacy_reshape or self.config.paper:
            if shared:
                prompts = Encoded(prompts.tokens.unsqueeze(1).expand(-1, b, -1, -1, -1),
                                  prompts.embedding.expand(b, -1, -1))
            query, prompts = legacy_layout(query, prompts)
            shared = False
        bank = prompts.tokens.flatten(1, 2) if shared else prompts.tokens.flatten(2, 3)  # [L,(B,)kN,Cv]
        patch_map = torch.stack([nearest_distance(query.tokens[l], bank[l]) for l in range(n_layers)]).mean(0)
        residual = self.adapter(prompts.embedding).mean(-2) - self.adapter(query.embedding)     # [B, D]
        s_i = self.image_head(residual)
        g = F.normalize(query.embedding, dim=-1)
        cos = g @ text.T if text.ndim == 2 else torch.einsum("bd,bsd->bs", g, text)
        s_a = (self.config.text_scale * cos).softmax(-1)[:, 1]
        prior = s_i * float(self.config.image_residual) + s_a * float(self.config.text_prior)
        s_h = self.holistic_head(patch_map + prior[:, None])
        s_p = patch_map.amax(1)
        return InctrlScores((s_h + s_p) / 2, s_i, s_h, s_p, s_a, patch_map)

    def score_with_prompts(self, images: torch.Tensor, prompts: torch.Tensor, categories: list[str]
                           ) -> InctrlScores:
        """Training path: images [B, 3, S, S], each with its own prompts [B, k, 3, S, S] and category."""
        b, k = prompts.shape[:2]
        p = self.encode(prompts.flatten(0, 1))
        per_query = Encoded(p.tokens.unflatten(1, (b, k)), p.embedding.unflatten(0, (b, k)))
        text = torch.stack([self.text_features(c) for c in categories])
        return self.score(self.encode(images), per_query, text)

    # -- encode once, score many (fsadlib.methods.base) -------------------------------------------
    def encode_queries(self, images: torch.Tensor) -> Encoded:
        """The query's frozen features (:meth:`encode`): about 90 % of the forward, support-independent."""
        return self.encode(images)

    def score_queries(self, features: Encoded) -> AnomalyOutput:
        """:meth:`score` against the cached prompts and text of the current (category, k, seed)."""
        if self.prompts is None or self.text is None:
            raise RuntimeError("inctrl: call setup_category(category_key, supports) before scoring images")
        s = self.score(features, self.prompts, self.text)
        return AnomalyOutput(s.final, to_map(s.patch_map, self.backbone.grid, self.backbone.image_size))
