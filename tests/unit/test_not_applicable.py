"""Metrics that do not apply: pixel metrics of image-level-only sets, image metrics of all-anomalous
sets; recorded in metrics.json, kept through the seed aggregate, shown as n/a by the analysis."""

from __future__ import annotations

from test_evaluate import Brightness, write_dataset

from fsadlib.analysis import load_runs, summarise, summary_table
from fsadlib.evaluate import METRIC_FAMILIES, aggregate_seeds, evaluate


def test_image_level_only_set_has_no_pixel_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("FSAD_ROOT", str(tmp_path))
    samples = write_dataset(tmp_path / "d", categories=("disc",), masks=False)
    root = tmp_path / "results" / "brightness" / "toy" / "k0"
    for seed in (0, 1):
        result = evaluate(Brightness(), "toy", seed=seed, samples=samples, out_dir=root / f"seed{seed}")
    metrics = result["categories"]["disc"]
    assert metrics["not_applicable"] == {"pixel": "no masks (image-level labels only)"}
    assert not any(k.startswith("pixel_") for k in [*metrics, *result["mean"]])
    assert 0 <= metrics["image_auroc"] <= 1
    agg = aggregate_seeds("brightness", "toy", 0, (0, 1), out_dir=root)
    assert agg["categories"]["disc"]["not_applicable"] == metrics["not_applicable"]
    runs = load_runs(tmp_path / "results")
    na = runs[runs.applicable == 0]
    assert sorted(na.metric.unique()) == sorted(METRIC_FAMILIES["pixel"]) and na.value.isna().all()
    table = summary_table(runs, metrics=("image_auroc", "pixel_auroc"))
    assert table["pixel_auroc"].tolist() == ["n/a"] and table["image_auroc"].iloc[0] != "n/a"
    entry = summarise(runs)["brightness"]["toy"]["k0"]
    assert entry["not_applicable"] == sorted(METRIC_FAMILIES["pixel"]) and "image_auroc" in entry


def test_all_anomalous_set_has_no_image_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("FSAD_ROOT", str(tmp_path))
    samples = write_dataset(tmp_path / "d", categories=("disc",), n_good=0)
    result = evaluate(Brightness(), "toy", samples=samples, out_dir=tmp_path / "r")
    metrics = result["categories"]["disc"]
    assert metrics["not_applicable"] == {"image": "all 3 test images are anomalous"}
    assert not any(k.startswith("image_") for k in metrics) and 0 <= metrics["pixel_auroc"] <= 1
    assert set(result["mean"]) == set(METRIC_FAMILIES["pixel"])
