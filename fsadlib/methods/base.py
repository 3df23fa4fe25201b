"""Base class of every method, and checkpoint save/load.

Life cycle of a method during evaluation (``fsadlib.evaluate`` drives it)::

    method = fsadlib.methods.create("inctrl", **params)          # or load_checkpoint(path)
    method.setup_category("pcb1", supports)                      # category KEY; text + support caches
    out = method(images)                                         # AnomalyOutput

Encode once, score many. ``forward(images) = score_queries(encode_queries(images))``:
``encode_queries`` is the part of the forward that depends on neither the category nor k nor the
shot seed (the frozen backbone's features, and what a method computes from them alone); ``score_queries``
is the rest, which uses the per-category state ``setup_category`` left on the method (text features,
support features, trained prompts). The evaluation (:mod:`fsadlib.evaluate`) encodes each test image of
a category once and scores the features for every (k, seed) of its plan, switching between the
runs' states with :meth:`AnomalyMethod.category_state` / :meth:`AnomalyMethod.restore_category_state`
(the attributes named by ``category_attributes``). Runs whose models give the same
:meth:`AnomalyMethod.encoding_key` share one encoding. A method that does not split its forward keeps
the defaults: its "features" are the images themselves and ``score_queries`` is its forward.

Supports likewise. A few-shot method that implements ``encode_support(images)`` (the frozen encoder's
features of a batch of :data:`SUPPORT_CHUNK` support images) and ``setup_category_encoded(key,
features)`` has ``setup_category(key, supports) = setup_category_encoded(key, encode_supports(supports))``.
:meth:`AnomalyMethod.encode_supports` is the one canonical support encoding: the k images in chunks
of :data:`SUPPORT_CHUNK`, the last chunk zero-padded to full size, padding rows dropped, so image j
of a k-shot list is always encoded at slot j % 8 of a batch of 8. On a CPU a row's features are then
bit-identical whatever the other rows of its batch hold (same batch shape, same slot: the same
kernels over the same operands), so the evaluation (:mod:`fsadlib.encode_once`) encodes each
distinct (support image, slot) of a category once for all its (k, seed) runs and gives each run
exactly the features its own ``setup_category`` would compute.

``setup_category`` always takes the category key (the data set's folder name, ``"pcb1"``), in
training, validation and evaluation alike; the text a method encodes uses :meth:`AnomalyMethod.display_name`
of it (``"printed circuit board"``), derived in that one place. ``supports`` is ``None`` for zero-shot methods, else a ``[k, 3, S, S]`` tensor of normal images
read from a k-shot file. Per-category caches (text embeddings, support features) are plain
attributes, never registered buffers, so they stay out of checkpoints.

A checkpoint holds only what is not the frozen backbone (trainable parameters and the method's own
buffers) plus the full method config (which includes the backbone config: arch, pretrained tag or
file, image size, QuickGELU flag), so it reloads with no other input.

Precision (``backbone.precision``, :mod:`fsadlib.clip.precision`): ``auto`` under ``preset: paper``
means the public code's precision, the class's ``paper_precision`` (``fp32`` for every method;
FineGrainedAD's public code runs fp16, which is not offered, so its paper precision stays fp32 and
``bf16`` is an explicit choice); the method's config then
says so explicitly (and so does its checkpoint). ``auto`` under ``workbench``: bf16 on CUDA, fp32 elsewhere.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from fsadlib.config import from_dict, to_dict
from fsadlib.features import cat_rows, take_rows
from fsadlib.io import file_sha1, load_torch, save_torch
from fsadlib.methods.output import AnomalyOutput

if TYPE_CHECKING:
    from fsadlib.protocol import Protocol

CHECKPOINT_FORMAT = 1
#: support images per forward of the canonical support encoding (:meth:`AnomalyMethod.encode_supports`):
#: [k, 3, S, S] is encoded as ceil(k / 8) batches [8, 3, S, S], the last one zero-padded, so image j
#: always sits at slot j % 8 of batch j // 8 (its features are then the same bits in every k-shot list
#: that holds it at that slot; module docstring)
SUPPORT_CHUNK = 8
#: ``workbench`` = the corrected behaviour (default); ``paper`` = the public code's, quirks included
PRESETS = ("workbench", "paper")


def check_preset(preset: str, section: str) -> None:
    """``ValueError`` naming ``<section>.preset`` unless ``preset`` is one of :data:`PRESETS`."""
    if preset not in PRESETS:
        raise ValueError(f"{section}.preset must be one of {PRESETS}, got {preset!r}")


def same_backbone(backbone_model: Any, wanted: Any) -> bool:
    """Whether a built backbone can serve a method whose backbone config is ``wanted``: the same config,
    where ``precision`` only has to mean the same on the backbone's device (``auto`` is ``fp32`` on CPU,
    so one CPU backbone serves a workbench and a ``paper`` preset method alike)."""
    from fsadlib.clip.precision import effective_precision

    built, asked = to_dict(backbone_model.config), to_dict(wanted)
    precisions = built.pop("precision", None), asked.pop("precision", None)
    if built != asked:
        return False
    if precisions[0] == precisions[1]:
        return True
    device = getattr(backbone_model, "device", torch.device("cpu"))
    return None not in precisions and effective_precision(precisions[0], device) == effective_precision(precisions[1], device)


class AnomalyMethod(nn.Module, ABC):
    """Common interface. Subclasses set ``name``, ``Config`` and implement the two hooks."""

    name: ClassVar[str] = ""
    Config: ClassVar[type]
    #: needs k normal support images per category at test time (as declared in the folder's spec)
    few_shot: ClassVar[bool] = False
    #: one trained model per (dataset, category, k, seed) (FineGrainedAD); else one per (k) at most
    per_category: ClassVar[bool] = False
    #: category key -> prompt class name table of :meth:`display_name` (None: fsadlib.prompts.CLASS_NAMES)
    class_names: ClassVar[dict[str, str] | None] = None
    #: the attributes ``setup_category`` sets: the per-(category, k, seed) state ``score_queries`` reads
    category_attributes: ClassVar[tuple[str, ...]] = ("category",)
    #: what ``backbone.precision: auto`` means under ``preset: paper`` (the public code's precision)
    paper_precision: ClassVar[str] = "fp32"

    def __init__(self, config: Any, backbone_model: Any = None) -> None:
        super().__init__()
        from fsadlib.clip import build_backbone

        config = self.with_paper_precision(config)
        self.config = config
        if backbone_model is None:
            backbone_model = build_backbone(config.backbone)
        elif not same_backbone(backbone_model, config.backbone):
            raise ValueError(f"shared backbone {to_dict(backbone_model.config)} does not match "
                             f"the method's backbone config {to_dict(config.backbone)}")
        self.backbone = backbone_model
        self.backbone.requires_grad_(False)
        self.category: str | None = None
        #: sha1 of the checkpoint file this method was loaded from ('' when built from a config)
        self.checkpoint_sha1 = ""
        #: that file ('' when built from a config)
        self.checkpoint_file = ""
        #: what the loaded model was trained on and how it was selected (checkpoint ``extra["trained_on"]``,
        #: :meth:`fsadlib.protocol.Protocol.training_record`); None when built from a config
        self.trained_on: dict[str, Any] | None = None

    @classmethod
    def with_paper_precision(cls, config: Any) -> Any:
        """``config`` with ``backbone.precision`` = ``paper_precision`` when it says ``preset: paper`` and
        ``precision: auto``; else ``config`` unchanged (module docstring)."""
        if getattr(config, "preset", None) != "paper" or config.backbone.precision != "auto":
            return config
        return dataclasses.replace(config, backbone=dataclasses.replace(config.backbone,
                                                                        precision=cls.paper_precision))

    # -- hooks ------------------------------------------------------------------------------
    @abstractmethod
    def setup_category(self, category_key: str, supports: torch.Tensor | None = None) -> None:
        """Prepare per-category caches (text embeddings of ``display_name(category_key)``, support
        features). Few-shot methods raise ``ValueError`` when ``supports`` is ``None``.
        """

    @classmethod
    def display_name(cls, category_key: str) -> str:
        """The class name a method writes into its prompts for a category key: the one rule,
        :func:`fsadlib.prompts.class_name` with the method's ``class_names`` table."""
        from fsadlib.prompts import class_name

        return class_name(category_key, cls.class_names)

    def forward(self, images: torch.Tensor) -> AnomalyOutput:
        """``images`` [B, 3, S, S] (CLIP-normalised) -> :class:`AnomalyOutput`:
        ``score_queries(encode_queries(images))``. A method overrides either this or both halves."""
        return self.score_queries(self.encode_queries(images))

    # -- encode once, score many (module docstring) ---------------------------------------------
    def encode_queries(self, images: torch.Tensor) -> Any:
        """The support-independent features of a batch ``images`` [B, 3, S, S] (any structure of
        tensors with the batch first). Default: the images themselves (a method that does not split)."""
        return images

    def score_queries(self, features: Any) -> AnomalyOutput:
        """:class:`AnomalyOutput` of a batch from its :meth:`encode_queries` features and the state of
        the last ``setup_category``. Default: ``forward(features)`` (features = images)."""
        if type(self).forward is AnomalyMethod.forward:
            raise NotImplementedError(f"{type(self).__name__} implements neither forward nor score_queries")
        return self(features)

    def encoding_key(self) -> tuple:
        """Models with equal keys return equal :meth:`encode_queries` features for the same images, so
        one encoding serves them all: the images themselves for a method that does not split; else the
        method class, the backbone object and the method config (the features of a split method come
        from the frozen backbone under its config; a method whose features also pass its trained
        modules adds ``id(self)``)."""
        if type(self).encode_queries is AnomalyMethod.encode_queries:
            return ("images",)
        return self.frozen_key()

    def frozen_key(self) -> tuple:
        """What features computed by the frozen backbone alone depend on: the method class, the
        backbone object and the method config."""
        return (type(self).__qualname__, id(self.backbone), repr(to_dict(self.config)))

    # -- supports: one canonical encoding, shared by every (k, seed) of a plan (module docstring) -------
    @property
    def encodes_supports(self) -> bool:
        """Whether this few-shot method implements :meth:`encode_support` and
        :meth:`setup_category_encoded`, so a plan can encode each distinct support image of a category
        once (:mod:`fsadlib.encode_once`); zero-shot methods never do."""
        return self.few_shot and type(self).encode_support is not AnomalyMethod.encode_support

    def encode_support(self, images: torch.Tensor) -> Any:
        """The features the category state keeps of a batch of support images [SUPPORT_CHUNK, 3, S, S]:
        a structure of tensors with the images first (:mod:`fsadlib.features`), computed by the frozen
        backbone only (models with equal :meth:`support_key` give equal features). Called by
        :meth:`encode_supports` only, always on a full chunk."""
        raise NotImplementedError(f"{type(self).__name__} does not encode its supports apart")

    def support_key(self) -> tuple:
        """Models with equal keys give equal :meth:`encode_support` features (default :meth:`frozen_key`)."""
        return self.frozen_key()

    def encode_supports(self, supports: torch.Tensor) -> Any:
        """The canonical support encoding (module docstring) of ``supports`` [k, 3, S, S], k >= 1:
        :meth:`encode_support` of each chunk of :data:`SUPPORT_CHUNK` images, the last one padded with
        zero images, the real rows of every chunk joined along dim 0 (:func:`fsadlib.features.cat_rows`):
        the structure of one chunk with k rows."""
        parts = []
        for start in range(0, supports.shape[0], SUPPORT_CHUNK):
            chunk = supports[start:start + SUPPORT_CHUNK]
            n = chunk.shape[0]
            if n < SUPPORT_CHUNK:
                chunk = torch.cat([chunk, chunk.new_zeros(SUPPORT_CHUNK - n, *chunk.shape[1:])])
            parts.append(take_rows(self.encode_support(chunk), slice(0, n)))
        return cat_rows(parts)

    def setup_category_encoded(self, category_key: str, support_features: Any) -> None:
        """:meth:`setup_category` from the supports' :meth:`encode_supports` features (k rows) instead
        of their images; a method that implements :meth:`encode_support` implements this too, and its
        ``setup_category(key, supports)`` is ``setup_category_encoded(key, encode_supports(supports))``."""
        raise NotImplementedError(f"{type(self).__name__} does not set a category up from encoded supports")

    def category_state(self) -> dict[str, Any]:
        """The per-category state ``setup_category`` left (``category_attributes``), by reference."""
        return {name: getattr(self, name, None) for name in self.category_attributes}

    def restore_category_state(self, state: dict[str, Any]) -> None:
        """Make ``state`` (from :meth:`category_state`) the current one again."""
        for name, value in state.items():
            setattr(self, name, value)

    def target_statistics(self) -> str | None:
        """How the image scores use statistics of the target test set (``None``: they do not, the
        default). A method that says how is *transductive*: the evaluation labels its numbers with this
        text (``run.target_statistics`` in metrics.json and the summary)."""
        return None

    def category_scores(self, scores: torch.Tensor) -> torch.Tensor:
        """The image scores [N] reported for all N test images of the current category, given the
        per-batch ``pred_score`` values [N] in order (default: unchanged; a transductive rule rescales)."""
        return scores

    @classmethod
    def training_dir(cls, protocol: Protocol) -> Path:
        """Where the training stage of ``protocol``'s evaluation leaves its models:
        ``models/<folder>/<target>/trained_on_<aux>/`` (:func:`fsadlib.layout.training_dir`, read side)."""
        from fsadlib.layout import training_dir
        from fsadlib.methods.registry import spec_of

        return training_dir(spec_of(cls.name).name, protocol.aux_dataset, protocol.target_dataset, trained=True)

    @classmethod
    def trained_path(cls, protocol: Protocol, k: int, seed: int, category: str | None = None) -> Path:
        """Where the training stage leaves the model the evaluation uses (default:
        ``<training_dir>/final.pt``; methods with per-k or per-category models override this)."""
        return cls.training_dir(protocol) / "final.pt"

    @classmethod
    def load_trained(cls, protocol: Protocol, k: int, seed: int, category: str | None = None,
                     map_location: str | torch.device = "cpu", backbone_model: Any = None) -> AnomalyMethod:
        """The trained model of (``protocol``'s evaluation, k, seed[, category]) from :meth:`trained_path`."""
        path = cls.trained_path(protocol, k, seed, category)
        if not path.is_file():
            from fsadlib.methods.registry import spec_of

            stage = f"train_{spec_of(cls.name).name}@{protocol.target_dataset}"
            raise FileNotFoundError(f"no trained {cls.name} model at {path} (run its {stage} stage: dvc repro "
                                    f"pipelines/{spec_of(cls.name).name}/dvc.yaml:{stage})")
        return load_checkpoint(path, map_location, backbone_model)

    # -- helpers ----------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.backbone.device

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("backbone.")]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Everything in ``state_dict`` outside the frozen backbone."""
        return {k: v.detach().cpu() for k, v in self.state_dict().items() if not k.startswith("backbone.")}

    def checkpoint(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "method": self.name,
            "config": to_dict(self.config),
            "state_dict": self.trainable_state_dict(),
            "extra": extra or {},
        }

    def save_checkpoint(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Atomically write trainable state + configs to ``path``."""
        return save_torch(path, self.checkpoint(extra))

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load a :meth:`trainable_state_dict`; missing or unexpected keys raise ``KeyError``."""
        own = set(self.trainable_state_dict())
        missing, unexpected = sorted(own - set(state)), sorted(set(state) - own)
        if missing or unexpected:
            raise KeyError(f"{self.name} checkpoint mismatch: missing {missing}, unexpected {unexpected}")
        self.load_state_dict(state, strict=False)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                    backbone_model: Any = None) -> AnomalyMethod:
    """Rebuild a method from a checkpoint written by :meth:`AnomalyMethod.save_checkpoint`
    (read with ``weights_only=True``); ``method.checkpoint_sha1`` records the file's sha1."""
    from fsadlib.methods.registry import method_class

    path = Path(path)
    ckpt = load_torch(path, map_location)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not an fsadlib checkpoint (format {CHECKPOINT_FORMAT})")
    cls = method_class(ckpt["method"])
    method = cls(from_dict(cls.Config, ckpt["config"], f"{path}: config"), backbone_model=backbone_model)
    try:
        method.load_trainable_state(ckpt["state_dict"])
    except KeyError as err:
        raise KeyError(f"{path}: {err.args[0]}") from err
    method.checkpoint_sha1 = file_sha1(path)
    method.checkpoint_file = str(path)
    method.trained_on = (ckpt.get("extra") or {}).get("trained_on")
    return method.to(map_location)
