"""Intervals, paired comparisons, tie marks and rankings from the saved runs' bootstrap replicates.

:func:`load_replicates` reads, for every (method, dataset, k) evaluated with ``evaluate.bootstrap`` > 0,
the per-seed replicates [S, B] of every category and metric (``bootstrap_<category>.npz``, written by
:func:`fsadlib.evaluate.evaluate`) and the point values of metrics.json. Resamples are shared by
every run of one test set, so two methods pair by resample index b (:mod:`fsadlib.stats.intervals`).

Paired comparison of methods A and B at one (dataset, k), over their common support seeds s:

    D = mean_s (m_A(s) - m_B(s))                              the point difference
    D*_b = seed mean (two-stage, shared draws) of m*_A(s, b) - m*_B(s, b)

with the interval and two-sided p-value of :mod:`fsadlib.stats.intervals`; for the category mean,
D*_b is averaged over categories. Image AUROC adds DeLong's test per seed on the same images; over
seeds, z = mean_s d_s / sqrt(mean_s Var_s), conservative for the mean difference given the support
draws (Var(mean_s d_s) <= mean_s Var_s for any correlation between seeds). P-values of the categories
of one (dataset, k, pair, metric) are Holm-corrected together.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fsadlib.io import read_json
from fsadlib.paths import evaluated_results_dir
from fsadlib.stats import bootstrap_p_value, delong, holm, percentile_interval, z_test
from fsadlib.stats.intervals import seed_draws, seed_mean_replicates
from fsadlib.stats.ranking import Ranking, rank_methods
from fsadlib.stats.replicates import category_mean_replicates, read_seed_replicates, seed_mean

_RUN_DIR = re.compile(r"k(?P<k>\d+)/seed(?P<seed>\d+)")
COMPARISON_COLUMNS = ["dataset", "k", "method_a", "method_b", "category", "metric", "difference", "ci_low",
                      "ci_high", "p_bootstrap", "p_bootstrap_holm", "p_delong", "p_delong_holm", "significant"]


@dataclass(frozen=True)
class RunReplicates:
    """One (method, dataset, k): seeds in order, category -> metric -> replicates [S, B] and point
    values [S], the run folders by seed, the bootstrap seed and confidence level."""

    method: str
    dataset: str
    k: int
    seeds: tuple[int, ...]
    values: dict[str, dict[str, np.ndarray]]
    estimates: dict[str, dict[str, np.ndarray]]
    images: dict[str, str]
    dirs: dict[int, Path]
    bootstrap_seed: int
    confidence: float


def load_replicates(root: str | Path | None = None) -> dict[tuple[str, str, int], RunReplicates]:
    """Every (method, dataset, k) under ``root`` (default ``results/``) whose runs have bootstrap
    replicates; runs of one (method, dataset, k) must share their bootstrap settings (``ValueError``
    naming the folder otherwise)."""
    root = Path(root) if root is not None else evaluated_results_dir()
    groups: dict[tuple[str, str, int], dict[int, tuple[Path, dict]]] = {}
    for path in sorted(root.glob("*/*/k*/seed*/metrics.json")):
        where = _RUN_DIR.fullmatch("/".join(path.parts[-3:-1]))
        content = read_json(path)
        if where is None or not (content.get("run") or {}).get("bootstrap"):
            continue
        key = (path.parts[-5], path.parts[-4], int(where["k"]))
        groups.setdefault(key, {})[int(where["seed"])] = (path.parent, content)
    out = {}
    for (method, dataset, k), seeds in groups.items():
        order = sorted(seeds)
        settings = {s: seeds[s][1]["run"]["bootstrap"] for s in order}
        if len({str(v) for v in settings.values()}) > 1:
            raise ValueError(f"{root / method / dataset / f'k{k}'}: seeds use different bootstrap settings {settings}")
        categories = list(seeds[order[0]][1]["categories"])
        dirs = {s: seeds[s][0] for s in order}
        values = read_seed_replicates(dirs, categories)
        estimates = {c: {m: np.array([seeds[s][1]["categories"][c].get(m, np.nan) for s in order], dtype=float)
                         for m in values[c]} for c in categories}
        images = {c: str(np.load(dirs[order[0]] / f"bootstrap_{c}.npz")["images"]) for c in categories}
        first = settings[order[0]]
        out[(method, dataset, k)] = RunReplicates(method, dataset, k, tuple(order), values, estimates, images, dirs,
                                                  int(first["seed"]), float(first["confidence"]))
    return out


def interval_table(replicates: dict[tuple[str, str, int], RunReplicates]) -> pd.DataFrame:
    """Seed-mean percentile intervals: columns method, dataset, k, category (``"mean"`` = category
    mean), metric, ci_low, ci_high, confidence."""
    rows = []
    for (method, dataset, k), run in sorted(replicates.items()):
        per_category = seed_mean(run.values, run.bootstrap_seed)
        for category, reps in [*per_category.items(), ("mean", category_mean_replicates(per_category))]:
            for metric, r in sorted(reps.items()):
                low, high = percentile_interval(r, run.confidence)
                rows.append({"method": method, "dataset": dataset, "k": k, "category": category, "metric": metric,
                             "ci_low": low, "ci_high": high, "confidence": run.confidence})
    return pd.DataFrame(rows, columns=["method", "dataset", "k", "category", "metric", "ci_low", "ci_high",
                                       "confidence"])


def _paired(a: RunReplicates, b: RunReplicates) -> tuple[list[int], list[int], list[str]]:
    """Indices of the common seeds in a and b, and the common categories (same test images)."""
    common = sorted(set(a.seeds) & set(b.seeds))
    categories = [c for c in a.values if c in b.values]
    for c in categories:
        if a.images[c] != b.images[c]:
            raise ValueError(f"{a.method} and {b.method} ({a.dataset}, k{a.k}, {c}) were evaluated on different "
                             "test images; they cannot be paired")
    return [a.seeds.index(s) for s in common], [b.seeds.index(s) for s in common], categories


def _difference_replicates(a: RunReplicates, b: RunReplicates, ia: list[int], ib: list[int], category: str,
                           metric: str) -> np.ndarray:
    """Seed-mean replicates [B] of m_A - m_B on the common seeds (shared seed draws)."""
    diff = a.values[category][metric][ia] - b.values[category][metric][ib]
    return seed_mean_replicates(diff, seed_draws(diff.shape[0], diff.shape[1], a.bootstrap_seed))


def _delong_over_seeds(a: RunReplicates, b: RunReplicates, category: str, scores: dict[Path, pd.DataFrame]
                       ) -> float:
    """DeLong p-value of the seed-mean image-AUROC difference (module docstring); NaN if undefined.
    ``scores``: scores.csv tables by run folder, read on first use."""
    differences, variances = [], []
    for seed in sorted(set(a.seeds) & set(b.seeds)):
        for d in (a.dirs[seed], b.dirs[seed]):
            if d not in scores:
                scores[d] = pd.read_csv(d / "scores.csv", keep_default_na=False)
        sa, sb = scores[a.dirs[seed]], scores[b.dirs[seed]]
        sa, sb = sa[sa["category"] == category], sb[sb["category"] == category]
        merged = sa.merge(sb, on="image_path", suffixes=("_a", "_b"), validate="one_to_one")
        if len(merged) != len(sa) or len(merged) != len(sb):
            raise ValueError(f"{a.dirs[seed]} and {b.dirs[seed]}: scores.csv of {category} hold different images")
        labels = merged["label_a"].to_numpy()
        if labels.sum() < 2 or (1 - labels).sum() < 2:
            return float("nan")
        result = delong(np.stack([merged["score_a"].to_numpy(float), merged["score_b"].to_numpy(float)]), labels)
        differences.append(result.auc[0] - result.auc[1])
        variances.append(result.covariance[0, 0] + result.covariance[1, 1] - 2 * result.covariance[0, 1])
    return z_test(float(np.mean(differences)), float(np.mean(variances))).p if differences else float("nan")


def paired_comparisons(replicates: dict[tuple[str, str, int], RunReplicates], metrics: tuple[str, ...] | None = None,
                       alpha: float = 0.05) -> pd.DataFrame:
    """Every pair of methods evaluated at the same (dataset, k) with common seeds: one row per category
    (and ``"mean"``) and metric (columns :data:`COMPARISON_COLUMNS`; differences in metric units).
    ``significant``: Holm-corrected bootstrap p < ``alpha`` (the category mean is one test, uncorrected)."""
    rows: list[dict] = []
    scores: dict[Path, pd.DataFrame] = {}
    keys = sorted(replicates)
    for (ka, kb) in itertools.combinations(keys, 2):
        a, b = replicates[ka], replicates[kb]
        if (a.dataset, a.k) != (b.dataset, b.k):
            continue
        ia, ib, categories = _paired(a, b)
        if not ia:
            continue
        names = [m for m in a.values[categories[0]] if m in b.values[categories[0]]] if categories else []
        for metric in [m for m in names if metrics is None or m in metrics]:
            block = []
            mean_reps = []
            for category in categories:
                reps = _difference_replicates(a, b, ia, ib, category, metric)
                mean_reps.append(reps)
                point = float(np.mean(a.estimates[category][metric][ia] - b.estimates[category][metric][ib]))
                p_delong = _delong_over_seeds(a, b, category, scores) if metric == "image_auroc" else float("nan")
                block.append((category, point, reps, p_delong))
            block_p = holm([bootstrap_p_value(r) for _, _, r, _ in block])
            delong_p = holm([p for *_, p in block])
            for (category, point, reps, p_delong), p_holm, p_delong_holm in zip(block, block_p, delong_p):
                rows.append(_row(a, b, category, metric, point, reps, p_delong, p_holm, p_delong_holm, alpha))
            reps = np.mean(mean_reps, axis=0)
            point = float(np.mean([p for _, p, _, _ in block]))
            p = bootstrap_p_value(reps)
            rows.append(_row(a, b, "mean", metric, point, reps, float("nan"), p, float("nan"), alpha))
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def _row(a: RunReplicates, b: RunReplicates, category: str, metric: str, point: float, reps: np.ndarray,
         p_delong: float, p_holm: float, p_delong_holm: float, alpha: float) -> dict:
    low, high = percentile_interval(reps, a.confidence)
    return {"dataset": a.dataset, "k": a.k, "method_a": a.method, "method_b": b.method, "category": category,
            "metric": metric, "difference": point, "ci_low": low, "ci_high": high,
            "p_bootstrap": bootstrap_p_value(reps), "p_bootstrap_holm": p_holm, "p_delong": p_delong,
            "p_delong_holm": p_delong_holm, "significant": bool(p_holm < alpha)}


def tie_marks(replicates: dict[tuple[str, str, int], RunReplicates], metric: str, alpha: float = 0.05
              ) -> dict[tuple[str, str, int], str]:
    """(method, dataset, k) -> ``"best"`` for the highest category mean of ``metric`` at its (dataset, k),
    ``"tie"`` when the paired bootstrap (category mean, common seeds) cannot tell it from the best at
    ``alpha`` after Holm's correction over the methods compared with the best, else ``""``."""
    marks: dict[tuple[str, str, int], str] = {}
    by_setting: dict[tuple[str, int], list[RunReplicates]] = {}
    for run in replicates.values():
        by_setting.setdefault((run.dataset, run.k), []).append(run)
    for runs in by_setting.values():
        runs = [r for r in runs if all(metric in c for c in r.values.values())]
        if not runs:
            continue
        means = [float(np.mean([r.estimates[c][metric].mean() for c in r.estimates])) for r in runs]
        best = runs[int(np.nanargmax(means))]
        others = [r for r in runs if r is not best]
        p_values = []
        for other in others:
            ib, io, categories = _paired(best, other)
            reps = np.mean([_difference_replicates(best, other, ib, io, c, metric) for c in categories], axis=0) \
                if ib else np.array([np.nan])
            p_values.append(bootstrap_p_value(reps))
        marks[(best.method, best.dataset, best.k)] = "best"
        for other, p in zip(others, holm(p_values)):
            marks[(other.method, other.dataset, other.k)] = "tie" if not p < alpha else ""
    return marks


def ranking_table(runs: pd.DataFrame, k: int, metric: str) -> pd.DataFrame:
    """Blocks (dataset, category) x methods: ``metric`` averaged over seeds, at ``k``, from
    :func:`fsadlib.analysis.load_runs`."""
    rows = runs[(runs["k"] == k) & (runs["metric"] == metric)]
    return rows.groupby(["dataset", "category", "method"])["value"].mean().unstack("method")


def rankings(runs: pd.DataFrame, metric: str) -> dict[int, Ranking]:
    """k -> Friedman + Nemenyi ranking (:func:`fsadlib.stats.ranking.rank_methods`) over every
    (dataset, category) block, for each k with at least 3 methods and 2 complete blocks."""
    out = {}
    for k in sorted(runs["k"].unique()):
        table = ranking_table(runs, int(k), metric)
        if table.shape[1] >= 3 and len(table.dropna()) >= 2:
            out[int(k)] = rank_methods(table)
    return out
