"""KAG-prompt (Tao et al., AAAI 2025): kernel-aware hierarchical graph prompts + memory bank.

Per image x (B images, L tapped layers, N = h*w patches, S = input size, T = [t_n; t_a] [2, D] the
unit-norm text ensemble of the category, 7 normal x 5 anomalous states x 2 templates):

1. One frozen CLIP forward: raw tokens F_l [B, N, Cv] of the tapped blocks, CLS embedding e [B, D].
2. Nodes n_l = MMCI(ReLU(Linear_l(F_l))) [B, L, C, h, w] and graph outputs o_l = KAHG(n)_l
   (:mod:`fsadlib.methods.kag_prompt.modules`); the 2L maps f in (o_1..o_L, n_1..n_L) give
       P_f = softmax_states(up_S(logit_scale * <f / |f|, T>))[anomalous]   [B, S, S]
   (logits upsampled bilinearly with align_corners=True, then the softmax) and Mp = mean_f P_f.
3. Memory map from the k support images' raw tokens of the same layers (bank_l [k*N, Cv]):
       sim = mean_l max_j cos(F_l[p], bank_l[j]),  Mv = softmax([up_S(sim), 1 - up_S(sim)])[1]
           = sigmoid(1 - 2 up_S(sim))
4. M = r Mp + (1 - r) Mv                                           (r = ``prompt_weight``)
5. s1 = <norm(Adapter(norm(e))), t_a> (raw cosine); s = w1 s1 + w2 topk_mean(M, k).

``preset: paper``: the public code's training-mode readout BatchNorm, per (image, node)
(:class:`fsadlib.methods.kag_prompt.modules.LayerGraph`); everything else is already the public code's.

Paper defaults in :class:`KagPromptConfig`; ``fsadlib/methods/kag_prompt/README.md`` lists them with
the public code's deviations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from fsadlib.clip import BackboneConfig
from fsadlib.graph import AGGREGATIONS
from fsadlib.maps import nearest_distance, to_map, topk_mean
from fsadlib.methods.base import AnomalyMethod, check_preset
from fsadlib.methods.kag_prompt.modules import KERNELS, KernelAwareConvs, LayerGraph, LayerProjection
from fsadlib.methods.output import AnomalyOutput
from fsadlib.prompts import ensemble_text_features
from fsadlib.prompts.ensemble import ABNORMAL_STATES_KAG, NORMAL_STATES, TEMPLATES_KAG


@dataclass(frozen=True)
class KagPromptConfig:
    """Paper configuration (ImageBind-Huge's towers = open_clip ViT-H-14 laion2b_s32b_b79k, 224 px)."""

    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(
        arch="ViT-H-14", pretrained="laion2b_s32b_b79k", image_size=224))
    layers: tuple[int, ...] = (8, 16, 24, 32)  # 1-based blocks (the code's 0-based 7/15/23/31)
    proj_dim: int = 1024                        # C; must equal the backbone's joint width D
    rounds: int = 5                             # synchronous message-passing rounds
    aggregation: str = "concat"                 # concat (paper) | mean | sum | attention
    kernels: tuple[tuple[int, int], ...] = KERNELS  # kernel-aware convs (paper 1x4, 4x1, 2x2, 3x3)
    logit_scale: float = 100.0                  # patch-text logits
    prompt_weight: float = 0.1                  # r in M = r Mp + (1 - r) Mv
    text_score_weight: float = 0.1              # w1
    map_score_weight: float = 0.9               # w2
    topk: int = 30                              # k of the top-k mean of M (224 x 224 px)
    preset: str = "workbench"                   # paper = per-(image, node) readout BatchNorm in training

    def __post_init__(self) -> None:
        check_preset(self.preset, "kag_prompt")
        object.__setattr__(self, "kernels", tuple(tuple(int(v) for v in k) for k in self.kernels))
        if not self.kernels or any(len(k) != 2 or min(k) < 1 for k in self.kernels):
            raise ValueError(f"kag_prompt.kernels must be a non-empty list of [h, w] sizes, got {self.kernels}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"kag_prompt.aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")
        if len(self.layers) < 2:
            raise ValueError(f"kag_prompt.layers needs at least 2 layers (graph nodes), got {self.layers}")
        if self.rounds < 1 or self.topk < 1 or self.proj_dim < 1:
            raise ValueError("kag_prompt.rounds, kag_prompt.topk and kag_prompt.proj_dim must be >= 1")
        if not 0.0 <= self.prompt_weight <= 1.0:
            raise ValueError(f"kag_prompt.prompt_weight must be in [0, 1], got {self.prompt_weight}")


class KagQueries(NamedTuple):
    """Support-independent features of B images: raw tapped tokens L x [B, N, Cv], the unit-norm graph
    maps [B, 2L, C, h, w] and the unit-norm adapted CLS embedding [B, D] (:meth:`KagPrompt.graph_features`)."""

    tokens: list[torch.Tensor]
    maps: torch.Tensor
    cls: torch.Tensor


class KagPrompt(AnomalyMethod):
    name = "kag_prompt"
    Config = KagPromptConfig
    few_shot = True
    category_attributes = ("category", "text_features", "support_bank")

    def __init__(self, config: KagPromptConfig, backbone_model=None) -> None:
        super().__init__(config, backbone_model)
        bb = self.backbone
        if config.proj_dim != bb.embed_dim:
            raise ValueError(f"kag_prompt.proj_dim ({config.proj_dim}) must equal the joint embedding width "
                             f"of backbone {bb.config.arch} ({bb.embed_dim}): projected patches are compared "
                             "with text embeddings")
        bb._check_layers(config.layers, "kag_prompt.layers")
        self.projection = LayerProjection(len(config.layers), bb.vision_width, config.proj_dim)
        self.kernel_convs = KernelAwareConvs(config.proj_dim, config.kernels)
        self.graph = LayerGraph(config.proj_dim, len(config.layers), config.rounds, config.aggregation,
                                per_node_norm=config.preset == "paper")
        self.adapter = nn.Linear(bb.embed_dim, bb.embed_dim)
        self.text_features: torch.Tensor | None = None   # [2, D] of the current category
        self.support_bank: list[torch.Tensor] | None = None  # L x [k*N, Cv]

    # -- per-category caches -------------------------------------------------------------------
    def text_for(self, category_key: str) -> torch.Tensor:
        """[2, D] unit-norm (normal, anomalous) text ensemble of ``display_name(category_key)`` (cached)."""
        return ensemble_text_features(self.backbone, self.display_name(category_key), NORMAL_STATES,
                                      ABNORMAL_STATES_KAG, TEMPLATES_KAG)

    def setup_category(self, category_key: str, supports: torch.Tensor | None = None) -> None:
        if supports is None or supports.ndim != 4 or supports.shape[0] < 1:
            raise ValueError(f"kag_prompt is few-shot: setup_category('{category_key}') needs supports "
                             f"[k, 3, S, S], got {None if supports is None else tuple(supports.shape)}")
        self.setup_category_encoded(category_key, self.encode_supports(supports))

    def encode_support(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Support images [B, 3, S, S] -> their raw tapped tokens, L x [B, N, Cv] (:meth:`encode`)."""
        return self.encode(images).tokens

    def setup_category_encoded(self, category_key: str, support_features: list[torch.Tensor]) -> None:
        """Text ensemble and support bank L x [k*N, Cv] from the k supports' tokens L x [k, N, Cv]."""
        self.category = category_key
        self.text_features = self.text_for(category_key)
        self.support_bank = [t.reshape(-1, t.shape[-1]) for t in support_features]

    # -- branches --------------------------------------------------------------------------------
    def encode(self, images: torch.Tensor):
        """One frozen backbone pass: :class:`fsadlib.clip.ImageFeatures` with the tapped tokens."""
        with torch.no_grad():
            return self.backbone.encode_image(images, layers=self.config.layers)

    def prompt_branch(self, feats, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Learned branch. text [2, D] or per image [B, 2, D] ->
        (anomalous-state probability maps [B, 2L, S, S] of o_1..o_L, n_1..n_L; CLS cosines [B, 2])."""
        return self.text_branch(*self.graph_features(feats), text)

    def graph_features(self, feats) -> tuple[torch.Tensor, torch.Tensor]:
        """The learned branch up to the text: unit-norm maps o_1..o_L, n_1..n_L [B, 2L, C, h, w] (float32)
        and the unit-norm adapted CLS embedding norm(Adapter(norm(e))) [B, D]."""
        nodes = self.kernel_convs(self.projection(feats.tokens, self.backbone.grid))  # [B, L, C, h, w]
        maps = torch.cat([self.graph(nodes), nodes], dim=1).float()                    # [B, 2L, C, h, w]
        cls = F.normalize(self.adapter(F.normalize(feats.embedding, dim=-1)), dim=-1)
        return F.normalize(maps, dim=2), cls

    def text_branch(self, maps: torch.Tensor, cls: torch.Tensor, text: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`graph_features` (maps, cls) and text [2, D] or [B, 2, D] -> (probability maps
        [B, 2L, S, S], CLS cosines [B, 2]); see :meth:`prompt_branch`."""
        size = self.backbone.image_size
        text = text.expand(cls.shape[0], -1, -1) if text.ndim == 2 else text
        logits = self.config.logit_scale * torch.einsum("bmchw,bsc->bmshw", maps, text.float())  # [B, 2L, 2, h, w]
        b, m = logits.shape[:2]
        logits = F.interpolate(logits.flatten(0, 1), size=(size,) * 2, mode="bilinear",
                               align_corners=True).view(b, m, 2, size, size)
        cosines = torch.einsum("bd,bsd->bs", cls.float(), text.float())
        return logits.softmax(dim=2)[:, :, 1], cosines

    def memory_map(self, tokens: list[torch.Tensor]) -> torch.Tensor:
        """Mv [B, S, S] from the raw query tokens L x [B, N, Cv] and the support bank."""
        if self.support_bank is None:
            raise RuntimeError("kag_prompt: call setup_category(category_key, supports) before forward")
        # nearest_distance = (1 - max cos) / 2, so the mean max-cosine is 1 - 2 * mean distance
        dist = torch.stack([nearest_distance(t, bank) for t, bank in zip(tokens, self.support_bank, strict=True)])
        sim = to_map(1 - 2 * dist.mean(0), self.backbone.grid, self.backbone.image_size, align_corners=True)
        return torch.sigmoid(1 - 2 * sim)

    # -- encode once, score many (fsadlib.methods.base) -------------------------------------------
    def encoding_key(self) -> tuple:
        """The features pass the trained graph and adapter: the model is part of the key."""
        return (*super().encoding_key(), id(self))

    def encode_queries(self, images: torch.Tensor) -> KagQueries:
        """The frozen forward and the whole graph (neither depends on the category, k or the supports)."""
        feats = self.encode(images)
        with self.backbone.autocast():
            maps, cls = self.graph_features(feats)
        return KagQueries(feats.tokens, maps, cls)

    def score_queries(self, features: KagQueries) -> AnomalyOutput:
        """Steps 2 (text part) to 5 of the module docstring against the current category's caches."""
        if self.text_features is None:
            raise RuntimeError("kag_prompt: call setup_category(category_key, supports) before forward")
        cfg = self.config
        with self.backbone.autocast():
            probs, cosines = self.text_branch(features.maps, features.cls, self.text_features)
        prompt_map = probs.mean(1)
        fused = cfg.prompt_weight * prompt_map + (1 - cfg.prompt_weight) * self.memory_map(features.tokens)
        score = cfg.text_score_weight * cosines[:, 1] + cfg.map_score_weight * topk_mean(fused, cfg.topk)
        return AnomalyOutput(score, fused)
