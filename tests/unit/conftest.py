"""Fake saved results (the layout of fsadlib.evaluate) for the analysis and viz tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fsadlib.evaluate import SCORE_COLUMNS, category_mean
from fsadlib.io import write_json


def _write_run(root: Path, method: str, dataset: str, k: int, seed: int, categories: dict[str, dict[str, float]],
              eval_size: int = 8, pretrained: str | None = None, scores: pd.DataFrame | None = None,
              maps: dict[str, np.ndarray] | None = None) -> Path:
    """``root/<method>/<dataset>/k<k>/seed<s>/`` with metrics.json (+ scores.csv, maps_<cat>.npz)."""
    out = root / method / dataset / f"k{k}" / f"seed{seed}"
    run = {"method": method, "dataset": dataset, "k": k, "seed": seed, "image_size": eval_size,
           "eval_size": eval_size, "mask_rule": f"rule (M = {eval_size})", "fpr_limit": 0.3,
           "method_config": {"backbone": {"arch": "tiny", "pretrained": pretrained}},
           "random_weights": int(pretrained is None), "geometry": "resize_crop", "precision": "fp32",
           "target_statistics": None}
    cats = {c: m | {"n_images": 4, "inputs": "hash"} for c, m in categories.items()}
    write_json(out / "metrics.json", {"run": run, "categories": cats, "mean": category_mean(cats)})
    if scores is not None:
        scores[SCORE_COLUMNS].to_csv(out / "scores.csv", index=False)
    for cat, array in (maps or {}).items():
        paths = scores[scores["category"] == cat]["image_path"].to_numpy(str)
        np.savez(out / f"maps_{cat}.npz", maps=array.astype(np.float16), image_path=paths)
    return out


@pytest.fixture
def write_run():
    """The fake-run writer (a fixture, since test modules cannot import a conftest by name)."""
    return _write_run


@pytest.fixture
def fake_runs(tmp_path: Path) -> Path:
    """Known numbers: winclip (zero-shot, k0) and inctrl (k2, k4), seeds 0..2, categories a, b.

    winclip image_auroc: seed s gives a = 0.6 + 0.1 s, b = 0.8 + 0.1 s -> category means 0.7, 0.8, 0.9
    (mean 0.8, std 0.1); pixel_aupro only in category a (0.5) -> category mean NaN.
    inctrl k<k> image_auroc: a = b = 0.5 + 0.05 k + 0.02 s -> k2: 0.62 +- 0.02, k4: 0.72 +- 0.02."""
    root = tmp_path / "results"
    for s in range(3):
        _write_run(root, "winclip", "synthetic", 0, s,
                  {"a": {"image_auroc": 0.6 + 0.1 * s, "pixel_aupro": 0.5}, "b": {"image_auroc": 0.8 + 0.1 * s}})
        for k in (2, 4):
            v = 0.5 + 0.05 * k + 0.02 * s
            _write_run(root, "inctrl", "synthetic", k, s, {"a": {"image_auroc": v}, "b": {"image_auroc": v}})
    return root
