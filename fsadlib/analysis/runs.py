"""Every saved evaluation run as one tidy table, and the seed summary written to reports/summary.json.

A run is a folder ``results/<method>/<dataset>/k<k>/seed<s>/metrics.json`` written by
:func:`fsadlib.evaluate.evaluate`. :func:`load_runs` turns all of them into one long table, one row per

    (method, dataset, k, seed, category, metric) -> value

with the run's evaluation settings (image_size, eval_size, fpr_limit, mask_rule, the image transform
``geometry``, the ``precision`` it ran at), ``random_weights`` (1 when the backbone reported random
weights, :attr:`fsadlib.clip.ClipBackbone.random_weights`) and ``target_statistics`` (how the scores use
target-set statistics, ``""`` for an inductive method) on every row, so no number travels without its
resolution, transform, precision and scoring rule. A metric the run recorded as not applicable to a
category (``not_applicable`` in metrics.json: pixel metrics of an image-level-only set, image metrics of
an all-anomalous one) is a row with value NaN and ``applicable`` 0, so tables show it as n/a rather than
leaving it out. :func:`summarise` reduces it with the one seed aggregation of the workbench,
:func:`fsadlib.aggregate.mean_std` (the one :func:`fsadlib.evaluate.aggregate_seeds` uses too), over

    m_s = mean over categories of the metric in seed s     (NaN propagates: no category is dropped)

and, given the runs' bootstrap intervals (:func:`fsadlib.analysis.compare.interval_table`), adds the
seed-mean percentile interval ``ci_low``, ``ci_high`` and its level ``ci_level``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fsadlib.aggregate import mean_std
from fsadlib.evaluate import _NOT_AVERAGED, METRIC_FAMILIES
from fsadlib.io import read_json, write_json
from fsadlib.layout import run_files
from fsadlib.paths import evaluated_results_dir, reports_dir

RUN_COLUMNS = ["method", "dataset", "k", "seed", "category", "metric", "value",
               "image_size", "eval_size", "fpr_limit", "mask_rule", "geometry", "precision", "random_weights",
               "target_statistics", "applicable"]
#: the run settings every number carries (one value per (method, dataset, k))
SETTINGS = ["image_size", "eval_size", "fpr_limit", "mask_rule", "geometry", "precision", "random_weights",
            "target_statistics"]
NOT_APPLICABLE = "n/a"


def load_runs(root: str | Path | None = None) -> pd.DataFrame:
    """All ``<root>/<method>/<dataset>/k<k>/seed<s>/metrics.json`` (default root: ``results/``) as the
    tidy table of the module docstring, sorted. A file whose recorded run disagrees with its folder
    raises ``ValueError`` naming the file; no run at all gives an empty table with the columns."""
    root = Path(root) if root is not None else evaluated_results_dir()
    rows: list[dict[str, Any]] = []
    for key, path in run_files(root, "metrics.json"):
        content = read_json(path)
        run = content.get("run")
        if not isinstance(run, dict) or "categories" not in content:
            raise ValueError(f"{path}: not an evaluation metrics.json (no 'run' / 'categories')")
        folder = {"method": key.method, "dataset": key.dataset, "k": key.k, "seed": key.seed}
        differ = {key: (run.get(key), val) for key, val in folder.items() if run.get(key) != val}
        if differ:
            raise ValueError(f"{path}: recorded run differs from its folder (recorded, folder): {differ}")
        missing = [key for key in ("random_weights", "geometry", "precision", "target_statistics") if key not in run]
        if missing:
            raise ValueError(f"{path}: no {missing} in its run (written by an older evaluation; rerun it)")
        settings = {key: run[key] for key in SETTINGS} | {"random_weights": int(run["random_weights"]),
                                                          "target_statistics": run["target_statistics"] or ""}
        for category, metrics in content["categories"].items():
            for metric, value in metrics.items():
                if metric not in _NOT_AVERAGED:
                    rows.append(folder | {"category": category, "metric": metric, "value": float(value)} | settings
                                | {"applicable": 1})
            for family in metrics.get("not_applicable", {}):
                rows += [folder | {"category": category, "metric": metric, "value": np.nan} | settings
                         | {"applicable": 0} for metric in METRIC_FAMILIES[family]]
    table = pd.DataFrame(rows, columns=RUN_COLUMNS)
    return table.sort_values(["method", "dataset", "k", "seed", "category", "metric"], ignore_index=True)


def seed_means(runs: pd.DataFrame) -> pd.DataFrame:
    """Category mean of every metric per (method, dataset, k, seed): columns of :data:`RUN_COLUMNS`
    without ``category``. A metric missing in some category of the run (or NaN there) gives NaN, as
    :func:`fsadlib.evaluate.category_mean` does: no category is dropped silently. ``applicable`` is 0
    when the metric is not applicable to any category of the run."""
    keys = ["method", "dataset", "k", "seed"]
    n_categories = runs.groupby(keys)["category"].nunique().rename("n_categories")
    grouped = runs.groupby(keys + ["metric"])
    means = grouped.agg(value=("value", lambda v: v.to_numpy(float).mean()), count=("value", "size"),
                        applicable=("applicable", "max")).reset_index()
    means = means.merge(n_categories.reset_index(), on=keys)
    means.loc[means["count"] < means["n_categories"], "value"] = np.nan
    settings = runs.drop_duplicates(keys)[keys + SETTINGS]
    return means.merge(settings, on=keys)[[c for c in RUN_COLUMNS if c != "category"]]


def summarise(runs: pd.DataFrame, intervals: pd.DataFrame | None = None) -> dict[str, Any]:
    """``{method: {dataset: {"k<k>": {metric: {"mean", "std"[, "ci_low", "ci_high"]}, "eval_size",
    "image_size", "fpr_limit", "geometry", "precision", "n_seeds", "random_weights", "target_statistics"
    (``None``: inductive)[, "ci_level"]}}}}`` over the seeds of each
    (method, dataset, k); intervals (category ``"mean"`` rows of ``intervals``) where given.

    Runs of one (method, dataset, k) with different evaluation settings raise ``ValueError``."""
    ci = {} if intervals is None else {
        (r.method, r.dataset, int(r.k), r.metric): r for r in intervals[intervals["category"] == "mean"].itertuples()}
    summary: dict[str, Any] = {}
    for (method, dataset, k), group in seed_means(runs).groupby(["method", "dataset", "k"], sort=True):
        settings = group[SETTINGS].drop_duplicates()
        if len(settings) > 1:
            raise ValueError(f"{method}/{dataset}/k{k}: seeds evaluated with different settings:\n{settings}")
        entry: dict[str, Any] = {
            "eval_size": int(settings["eval_size"].iloc[0]), "image_size": int(settings["image_size"].iloc[0]),
            "fpr_limit": float(settings["fpr_limit"].iloc[0]), "n_seeds": int(group["seed"].nunique()),
            "geometry": str(settings["geometry"].iloc[0]), "precision": str(settings["precision"].iloc[0]),
            "random_weights": int(settings["random_weights"].iloc[0]),
            "target_statistics": settings["target_statistics"].iloc[0] or None}
        for metric, rows in group.groupby("metric", sort=True):
            if not rows["applicable"].any():
                entry.setdefault("not_applicable", []).append(metric)
                continue
            entry[metric] = mean_std(rows["value"])
            if (method, dataset, k, metric) in ci:
                row = ci[(method, dataset, k, metric)]
                entry[metric] |= {"ci_low": float(row.ci_low), "ci_high": float(row.ci_high)}
                entry["ci_level"] = float(row.confidence)
        summary.setdefault(method, {}).setdefault(dataset, {})[f"k{k}"] = entry
    return summary


def write_summary(runs: pd.DataFrame, path: str | Path | None = None, intervals: pd.DataFrame | None = None
                  ) -> dict[str, Any]:
    """:func:`summarise` ``runs`` (with ``intervals``) and write it atomically (default ``reports/summary.json``)."""
    summary = summarise(runs, intervals)
    write_json(Path(path) if path is not None else reports_dir() / "summary.json", summary)
    return summary


def summary_table(runs: pd.DataFrame, metrics: tuple[str, ...] = ("image_auroc", "pixel_auroc", "pixel_aupro"),
                  replicates: dict | None = None, alpha: float = 0.05) -> pd.DataFrame:
    """One row per (method, dataset, k): ``mean ± std`` (in %) of ``metrics`` over seeds, with the
    evaluation resolution and the seed count; ``n/a`` where the metric is not applicable. With the
    runs' bootstrap ``replicates`` (:func:`fsadlib.analysis.compare.load_replicates`) each cell adds the
    seed-mean interval ``[low, high]`` and a mark: ``*`` the best method of its (dataset, k), ``≈`` not
    significantly different from it (:func:`fsadlib.analysis.compare.tie_marks` at ``alpha``)."""
    from fsadlib.analysis.compare import interval_table, tie_marks

    stats = seed_means(runs)
    stats = stats[stats["metric"].isin(metrics)]
    grouped = stats.groupby(["method", "dataset", "k", "eval_size", "metric"])
    cells = grouped.apply(_cell, include_groups=False)
    if replicates:
        ci = interval_table(replicates).query("category == 'mean'").set_index(["method", "dataset", "k", "metric"])
        marks = {m: tie_marks(replicates, m, alpha) for m in metrics}
        symbol = {"best": " *", "tie": " ≈", "": ""}
        for key in cells.index:
            method, dataset, k, _, metric = key
            if (method, dataset, k, metric) in ci.index and cells[key] != NOT_APPLICABLE:
                low, high = ci.loc[(method, dataset, k, metric), ["ci_low", "ci_high"]]
                cells[key] += f" [{100 * low:.1f}, {100 * high:.1f}]" + symbol[marks[metric].get((method, dataset, k), "")]
    table = cells.unstack("metric").reindex(columns=[m for m in metrics if m in set(stats["metric"])])
    seeds = stats.groupby(["method", "dataset", "k", "eval_size"])["seed"].nunique().rename("seeds")
    return table.join(seeds).reset_index()



def _cell(group: pd.DataFrame) -> str:
    """``mean ± std`` in % of one metric's seed means, or ``n/a`` when it is not applicable."""
    if not group["applicable"].any():
        return NOT_APPLICABLE
    return "{mean:.1f} ± {std:.1f}".format(**mean_std(100 * group["value"].to_numpy(float)))
