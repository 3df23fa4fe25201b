"""FineGrainedAD (Pattern Recognition 2026): MFSC captions + MLLP prompts + MLSA alignment, few-shot.

One model per (category, k, shot seed), trained on that category's k normal shots only.

Features (spec B1.1), B images, N = g x g patches, D joint width, Cv vision width:
- patch tokens v [B, N, D]: the value-value path from block 1 to the last block
  (``encode_image(vv_from=1, vv_layers=[last])``) -> ln_post -> proj -> L2-normalised;
- global g [B, D]: pooled CLS -> proj, L2-normalised;
- memory tokens [B, N, Cv]: raw original-path tokens after blocks ``memory_layers`` (3 and 8), L2-normalised.

Inference (spec B1.5), with the C = E + 2 level pairs (n_c, a_c) of :meth:`text_pairs` (image
caption, background, entities; each the normalised mean of its normal / abnormal prompt features):
- routing: c*(v) = argmax_c <v, n_c> (replaces the public code's QueryFormer, see the README);
- text map  T(v) = softmax(s * [<v, n_c*>, <v, a_c*>])[1], s = ``logit_scale`` (raw, ~4.6);
- visual map V(v) = mean over memory layers of min_j (1 - cos(v_l, bank_l[j])) / 2 (k-shot bank);
- map = GaussianBlur_sigma(bilinear(H(T, V))) with H the harmonic mean (on the patch grid);
- image score = H(T(g) routed the same way, max_patches V).

``preset: paper`` switches on the public code's behaviours: the triplet loss summed over the token
axis (:mod:`fsadlib.methods.finegrained.losses`), one handcrafted abnormal caption per entity and
N(0, 1) attribute weights (:mod:`fsadlib.methods.finegrained.prompts`), the public per-class defect
vocabulary (:mod:`fsadlib.methods.finegrained.vocabulary`), and scipy's default ``reflect`` borders for
the Gaussian (the public evaluation's ``gaussian_filter``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from fsadlib.captions import Captions, load_captions
from fsadlib.clip import BackboneConfig
from fsadlib.io import load_torch
from fsadlib.layout import category_model_file, model_dir
from fsadlib.maps import gaussian_blur, harmonic_mean, nearest_distance, to_map
from fsadlib.methods.base import AnomalyMethod, check_preset, load_checkpoint
from fsadlib.methods.finegrained.prompts import (
    LevelFeatures,
    MultiLevelPrompts,
    PromptTable,
    build_texts,
    prepare_table,
)
from fsadlib.methods.finegrained.vocabulary import defect_phrases
from fsadlib.methods.output import AnomalyOutput
from fsadlib.protocol import Protocol


def _paper_backbone() -> BackboneConfig:
    return BackboneConfig(arch="ViT-B-16-plus-240", pretrained="laion400m_e32", image_size=240)


@dataclass(frozen=True)
class FineGrainedConfig:
    backbone: BackboneConfig = field(default_factory=_paper_backbone)
    #: the data set whose captions (``data/captions/<captions_dataset>/``) the model uses: set by the
    #: training to the data set it trains on and kept in the checkpoint; never a params.yaml key
    #: (:class:`~fsadlib.methods.finegrained.train.FineGrainedSection` refuses it); "" = none yet
    captions_dataset: str = ""
    memory_layers: tuple[int, ...] = (3, 8)
    n_ctx: int = 4
    n_pro: int = 1
    n_ctx_ab: int = 1
    n_pro_ab: int = 4
    ctx_init_std: float = 0.02
    logit_scale: float = 4.6052
    triplet_margin: float = 1.0
    match_weight: float = 0.001
    reg_weight: float = 1.0
    region_upscale: int = 4
    region_boost: float = 1.5
    dpc_k_background: int = 8
    dpc_k_entity: int = 5
    sigma: float = 2.4
    prompt_seed: int = 111
    caption_levels: tuple[int, ...] = (1, 2, 3)  # ablation: the MFSC levels whose content is used
    preset: str = "workbench"                    # paper = the public code's losses, texts, init, blur

    @property
    def paper(self) -> bool:
        return self.preset == "paper"

    def __post_init__(self) -> None:
        check_preset(self.preset, "finegrained")
        for key in ("n_ctx", "n_pro", "n_ctx_ab", "n_pro_ab", "region_upscale"):
            if getattr(self, key) < 1:
                raise ValueError(f"finegrained.{key} must be >= 1, got {getattr(self, key)}")
        if not self.memory_layers:
            raise ValueError("finegrained.memory_layers must name at least one block")
        if not set(self.caption_levels) <= {1, 2, 3}:
            raise ValueError(f"finegrained.caption_levels must be a subset of [1, 2, 3], got {self.caption_levels}")


@dataclass
class Encoded:
    patch: torch.Tensor          # [B, N, D] unit norm V-V patch tokens
    embedding: torch.Tensor      # [B, D] unit norm global feature
    memory: list[torch.Tensor]   # per memory layer [B, N, Cv] unit norm


class FineGrainedAD(AnomalyMethod):
    name = "finegrained"
    Config = FineGrainedConfig
    few_shot = True
    per_category = True
    category_attributes = ("category", "memory", "captions", "captions_locked", "table", "_pairs")
    # paper_precision stays fp32: the public code runs fp16 (PromptAD's), which is not offered, and the
    # equivalence with the public formulas (tests/reference) is proven in fp32

    @classmethod
    def load_trained(cls, protocol: Protocol, k: int, seed: int, category: str | None = None,
                     map_location: str | torch.device = "cpu", backbone_model: Any = None) -> FineGrainedAD:
        """The evaluation's entry point: :func:`category_model` of (the target data set, category, k,
        seed) under :meth:`training_dir` of ``protocol``."""
        if category is None:
            raise ValueError("finegrained trains one model per category: a category is required")
        return category_model(protocol.target_dataset, category, k, seed, map_location, backbone_model,
                              root=cls.training_dir(protocol))

    def __init__(self, config: FineGrainedConfig, backbone_model: Any = None) -> None:
        super().__init__(config, backbone_model)
        c = config
        self.prompts = MultiLevelPrompts(self.backbone.text_width, c.n_ctx, c.n_pro, c.n_ctx_ab, c.n_pro_ab,
                                         c.ctx_init_std, randn_attribute_logits=c.paper)
        self.captions: Captions | None = None
        self.captions_locked = False
        self.table: PromptTable | None = None
        self.memory: list[torch.Tensor] = []
        self._pairs: torch.Tensor | None = None

    # -- per-category set-up ------------------------------------------------------------------
    def set_captions(self, captions: Captions, locked: bool = False) -> None:
        """Use ``captions`` (``locked``: they came with a trained checkpoint, no other category)."""
        self.captions, self.captions_locked = captions, locked
        budget = self.backbone.context_length - 2 - self.prompts.budget_tokens
        texts = build_texts(captions, self.config.prompt_seed, tuple(self.config.caption_levels),
                            one_abnormal_per_entity=self.config.paper,
                            phrases=defect_phrases(captions, self.config.paper))
        self.table = prepare_table(self.backbone, texts, budget)
        self._pairs = None

    def setup_category(self, category_key: str, supports: torch.Tensor | None = None) -> None:
        """Prepare the category's prompts and k-shot memory bank; ``supports`` [k, 3, S, S] normals.

        A model loaded with its captions (:func:`load_finegrained`) accepts only its own category key;
        otherwise ``category_key`` names the caption file ``data/captions/<captions_dataset>/<key>.json``
        (the captions carry the category's class name); without ``captions_dataset`` (a model not built
        by the training) the captions must be given with :meth:`set_captions`.
        """
        if supports is None:
            raise ValueError("finegrained is few-shot: setup_category needs the k support images")
        self.setup_category_encoded(category_key, self.encode_supports(supports))

    @torch.no_grad()
    def encode_support(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Support images [B, 3, S, S] -> their unit-norm memory tokens per memory layer [B, N, Cv]
        (:meth:`encode`'s ``memory``, without the V-V path, which never changes them)."""
        feats = self.backbone.encode_image(images, layers=self.config.memory_layers)
        return [F.normalize(t, dim=-1) for t in feats.tokens]

    def setup_category_encoded(self, category_key: str, support_features: list[torch.Tensor]) -> None:
        """:meth:`setup_category` from the k supports' memory tokens per memory layer [k, N, Cv]
        (:meth:`encode_support` rows): the captions' prompts and the memory bank [k * N, Cv] per layer."""
        own = self.captions is not None and category_key == self.captions.category
        if not own:
            if self.captions_locked:
                raise ValueError(f"this finegrained model was trained for category "
                                 f"'{self.captions.category}', not '{category_key}'")
            if not self.config.captions_dataset:
                raise ValueError(f"finegrained: no captions for category '{category_key}': the model names no "
                                 "captions_dataset (the training sets it to the data set it trains on); "
                                 "call set_captions or load a trained model")
            captions = load_captions(self.config.captions_dataset, category_key)
            if captions.dataset != self.config.captions_dataset:
                raise ValueError(f"captions of '{category_key}' under data/captions/{self.config.captions_dataset}/ "
                                 f"describe data set '{captions.dataset}', not finegrained.captions_dataset "
                                 f"'{self.config.captions_dataset}'")
            self.set_captions(captions)
        self.memory = [m.reshape(-1, m.shape[-1]) for m in support_features]
        self.category = self.captions.category

    def train(self, mode: bool = True) -> FineGrainedAD:
        super().train(mode)
        self._pairs = None  # text features change with the prompts
        return self

    # -- features -----------------------------------------------------------------------------
    def encode(self, images: torch.Tensor) -> Encoded:
        bb = self.backbone
        feats = bb.encode_image(images, layers=self.config.memory_layers, vv_from=1, vv_layers=[bb.num_layers])
        return Encoded(patch=F.normalize(bb.project_tokens(feats.vv_tokens[0]), dim=-1),
                       embedding=F.normalize(feats.embedding, dim=-1),
                       memory=[F.normalize(t, dim=-1) for t in feats.tokens])

    def fine_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """MLSA's fine grid: resize to u*S (bicubic), encode the u x u crops of S, reassemble:
        [k, 3, S, S] -> [k, (u g)^2, D] unit-norm V-V tokens, row-major over the fine grid."""
        u, s = self.config.region_upscale, self.backbone.image_size
        g, _ = self.backbone.grid
        k = images.shape[0]
        big = F.interpolate(images.float(), size=(u * s, u * s), mode="bicubic", align_corners=False)
        crops = big.unfold(2, s, s).unfold(3, s, s).permute(0, 2, 3, 1, 4, 5).reshape(k * u * u, 3, s, s)
        patch = self.encode(crops.contiguous()).patch
        d = patch.shape[-1]
        return patch.view(k, u, u, g, g, d).permute(0, 1, 3, 2, 4, 5).reshape(k, (u * g) ** 2, d)

    def level_features(self) -> list[LevelFeatures]:
        """Features of every level (image, background, entities); differentiable in the prompts."""
        if self.table is None:
            raise RuntimeError("finegrained: call setup_category (or set_captions) first")
        return self.prompts.encode(self.backbone, self.table)

    def text_pairs(self) -> torch.Tensor:
        """[C, 2, D] (normal, abnormal) per level; cached in eval mode."""
        if self._pairs is not None and not self.training:
            return self._pairs
        with torch.no_grad():
            pairs = torch.stack([f.pair() for f in self.level_features()])
        if not self.training:
            self._pairs = pairs
        return pairs

    # -- inference ----------------------------------------------------------------------------
    def text_scores(self, x: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """P(abnormal) of unit features x [..., D] routed to the level of most similar normal text."""
        sims = x @ pairs.flatten(0, 1).T  # [..., 2C]: (n_0, a_0, n_1, a_1, ...)
        sims = sims.view(*x.shape[:-1], -1, 2)
        route = sims[..., 0].argmax(-1, keepdim=True)
        chosen = torch.gather(sims, -2, route[..., None].expand(*route.shape, 2)).squeeze(-2)
        return (self.config.logit_scale * chosen).softmax(-1)[..., 1]

    # -- encode once, score many (fsadlib.methods.base) -------------------------------------------
    def encode_queries(self, images: torch.Tensor) -> Encoded:
        """The frozen image features (:meth:`encode`); the learned prompts only enter the scoring."""
        return self.encode(images)

    def score_queries(self, enc: Encoded) -> AnomalyOutput:
        """The inference of the module docstring against the current prompts and k-shot bank."""
        if not self.memory:
            raise RuntimeError("finegrained: call setup_category(category, supports) before forward")
        pairs = self.text_pairs()
        text = self.text_scores(enc.patch, pairs)  # [B, N]
        visual = torch.stack([nearest_distance(q, bank) for q, bank in zip(enc.memory, self.memory)]).mean(0)
        patch = harmonic_mean(text, visual)
        amap = gaussian_blur(to_map(patch, self.backbone.grid, self.backbone.image_size), self.config.sigma,
                             "reflect" if self.config.paper else "mirror")
        score = harmonic_mean(self.text_scores(enc.embedding, pairs), visual.amax(1))
        return AnomalyOutput(score, amap)

    # -- checkpoints --------------------------------------------------------------------------
    def checkpoint(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Adds the captions and the MLLP texts, so the checkpoint reloads with no caption file."""
        ckpt = super().checkpoint(extra)
        if self.captions is not None:
            ckpt["extra"] = {**ckpt["extra"], "captions": self.captions.to_json(),
                             "texts": self.table.texts.to_json()}
        return ckpt


def model_path(dataset: str, category: str, k: int, seed: int, root: str | Path | None = None) -> Path:
    """``models/finegrained/<dataset>/k<k>/seed<seed>/<category>.pt`` (``root`` replaces ``models/finegrained``)."""
    return category_model_file(root if root is not None else model_dir("finegrained"), dataset, category, k, seed)


def load_finegrained(path: str | Path, map_location: str | torch.device = "cpu",
                     backbone_model: Any = None) -> FineGrainedAD:
    """A trained model with the captions it was trained with (locked to that category)."""
    method = load_checkpoint(path, map_location, backbone_model)
    extra = load_torch(path).get("extra", {})
    if "captions" in extra:
        method.set_captions(Captions.from_json(extra["captions"], where=str(path)), locked=True)
    return method


def category_model(dataset: str, category: str, k: int, seed: int, map_location: str | torch.device = "cpu",
                   backbone_model: Any = None, root: str | Path | None = None) -> FineGrainedAD:
    """The evaluation runner's entry point: the trained model of (dataset, category, k, seed).

    Then ``m.setup_category(category, supports)`` with the same k-shot supports and ``m(images)``.
    """
    path = model_path(dataset, category, k, seed, root if root is not None else model_dir("finegrained", trained=True))
    if not path.is_file():
        raise FileNotFoundError(f"no finegrained model for {dataset}/{category} k={k} seed={seed}: {path} "
                                "(run the train_finegrained stage)")
    return load_finegrained(path, map_location, backbone_model)
