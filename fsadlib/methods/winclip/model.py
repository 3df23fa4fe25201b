"""WinCLIP (zero-shot) and WinCLIP+ (few-shot), Jeong et al., CVPR 2023. Training-free.

Per image x (B images, h x w patch grid, N = h*w, S = input size, T = [t_n; t_a] [2, D] the unit-norm
compositional prompt ensemble of the category (7 normal x 4 anomalous states x 22 templates),
tau = ``temperature``, scales s in ``window_sizes`` with coverage matrices C_s [W_s, N]):

1. Image score from the CLS embedding e [B, D]:  p(x) = softmax(<e/|e|, T> / tau)[anomalous].
2. Window embeddings w_s [B, W_s, D] by masked attention (:mod:`fsadlib.methods.winclip.windows`),
   window probabilities q_s = softmax(<w_s/|w_s|, T> / tau)[anomalous], aggregated to patches by a
   harmonic mean over the covering windows: Z_s = HA(q_s, C_s) [B, N].
3. Zero-shot map (harmonic mean over the window scales and the image scale):
       M0 = (|scales| + 1) / (sum_s 1/Z_s + 1/p(x))                                     [B, N]
4. WinCLIP+ only: with the support banks R_s (window embeddings of the k normal supports, [k*W_s, D])
   and R_p (their raw patch tokens of block ``patch_layer``, [k*N, Cv]) and
   d(u, R) = min_r (1 - cos(u, r)) / 2 (:func:`fsadlib.maps.nearest_distance`):
       Mf = mean( d(patch tokens, R_p), HA(d(w_s, R_s), C_s) for every s )              [B, N]
       M  = M0 + Mf,   score = (p(x) + max_p Mf) / 2
   Zero-shot: M = M0, score = p(x).
5. anomaly_map = bilinear upsampling of M from h x w to S x S (align_corners=False).

``preset: paper`` computes WinCLIP as anomalib 2.x does (the public implementation the field uses):
- text: anomalib's 21 template lines (:data:`TEMPLATES_ANOMALIB`: "a jpeg corrupted photo of the {}."
  twice, two of the 22 missing), the prompt embeddings averaged WITHOUT normalising each one:
      T_s = norm(mean_prompts E(prompt))   instead of   norm(mean_prompts norm(E(prompt)));
- WinCLIP+ patch memory R_p and query patches: ln_post(raw tokens of block ``patch_layer``) (no proj);
- WinCLIP+ map M = (M0 + Mf) / 2 (the score is unchanged: (p(x) + max_p Mf) / 2).

``WinClip`` (registry name ``winclip``) and ``WinClipPlus`` (``winclip_plus``) are one implementation;
the subclass only sets ``few_shot = True``. Nothing is trained: the per-category state (text features,
support banks) is a :class:`WinClipBank`, built by :meth:`WinClip.setup_category` (cached on the
content of the supports) from the supports' :meth:`WinClip.encode_support` features. There is no
training stage and no models folder: the evaluation builds both methods from the ``winclip`` params
section (:class:`WinClipSection`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F

from fsadlib.clip import BackboneConfig
from fsadlib.clip.cache import FeatureCache, tensor_key
from fsadlib.maps import harmonic_mean, nearest_distance, patch_text_probs, to_map
from fsadlib.methods.base import AnomalyMethod, check_preset
from fsadlib.methods.output import AnomalyOutput
from fsadlib.methods.winclip.windows import (
    coverage_matrix,
    encode_windows,
    harmonic_aggregation,
    window_indices,
)
from fsadlib.prompts import build_prompts, ensemble_text_features
from fsadlib.prompts.ensemble import ABNORMAL_STATES_WINCLIP, NORMAL_STATES, TEMPLATES_WINCLIP

#: anomalib 2.x's WinCLIP template list (``prompting.TEMPLATES``), in its order, duplicate included
TEMPLATES_ANOMALIB: tuple[str, ...] = (
    "a cropped photo of the {}.",
    "a close-up photo of a {}.", "a close-up photo of the {}.",
    "a bright photo of a {}.", "a bright photo of the {}.",
    "a dark photo of the {}.", "a dark photo of a {}.",
    "a jpeg corrupted photo of the {}.", "a jpeg corrupted photo of the {}.",
    "a blurry photo of the {}.", "a blurry photo of a {}.",
    "a photo of a {}.", "a photo of the {}.",
    "a photo of a small {}.", "a photo of the small {}.",
    "a photo of a large {}.", "a photo of the large {}.",
    "a photo of the {} for visual inspection.", "a photo of a {} for visual inspection.",
    "a photo of the {} for anomaly detection.", "a photo of a {} for anomaly detection.",
)


@dataclass(frozen=True)
class WinClipConfig:
    """Paper configuration: ViT-B-16-plus-240 (LAION-400M) at 240 px, 15 x 15 grid."""

    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(
        arch="ViT-B-16-plus-240", pretrained="laion400m_e31", image_size=240))
    window_sizes: tuple[int, ...] = (2, 3)   # window sides in patches (32 / 48 px at patch 16)
    temperature: float = 0.07                # tau of softmax(cos / tau)
    patch_layer: int = 12                    # 1-based block whose raw tokens form WinCLIP+'s patch bank
    preset: str = "workbench"                # paper = anomalib's text ensemble, ln_post memory, (M0 + Mf) / 2

    def __post_init__(self) -> None:
        check_preset(self.preset, "winclip")
        if not self.window_sizes or any(int(s) < 1 for s in self.window_sizes):
            raise ValueError(f"winclip.window_sizes must be a non-empty list of sides >= 1, got {self.window_sizes}")
        if len(set(self.window_sizes)) != len(self.window_sizes):
            raise ValueError(f"winclip.window_sizes has duplicates: {self.window_sizes}")
        if self.temperature <= 0:
            raise ValueError(f"winclip.temperature must be > 0, got {self.temperature}")


@dataclass
class WinClipBank:
    """Per-category state. text [2, D] unit-norm (normal, anomalous); few-shot only: windows, one
    [k*W_s, D] bank per window size, and patches [k*N, Cv] (:meth:`WinClip.memory_tokens`)."""

    category: str
    text: torch.Tensor
    windows: list[torch.Tensor] | None = None
    patches: torch.Tensor | None = None
    k: int = 0


class WinClipSupports(NamedTuple):
    """WinCLIP+'s features of B support images (:meth:`WinClip.encode_support`): window embeddings per
    window size [B, W_s, D] and memory patch tokens [B, N, Cv]."""

    windows: list[torch.Tensor]
    patches: torch.Tensor


class WinClipQueries(NamedTuple):
    """Support-independent features of B images: CLS embedding [B, D], raw patch tokens of block
    ``patch_layer`` [B, N, Cv] (WinCLIP+ only, else None), window embeddings per scale [B, W_s, D]."""

    embedding: torch.Tensor
    patches: torch.Tensor | None
    windows: list[torch.Tensor]


class WinClip(AnomalyMethod):
    name = "winclip"
    Config = WinClipConfig
    few_shot = False
    category_attributes = ("category", "bank")

    def __init__(self, config: WinClipConfig, backbone_model=None) -> None:
        super().__init__(config, backbone_model)
        bb = self.backbone
        bb._check_layers([config.patch_layer], "winclip.patch_layer")
        for s in config.window_sizes:  # constants of the config: non-persistent buffers follow .to(device)
            if s > min(bb.grid):
                raise ValueError(f"winclip.window_sizes: {s} exceeds the {bb.grid[0]}x{bb.grid[1]} patch grid "
                                 f"of {bb.config.arch} at {bb.image_size} px")
            windows = window_indices(bb.grid, int(s))
            self.register_buffer(f"windows_{s}", windows, persistent=False)
            self.register_buffer(f"coverage_{s}", coverage_matrix(windows, bb.grid[0] * bb.grid[1]), persistent=False)
        self.bank: WinClipBank | None = None
        self._banks = FeatureCache(max_items=64)

    @property
    def windows(self) -> list[torch.Tensor]:
        """Per window size, the patch indices of every window [W_s, s*s]."""
        return [getattr(self, f"windows_{s}") for s in self.config.window_sizes]

    @property
    def coverage(self) -> list[torch.Tensor]:
        """Per window size, the coverage matrix C_s [W_s, N]."""
        return [getattr(self, f"coverage_{s}") for s in self.config.window_sizes]

    # -- per-category state ------------------------------------------------------------------------
    @property
    def paper(self) -> bool:
        return self.config.preset == "paper"

    def text_for(self, category_key: str) -> torch.Tensor:
        """[2, D] unit-norm (normal, anomalous) CPE text features of ``display_name(category_key)``
        (cached); ``paper``: anomalib's templates, prompt embeddings averaged unnormalised."""
        name = self.display_name(category_key)
        if not self.paper:
            return ensemble_text_features(self.backbone, name, NORMAL_STATES, ABNORMAL_STATES_WINCLIP,
                                          TEMPLATES_WINCLIP)
        prompts = build_prompts(name, NORMAL_STATES, ABNORMAL_STATES_WINCLIP, TEMPLATES_ANOMALIB)
        with torch.no_grad():
            emb = self.backbone.encode_text_cached(prompts.normal + prompts.abnormal)
        n = len(prompts.normal)
        return F.normalize(torch.stack([emb[:n].mean(0), emb[n:].mean(0)]), dim=-1)

    def memory_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Patch tokens of WinCLIP+'s memory from raw block tokens [..., Cv]: as they are, or
        ``paper``: ln_post(tokens) (anomalib's ``output_tokens``)."""
        return self.backbone.model.visual.ln_post(tokens) if self.paper else tokens

    def build_bank(self, category: str, supports: torch.Tensor | None = None) -> WinClipBank:
        """Text features, plus for WinCLIP+ the window and patch banks of ``supports`` [k, 3, S, S]."""
        if not self.few_shot:
            return WinClipBank(category, self.text_for(category))
        if supports is None or supports.ndim != 4 or supports.shape[0] < 1:
            raise ValueError(f"{self.name} is few-shot: setup_category('{category}') needs supports "
                             f"[k, 3, S, S], got {None if supports is None else tuple(supports.shape)}")
        return self.bank_of(category, self.encode_supports(supports))

    def bank_of(self, category: str, support_features: WinClipSupports) -> WinClipBank:
        """Text features and the WinCLIP+ memory (:meth:`support_banks`) of k supports'
        :meth:`encode_support` rows."""
        windows, patches = self.support_banks(support_features)
        return WinClipBank(category, self.text_for(category), windows, patches, int(support_features.patches.shape[0]))

    @staticmethod
    def support_banks(support_features: WinClipSupports) -> tuple[list[torch.Tensor], torch.Tensor]:
        """WinCLIP+ memory of k supports' :meth:`encode_support` rows: window embeddings [k*W_s, D] per
        window size, memory patch tokens [k*N, Cv]."""
        return [w.flatten(0, 1) for w in support_features.windows], support_features.patches.flatten(0, 1)

    @torch.no_grad()
    def encode_support(self, images: torch.Tensor) -> WinClipSupports:
        """Support images [B, 3, S, S] -> their window embeddings [B, W_s, D] per window size
        (:func:`~fsadlib.methods.winclip.windows.encode_windows`) and memory patch tokens [B, N, Cv]
        (:meth:`memory_tokens` of block ``patch_layer``)."""
        feats = self.backbone.encode_image(images, layers=[self.config.patch_layer])
        return WinClipSupports(encode_windows(self.backbone, images, self.windows),
                               self.memory_tokens(feats.tokens[0]))

    def setup_category(self, category_key: str, supports: torch.Tensor | None = None) -> None:
        """Select (build once, then reuse) the bank of a category. A zero-shot WinCLIP ignores
        ``supports``; WinCLIP+ raises ``ValueError`` without them."""
        key = (category_key, tensor_key(supports) if self.few_shot and supports is not None else "")
        with torch.no_grad():
            self.bank = self._banks.get_or_compute(key, lambda: self.build_bank(category_key, supports))
        self.category = category_key

    def setup_category_encoded(self, category_key: str, support_features: WinClipSupports) -> None:
        """WinCLIP+'s bank from the k supports' :meth:`encode_support` rows (not cached: the plan
        already shares the rows, :mod:`fsadlib.encode_once`)."""
        with torch.no_grad():
            self.bank = self.bank_of(category_key, support_features)
        self.category = category_key

    def _require_bank(self) -> WinClipBank:
        if self.bank is None:
            raise RuntimeError(f"{self.name}: call setup_category(category_key{', supports' if self.few_shot else ''}) "
                               "before forward")
        return self.bank

    # -- scoring ---------------------------------------------------------------------------------------
    def zero_shot(self, embedding: torch.Tensor, windows: list[torch.Tensor], text: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """(image score p(x) [B], zero-shot patch map M0 [B, N]) from the CLS embedding [B, D] and
        the window embeddings per scale [B, W_s, D]."""
        scale = 1.0 / self.config.temperature
        image = patch_text_probs(embedding, text, scale)
        maps = [harmonic_aggregation(patch_text_probs(w, text, scale), c) for w, c in zip(windows, self.coverage)]
        return image, harmonic_mean(*maps, image[:, None].expand_as(maps[0]))

    def few_shot_map(self, patches: torch.Tensor, windows: list[torch.Tensor], bank: WinClipBank) -> torch.Tensor:
        """Mf [B, N]: mean over the patch scale and the window scales of the support-bank distances."""
        maps = [nearest_distance(patches, bank.patches)]
        maps += [harmonic_aggregation(nearest_distance(w, b), c)
                 for w, b, c in zip(windows, bank.windows, self.coverage)]
        return torch.stack(maps).mean(0)

    @torch.no_grad()
    def encode_queries(self, images: torch.Tensor) -> WinClipQueries:
        """CLS embedding, the patch tokens of block ``patch_layer`` (WinCLIP+ only) and the window
        embeddings of every scale: the whole backbone work (about 12x a plain encode), support-independent."""
        feats = self.backbone.encode_image(images, layers=[self.config.patch_layer] if self.few_shot else [])
        return WinClipQueries(feats.embedding, feats.tokens[0] if self.few_shot else None,
                              encode_windows(self.backbone, images, self.windows))

    @torch.no_grad()
    def score_queries(self, features: WinClipQueries) -> AnomalyOutput:
        """Steps 1-5 of the module docstring against the current category's bank."""
        bank = self._require_bank()
        bb = self.backbone
        windows = features.windows
        score, patch_map = self.zero_shot(features.embedding, windows, bank.text)
        if self.few_shot:
            fs = self.few_shot_map(self.memory_tokens(features.patches), windows, bank)
            patch_map = (patch_map + fs) / 2 if self.paper else patch_map + fs
            score = (score + fs.amax(dim=1)) / 2
        return AnomalyOutput(score, to_map(patch_map, bb.grid, bb.image_size))


class WinClipPlus(WinClip):
    """WinCLIP+ : the zero-shot maps plus the k-shot window/patch memory (``few_shot = True``)."""

    name = "winclip_plus"
    few_shot = True


@dataclass(frozen=True)
class WinClipSection:
    """The ``winclip`` params section, shared by ``winclip`` (zero-shot) and ``winclip_plus`` (evaluated
    at every k of ``ks``; the paper reports 1, 2 and 4 shots)."""

    model: WinClipConfig = field(default_factory=WinClipConfig)
    ks: tuple[int, ...] = (1, 2, 4)
