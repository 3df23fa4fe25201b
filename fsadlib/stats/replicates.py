"""Bootstrap replicates of one evaluation run, on disk and combined over categories and seeds.

``fsadlib.evaluate`` writes, next to each category's metrics, ``bootstrap_<category>.npz``:

    metrics  [M] str             metric names as in metrics.json (image_auroc ... pixel_aupro)
    values   [M, B] float64      the metric under each of the B shared image resamples
    images   str                 sha1 of the ordered test image list (:func:`image_list_hash`)

Replicates of the same test set are paired by index b across methods, seeds and k (the resamples
depend only on the image list and the bootstrap seed). The category mean of a run at b is the mean
of its categories' replicates at b (NaN propagates, as :func:`fsadlib.evaluate.category_mean`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from fsadlib.io import atomic_path
from fsadlib.stats.bootstrap import bootstrap_image_metrics, bootstrap_pixel_metrics
from fsadlib.stats.intervals import percentile_interval, seed_draws, seed_mean_replicates

#: Replicates per category (name -> [B]); per seed and category (name -> [S, B]).
CategoryReplicates = dict[str, np.ndarray]


def replicates_file(run_dir: str | Path, category: str) -> Path:
    return Path(run_dir) / f"bootstrap_{category}.npz"


def category_replicates(scores: Any, labels: Any, maps: Any, masks: Any, has_masks: bool, counts: np.ndarray,
                        fpr_limit: float, image: bool = True) -> CategoryReplicates:
    """``image_*`` (unless ``image`` is false: not applicable, e.g. every test image anomalous) and, with
    masks, ``pixel_*`` metrics [B] under the resamples ``counts`` [B, N]."""
    out = {f"image_{k}": v for k, v in bootstrap_image_metrics(scores, labels, counts).items()} if image else {}
    if has_masks:
        out |= {f"pixel_{k}": v for k, v in bootstrap_pixel_metrics(maps, masks, counts, fpr_limit).items()}
    return out


def save_replicates(path: str | Path, replicates: CategoryReplicates, images: str) -> None:
    """Write one category's replicates atomically (layout in the module docstring)."""
    names = sorted(replicates)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, metrics=np.array(names, dtype=str), values=np.stack([replicates[n] for n in names]),
                 images=np.array(images))


def read_replicates(path: str | Path) -> tuple[CategoryReplicates, str]:
    """(name -> [B], image-list hash) of a ``bootstrap_<category>.npz``; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no bootstrap replicates (evaluate with evaluate.bootstrap > 0)")
    try:
        with np.load(path) as f:
            return dict(zip(f["metrics"].tolist(), f["values"])), str(f["images"])
    except (OSError, KeyError, ValueError) as err:
        raise ValueError(f"{path}: unreadable bootstrap replicates ({err})") from err


def category_mean_replicates(categories: dict[str, CategoryReplicates]) -> CategoryReplicates:
    """name -> mean over categories at each b ([B] or [S, B]); a metric missing in a category: NaN."""
    names = list(dict.fromkeys(n for c in categories.values() for n in c))
    out = {}
    for name in names:
        shape = next(c[name].shape for c in categories.values() if name in c)
        out[name] = np.mean([c.get(name, np.full(shape, np.nan)) for c in categories.values()], axis=0)
    return out


def intervals(categories: dict[str, CategoryReplicates], confidence: float) -> dict[str, Any]:
    """``{"categories": {cat: {metric: [low, high]}}, "mean": {metric: [low, high]}}`` of one run."""
    def of(reps: CategoryReplicates) -> dict[str, list[float]]:
        return {name: list(percentile_interval(r, confidence)) for name, r in sorted(reps.items())}
    return {"categories": {c: of(r) for c, r in categories.items()}, "mean": of(category_mean_replicates(categories))}


def read_seed_replicates(run_dirs: dict[int, Path], categories: list[str]) -> dict[str, CategoryReplicates]:
    """category -> name -> [S, B] from the runs of seeds ``run_dirs`` (seed -> folder), seeds in the
    given order. ``ValueError`` names the file when a seed's test images or metrics differ."""
    out: dict[str, CategoryReplicates] = {}
    for cat in categories:
        per_seed = [(replicates_file(d, cat), *read_replicates(replicates_file(d, cat))) for d in run_dirs.values()]
        first_path, first, images = per_seed[0]
        for path, reps, other in per_seed[1:]:
            if other != images or sorted(reps) != sorted(first):
                raise ValueError(f"{path}: test images or metrics differ from {first_path}; seeds cannot be paired")
        out[cat] = {name: np.stack([reps[name] for _, reps, _ in per_seed]) for name in first}
    return out


def seed_mean(per_seed: dict[str, CategoryReplicates], seed: int = 0) -> dict[str, CategoryReplicates]:
    """Seed-mean replicates [B] (two-stage bootstrap, :mod:`fsadlib.stats.intervals`) of every category
    and metric from per-seed replicates [S, B]; the seed draws depend only on S, B and ``seed``."""
    some = next((r for c in per_seed.values() for r in c.values()), None)
    if some is None:
        return {c: {} for c in per_seed}
    draws = seed_draws(some.shape[0], some.shape[1], seed)
    return {c: {name: seed_mean_replicates(r, draws) for name, r in reps.items()} for c, reps in per_seed.items()}


def stored_precision(maps: torch.Tensor) -> torch.Tensor:
    """Maps as ``fsadlib.evaluate`` stores them (float16, compared as float32): the bootstrap runs on the
    stored precision, which bounds its distinct scores (module docstring of :mod:`fsadlib.stats.bootstrap`)."""
    return maps.half().float()
