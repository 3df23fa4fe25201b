"""Evaluation runner: any method over a data set's test split -> scores, float16 maps, exact metrics.

    result = evaluate(method, "synthetic", k=4, seed=0)        # one (k, seed) run, resumable
    summary = aggregate_seeds(method.name, "synthetic", k=4, seeds=(0, 1, 2))
    summary = evaluate_trained("inctrl", protocol, k=4, seeds=(0, 1, 2))    # trained model(s)
    table = run_plan("inctrl", target="visa")   # a stage evaluate@inctrl-visa: every k of inctrl.ks x shot seed

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

import hashlib
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from fsadlib import data, stats
from fsadlib.aggregate import STD_DDOF, mean_std
from fsadlib.config import as_flag, seed_everything, to_dict
from fsadlib.data.files import files_fingerprint
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
    num_workers: int = 0          # DataLoader workers (image decoding)
    fpr_limit: float = 0.3        # AUPRO integration limit
    save_maps: int = 1            # write maps_<category>.npz (float16) for the explorer
    legacy_aupro: int = 0         # also report the cflow-style 200-threshold AUPRO (comparison only)
    bootstrap: int = 1000         # image resamples for the intervals (fsadlib.stats); 0 = no intervals
    bootstrap_seed: int = 0       # seed of the shared resamples (same for every method and support seed)
    confidence: float = 0.95      # level of the percentile intervals


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
    ``trained_on`` (default ``method.trained_on``): what the model was trained on and how it was
    selected, recorded with the numbers (None: built from a config, training-free)."""
    if method.few_shot != (k > 0):
        raise ValueError(f"method '{method.name}' is {'few' if method.few_shot else 'zero'}-shot: "
                         f"{'k >= 1' if method.few_shot else 'k = 0'} expected, got k={k}")
    table = data.load_samples(dataset) if samples is None else samples
    test = table[table["split"] == "test"]
    if categories is not None:
        test = data.select_categories(test, categories)
    if test.empty:
        raise ValueError(f"dataset '{dataset}' has no test images")
    backbone = method.backbone
    image_size = int(backbone.image_size)
    eval_size = config.eval_size or image_size
    if geometry is not None:
        geometry = data.check_geometry(geometry, "geometry")
    elif samples is None:
        geometry = data.resolve_geometry(dataset, backbone.geometry)
    else:  # a samples table given directly has no data-set setting
        geometry = data.check_geometry(backbone.geometry or data.DEFAULT_GEOMETRY, "backbone.geometry")
    out = Path(out_dir) if out_dir is not None else run_dir(method.name, dataset, k, seed)
    run = {
        "method": method.name, "dataset": dataset, "k": k, "seed": seed, "image_size": image_size,
        "eval_size": eval_size, "mask_rule": f"{data.MASK_RULE} (M = {eval_size})",
        "map_resize": f"bilinear, align_corners=False, to {eval_size} x {eval_size}",
        "geometry": geometry, "image_transform": data.describe_transform(geometry), "fpr_limit": config.fpr_limit,
        "normalisation": {"mean": list(backbone.mean), "std": list(backbone.std)},
        "random_weights": int(bool(backbone.random_weights)), "precision": backbone.effective_precision(),
        "target_statistics": method.target_statistics(),
        "legacy_aupro": int(as_flag(config.legacy_aupro)), "metric_definitions": METRIC_DEFINITIONS,
        "method_config": to_dict(method.config) if getattr(method, "config", None) is not None else None,
        "trained_on": trained_on if trained_on is not None else getattr(method, "trained_on", None),
        "bootstrap": {"resamples": config.bootstrap, "seed": config.bootstrap_seed,
                      "confidence": config.confidence, "method": stats.INTERVAL_METHOD} if config.bootstrap else None,
    }
    with locked(out):
        return _evaluate_locked(method, dataset, k, seed, config, test, out, run, image_size, eval_size,
                                category_models)


def _evaluate_locked(method: AnomalyMethod, dataset: str, k: int, seed: int, config: EvalConfig,
                     test: pd.DataFrame, out: Path, run: dict[str, Any], image_size: int, eval_size: int,
                     category_models: Callable[[str], AnomalyMethod] | None) -> dict[str, Any]:
    """The body of :func:`evaluate`, run while ``out`` is locked."""
    backbone, geometry = method.backbone, run["geometry"]
    previous = read_json(out / "metrics.json") if (out / "metrics.json").is_file() else {}
    done = previous.get("categories", {}) if previous.get("run") == run else {}
    _drop_stale(out, previous, run)
    has_scores = bool(done) and (out / "scores.csv").is_file()
    scores = pd.read_csv(out / "scores.csv", keep_default_na=False) if has_scores \
        else pd.DataFrame(columns=SCORE_COLUMNS)
    model_of = category_models if category_models is not None else (lambda _cat: method)
    models: dict[str, AnomalyMethod] = {}
    cats = list(dict.fromkeys(test["category"]))
    # categories of earlier runs with the same settings stay (a subset run adds to them)
    result: dict[str, Any] = {"run": run, "categories": {c: v for c, v in done.items() if c not in cats}}
    todo = {}
    for cat in cats:
        rows = test[test["category"] == cat].reset_index(drop=True)
        shots = data.load_shots(dataset, cat, k, seed) if k > 0 else []
        models[cat] = model_of(cat)
        inputs = _hash([run, _model_fingerprint(models[cat]), rows["image_path"].tolist(), shots,
                        files_fingerprint([*rows["image_path"], *rows["mask_path"], *shots])])
        finished = (done.get(cat, {}).get("inputs") == inputs
                    and (scores["category"] == cat).sum() == len(rows)
                    and (not as_flag(config.save_maps) or (out / f"maps_{cat}.npz").is_file())
                    and (not config.bootstrap or replicates_file(out, cat).is_file()))
        if finished:
            result["categories"][cat] = done[cat]
        else:
            todo[cat] = (rows, shots, inputs)
    order = [*(c for c in done if c not in cats), *cats]
    scores = scores[scores["category"].isin(list(result["categories"]))]

    bar = progress(total=sum(len(rows) for rows, _, _ in todo.values()), unit="img",
                   desc=f"evaluate {method.name} {dataset} k{k} seed{seed}")
    for cat, (rows, shots, inputs) in todo.items():
        seed_everything(seed)
        model = models[cat].eval()
        supports = data.load_images(shots, image_size, backbone.mean, backbone.std, geometry).to(model.device) \
            if shots else None
        with torch.inference_mode():
            model.setup_category(cat, supports)
            loader = DataLoader(data.AnomalyDataset(rows, image_size, mask_size=eval_size, mean=backbone.mean,
                                                    std=backbone.std, geometry=geometry),
                                batch_size=config.batch_size, num_workers=config.num_workers)
            pred, maps, masks = predict(model, loader, eval_size, bar)
            pred = model.category_scores(pred)
        has_masks = _has_masks(rows, cat)
        metrics = category_metrics(pred, rows["label"].to_numpy(), maps, masks, has_masks, config)
        empty = empty_mask_images(rows, masks) if has_masks else []
        if empty:
            warnings.warn(f"category '{cat}' of '{dataset}': {len(empty)} anomalous test image(s) have an empty "
                          f"mask at {eval_size} px and count as normal in the pixel metrics, e.g. {empty[:3]} "
                          f"(recorded in {out / 'metrics.json'})", stacklevel=2)
        result["categories"][cat] = metrics | {"n_empty_masks": len(empty), "empty_mask_images": empty,
                                               "inputs": inputs}
        if config.bootstrap:
            paths = rows["image_path"].tolist()
            counts = stats.image_resamples(paths, rows["label"].to_numpy(), config.bootstrap, config.bootstrap_seed)
            skip = metrics.get("not_applicable", {})
            save_replicates(replicates_file(out, cat), category_replicates(
                pred, rows["label"].to_numpy(), stored_precision(maps), masks, "pixel" not in skip, counts,
                config.fpr_limit, image="image" not in skip), stats.image_list_hash(paths))
        if as_flag(config.save_maps):
            with atomic_path(out / f"maps_{cat}.npz", suffix=".npz") as tmp:
                np.savez(tmp, maps=maps.half().cpu().numpy(), image_path=rows["image_path"].to_numpy(str))
        cat_scores = rows[SCORE_COLUMNS[:-1]].assign(score=pred.numpy())
        scores = pd.concat([scores, cat_scores], ignore_index=True) if len(scores) else cat_scores
        _write(out, result, scores, order, config)
    bar.close()
    return _write(out, result, scores, order, config)


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
    """Evaluate method ``name`` (:func:`load_method`) on ``protocol.target_dataset`` for every seed,
    then aggregate over seeds; returns the aggregate (see :func:`aggregate_seeds`). A model shared by
    the seeds (one per k or one for all) is loaded once; a per-category method loads the model of each
    (category, seed), and its results record the shots it was trained on (:data:`fsadlib.protocol.TARGET_SHOTS`)."""
    from fsadlib.clip import default_device

    device = torch.device(device) if device is not None else default_device()
    dataset = protocol.target_dataset

    def load(seed: int, category: str | None = None, backbone: Any = None) -> AnomalyMethod:
        return load_method(name, protocol, k, seed, category, device, backbone, params_path, folder)

    if _registered(name, folder)[1].per_category:
        cats = list(categories) if categories is not None else \
            list(dict.fromkeys(data.load_samples(dataset)["category"]))
        shared = load(seeds[0], cats[0])
        record = {key: v for key, v in shared.trained_on.items() if key not in ("category", "seed")}
        for seed in seeds:
            evaluate(shared, dataset, k=k, seed=seed, config=config, categories=cats,
                     category_models=lambda cat, s=seed: load(s, cat, shared.backbone), trained_on=record)
    else:
        model = load(seeds[0])
        for seed in seeds:
            evaluate(model, dataset, k=k, seed=seed, config=config, categories=categories)
    return aggregate_seeds(name, dataset, k, list(seeds))


def _registered(name: str, folder: str | None) -> tuple[Any, Any]:
    """(folder spec, entry) of method ``name``; with ``folder`` given only that folder is imported."""
    from fsadlib.methods.registry import method_spec, spec_of

    spec = method_spec(folder) if folder is not None else spec_of(name)
    entries = [m for m in spec.methods if m.name == name]
    if not entries:
        raise KeyError(f"method folder '{spec.name}' has no method '{name}': {[m.name for m in spec.methods]}")
    return spec, entries[0]


def run_plan(method: str, smoke: bool = False, params_path: str | Path | None = None,
             folder: str | None = None, target: str = "") -> pd.DataFrame:
    """The ``evaluate@<method>-<target>`` stage: method ``method`` (of method folder ``folder``; only that
    folder is imported) at every k it is evaluated at (its folder section's ``ks`` when few-shot, 0 when
    zero-shot) x every seed of ``shots``, on the target data set and categories of the evaluation of
    ``target`` (params.yaml ``protocol``; empty: the first), which must exist there (smoke: the
    first k and the first seed, :mod:`fsadlib.smoke`). k = 0 (zero-shot) has no support draw, so it
    runs once, with the first seed. Returns the seed aggregates as a tidy table (k, category, metric,
    mean, std)."""
    from fsadlib.config import load_section
    from fsadlib.methods.training import entry_ks, load_method_section
    from fsadlib.smoke import first_only

    spec, entry = _registered(method, folder)
    section = load_method_section(spec, params_path)
    protocol = check_data(load_protocol(target, params_path), ("target",))
    seeds = first_only(load_section("shots", data.ShotsConfig, params_path).seeds, smoke)
    config = load_section("evaluate", EvalConfig, params_path)
    frames = []
    for k in entry_ks(entry, section, smoke):
        agg = evaluate_trained(method, protocol, k=k, seeds=seeds if k else seeds[:1], config=config,
                               categories=protocol.target_categories or None, params_path=params_path,
                               folder=spec.name)
        frames.append(aggregate_table(agg).assign(k=k))
    return pd.concat(frames, ignore_index=True)


def aggregate_table(aggregate: dict[str, Any]) -> pd.DataFrame:
    """A seed aggregate (:func:`aggregate_seeds`) as rows (category, metric, mean, std, ci_low, ci_high;
    the interval NaN without bootstrap replicates); the category mean appears as category ``"mean"``."""
    rows = [{"category": cat, "metric": m, **v}
            for cat, metrics in [*aggregate["categories"].items(), ("mean", aggregate["mean"])]
            for m, v in metrics.items() if m != "not_applicable"]
    return pd.DataFrame(rows, columns=["category", "metric", "mean", "std", "ci_low", "ci_high"])


def predict(method: AnomalyMethod, loader: DataLoader, eval_size: int, bar: Bar | None = None
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run ``method`` over ``loader`` (items of ``fsadlib.data.AnomalyDataset``): scores [N] float32
    (CPU), maps [N, E, E] float32 resized bilinearly to E and masks [N, E, E] bool, both on the
    method's device (so the metrics run there)."""
    scores, maps, masks = [], [], []
    for batch in loader:
        out = method(batch["image"].to(method.device))
        amap = out.anomaly_map.float()
        if amap.shape[-2:] != (eval_size, eval_size):
            amap = F.interpolate(amap[:, None], size=(eval_size, eval_size), mode="bilinear",
                                 align_corners=False)[:, 0]
        scores.append(out.pred_score.float().cpu())
        maps.append(amap)
        masks.append(batch["mask"].to(amap.device) > 0.5)
        if bar is not None:
            bar.update(len(amap))
    return torch.cat(scores), torch.cat(maps), torch.cat(masks)


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
