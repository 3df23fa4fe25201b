"""Published numbers beside ours.

``published.csv`` (next to this file; one row per number, in %) holds what ``shared/research/*.md``
reports, with its source and a ``status``: ``paper abstract`` / ``project page`` (read at the
source) or ``2nd: unverified`` (quoted by a third party; the spec says to check the original table
before treating it as a target). Add a number by adding a row.

:func:`paper_comparison` puts our seed mean ± std (in %) of the same (method, data set, k, metric)
beside each published number: only a data set of ours named as theirs (``mvtec``, ``visa``: the key in
``params.yaml: datasets``) is joined, so numbers on the synthetic default or a user's own set are never
printed beside published MVTec or VisA ones. A ``weights`` column reads ``RANDOM (numbers not
comparable)`` when the backbone had no pretrained weights, and a
``scores`` column that reads ``uses target-set statistics`` for a transductive scoring rule (Bayes-PFL's
``score_rule: public``), ``inductive`` otherwise; ``precision`` and ``geometry`` say how ours were run.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fsadlib.analysis.runs import seed_means

PUBLISHED_CSV = Path(__file__).with_name("published.csv")
PUBLISHED_COLUMNS = ["method", "dataset", "k", "metric", "value", "source", "status"]


def published_table(path: str | Path = PUBLISHED_CSV) -> pd.DataFrame:
    """The published numbers (columns :data:`PUBLISHED_COLUMNS`; ``value`` in %)."""
    table = pd.read_csv(path)
    missing = sorted(set(PUBLISHED_COLUMNS) - set(table.columns))
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    return table[PUBLISHED_COLUMNS]


def paper_comparison(runs: pd.DataFrame, published: pd.DataFrame | None = None,
                     intervals: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per published number that we have a run for (same method, data set, k and metric), with
    our data set (the same), mean and std over seeds in %, seed count, evaluation resolution and weights label, and
    with ``intervals`` (:func:`fsadlib.analysis.compare.interval_table`) our seed-mean interval
    ``ours_ci_low``, ``ours_ci_high`` in % (NaN where a run has no replicates)."""
    published = published_table() if published is None else published
    means = seed_means(runs)
    ours = means[means["applicable"] == 1].groupby(["method", "dataset", "k", "metric", "eval_size", "random_weights",
                                                     "target_statistics", "precision", "geometry"])["value"]
    ours = ours.agg(ours_mean=lambda v: 100 * v.mean(), ours_std=lambda v: 100 * (v.std(ddof=1) if len(v) > 1 else 0.0),
                    seeds="size").reset_index().rename(columns={"dataset": "our_dataset"})
    table = published.rename(columns={"dataset": "paper_dataset", "value": "paper"}).merge(
        ours, left_on=["method", "paper_dataset", "k", "metric"], right_on=["method", "our_dataset", "k", "metric"],
        how="inner")
    table["weights"] = table.pop("random_weights").map({1: "RANDOM (numbers not comparable)", 0: "pretrained"})
    table["scores"] = table.pop("target_statistics").map(lambda t: "uses target-set statistics" if t else "inductive")
    ci = pd.DataFrame(columns=["method", "our_dataset", "k", "metric", "ours_ci_low", "ours_ci_high"])
    if intervals is not None:
        ci = intervals[intervals["category"] == "mean"].rename(columns={"dataset": "our_dataset"})
        ci = ci.assign(ours_ci_low=100 * ci["ci_low"], ours_ci_high=100 * ci["ci_high"])[
            ["method", "our_dataset", "k", "metric", "ours_ci_low", "ours_ci_high"]]
    table = table.merge(ci.astype({"k": int}), on=["method", "our_dataset", "k", "metric"], how="left")
    columns = ["method", "k", "metric", "paper_dataset", "paper", "status", "our_dataset", "ours_mean", "ours_std",
               "ours_ci_low", "ours_ci_high", "seeds", "eval_size", "geometry", "precision", "weights", "scores",
               "source"]
    return table[columns].sort_values(["method", "k", "metric", "paper_dataset", "our_dataset"], ignore_index=True)
