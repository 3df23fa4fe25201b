"""Bayes-PFL's public (transductive) image score reaches the evaluation, labelled as using target-set
statistics; the default fusion rule is inductive and labelled so."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from PIL import Image

from fsadlib.evaluate import EvalConfig, evaluate
from fsadlib.methods import create
from fsadlib.methods.bayes_pfl.model import public_image_scores
from fsadlib.metrics import image_metrics


def write_tree(root) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(5):
        image = rng.integers(0, 80, (64, 64, 3), np.uint8)
        mask = np.zeros((64, 64), np.uint8)
        if i % 2:
            image[10:30, 20:40], mask[10:30, 20:40] = 250, 255
        Image.fromarray(image).save(root / f"{i}.png")
        Image.fromarray(mask).save(root / f"{i}_mask.png")
        rows.append({"dataset": "toy", "category": "screw", "split": "test", "label": i % 2,
                     "defect": "bad" if i % 2 else "good", "image_path": str(root / f"{i}.png"),
                     "mask_path": str(root / f"{i}_mask.png") if i % 2 else ""})
    return pd.DataFrame(rows)


def test_public_rule_scores_and_label_reach_the_results(tmp_path):
    samples = write_tree(tmp_path)
    config = EvalConfig(batch_size=2, save_maps=0, bootstrap=0)  # 3 batches: the rule must see all of them
    runs = {}
    for rule in ("fusion", "public"):
        torch.manual_seed(0)
        method = create("bayes_pfl", backbone={"arch": "tiny"}, layers=[3, 6, 9, 12], test_samples=2,
                        topk=30, sigma=1.0, score_rule=rule)
        runs[rule] = (method, evaluate(method, "toy", samples=samples, out_dir=tmp_path / rule, config=config))
    fusion, public = runs["fusion"][1], runs["public"][1]
    assert fusion["run"]["target_statistics"] is None
    assert "uses target-set statistics" in public["run"]["target_statistics"]
    method = runs["public"][0]
    parts = torch.cat(method.score_parts)
    expected = public_image_scores(parts[:, 0], parts[:, 1]).numpy()
    scores = pd.read_csv(tmp_path / "public" / "scores.csv")["score"].to_numpy()
    assert parts.shape == (5, 2) and np.allclose(scores, expected, atol=1e-6)
    assert scores.min() >= 0 and scores.max() <= 1 and not np.allclose(scores, 0.5 * parts.sum(1).numpy())
    assert public["categories"]["screw"]["image_auroc"] == image_metrics(expected, samples.label.to_numpy())["auroc"]
