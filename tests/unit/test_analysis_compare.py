"""Intervals, paired comparisons, tie marks and rankings on saved runs with real replicates.

Fake runs (3 seeds, k = 1, categories a, b, c of 16 normal + 16 anomalous images) are written the way
``fsadlib.evaluate`` writes them: scores.csv, metrics.json with the bootstrap settings, and
``bootstrap_<category>.npz`` from the shared resamples. ``good`` separates the classes, ``same`` has
exactly good's scores, ``weak`` is noise, ``fair`` is good's signal with other noise."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fsadlib.analysis import (
    interval_table,
    load_replicates,
    load_runs,
    paired_comparisons,
    rankings,
    summarise,
    summary_table,
    tie_marks,
)
from fsadlib.evaluate import SCORE_COLUMNS, category_mean
from fsadlib.io import write_json
from fsadlib.metrics import image_metrics
from fsadlib.stats import INTERVAL_METHOD, image_list_hash, image_resamples, percentile_interval, seed_draws
from fsadlib.stats.replicates import category_replicates, save_replicates

B = 300
CATEGORIES = ("a", "b", "c")


def write_bootstrap_run(root, method, seed, scores_of, images=None):
    out = root / method / "synthetic" / "k1" / f"seed{seed}"
    run = {"method": method, "dataset": "synthetic", "k": 1, "seed": seed, "image_size": 8, "eval_size": 8,
           "mask_rule": "rule", "fpr_limit": 0.3, "method_config": {"backbone": {"pretrained": None}}, "random_weights": 1,
           "geometry": "resize_crop", "precision": "fp32", "target_statistics": None,
           "bootstrap": {"resamples": B, "seed": 0, "confidence": 0.95, "method": INTERVAL_METHOD}}
    frames, categories = [], {}
    for cat in CATEGORIES:
        labels = np.r_[np.zeros(16), np.ones(16)].astype(int)
        paths = images or [f"{cat}/{i:02d}.png" for i in range(32)]
        scores = scores_of(cat, seed, labels).astype(np.float32)
        frames.append(pd.DataFrame({"image_path": paths, "category": cat, "defect": "x", "label": labels,
                                    "score": scores}))
        categories[cat] = {f"image_{k}": v for k, v in image_metrics(scores, labels).items()}
        counts = image_resamples(paths, labels, B)
        save_replicates(out / f"bootstrap_{cat}.npz", category_replicates(scores, labels, None, None, False, counts, 0.3),
                        image_list_hash(paths))
    pd.concat(frames)[SCORE_COLUMNS].to_csv(out / "scores.csv", index=False)
    write_json(out / "metrics.json", {"run": run, "categories": categories, "mean": category_mean(categories)})


def noise(cat, seed, salt):
    return np.random.default_rng([CATEGORIES.index(cat), seed, salt]).normal(size=32)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare") / "results"
    methods = {"good": lambda c, s, y: 2.5 * y + noise(c, s, 0), "same": lambda c, s, y: 2.5 * y + noise(c, s, 0),
               "weak": lambda c, s, y: noise(c, s, 1), "fair": lambda c, s, y: 2.5 * y + noise(c, s, 2)}
    for method, scores_of in methods.items():
        for seed in range(3):
            write_bootstrap_run(root, method, seed, scores_of)
    return root


def test_intervals_are_the_seed_mean_percentiles(results):
    reps = load_replicates(results)
    run = reps[("good", "synthetic", 1)]
    assert run.seeds == (0, 1, 2) and run.values["a"]["image_auroc"].shape == (3, B)
    per_seed = run.values["a"]["image_auroc"]
    combined = per_seed[seed_draws(3, B, 0), np.arange(B)[:, None]].mean(1)
    table = interval_table(reps).set_index(["method", "category", "metric"])
    assert tuple(table.loc[("good", "a", "image_auroc"), ["ci_low", "ci_high"]]) == percentile_interval(combined)
    mean_row = table.loc[("good", "mean", "image_auroc")]
    assert mean_row["ci_low"] < run.estimates["a"]["image_auroc"].mean() + 0.1 and mean_row["confidence"] == 0.95
    entry = summarise(load_runs(results), interval_table(reps))["good"]["synthetic"]["k1"]
    assert entry["image_auroc"]["ci_low"] <= entry["image_auroc"]["mean"] <= entry["image_auroc"]["ci_high"]
    assert entry["ci_level"] == 0.95


def test_identical_methods_are_never_significant_and_a_planted_advantage_is(results):
    table = paired_comparisons(load_replicates(results), metrics=("image_auroc", "image_ap"))
    same = table[(table.method_a == "good") & (table.method_b == "same")]
    assert len(same) == 2 * 4 and (same.difference == 0).all() and (same.p_bootstrap == 1).all()
    assert not same.significant.any() and (same[same.metric == "image_auroc"].query("category != 'mean'")
                                           .p_delong == 1).all()
    planted = table[(table.method_a == "good") & (table.method_b == "weak")].set_index(["category", "metric"])
    assert planted.loc[("mean", "image_auroc"), "significant"] and planted.loc[("mean", "image_auroc"), "difference"] > 0.2
    for cat in CATEGORIES:                                         # Holm over 3 categories, still clear
        row = planted.loc[(cat, "image_auroc")]
        assert row.p_bootstrap_holm < 0.05 and row.p_delong_holm < 0.01 and row.ci_low > 0
        assert row.p_bootstrap_holm >= row.p_bootstrap
    fair = table[(table.method_a == "fair") & (table.method_b == "good") & (table.category == "mean")]
    assert not fair.significant.any()                            # same signal, other noise: a tie


def test_tie_marks_and_the_leaderboard(results):
    reps = load_replicates(results)
    marks = tie_marks(reps, "image_auroc")
    assert marks[("weak", "synthetic", 1)] == ""
    assert sorted(marks[(m, "synthetic", 1)] for m in ("good", "same", "fair")) in (
        ["best", "tie", "tie"], ["best", "tie", "tie"])
    table = summary_table(load_runs(results), metrics=("image_auroc",), replicates=reps).set_index("method")
    assert table.loc["weak", "image_auroc"].endswith("]") and "[" in table.loc["good", "image_auroc"]
    assert sum(cell.endswith(" *") for cell in table["image_auroc"]) == 1


def test_rankings_per_k(results):
    ranking = rankings(load_runs(results), "image_auroc")[1]
    assert ranking.mean_ranks.index[-1] == "weak" and ranking.n_blocks == 3


def test_runs_on_other_images_cannot_be_paired(tmp_path):
    write_bootstrap_run(tmp_path, "one", 0, lambda c, s, y: y + noise(c, s, 3))
    write_bootstrap_run(tmp_path, "other", 0, lambda c, s, y: y + noise(c, s, 3),
                        images=[f"elsewhere/{i}.png" for i in range(32)])
    with pytest.raises(ValueError, match="different test images"):
        paired_comparisons(load_replicates(tmp_path))
