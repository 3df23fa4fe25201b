"""Bayes-PFL (Qu et al., CVPR 2025): Bayesian prompt flow learning for zero-shot anomaly detection.

Shapes: N images, R Monte-Carlo samples, B prompt-bank entries, states s in {normal, abnormal},
W text-token width, D joint embedding width, Cv vision width, n = h * w patches, S image size.

Prompts. "X <class>" is tokenised; the single token "X" (position 1) is replaced by P + Q vectors

    [c_b1 + z] ... [c_bP + z] [s^s_b1 + z_s] ... [s^s_bQ + z_s]

with context c_b [P, W] shared by both states of bank entry b, state vectors s^s_b [Q, W],
z ~ q(z | g) the image-specific flow sample (amortised on the global image embedding g) and
z_s ~ q_s(z) the image-agnostic sample of state s (see flows.py). All N * R * 2 * B prompts of a
batch go through the frozen text tower in ONE call (``encode_text_embeddings``); the EOT read-out is
shifted by P + Q - 1. Text embeddings T are L2-normalised.

Image branch: logit_{r,s,b} = exp(tau_img) <norm(M_c T_{r,s,b}), norm(v)> with v = g (stage 1) or
v = M_i(g + Fuse(tokens)) (stage 2; the ``stage`` buffer, saved with checkpoints).
text_prob = mean_{r,b} softmax_s(logit_{r,:,b})[abnormal].

Pixel branch (per tapped layer l, RCA in layers.py): logits_l = exp(tau_px) P_l T'_l^T; the anomaly
probability of a pair is softmax over (normal, abnormal) of the logits bilinearly upsampled to S
(align_corners=True), i.e. sigmoid(up(logit_a - logit_n)) since upsampling is linear. The raw map is
the mean over the L layers and the R * B pairs; the returned map is Gaussian-blurred (``sigma``).

Image score (``score_rule``):
- ``fusion`` (default): text_weight * text_prob + (1 - text_weight) * topk_mean(raw map, topk), with
  global, declared parameters (no per-class normalisation, no class-keyed k).
- ``public`` (comparison only; transductive): the public code's rule. ``forward`` returns the
  unnormalised 0.5/0.5 sum with k = 20 for the classes in ``PUBLIC_SMALL_K`` and 2000 otherwise;
  :meth:`BayesPFL.public_scores` applies the per-class min-max over all images seen since
  ``setup_category`` (what the public code reports); the evaluation reports it
  (:meth:`BayesPFL.category_scores`) and labels the results as using target-set statistics
  (:meth:`BayesPFL.target_statistics`). Never a default: only ``score_rule: public`` selects it.
- ``public_text``: the public code's rule for the image-level-only sets (HeadCT, BrainMRI, Br35H,
  ``datasets_class`` of its ``metric_and_visualization.py``): the text probability alone (it then
  min-max normalises it per class, which leaves AUROC / AP unchanged).

Sampling. Training: one image-specific sample per image and one sample per state per step (global
RNG, seeded by the trainer). Test: R samples drawn from ``torch.Generator().manual_seed(sample_seed)``
each call -- the same base noise for every image, so scores are reproducible per seed and do not
depend on image order or batch composition (the public code caches the state samples of whichever
image comes first). ``sampling: mean`` uses the base means (z = flow(mu), R = 1).

``preset: paper`` (the public code's behaviour): each test image gets its own R context noises and the
state noises are drawn once per category and kept (the public cache of the first test image), all from
one generator seeded with ``sample_seed`` at ``setup_category`` (draw order: state noises [2, R, W]
once, then [N, R, W] per batch), so scores depend on image order and batch composition as there; and
the state KL divides the log-det by the batch size N (:mod:`fsadlib.methods.bayes_pfl.flows`); the
map is blurred with scipy's default ``reflect`` borders (the public metrics' ``gaussian_filter``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from fsadlib.clip import BackboneConfig, ImageFeatures
from fsadlib.maps import fused_image_score, gaussian_blur, to_map, topk_mean
from fsadlib.methods.base import AnomalyMethod, check_preset
from fsadlib.methods.bayes_pfl.flows import GaussianEncoder, ImageAgnosticFlow, ImageSpecificFlow
from fsadlib.methods.bayes_pfl.layers import ResidualCrossModalAttention, TokenFuse
from fsadlib.methods.output import AnomalyOutput
from fsadlib.prompts import LearnableTokens, class_name

SCORE_RULES = ("fusion", "public", "public_text")
DISTRIBUTIONS = ("both", "image_specific", "image_agnostic", "none")
SAMPLINGS = ("sample", "mean")
#: categories for which the public code's image score uses the top-20 (not top-2000) map pixels
PUBLIC_SMALL_K = ("capsules", "macaroni1", "macaroni2", "pipe_fryum", "screw", "cashew", "chewinggum")


@dataclass(frozen=True)
class BayesPFLConfig:
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(
        arch="ViT-L-14-336", pretrained="openai", image_size=518, quick_gelu=False))
    layers: tuple[int, ...] = (6, 12, 18, 24)
    bank_size: int = 3          # B
    context_length: int = 5     # P
    state_length: int = 5       # Q
    n_flows: int = 10           # K
    test_samples: int = 10      # R at test
    sampling: str = "sample"    # "sample" | "mean"
    sample_seed: int = 0
    rca_heads: int = 4
    sigma: float = 8.0
    score_rule: str = "fusion"  # "fusion" | "public" | "public_text" (image-level-only sets)
    distributions: str = "both"  # ablation: "both" | "image_specific" | "image_agnostic" | "none"
    text_weight: float = 0.5
    topk: int = 2000
    preset: str = "workbench"    # paper = per-image test noise, state KL with log-det / N

    def __post_init__(self) -> None:
        check_preset(self.preset, "bayes_pfl")
        if self.score_rule not in SCORE_RULES:
            raise ValueError(f"bayes_pfl.score_rule must be one of {SCORE_RULES}, got {self.score_rule!r}")
        if self.distributions not in DISTRIBUTIONS:
            raise ValueError(f"bayes_pfl.distributions must be one of {DISTRIBUTIONS}, got {self.distributions!r}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"bayes_pfl.sampling must be one of {SAMPLINGS}, got {self.sampling!r}")
        for key in ("bank_size", "context_length", "state_length", "n_flows", "test_samples", "topk"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"bayes_pfl.{key} must be >= 1, got {getattr(self, key)}")
        if not self.layers:
            raise ValueError("bayes_pfl.layers must name at least one block")
        if not 0.0 <= self.text_weight <= 1.0:
            raise ValueError(f"bayes_pfl.text_weight must be in [0, 1], got {self.text_weight}")


class BayesPFL(AnomalyMethod):
    name = "bayes_pfl"
    Config = BayesPFLConfig
    few_shot = False
    category_attributes = ("category", "score_parts", "_noise", "_state_noise")

    def __init__(self, config: BayesPFLConfig, backbone_model=None) -> None:
        super().__init__(config, backbone_model)
        bb = self.backbone
        bb._check_layers(config.layers, "bayes_pfl.layers")
        width, dim, hidden = bb.text_width, bb.embed_dim, bb.vision_width // 2
        b, p, q, k = config.bank_size, config.context_length, config.state_length, config.n_flows
        self.context = LearnableTokens(b, p, width, mean=0.0, std=0.02)
        self.normal_state = LearnableTokens(b, q, width, mean=0.5, std=0.02)
        self.abnormal_state = LearnableTokens(b, q, width, mean=-0.5, std=0.02)
        self.log_scale_image = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.log_scale_pixel = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.context_flow = ImageSpecificFlow(dim, hidden, width, k)
        self.state_encoder = GaussianEncoder(width, hidden, width)
        self.normal_flow = ImageAgnosticFlow(width, k)
        self.abnormal_flow = ImageAgnosticFlow(width, k)
        self.rca = ResidualCrossModalAttention(bb.vision_width, dim, len(config.layers), config.rca_heads)
        self.fuse = TokenFuse(len(config.layers) * bb.vision_width, hidden, dim)
        self.class_mapping = nn.Linear(dim, dim)
        self.image_mapping = nn.Linear(dim, dim)
        self.register_buffer("stage", torch.tensor(1))
        for name, module in self.named_modules():
            # public init: every Linear N(0, 0.02), zero bias; the RCA query is a Conv1d there (default init)
            if isinstance(module, nn.Linear) and not name.startswith("backbone.") and module is not self.rca.query:
                nn.init.normal_(module.weight, 0.0, 0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        self._prompt_ids: dict[str, torch.Tensor] = {}
        self.score_parts: list[torch.Tensor] = []
        self._noise: torch.Generator | None = None               # paper preset: the run's generator
        self._state_noise: dict[int, torch.Tensor] = {}          # paper preset: [2, R, W] per R

    @property
    def paper(self) -> bool:
        return self.config.preset == "paper"

    # -- parameters -------------------------------------------------------------------------
    def parameter_sets(self, stage: int) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters of a training stage by learning-rate group (Bayes-PFL A2).

        Stage 1: ``prompt`` (bank vectors), ``temperature``, ``flow`` (amortisation heads, free flow
        parameters, state vectors), ``other`` (encoder MLPs, RCA, class mapping). Stage 2: ``image``
        (class mapping, image mapping, fuse).
        """
        if stage == 2:
            return {"image": [*self.class_mapping.parameters(), *self.image_mapping.parameters(),
                              *self.fuse.parameters()]}
        if stage != 1:
            raise ValueError(f"stage must be 1 or 2, got {stage}")
        flow = [*self.normal_flow.parameters(), *self.abnormal_flow.parameters(),
                *(p for n, p in self.context_flow.named_parameters() if n.startswith("amor_"))]
        return {
            "prompt": [*self.context.parameters(), *self.normal_state.parameters(),
                       *self.abnormal_state.parameters()],
            "temperature": [self.log_scale_image, self.log_scale_pixel],
            "flow": flow,
            "other": [*self.context_flow.encoder.parameters(), *self.state_encoder.parameters(),
                      *self.rca.parameters(), *self.class_mapping.parameters()],
        }

    # -- category ---------------------------------------------------------------------------
    def setup_category(self, category_key: str, supports: torch.Tensor | None = None) -> None:
        """Zero-shot: ``supports`` is ignored. Resets the score parts kept for the public rule."""
        self.category = category_key
        self.score_parts = []
        self._noise = torch.Generator().manual_seed(self.config.sample_seed)
        self._state_noise = {}

    def prompt_ids(self, categories: Sequence[str]) -> torch.Tensor:
        """Token ids [N, L] of "X <display name>" for each category key (tokenised once per category)."""
        for cat in set(categories) - set(self._prompt_ids):
            self._prompt_ids[cat] = self.backbone.tokenize([f"X {self.display_name(cat)}"])[0]
        return torch.stack([self._prompt_ids[c] for c in categories]).to(self.device)

    # -- prompts ----------------------------------------------------------------------------
    def test_noise(self, n_images: int, n_samples: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Base noise e_ctx [N, R, W], e_normal and e_abnormal [R, W]: the same seeded draw for every
        image (zeros, R = 1, when ``sampling`` is ``mean``); ``paper``: see the module docstring."""
        width = self.backbone.text_width
        if self.config.sampling == "mean":
            e = torch.zeros(3, 1, width)
        elif not self.paper:
            e = torch.randn(3, n_samples, width, generator=torch.Generator().manual_seed(self.config.sample_seed))
        else:
            if n_samples not in self._state_noise:
                self._state_noise[n_samples] = torch.randn(2, n_samples, width, generator=self._noise)
            ctx = torch.randn(n_images, n_samples, width, generator=self._noise)
            states = self._state_noise[n_samples]
            return ctx.to(self.device), states[0].to(self.device), states[1].to(self.device)
        return e[0].expand(n_images, -1, -1).to(self.device), e[1].to(self.device), e[2].to(self.device)

    def text_embeddings(self, embedding: torch.Tensor, categories: Sequence[str], noise_ctx: torch.Tensor,
                        noise_normal: torch.Tensor, noise_abnormal: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample the three flows and encode all prompts in one text-tower call.

        embedding g [N, D]; noise_ctx [N, R, W]; noise_normal, noise_abnormal [R, W].
        Returns (T [N, R, 2, B, D] L2-normalised, KL = mean KL_ctx + KL_normal + KL_abnormal).
        """
        n, r = noise_ctx.shape[:2]
        b = self.config.bank_size
        z_ctx, kl_ctx = self.context_flow(embedding, noise_ctx)                        # [N, R, W]
        log_det_scale = 1.0 / n if self.paper else 1.0                                 # public: log-det / N
        z_n, kl_n = self.normal_flow(self.state_encoder, noise_normal, log_det_scale)  # [R, W]
        z_a, kl_a = self.abnormal_flow(self.state_encoder, noise_abnormal, log_det_scale)
        specific = float(self.config.distributions in ("both", "image_specific"))  # ablation switches:
        agnostic = float(self.config.distributions in ("both", "image_agnostic"))  # 0 = no sample, no KL
        z_ctx, kl_ctx = z_ctx * specific, kl_ctx * specific
        z_n, kl_n, z_a, kl_a = z_n * agnostic, kl_n * agnostic, z_a * agnostic, kl_a * agnostic
        ctx = self.context()[None, None, None] + z_ctx[:, :, None, None, None, :]      # [N, R, 1, B, P, W]
        states = torch.stack([self.normal_state()[None] + z_n[:, None, None, :],
                              self.abnormal_state()[None] + z_a[:, None, None, :]], dim=1)  # [R, 2, B, Q, W]
        ctx = ctx.expand(n, r, 2, *ctx.shape[3:])
        inserted = torch.cat([ctx, states[None].expand(n, *states.shape)], dim=-2)      # [N, R, 2, B, P+Q, W]
        ids = self.prompt_ids(categories)
        ids = ids[:, None].expand(n, r * 2 * b, ids.shape[-1]).reshape(-1, ids.shape[-1])
        emb, eot = self.backbone.inject(ids, inserted.reshape(-1, *inserted.shape[-2:]), position=1, replace=1)
        text = F.normalize(self.backbone.encode_text_embeddings(emb, eot), dim=-1)
        return text.view(n, r, 2, b, -1), kl_ctx.mean() + kl_n.mean() + kl_a.mean()

    # -- heads ------------------------------------------------------------------------------
    def image_logits(self, features: ImageFeatures, text: torch.Tensor) -> torch.Tensor:
        """exp(tau_img) <norm(M_c T), norm(v)>: T [N, ..., D] -> [N, ...] (v by ``stage``)."""
        t = F.normalize(self.class_mapping(text), dim=-1)
        v = features.embedding
        if int(self.stage) == 2:
            v = self.image_mapping(v + self.fuse(features.tokens))
        v = F.normalize(v, dim=-1)
        return self.log_scale_image.exp() * (t * v.view(v.shape[0], *[1] * (t.ndim - 2), -1)).sum(-1)

    def pixel_logit_gaps(self, tokens: list[torch.Tensor], text: torch.Tensor) -> torch.Tensor:
        """logit_abnormal - logit_normal per layer, pair and patch: tokens L x [N, n, Cv],
        text [N, M, 2, D] (M pairs) -> [N, L, M, n]."""
        n, m = text.shape[:2]
        queries = text.transpose(1, 2).reshape(n, 2 * m, -1)                           # normal M, abnormal M
        gaps = []
        for layer, tok in enumerate(tokens):
            patches = self.rca.patches(tok, layer)                                       # [N, n, D]
            logits = self.log_scale_pixel.exp() * self.rca(queries, patches) @ patches.transpose(1, 2)
            gaps.append(logits[:, m:] - logits[:, :m])                                   # [N, M, n]
        return torch.stack(gaps, dim=1)

    def upsample(self, gaps: torch.Tensor) -> torch.Tensor:
        """Anomaly probabilities sigmoid(up(gap)) at S x S: [N, ..., n] -> [N, ..., S, S]."""
        shape = gaps.shape[:-1]
        up = to_map(gaps.reshape(-1, gaps.shape[-1]), self.backbone.grid, self.backbone.image_size,
                    align_corners=True)
        return torch.sigmoid(up).view(*shape, *up.shape[-2:])

    # -- inference --------------------------------------------------------------------------
    @torch.no_grad()
    def encode_queries(self, images: torch.Tensor) -> ImageFeatures:
        """The frozen backbone's features (CLS embedding, tapped tokens): the support-independent part."""
        return self.backbone.encode_image(images, layers=self.config.layers)

    @torch.no_grad()
    def score_queries(self, features: ImageFeatures) -> AnomalyOutput:
        """:meth:`score_features` with R = ``test_samples``."""
        return self.score_features(features, self.config.test_samples)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, n_samples: int) -> AnomalyOutput:
        """Score a batch with R = ``n_samples`` Monte-Carlo samples (validation uses fewer)."""
        return self.score_features(self.encode_queries(images), n_samples)

    @torch.no_grad()
    def score_features(self, feats: ImageFeatures, n_samples: int) -> AnomalyOutput:
        """The flows, prompts and heads of a batch's :meth:`encode_queries` features, R = ``n_samples``."""
        if self.category is None:
            raise ValueError(f"{self.name}: call setup_category(<category>) before scoring images")
        n = feats.embedding.shape[0]
        e_ctx, e_n, e_a = self.test_noise(n, n_samples)
        text, _ = self.text_embeddings(feats.embedding, [self.category] * n, e_ctx, e_n, e_a)  # [N, R, 2, B, D]
        text_prob = self.image_logits(feats, text).softmax(dim=2)[:, :, 1].mean(dim=(1, 2))
        pairs = text.permute(0, 1, 3, 2, 4).flatten(1, 2)                              # [N, R*B, 2, D]
        gaps = self.pixel_logit_gaps(feats.tokens, pairs)                              # [N, L, R*B, n]
        raw = torch.stack([self.upsample(gaps[:, l]).mean(1) for l in range(gaps.shape[1])], 1).mean(1)
        if self.config.score_rule == "public":
            map_score = topk_mean(raw, public_topk(self.category))
            score = 0.5 * text_prob + 0.5 * map_score
            self.score_parts.append(torch.stack([text_prob, map_score], dim=1).cpu())
        elif self.config.score_rule == "public_text":
            score = text_prob
        else:
            score = fused_image_score(text_prob, raw, self.config.topk, self.config.text_weight)
        return AnomalyOutput(score, gaussian_blur(raw, self.config.sigma, "reflect" if self.paper else "mirror"))

    def target_statistics(self) -> str | None:
        """``score_rule: public`` is transductive (per-class min-max over the target test images)."""
        if self.config.score_rule != "public":
            return None
        return ("score_rule public: text and map scores min-max normalised per class over all target test "
                "images (uses target-set statistics; for comparison with the paper only)")

    def category_scores(self, scores: torch.Tensor) -> torch.Tensor:
        """``score_rule: public``: :meth:`public_scores` of the category's images; else ``scores``."""
        if self.config.score_rule != "public":
            return scores
        public = self.public_scores()
        if public.shape != scores.shape:
            raise ValueError(f"{self.name}: {len(public)} images recorded since setup_category, {len(scores)} scored")
        return public.to(scores)

    def public_scores(self) -> torch.Tensor:
        """The public code's transductive image scores of every image scored since ``setup_category``
        (``score_rule: public`` only): :func:`public_image_scores` of the recorded parts."""
        if self.config.score_rule != "public" or not self.score_parts:
            raise ValueError(f"{self.name}: public_scores needs score_rule 'public' and scored images")
        parts = torch.cat(self.score_parts)
        return public_image_scores(parts[:, 0], parts[:, 1])


def public_topk(category: str) -> int:
    """The public code's class-name-keyed k: 20 for ``PUBLIC_SMALL_K`` (folder or prompt name), else 2000."""
    return 20 if class_name(category) in {class_name(c) for c in PUBLIC_SMALL_K} else 2000


def public_image_scores(text_prob: torch.Tensor, map_score: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """Public rule over ALL test images of one class (transductive): each part min-max normalised,
    (x - min) / (max - min + 1e-8), then alpha * text + (1 - alpha) * map."""
    def minmax(x: torch.Tensor) -> torch.Tensor:
        return (x - x.min()) / (x.max() - x.min() + 1e-8)

    return alpha * minmax(text_prob) + (1 - alpha) * minmax(map_score)
