"""Training FineGrainedAD: one model per (category, k, shot seed) on that category's k shots only.

Schedule of the public segmentation script (spec B2): all k shots in one batch, one step per epoch,
no augmentation, SGD lr 0.002, momentum 0.9, weight decay 5e-4, cosine to 1e-5, 100 epochs, seed 111.
The k shots never change and the backbone is frozen, so their features (patch tokens and MLSA's
region weights, computed once from the initial prompts as the public code does on its first batch)
are computed once; a step re-encodes only the prompts.

Model selection: none. The model after the fixed epoch count is the model (the public code picks
the epoch with the best TEST pixel-AUROC; that is not done here and no test data is read).

Captions are those of the data set trained on: ``model.captions_dataset`` is set to it (a category
of the same name in another data set never lends its captions); it is not a params.yaml key
(:class:`FineGrainedSection` refuses it).

Files: ``models/finegrained/<dataset>/k<k>/seed<s>/<category>.pt`` (the model, see
:func:`fsadlib.methods.finegrained.model.category_model`) and, beside it, ``<category>/`` with the
resumable ``last.pt``, ``history.json`` and ``train_config.json`` of :func:`fsadlib.train.fit`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from fsadlib import distributed
from fsadlib.config import seed_everything, to_dict
from fsadlib.data.shots import ShotsConfig
from fsadlib.io import load_torch, save_torch
from fsadlib.methods.finegrained.losses import mlsa_loss
from fsadlib.methods.finegrained.model import FineGrainedAD, FineGrainedConfig, model_path
from fsadlib.methods.finegrained.regions import Regions, region_weights
from fsadlib.methods.training import TrainReport
from fsadlib.progress import progress
from fsadlib.protocol import Protocol, shots_record
from fsadlib.tracking import open_live
from fsadlib.train import TrainConfig, fit, input_fingerprint


def _paper_schedule() -> TrainConfig:
    return TrainConfig(epochs=100, steps_per_epoch=1, lr=0.002, optimizer="sgd", momentum=0.9, weight_decay=5e-4,
                       schedule="cosine", min_lr=1e-5, seed=111)


@dataclass(frozen=True)
class FineGrainedSection:
    """The ``finegrained`` section of params.yaml (defaults: the paper). List every ``train`` key in
    params.yaml: a nested section is built from ``TrainConfig``'s own defaults, not the paper's."""

    ks: tuple[int, ...] = (1, 2, 4)      # one model per (target category, k, shot seed)
    model: FineGrainedConfig = field(default_factory=FineGrainedConfig)
    train: TrainConfig = field(default_factory=_paper_schedule)

    def __post_init__(self) -> None:
        if self.model.captions_dataset:
            raise ValueError(f"finegrained.model.captions_dataset ('{self.model.captions_dataset}') is not a "
                             "parameter: the training uses the captions of the data set it trains on (each "
                             "evaluation's target) and records it in the model; remove the key from params.yaml")


def training_batch(method: FineGrainedAD, supports: torch.Tensor, seed: int) -> tuple[dict[str, torch.Tensor],
                                                                                        Regions]:
    """The constant batch: unit patch tokens [k, N, D] and region weights [k, E + 1, N]."""
    cfg = method.config
    with torch.no_grad():
        tokens = method.encode(supports).patch
        levels = method.level_features()
        regions = region_weights(method.fine_tokens(supports), torch.stack([f.pair()[0] for f in levels[2:]]),
                                 levels[1].pair()[0], cfg.region_upscale, cfg.region_boost, cfg.dpc_k_background,
                                 cfg.dpc_k_entity, generator=torch.Generator().manual_seed(seed))
    return {"tokens": tokens, "weights": regions.weights.to(tokens.device)}, regions


def finegrained_loss(method: FineGrainedAD, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """:func:`fsadlib.methods.finegrained.losses.mlsa_loss` of the current prompts on ``batch``."""
    cfg = method.config
    return mlsa_loss(method.level_features(), batch["tokens"], batch["weights"], cfg.n_pro * cfg.n_pro_ab,
                     cfg.logit_scale, cfg.triplet_margin, cfg.match_weight, cfg.reg_weight,
                     triplet_over_tokens=cfg.preset == "paper")


def fit_category(method: FineGrainedAD, category: str, supports: torch.Tensor, train: TrainConfig,
                 final_path: str | Path, desc: str = "finegrained",
                 fingerprint: dict[str, Any] | None = None, trained_on: dict[str, Any] | None = None
                 ) -> list[dict[str, float]]:
    """Set up ``category``, train, write the model to ``final_path``; returns the history.
    ``fingerprint``: the inputs beyond the configs (``fsadlib.train.fit``), checked on resume;
    ``trained_on``: the shots it trains on (:func:`fsadlib.protocol.shots_record`), kept in the checkpoint.
    The model is this rank's alone (``fit(synchronise=False)``): ranks share out the models, not a model."""
    final_path = Path(final_path)
    method.setup_category(category, supports)
    batch, _ = training_batch(method, supports.to(method.device), train.seed)
    result = fit(method, [batch], finegrained_loss, train, final_path.with_suffix(""), desc=desc,
                 fingerprint=fingerprint, leave=False, trained_on=trained_on, synchronise=False)
    save_torch(final_path, load_torch(result.best_path))
    return result.history


def training_preview(section: FineGrainedSection, protocol: Protocol) -> dict[str, Any]:
    """The training data of one model: the k normal shots of the first target category (the first k of
    ``section.ks`` and the first seed of params.yaml ``shots``; FineGrainedAD trains on them alone,
    unaugmented) at the backbone's input size, in [0, 1], with empty masks, for
    :func:`fsadlib.data.figures.training_grid`."""
    from fsadlib.clip.backbone import input_size
    from fsadlib.config import load_section
    from fsadlib.data import load_images, resolve_geometry
    from fsadlib.data.shots import load_shots

    category, k, seed = protocol.target_categories[0], section.ks[0], load_section("shots", ShotsConfig).seeds[0]
    images = load_images(load_shots(protocol.target_dataset, category, k, seed), input_size(section.model.backbone),
                         mean=(0.0,) * 3, std=(1.0,) * 3,
                         geometry=resolve_geometry(protocol.target_dataset, section.model.backbone.geometry))
    return {"image": images, "mask": torch.zeros(len(images), *images.shape[-2:]),
            "title": [f"{category} k{k} seed{seed} shot {i + 1}" for i in range(len(images))]}


def model_config(section: FineGrainedSection, dataset: str) -> FineGrainedConfig:
    """The section's model config with the captions of ``dataset`` (the data set trained on; reported
    as :attr:`TrainReport.derived`)."""
    return dataclasses.replace(section.model, captions_dataset=dataset)


def train_category(dataset: str, category: str, k: int, shot_seed: int, section: FineGrainedSection,
                   root: str | Path | None = None, backbone_model: Any = None) -> list[dict[str, float]]:
    """Train the model of (dataset, category, k, shot seed) from its k-shot file."""
    from fsadlib.data import load_images, resolve_geometry
    from fsadlib.data.shots import load_shots

    seed_everything(section.train.seed)  # the prompt initialisation draws from the global RNG
    method = FineGrainedAD(model_config(section, dataset), backbone_model=backbone_model)
    bb = method.backbone
    supports = load_images(load_shots(dataset, category, k, shot_seed), bb.image_size, mean=bb.mean, std=bb.std,
                           geometry=resolve_geometry(dataset, bb.geometry))
    return fit_category(method, category, supports.to(method.device), section.train,
                        model_path(dataset, category, k, shot_seed, root), desc=f"{category} k{k} s{shot_seed}",
                        fingerprint=category_fingerprint(dataset, category, k, shot_seed, section),
                        trained_on=shots_record(dataset, category, k, shot_seed))


def category_fingerprint(dataset: str, category: str, k: int, shot_seed: int,
                         section: FineGrainedSection) -> dict[str, Any]:
    """What a category's model depends on beyond its configs: which k-shot file, the images it lists
    (by size and modification time) and the content (sha1) of the captions file. Contents, not
    modification times, for the shot and captions files: their stages rewrite them unchanged whenever
    anything of their data set changes, and that must not retrain the model."""
    from fsadlib.captions import captions_path
    from fsadlib.data.shots import load_shots
    from fsadlib.io import file_sha1

    images = load_shots(dataset, category, k, shot_seed)
    captions = captions_path(dataset, category)
    return input_fingerprint(images, dataset=dataset, category=category, k=k, seed=shot_seed, shots=images,
                             captions=file_sha1(captions) if captions.is_file() else "missing")


def train_finegrained(section: FineGrainedSection, protocol: Protocol, *, smoke: bool, out_dir: Path,
                      live_dir: Path) -> TrainReport:
    """Train one model per (target category of ``protocol``, k of ``section.ks``, seed of
    ``shots.seeds``) (the one train signature, :mod:`fsadlib.methods.training`; smoke: the first
    shot seed only, :func:`fsadlib.smoke.first_only`). On W ranks (:mod:`fsadlib.distributed`) rank r
    trains the models r, r + W, ... of that list; every model is trained exactly as in one process
    (its own seed, its own data), so the models do not depend on W; rank 0 gathers the histories and
    writes the DVCLive log.

    A model file with the same method and training configs and the same inputs
    (:func:`category_fingerprint`) is kept (resume; an interrupted model resumes from its ``last.pt``).
    DVCLive (``live_dir``) gets the per-epoch mean loss of the models trained in this call. The history
    has one row per (category, k, seed, epoch) with the loss parts.
    """
    from fsadlib.clip import ClipBackbone
    from fsadlib.config import load_section
    from fsadlib.smoke import first_only

    protocol.check()
    seeds = first_only(load_section("shots", ShotsConfig).seeds, smoke)
    dataset = protocol.target_dataset
    backbone = ClipBackbone(FineGrainedAD.with_paper_precision(section.model).backbone)
    runs = [(c, k, s) for c in protocol.target_categories for k in section.ks for s in seeds]
    mine: dict[int, tuple[list[dict[str, float]], bool]] = {}
    for index in progress(distributed.shard(range(len(runs))), desc="finegrained models",
                          disable=not distributed.is_main()):
        category, k, seed = runs[index]
        records = _kept_history(model_path(dataset, category, k, seed, out_dir), model_config(section, dataset),
                                section.train, category_fingerprint(dataset, category, k, seed, section))
        fresh = records is None
        if fresh:
            records = train_category(dataset, category, k, seed, section, out_dir, backbone)
        mine[index] = (records, fresh)
    done = {i: v for part in distributed.all_gather(mine) for i, v in part.items()}
    history = [{"category": c, "k": k, "seed": s, **rec} for i, (c, k, s) in enumerate(runs) for rec in done[i][0]]
    trained = [done[i][0] for i in range(len(runs)) if done[i][1]]
    models = [model_path(dataset, c, k, s, out_dir) for c, k, s in runs]
    derived = {"captions_dataset": dataset}   # model_config: the captions of the data set trained on
    if not distributed.is_main():
        return TrainReport(pd.DataFrame(history), models, derived)
    with open_live(live_dir) as live:
        live.log_param("models", len(models))
        for epoch in range(max((len(h) for h in trained), default=0)):
            values = [h[epoch]["train_loss"] for h in trained if len(h) > epoch]
            live.log_metric("train_loss", sum(values) / len(values))
            live.next_step()
    return TrainReport(pd.DataFrame(history), models, derived)


def _kept_history(path: Path, model: FineGrainedConfig, train: TrainConfig, fingerprint: dict[str, Any]
                  ) -> list[dict[str, float]] | None:
    """The history of an existing model file trained with these configs and inputs, else None."""
    if not path.is_file():
        return None
    ckpt = load_torch(path)
    extra = ckpt["extra"]
    same = (ckpt["config"] == to_dict(model) and extra.get("train_config") == to_dict(train)
            and extra.get("fingerprint") == fingerprint and len(extra.get("history", [])) == train.epochs
            and bool(extra.get("trained_on")))
    return extra["history"] if same else None
