"""Evaluation runner: any method over a data set's test split -> scores, float16 maps, exact metrics.

    result = evaluate(method, "synthetic", k=4, seed=0)        # one (k, seed) run, resumable
    summary = aggregate_seeds(method.name, "synthetic", k=4, seeds=(0, 1, 2))
    summary = evaluate_trained("inctrl", protocol, k=4, seeds=(0, 1, 2))    # trained model(s)
    table = run_plan("inctrl", target="visa")   # a stage evaluate@inctrl-visa: every k of inctrl.ks x shot seed
    results = evaluate_plan([PlannedRun(m1, k=1, seed=0), PlannedRun(m1, k=1, seed=1), ...], "synthetic")

Methods with one model per category (``per_category``, FineGrainedAD) are evaluated with
``category_models``: a callable category -> the method to use for it.

Per category: seed everything with ``seed``, ``method.setup_category(category_key, supports)``
(supports = the k-shot file of (dataset, category, k, seed) for few-shot methods, ``None`` for
zero-shot ones, which run with k = 0), then batches of test images under ``torch.inference_mode``,
normalised with the backbone's own mean and std (as in training). Whether the backbone's weights are
random is recorded as the backbone reports it (``random_weights``), and so is the precision it ran at
(``precision``: ``fp32`` | ``bf16``, :mod:`fsadlib.clip.precision`). The reported image scores are
``method.category_scores(all scores of the category)``: unchanged but for transductive rules such as
Bayes-PFL's ``score_rule: public``, whose ``target_statistics`` text is recorded beside every number
(``None`` for every inductive method). Images, supports and masks go
through one image transform (``geometry``, :mod:`fsadlib.data.geometry`: the method's
``backbone.geometry``, else the data set's ``datasets.<name>.geometry``, else ``resize_crop``), recorded
beside every number with its rule in words (``image_transform``), the resolution and the mask rule.
A plan of several (k, seed) runs (:func:`evaluate_plan`, the evaluate stage's :func:`run_plan`) goes
category by category (:func:`evaluate_category`, the unit of work) and encodes each test image once
for all runs whose models share an encoding (:mod:`fsadlib.encode_once`; ``encode_once``,
``feature_budget_mb``): the results are those of one :func:`evaluate` per run, bit for bit on CPU.
Maps are resized bilinearly (align_corners=False) to the evaluation resolution E (default: the
model input size); masks come at E by ``fsadlib.data.MASK_RULE``. Metrics are the exact ones of
:mod:`fsadlib.metrics`. A metric family that is undefined for a category is *not applicable*, never
computed on a stand-in: pixel metrics when its anomalous images have no masks (image-level-only data
sets; not all-zero masks), image metrics when its test images are all anomalous or all normal
(pixel-only sets such as ISIC or the polyp sets). The category records which, and why, under
``"not_applicable"`` (``{"image" | "pixel": reason}``); the analysis shows those cells as n/a.

Layout (:mod:`fsadlib.layout`; all writes atomic, rewritten after every category so an interrupted
run resumes; the folder is locked by ``fsadlib.io.locked`` while a run writes it, so a second run waits):

    results/<method>/<dataset>/k<k>/seed<s>/
        metrics.json           {"run": settings, E, mask rule, metric definitions, bootstrap settings;
                                "categories": {category: flat metrics}, "mean": category mean,
                                "intervals": {"categories": {category: {metric: [low, high]}},
                                              "mean": {metric: [low, high]}}}
        scores.csv             image_path, category, defect, label, score
        maps_<category>.npz    maps float16 [N, E, E] and image_path [N], in scores.csv order
        bootstrap_<category>.npz   the metrics under the shared image resamples (fsadlib.stats.replicates)
    results/<method>/<dataset>/k<k>/metrics.json      mean +- std over seeds (the rule of
                                                       :func:`fsadlib.aggregate.mean_std`) and the seed-mean
                                                       interval ci_low, ci_high (aggregate_seeds)

Intervals (``evaluate.bootstrap`` > 0): percentile bootstrap over the test images, stratified by label,
pixel metrics resampling whole images, exact for every metric (:mod:`fsadlib.stats.bootstrap`), on the
maps at their stored float16 precision; the seed aggregate adds the support-seed spread (two-stage
bootstrap, :mod:`fsadlib.stats.intervals`).

Several processes (``params.yaml: distributed``, :mod:`fsadlib.distributed`): :func:`run_plan` runs on
every rank and :func:`evaluate_sharded` shares out the categories (rank r takes categories r, r + W,
... of the run's list; a category is the unit of work, so each rank encodes its categories' images
once): each rank evaluates its categories with :func:`evaluate_plan` into its own folder
``<run>/.shards/rank<r>/`` (atomic writes, resumable), then rank 0 moves their maps and bootstrap
files into the run folder and writes metrics.json and scores.csv from their entries
(:func:`merge_shards`), exactly what one process writes: per-category work depends on nothing but
the category (seeded per category), and JSON and CSV round trips are exact. A failing rank stops
every rank before the merge, so the run folder keeps no partial result.

Resume: a category is skipped when metrics.json holds it with the same input hash (method name and
config, trainable weights, the sha1 of the checkpoint file the model was loaded from, the backbone's
weights file (size + mtime), data set, k, seed, evaluation settings, the test images and masks and the
supports by path, size and modification time) and its maps file exists.

Subsets: categories already in the folder but not in this run are kept when they were evaluated with
the same run settings (metrics.json and scores.csv then hold the union); with other settings they are
dropped with their maps files, and a warning says so.

Empty masks: an anomalous test image whose mask has no anomalous pixel at E counts as normal in every
pixel metric. Such images are counted (``n_empty_masks``), listed (``empty_mask_images``) in the
category's entry of metrics.json, and a warning names them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from fsadlib import data, distributed, stats
from fsadlib.aggregate import STD_DDOF, mean_std
from fsadlib.config import as_flag, to_dict
from fsadlib.data.files import files_fingerprint
from fsadlib.encode_once import CategoryRun, Scored, score_category
from fsadlib.io import atomic_path, locked, read_json, write_json
from fsadlib.layout import aggregate_dir, run_dir, seed_name
from fsadlib.methods.base import AnomalyMethod
from fsadlib.metrics import METRIC_DEFINITIONS, image_metrics, legacy_cflow_aupro, pixel_metrics
from fsadlib.progress import Bar, progress
from fsadlib.protocol import Protocol, check_data, check_trained_for, load_protocol
from fsadlib.stats.intervals import percentile_interval
from fsadlib.stats.replicates import (
    category_mean_replicates,
    category_replicates,
    intervals,
    read_replicates,
    read_seed_replicates,
    replicates_file,
    save_replicates,
    seed_mean,
    stored_precision,
)

SCORE_COLUMNS = ["image_path", "category", "defect", "label", "score"]
#: metrics that are not averaged over categories or seeds
_NOT_AVERAGED = {"n_images", "n_anomalous", "image_f1_threshold", "inputs", "n_empty_masks",
                 "empty_mask_images", "not_applicable"}
#: the metrics of each family, as named in metrics.json (what "not applicable" stands for)
METRIC_FAMILIES: dict[str, tuple[str, ...]] = {
    "image": ("image_auroc", "image_ap", "image_f1_max"),
    "pixel": ("pixel_auroc", "pixel_ap", "pixel_f1_max", "pixel_aupro"),
}


@dataclass(frozen=True)
class EvalConfig:
    """``params.yaml: evaluate``."""

    eval_size: int = 0            # evaluation resolution E in pixels; 0 = the model input size
    batch_size: int = 16
    num_workers: int = -1         # DataLoader workers; -1: auto (0 on CPU, else cores up to 8; encode_once)
    fpr_limit: float = 0.3        # AUPRO integration limit
    save_maps: int = 1            # write maps_<category>.npz (float16) for the explorer
    encode_once: int = 1          # encode each test image once for every (k, seed) (0: once per run)
    feature_budget_mb: float = 2048  # encoded features kept per category; above it they stream in chunks
    legacy_aupro: int = 0         # also report the cflow-style 200-threshold AUPRO (comparison only)
    bootstrap: int = 1000         # image resamples for the intervals (fsadlib.stats); 0 = no intervals
    bootstrap_seed: int = 0       # seed of the shared resamples (same for every method and support seed)
    confidence: float = 0.95      # level of the percentile intervals


@dataclass(frozen=True)
class PlannedRun:
    """One (k, seed) of an evaluation plan: ``method`` names the run and gives its config (and its
    model, unless ``category_models(category)`` returns the model of each category); ``out`` is its
    results folder (default :func:`fsadlib.layout.run_dir`)."""

    method: AnomalyMethod
    k: int = 0
    seed: int = 0
    out: Path | None = None
    category_models: Callable[[str], AnomalyMethod] | None = None
    geometry: str | None = None   # the image transform (None: resolve_geometry, see evaluate)
    #: what the model was trained on and how it was selected, recorded with the numbers (None:
    #: ``method.trained_on``, itself None for a model built from a config, training-free)
    trained_on: dict[str, Any] | None = None


def evaluate(method: AnomalyMethod, dataset: str, *, k: int = 0, seed: int = 0,
             config: EvalConfig = EvalConfig(), categories: list[str] | tuple[str, ...] | None = None,
             samples: pd.DataFrame | None = None, out_dir: str | Path | None = None,
             category_models: Callable[[str], AnomalyMethod] | None = None,
             geometry: str | None = None, trained_on: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate ``method`` on the test split of ``dataset`` (``samples`` overrides
    ``fsadlib.data.load_samples(dataset)``, ``categories`` selects); write and return the
    metrics.json content (see the module docstring). ``category_models(category)``, when given,
    returns the model used for that category (``method`` then only names the run and its config).
    ``geometry`` overrides the image transform (default: :func:`fsadlib.data.resolve_geometry` of the
    data set and the backbone's ``geometry``; with ``samples`` given, the backbone's or ``resize_crop``).
    ``trained_on``: see :class:`PlannedRun`. One run of :func:`evaluate_plan`."""
    run = PlannedRun(method, k, seed, Path(out_dir) if out_dir is not None else None, category_models, geometry,
                     trained_on)
    return evaluate_plan([run], dataset, config=config, categories=categories, samples=samples)[0]


def evaluate_plan(runs: list[PlannedRun], dataset: str, *, config: EvalConfig = EvalConfig(),
                  categories: list[str] | tuple[str, ...] | None = None,
                  samples: pd.DataFrame | None = None) -> list[dict[str, Any]]:
    """Evaluate every run of ``runs`` on the test split of ``dataset``, category by category
    (:func:`evaluate_category`: each test image decoded and encoded once for all runs whose models
    share an encoding, :mod:`fsadlib.encode_once`); every run's folder is written as by
    :func:`evaluate` and locked while the plan runs. Returns each run's metrics.json content."""
    for run in runs:
        if run.method.few_shot != (run.k > 0):
            raise ValueError(f"method '{run.method.name}' is {'few' if run.method.few_shot else 'zero'}-shot: "
                             f"{'k >= 1' if run.method.few_shot else 'k = 0'} expected, got k={run.k}")
    table = data.load_samples(dataset) if samples is None else samples
    test = table[table["split"] == "test"]
    if categories is not None:
        test = data.select_categories(test, categories)
    if test.empty:
        raise ValueError(f"dataset '{dataset}' has no test images")
    outs = [run.out if run.out is not None else run_dir(run.method.name, dataset, run.k, run.seed) for run in runs]
    if len(set(outs)) != len(outs):
        raise ValueError(f"two runs of the plan write the same results folder: {[str(o) for o in outs]}")
    geometries = [run_geometry(run, dataset, given_samples=samples is not None) for run in runs]
    with ExitStack() as stack:
        for out in sorted(outs):
            stack.enter_context(locked(out))
        records = [RunRecord(run, out, dataset, test, config, geometry)
                   for run, out, geometry in zip(runs, outs, geometries)]
        names = sorted({r.run.method.name for r in records})
        bar = progress(total=sum(len(rows) for r in records for rows, _, _ in r.todo.values()), unit="img",
                       desc=f"evaluate {'/'.join(names)} {dataset} " + " ".join(f"k{r.run.k}s{r.run.seed}"
                                                                             for r in records))
        for cat in dict.fromkeys(test["category"]):
            evaluate_category(cat, records, config, bar)
        bar.close()
        return [r.write() for r in records]


def run_geometry(run: PlannedRun, dataset: str, given_samples: bool) -> str:
    """The image transform of a run: its own ``geometry``, else :func:`fsadlib.data.resolve_geometry` of
    the data set and the backbone's ``geometry``; for a samples table given directly (no data-set
    setting) the backbone's or ``resize_crop``."""
    backbone = run.method.backbone
    if run.geometry is not None:
        return data.check_geometry(run.geometry, "geometry")
    if not given_samples:
        return data.resolve_geometry(dataset, backbone.geometry)
    return data.check_geometry(backbone.geometry or data.DEFAULT_GEOMETRY, "backbone.geometry")


def evaluate_category(category: str, records: list[RunRecord], config: EvalConfig, bar: Bar | None = None
                      ) -> None:
    """The unit of work of a plan: score ``category`` for every run of ``records`` that has not done
    it yet, from one encoding of its test images (:func:`fsadlib.encode_once.score_category`), and
    record each run's scores, maps and metrics (:meth:`RunRecord.add`)."""
    pending = [r for r in records if category in r.todo]
    if not pending:
        return
    rows = pending[0].todo[category][0]
    runs = [CategoryRun(r.models[category], r.run.seed, r.todo[category][1], r.geometry) for r in pending]
    scored = score_category(category, rows, runs, eval_size=pending[0].eval_size, batch_size=config.batch_size,
                            num_workers=config.num_workers, budget_bytes=int(config.feature_budget_mb * 2**20),
                            encode_once=as_flag(config.encode_once), bar=bar)
    for record, result in zip(pending, scored):
        record.add(category, result)


class RunRecord:
    """The results folder of one run while a plan writes it: what is already done (resume, module
    docstring), the categories still to do with their rows, shots and input hash (``todo``), their
    models (``models``), and the metrics and scores so far; :meth:`add` records a category and
    rewrites the folder's files, :meth:`write` returns the metrics.json content."""

    def __init__(self, run: PlannedRun, out: Path, dataset: str, test: pd.DataFrame, config: EvalConfig,
                 geometry: str) -> None:
        method = run.method
        backbone = method.backbone
        image_size = int(backbone.image_size)
        self.run, self.out, self.dataset, self.config = run, out, dataset, config
        self.eval_size, self.geometry = config.eval_size or image_size, geometry
        settings = run_settings(method, dataset, run.k, run.seed, config, self.eval_size, geometry)
        settings["trained_on"] = run.trained_on if run.trained_on is not None else getattr(method, "trained_on", None)
        previous = read_json(out / "metrics.json") if (out / "metrics.json").is_file() else {}
        done = previous.get("categories", {}) if previous.get("run") == settings else {}
        _drop_stale(out, previous, settings)
        has_scores = bool(done) and (out / "scores.csv").is_file()
        scores = pd.read_csv(out / "scores.csv", keep_default_na=False) if has_scores \
            else pd.DataFrame(columns=SCORE_COLUMNS)
        model_of = run.category_models if run.category_models is not None else (lambda _cat: method)
        self.models: dict[str, AnomalyMethod] = {}
        cats = list(dict.fromkeys(test["category"]))
        # categories of earlier runs with the same settings stay (a subset run adds to them)
        self.result: dict[str, Any] = {"run": settings, "categories": {c: v for c, v in done.items() if c not in cats}}
        self.todo: dict[str, tuple[pd.DataFrame, list[str], str]] = {}
        for cat in cats:
            rows = test[test["category"] == cat].reset_index(drop=True)
            shots = data.load_shots(dataset, cat, run.k, run.seed) if run.k > 0 else []
            model = model_of(cat)
            inputs = _hash([settings, _model_fingerprint(model), rows["image_path"].tolist(), shots,
                            files_fingerprint([*rows["image_path"], *rows["mask_path"], *shots])])
            finished = (done.get(cat, {}).get("inputs") == inputs
                        and (scores["category"] == cat).sum() == len(rows)
                        and (not as_flag(config.save_maps) or (out / f"maps_{cat}.npz").is_file())
                        and (not config.bootstrap or replicates_file(out, cat).is_file()))
            if finished:
                self.result["categories"][cat] = done[cat]
            else:
                self.todo[cat] = (rows, shots, inputs)
                self.models[cat] = model
        self.order = [*(c for c in done if c not in cats), *cats]
        self.scores = scores[scores["category"].isin(list(self.result["categories"]))]

    def add(self, cat: str, scored: Scored) -> None:
        """Record category ``cat`` (its metrics, bootstrap replicates, maps and scores) and rewrite the
        folder's files; the category's model is released."""
        rows, _, inputs = self.todo.pop(cat)
        self.models.pop(cat)
        config, out = self.config, self.out
        pred, maps, masks = scored.scores, scored.maps, scored.masks
        labels = rows["label"].to_numpy()
        has_masks = _has_masks(rows, cat)
        metrics = category_metrics(pred, labels, maps, masks, has_masks, config)
        empty = empty_mask_images(rows, masks) if has_masks else []
        if empty:
            warnings.warn(f"category '{cat}' of '{self.dataset}': {len(empty)} anomalous test image(s) have an "
                          f"empty mask at {self.eval_size} px and count as normal in the pixel metrics, e.g. "
                          f"{empty[:3]} (recorded in {out / 'metrics.json'})", stacklevel=2)
        self.result["categories"][cat] = metrics | {"n_empty_masks": len(empty), "empty_mask_images": empty,
                                                    "inputs": inputs}
        if config.bootstrap:
            paths = rows["image_path"].tolist()
            counts = stats.image_resamples(paths, labels, config.bootstrap, config.bootstrap_seed)
            skip = metrics.get("not_applicable", {})
            save_replicates(replicates_file(out, cat), category_replicates(
                pred, labels, stored_precision(maps), masks, "pixel" not in skip, counts,
                config.fpr_limit, image="image" not in skip), stats.image_list_hash(paths))
        if as_flag(config.save_maps):
            with atomic_path(out / f"maps_{cat}.npz", suffix=".npz") as tmp:
                np.savez(tmp, maps=maps.half().cpu().numpy(), image_path=rows["image_path"].to_numpy(str))
        cat_scores = rows[SCORE_COLUMNS[:-1]].assign(score=pred.numpy())
        self.scores = pd.concat([self.scores, cat_scores], ignore_index=True) if len(self.scores) else cat_scores
        self.write()

    def write(self) -> dict[str, Any]:
        """Write scores.csv and metrics.json (atomically) and return the metrics.json content."""
        return _write(self.out, self.result, self.scores, self.order, self.config)


def run_settings(method: AnomalyMethod, dataset: str, k: int, seed: int, config: EvalConfig, eval_size: int,
                 geometry: str) -> dict[str, Any]:
    """The ``"run"`` entry of a run's metrics.json: everything its numbers depend on besides the inputs."""
    backbone = method.backbone
    return {
        "method": method.name, "dataset": dataset, "k": k, "seed": seed, "image_size": int(backbone.image_size),
        "eval_size": eval_size, "mask_rule": f"{data.MASK_RULE} (M = {eval_size})",
        "map_resize": f"bilinear, align_corners=False, to {eval_size} x {eval_size}",
        "geometry": geometry, "image_transform": data.describe_transform(geometry), "fpr_limit": config.fpr_limit,
        "normalisation": {"mean": list(backbone.mean), "std": list(backbone.std)},
        "random_weights": int(bool(backbone.random_weights)), "precision": backbone.effective_precision(),
        "target_statistics": method.target_statistics(),
        "legacy_aupro": int(as_flag(config.legacy_aupro)), "metric_definitions": METRIC_DEFINITIONS,
        "method_config": to_dict(method.config) if getattr(method, "config", None) is not None else None,
        "bootstrap": {"resamples": config.bootstrap, "seed": config.bootstrap_seed,
                      "confidence": config.confidence, "method": stats.INTERVAL_METHOD} if config.bootstrap else None,
    }


def empty_mask_images(rows: pd.DataFrame, masks: torch.Tensor) -> list[str]:
    """Image paths of the anomalous ``rows`` whose mask (``masks`` [N, E, E], in row order) is all zero."""
    empty = (rows["label"].to_numpy() == 1) & ~masks.flatten(1).any(1).cpu().numpy()
    return rows.loc[empty, "image_path"].astype(str).tolist()


def _drop_stale(out: Path, previous: dict[str, Any], run: dict[str, Any]) -> None:
    """Warn about and delete the maps and bootstrap files of the categories of ``previous``
    (metrics.json content) that were evaluated with other run settings than ``run``."""
    old_run = previous.get("run") or {}
    if old_run == run or not previous.get("categories"):
        return
    differ = sorted(key for key in old_run.keys() | run.keys() if old_run.get(key) != run.get(key))
    warnings.warn(f"{out / 'metrics.json'} holds categories {sorted(previous['categories'])} evaluated with "
                  f"other run settings {differ}; they are dropped with their maps", stacklevel=3)
    for cat in previous["categories"]:
        (out / f"maps_{cat}.npz").unlink(missing_ok=True)
        replicates_file(out, cat).unlink(missing_ok=True)


def load_method(name: str, protocol: Protocol, k: int, seed: int, category: str | None = None,
                device: str | torch.device = "cpu", backbone_model: Any = None,
                params_path: str | Path | None = None, folder: str | None = None) -> AnomalyMethod:
    """The model the evaluation uses for (``protocol``'s evaluation, k, seed[, category]) of method
    ``name`` (of method folder ``folder``, found by the registry when not given): the trained one
    (``AnomalyMethod.load_trained``), refused by :func:`fsadlib.protocol.check_trained_for` unless
    what it was trained on fits ``protocol``; or, for a training-free method, one built from the
    ``model`` field of its params section (no models folder is read)."""
    from fsadlib.methods.registry import entry_class
    from fsadlib.methods.training import load_method_section

    spec, entry = _registered(name, folder)
    cls = entry_class(entry)
    if spec.trainable:
        method = cls.load_trained(protocol, k, seed, category, device, backbone_model)
        check_trained_for(method.trained_on, protocol, method.checkpoint_file, category)
        return method
    return cls(load_method_section(spec, params_path).model, backbone_model=backbone_model).to(device)


def evaluate_trained(name: str, protocol: Protocol, *, k: int = 0, seeds: list[int] | tuple[int, ...] = (0,),
                     config: EvalConfig = EvalConfig(), categories: list[str] | tuple[str, ...] | None = None,
                     device: str | torch.device | None = None, params_path: str | Path | None = None,
                     folder: str | None = None) -> dict[str, Any]:
    """Evaluate method ``name`` (:func:`load_method`) on ``protocol.target_dataset`` for every seed, then
    aggregate over seeds; returns the aggregate (see :func:`aggregate_seeds`). :func:`evaluate_trained_plan`
    of (k, seed)."""
    evaluate_trained_plan(name, protocol, [(k, s) for s in seeds], config=config, categories=categories,
                          device=device, params_path=params_path, folder=folder)
    return aggregate_seeds(name, protocol.target_dataset, k, list(seeds))


def evaluate_trained_plan(name: str, protocol: Protocol, plan: list[tuple[int, int]], *,
                          config: EvalConfig = EvalConfig(),
                          categories: list[str] | tuple[str, ...] | None = None,
                          device: str | torch.device | None = None, params_path: str | Path | None = None,
                          folder: str | None = None) -> list[dict[str, Any]]:
    """Evaluate method ``name`` at every (k, seed) of ``plan`` in one :func:`evaluate_plan` (each test
    image encoded once for all of them). Every model shares the backbone of the first one loaded; a
    model shared by the seeds (one per k or one for all) is loaded once per k; a per-category method
    loads the model of each (category, k, seed), and its results record the shots it was trained on
    (:data:`fsadlib.protocol.TARGET_SHOTS`). On ``protocol.target_dataset``; returns each run's
    metrics.json content."""
    from fsadlib.clip import default_device

    device = torch.device(device) if device is not None else default_device()
    dataset = protocol.target_dataset

    def load(k: int, seed: int, category: str | None = None, backbone: Any = None) -> AnomalyMethod:
        return load_method(name, protocol, k, seed, category, device, backbone, params_path, folder)

    first_k, first_seed = plan[0]
    if _registered(name, folder)[1].per_category:
        categories = list(categories) if categories is not None else \
            list(dict.fromkeys(data.load_samples(dataset)["category"]))
        shared = load(first_k, first_seed, categories[0])
        record = {key: v for key, v in shared.trained_on.items() if key not in ("category", "k", "seed")}
        runs = [PlannedRun(shared, k, s, category_models=lambda cat, k=k, s=s: load(k, s, cat, shared.backbone),
                           trained_on=record) for k, s in plan]
    else:
        shared = load(first_k, first_seed)
        per_k = {k: shared if k == first_k else load(k, first_seed, backbone=shared.backbone)
                 for k in dict.fromkeys(k for k, _ in plan)}
        runs = [PlannedRun(per_k[k], k, s) for k, s in plan]
    return evaluate_sharded(runs, dataset, config=config, categories=categories)


#: folder of a run folder where the ranks of a sharded evaluation write their categories
SHARDS = ".shards"


def evaluate_sharded(runs: list[PlannedRun], dataset: str, *, config: EvalConfig = EvalConfig(),
                     categories: list[str] | tuple[str, ...] | None = None,
                     samples: pd.DataFrame | None = None) -> list[dict[str, Any]]:
    """:func:`evaluate_plan` with the categories shared out over the ranks of the process group (module
    docstring; one process: :func:`evaluate_plan` itself): rank r runs the plan on its categories into
    ``<run>/.shards/rank<r>/`` (each image still encoded once for all runs), rank 0 merges every run.
    Every rank must call it; returns each run's metrics.json content on every rank."""
    world = distributed.world_size()
    if world == 1:
        return evaluate_plan(runs, dataset, config=config, categories=categories, samples=samples)
    table = data.load_samples(dataset) if samples is None else samples
    test = table[table["split"] == "test"]
    test = data.select_categories(test, categories) if categories is not None else test
    cats = list(dict.fromkeys(test["category"]))  # the order evaluate() writes them in
    outs = [Path(r.out) if r.out is not None else run_dir(r.method.name, dataset, r.k, r.seed) for r in runs]
    mine = distributed.shard(cats)
    if mine:
        evaluate_plan([dataclasses.replace(r, out=out / SHARDS / f"rank{distributed.rank()}")
                       for r, out in zip(runs, outs)], dataset, config=config, categories=mine, samples=table)
    distributed.barrier()
    if distributed.is_main():
        parts = {r: distributed.shard(cats, r, world) for r in range(world)}
        for out in outs:
            merge_shards(out, {out / SHARDS / f"rank{r}": c for r, c in parts.items() if c}, cats, config)
    distributed.barrier()
    return [read_json(out / "metrics.json") for out in outs]


def merge_shards(out: Path, parts: dict[Path, list[str]], cats: list[str], config: EvalConfig) -> dict[str, Any]:
    """Write run folder ``out`` from shard folders (``{folder: its categories}``; ``cats``: all of them in
    the run's order, which metrics.json and scores.csv keep): their maps and bootstrap files are moved in, metrics.json and scores.csv hold their entries
    (after the categories ``out`` already held with the same run settings, as :func:`evaluate` keeps
    them; those of other settings are dropped with their files); the shard folders are removed."""
    with locked(out):
        shards = {part: read_json(part / "metrics.json") for part in parts}
        run = next(iter(shards.values()))["run"]
        previous = read_json(out / "metrics.json") if (out / "metrics.json").is_file() else {}
        _drop_stale(out, previous, run)
        kept = {c: v for c, v in previous.get("categories", {}).items() if c not in cats} \
            if previous.get("run") == run else {}
        frames = [pd.read_csv(out / "scores.csv", keep_default_na=False)] \
            if kept and (out / "scores.csv").is_file() else []
        frames = [f[f["category"].isin(list(kept))] for f in frames]
        result: dict[str, Any] = {"run": run, "categories": dict(kept)}
        for part, part_cats in parts.items():
            if shards[part]["run"] != run:
                raise ValueError(f"{part / 'metrics.json'}: run settings differ from {next(iter(parts))}")
            table = pd.read_csv(part / "scores.csv", keep_default_na=False)
            frames.append(table[table["category"].isin(part_cats)])
            for cat in part_cats:
                result["categories"][cat] = shards[part]["categories"][cat]
                for file in (part / f"maps_{cat}.npz", replicates_file(part, cat)):
                    if file.is_file():
                        os.replace(file, out / file.name)
        merged = _write(out, result, pd.concat(frames, ignore_index=True), [*kept, *cats], config)
        shutil.rmtree(out / SHARDS, ignore_errors=True)
    return merged


def _registered(name: str, folder: str | None) -> tuple[Any, Any]:
    """(folder spec, entry) of method ``name``; with ``folder`` given only that folder is imported."""
    from fsadlib.methods.registry import method_spec, spec_of

    spec = method_spec(folder) if folder is not None else spec_of(name)
    entries = [m for m in spec.methods if m.name == name]
    if not entries:
        raise KeyError(f"method folder '{spec.name}' has no method '{name}': {[m.name for m in spec.methods]}")
    return spec, entries[0]


def run_plan(method: str, smoke: bool = False, params_path: str | Path | None = None,
             folder: str | None = None, target: str = "",
             world: distributed.DistributedConfig | None = None) -> pd.DataFrame:
    """The ``evaluate@<method>-<target>`` stage: method ``method`` (of method folder ``folder``; only that
    folder is imported) at every k it is evaluated at (its folder section's ``ks`` when few-shot, 0 when
    zero-shot) x every seed of ``shots``, on the target data set and categories of the evaluation of
    ``target`` (params.yaml ``protocol``; empty: the first), which must exist there (smoke: the
    first k and the first seed, :mod:`fsadlib.smoke`). k = 0 (zero-shot) has no support draw, so it
    runs once, with the first seed. Returns the seed aggregates as a tidy table (k, category, metric,
    mean, std). Runs on the ranks that the ``distributed`` section names (or ``world``;
    :func:`fsadlib.distributed.launch`; default one process, this one), which share out the categories
    (:func:`evaluate_sharded`)."""
    return distributed.launch(_run_plan_rank, method, bool(smoke), params_path, folder, target,
                              config=world if world is not None else distributed.load_config(params_path))


def _run_plan_rank(method: str, smoke: bool, params_path: str | Path | None, folder: str | None,
                   target: str) -> pd.DataFrame:
    """:func:`run_plan` on one rank."""
    from fsadlib.config import load_section
    from fsadlib.methods.training import entry_ks, load_method_section
    from fsadlib.smoke import first_only

    spec, entry = _registered(method, folder)
    section = load_method_section(spec, params_path)
    protocol = check_data(load_protocol(target, params_path), ("target",))
    seeds = first_only(load_section("shots", data.ShotsConfig, params_path).seeds, smoke)
    config = load_section("evaluate", EvalConfig, params_path)
    ks = entry_ks(entry, section, smoke)
    seeds_of = {k: list(seeds if k else seeds[:1]) for k in ks}
    evaluate_trained_plan(method, protocol, [(k, s) for k in ks for s in seeds_of[k]], config=config,
                          categories=protocol.target_categories or None, params_path=params_path, folder=spec.name)
    if not distributed.is_main():  # rank 0 aggregates (evaluate_sharded merged every run)
        return distributed.broadcast(None)
    return distributed.broadcast(pd.concat(
        [aggregate_table(aggregate_seeds(method, protocol.target_dataset, k, seeds_of[k])).assign(k=k) for k in ks],
        ignore_index=True))


def aggregate_table(aggregate: dict[str, Any]) -> pd.DataFrame:
    """A seed aggregate (:func:`aggregate_seeds`) as rows (category, metric, mean, std, ci_low, ci_high;
    the interval NaN without bootstrap replicates); the category mean appears as category ``"mean"``."""
    rows = [{"category": cat, "metric": m, **v}
            for cat, metrics in [*aggregate["categories"].items(), ("mean", aggregate["mean"])]
            for m, v in metrics.items() if m != "not_applicable"]
    return pd.DataFrame(rows, columns=["category", "metric", "mean", "std", "ci_low", "ci_high"])


def category_metrics(scores: torch.Tensor, labels: np.ndarray, maps: torch.Tensor, masks: torch.Tensor,
                     has_masks: bool, config: EvalConfig = EvalConfig()) -> dict[str, float]:
    """Flat metrics of one category: ``image_*`` when its test images hold both labels, ``pixel_*`` when
    its anomalous images have masks; each missing family is named under ``not_applicable`` with why."""
    n_anomalous = int(labels.sum())
    metrics: dict[str, Any] = {"n_images": len(labels), "n_anomalous": n_anomalous}
    not_applicable = data.not_applicable(len(labels), n_anomalous, has_masks)
    if "pixel" not in not_applicable and not masks.any():
        not_applicable["pixel"] = "every mask is empty"
    if "image" not in not_applicable:
        metrics.update({f"image_{k}": v for k, v in image_metrics(scores, labels).items()})
    if "pixel" not in not_applicable:
        metrics.update({f"pixel_{k}": v for k, v in pixel_metrics(maps, masks, config.fpr_limit).items()})
        if as_flag(config.legacy_aupro):
            metrics["pixel_aupro_cflow200_legacy"] = legacy_cflow_aupro(maps, masks,
                                                                        expect_fpr=config.fpr_limit)
    if not_applicable:
        metrics["not_applicable"] = not_applicable
    return metrics


def category_mean(categories: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Mean over categories of every averaged metric (NaN propagates: no category is dropped)."""
    keys = [k for k in dict.fromkeys(k for c in categories.values() for k in c) if k not in _NOT_AVERAGED]
    return {k: float(np.mean([c.get(k, np.nan) for c in categories.values()])) for k in keys}


def aggregate_seeds(method: str, dataset: str, k: int, seeds: list[int] | tuple[int, ...],
                    out_dir: str | Path | None = None) -> dict[str, Any]:
    """Mean and sample std (:func:`fsadlib.aggregate.mean_std`) over seeds of every per-category metric and
    of the category mean, and, when the runs have bootstrap replicates, the percentile interval of the
    seed mean (``ci_low``, ``ci_high``; :func:`fsadlib.stats.replicates.seed_mean`); writes
    ``results/<method>/<dataset>/k<k>/metrics.json`` (``out_dir``
    overrides that folder, which holds the ``seed<s>/`` runs) and returns it.

    The seed runs must share everything but the seed (same categories, resolution, mask rule ...);
    otherwise ``ValueError`` names the first difference."""
    root = Path(out_dir) if out_dir is not None else aggregate_dir(method, dataset, k)
    runs = {s: read_json(root / seed_name(s) / "metrics.json") for s in seeds}
    first = runs[seeds[0]]
    for s, r in runs.items():
        differ = sorted(key for key in r["run"].keys() | first["run"].keys()
                        if key != "seed" and r["run"].get(key) != first["run"].get(key))
        if set(r["categories"]) != set(first["categories"]):
            differ.append("categories")
        if differ:
            raise ValueError(f"seed {s} of {root} differs from seed {seeds[0]} in {differ}")

    cats = {c: {m: mean_std(runs[s]["categories"][c].get(m, np.nan) for s in seeds) for m in first["mean"]}
            for c in first["categories"]}
    for c, metrics in first["categories"].items():
        if "not_applicable" in metrics:
            cats[c]["not_applicable"] = metrics["not_applicable"]
    run = {key: v for key, v in first["run"].items() if key != "seed"} | {"seeds": list(seeds), "std_ddof": STD_DDOF}
    result = {"run": run, "categories": cats,
              "mean": {m: mean_std(runs[s]["mean"][m] for s in seeds) for m in first["mean"]}}
    if first["run"].get("bootstrap"):
        per_seed = read_seed_replicates({s: root / seed_name(s) for s in seeds}, list(first["categories"]))
        seed_means = seed_mean(per_seed, first["run"]["bootstrap"]["seed"])
        confidence = first["run"]["bootstrap"]["confidence"]
        pairs = [*((cats[c], seed_means[c]) for c in cats), (result["mean"], category_mean_replicates(seed_means))]
        for entry, reps in pairs:
            for m, r in reps.items():
                if m in entry:
                    entry[m]["ci_low"], entry[m]["ci_high"] = percentile_interval(r, confidence)
    write_json(root / "metrics.json", result)
    return result


def _write(out: Path, result: dict[str, Any], scores: pd.DataFrame, order: list[str], config: EvalConfig
           ) -> dict[str, Any]:
    result["categories"] = {c: result["categories"][c] for c in order if c in result["categories"]}
    result["mean"] = category_mean(result["categories"])
    if config.bootstrap:
        replicates = {c: read_replicates(replicates_file(out, c))[0] for c in result["categories"]}
        result["intervals"] = intervals(replicates, config.confidence)
    rank = {c: i for i, c in enumerate(order)}
    scores = scores.sort_values("category", key=lambda s: s.map(rank), kind="stable")
    with atomic_path(out / "scores.csv", suffix=".csv") as tmp:
        scores[SCORE_COLUMNS].to_csv(tmp, index=False)
    write_json(out / "metrics.json", result)
    return result


def _has_masks(rows: pd.DataFrame, category: str) -> bool:
    """Whether the anomalous images of a category have masks (all: pixel metrics; none: image only)."""
    anomalous = rows[rows["label"] == 1]
    with_mask = (anomalous["mask_path"].astype(str) != "").sum()
    if 0 < with_mask < len(anomalous):
        raise ValueError(f"category '{category}': {len(anomalous) - with_mask} of {len(anomalous)} anomalous "
                         "test images have no mask; pixel metrics would count their defects as normal")
    return with_mask > 0


def _model_fingerprint(method: AnomalyMethod) -> list[str]:
    """What identifies a model beyond its config: the hash of its trainable state, the sha1 of the
    checkpoint file it was loaded from, and the size + mtime of its backbone's weights file."""
    pretrained = getattr(getattr(method.backbone, "config", None), "pretrained", None)
    weights_file = Path(pretrained).expanduser() if isinstance(pretrained, str) else None
    weights_file = weights_file if weights_file is not None and weights_file.is_file() else ""
    return [_weights_hash(method), getattr(method, "checkpoint_sha1", ""), files_fingerprint([weights_file])]


def _weights_hash(method: AnomalyMethod) -> str:
    """sha1 of the method's trainable state (names, shapes, values); '' when it has none."""
    state = method.trainable_state_dict()
    digest = hashlib.sha1()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        digest.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest() if state else ""


def _hash(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
