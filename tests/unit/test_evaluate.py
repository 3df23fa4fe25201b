"""Evaluation runner: outputs, known answers, resume, few-shot supports, seed aggregation, errors."""

from __future__ import annotations

import fcntl
import math
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from fsadlib.data import CLIP_MEAN, CLIP_STD, load_images
from fsadlib.data.shots import shot_file
from fsadlib.evaluate import EvalConfig, aggregate_seeds, evaluate
from fsadlib.io import read_json, write_json
from fsadlib.methods.base import AnomalyMethod
from fsadlib.methods.output import AnomalyOutput
from fsadlib.metrics import image_metrics
from fsadlib.stats import bootstrap_image_metrics, image_resamples, percentile_interval, seed_draws

SIZE = 16


@dataclass(frozen=True)
class FakeConfig:
    noise: float = 0.0


class FakeBackbone(nn.Module):
    image_size = SIZE
    device = torch.device("cpu")
    mean, std = CLIP_MEAN, CLIP_STD
    random_weights = True
    geometry = None

    def effective_precision(self) -> str:
        return "fp32"


class Brightness(AnomalyMethod):
    """score = mean intensity (+ seeded noise), map = channel-mean intensity."""

    name = "brightness"
    few_shot = False

    def __init__(self, config: FakeConfig = FakeConfig()) -> None:
        nn.Module.__init__(self)
        self.config, self.backbone = config, FakeBackbone()
        self.calls: list[tuple[str, tuple | None]] = []
        self.images_seen = 0

    def setup_category(self, category_key, supports=None):
        if self.few_shot and supports is None:
            raise ValueError("supports needed")
        self.calls.append((category_key, None if supports is None else tuple(supports.shape)))
        self.supports = supports

    def forward(self, images):
        self.images_seen += len(images)
        gray = images.mean(1)
        score = gray.mean((1, 2)) + self.config.noise * torch.rand(len(images))
        return AnomalyOutput(score, gray)


class FewShotBrightness(Brightness):
    name = "brightness_fs"
    few_shot = True


def write_dataset(root, categories=("disc", "metal_nut"), n_good=3, n_bad=3, masks=True) -> pd.DataFrame:
    """Grey images (value ~60); anomalous ones hold a 5 x 5 square of 200, their mask marks it."""
    rng = np.random.default_rng(0)
    rows = []
    for cat in categories:
        for split, label, n in [("train", 0, 4), ("test", 0, n_good), ("test", 1, n_bad)]:
            for i in range(n):
                img = np.full((SIZE, SIZE), 60, np.uint8) + rng.integers(0, 5, (SIZE, SIZE), dtype=np.uint8)
                mask = np.zeros((SIZE, SIZE), np.uint8)
                if label:
                    y, x = rng.integers(0, SIZE - 5, 2)
                    img[y:y + 5, x:x + 5], mask[y:y + 5, x:x + 5] = 200, 255
                defect = "bad" if label else "good"
                path = root / cat / split / defect / f"{i:03d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.stack([img] * 3, -1)).save(path)
                mask_path = ""
                if label and masks:
                    mask_path = str(root / cat / "ground_truth" / defect / f"{i:03d}_mask.png")
                    (root / cat / "ground_truth" / defect).mkdir(parents=True, exist_ok=True)
                    Image.fromarray(mask).save(mask_path)
                rows.append({"dataset": "toy", "category": cat, "split": split, "label": label,
                             "defect": defect, "image_path": str(path), "mask_path": mask_path})
    return pd.DataFrame(rows)


@pytest.fixture
def toy(tmp_path, monkeypatch):
    monkeypatch.setenv("FSAD_ROOT", str(tmp_path))
    return write_dataset(tmp_path / "data")


def test_outputs_and_known_answers(toy, tmp_path):
    out = tmp_path / "run"
    method = Brightness()
    result = evaluate(method, "toy", samples=toy, config=EvalConfig(batch_size=4), out_dir=out)

    assert [c for c, _ in method.calls] == ["disc", "metal_nut"]  # category keys, zero-shot: no supports
    assert all(s is None for _, s in method.calls)
    run = read_json(out / "metrics.json")["run"]
    assert run["eval_size"] == SIZE == run["image_size"] and f"M = {SIZE}" in run["mask_rule"]  # default
    assert run["fpr_limit"] == 0.3 and "mvtec_ad_exact" in run["metric_definitions"]["aupro"]
    # anomalous images hold a bright square exactly where the mask is: everything separates perfectly
    for cat in ("disc", "metal_nut"):
        m = result["categories"][cat]
        assert (m["n_images"], m["n_anomalous"]) == (6, 3)
        for key in ("image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap", "pixel_f1_max",
                    "pixel_aupro"):
            assert m[key] == pytest.approx(1.0, abs=1e-12), key
    assert result["mean"]["image_auroc"] == 1.0 and "image_f1_threshold" not in result["mean"]

    scores = pd.read_csv(out / "scores.csv", keep_default_na=False)
    test = toy[toy.split == "test"]
    assert list(scores.columns) == ["image_path", "category", "defect", "label", "score"]
    assert scores.image_path.tolist() == test.image_path.tolist()
    expected = load_images(test.image_path.tolist(), SIZE).mean((1, 2, 3)).numpy()
    np.testing.assert_allclose(scores.score, expected, rtol=1e-6)
    disc = scores[scores.category == "disc"]
    assert image_metrics(disc.score.to_numpy(np.float32), disc.label.to_numpy())["ap"] == \
        result["categories"]["disc"]["image_ap"]

    maps = np.load(out / "maps_disc.npz")
    assert maps["maps"].dtype == np.float16 and maps["maps"].shape == (6, SIZE, SIZE)
    assert maps["image_path"].tolist() == disc.image_path.tolist()
    np.testing.assert_allclose(maps["maps"].astype(np.float32).mean((1, 2)), disc.score, rtol=1e-3)


def test_maps_and_masks_at_another_evaluation_resolution(toy, tmp_path):
    out = tmp_path / "run"
    result = evaluate(Brightness(), "toy", samples=toy, config=EvalConfig(eval_size=24), out_dir=out)
    assert result["run"]["eval_size"] == 24 and "M = 24" in result["run"]["mask_rule"]
    assert np.load(out / "maps_disc.npz")["maps"].shape == (6, 24, 24)
    # bilinear upsampling blurs the square's border: no longer perfect, still nearly
    m = result["categories"]["disc"]
    assert 0.9 < m["pixel_aupro"] < 1.0 and 0.99 < m["pixel_auroc"] < 1.0


def test_images_are_normalised_with_the_backbone_mean_and_std(toy, tmp_path):
    """A backbone with mean 0 and std 1 sees raw [0, 1] pixels: Brightness scores the image mean / 255."""
    class RawBackbone(FakeBackbone):
        mean, std, random_weights = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), False

    method = Brightness()
    method.backbone = RawBackbone()
    evaluate(method, "toy", samples=toy, config=EvalConfig(batch_size=4, save_maps=0), out_dir=tmp_path / "raw")
    scores = pd.read_csv(tmp_path / "raw" / "scores.csv")
    expected = [np.asarray(Image.open(p), np.float64).mean() / 255 for p in scores.image_path]
    np.testing.assert_allclose(scores.score, expected, atol=1e-6)
    run = read_json(tmp_path / "raw" / "metrics.json")["run"]
    assert run["normalisation"] == {"mean": [0.0] * 3, "std": [1.0] * 3} and run["random_weights"] == 0


def test_resume_skips_finished_categories(toy, tmp_path):
    out, cfg = tmp_path / "run", EvalConfig(batch_size=4)
    first = evaluate(Brightness(), "toy", samples=toy, config=cfg, out_dir=out)
    again = Brightness()
    assert evaluate(again, "toy", samples=toy, config=cfg, out_dir=out) == first
    assert again.images_seen == 0
    (out / "maps_metal_nut.npz").unlink()
    partial = Brightness()
    assert evaluate(partial, "toy", samples=toy, config=cfg, out_dir=out) == first
    assert partial.images_seen == 6 and [c for c, _ in partial.calls] == ["metal_nut"]
    changed = Brightness()
    evaluate(changed, "toy", samples=toy, config=EvalConfig(batch_size=4, eval_size=8), out_dir=out)
    assert changed.images_seen == 12  # other settings: everything is redone


def test_few_shot_reads_the_shot_file(toy, tmp_path):
    for cat in ("disc", "metal_nut"):
        paths = toy[(toy.split == "train") & (toy.category == cat)].image_path.tolist()[:2]
        write_json(shot_file("toy", cat, 2, 1),
                   {"dataset": "toy", "category": cat, "k": 2, "seed": 1, "images": paths})
    method = FewShotBrightness()
    evaluate(method, "toy", k=2, seed=1, samples=toy, out_dir=tmp_path / "fs")
    assert method.calls == [("disc", (2, 3, SIZE, SIZE)), ("metal_nut", (2, 3, SIZE, SIZE))]
    assert torch.equal(method.supports, load_images(paths, SIZE))  # the last category's shots
    with pytest.raises(FileNotFoundError, match="k4_seed1"):
        evaluate(FewShotBrightness(), "toy", k=4, seed=1, samples=toy, out_dir=tmp_path / "fs4")
    with pytest.raises(ValueError, match="few-shot"):
        evaluate(FewShotBrightness(), "toy", k=0, samples=toy, out_dir=tmp_path / "x")
    with pytest.raises(ValueError, match="zero-shot"):
        evaluate(Brightness(), "toy", k=2, samples=toy, out_dir=tmp_path / "x")


def test_aggregate_over_seeds(toy, tmp_path):
    root = tmp_path / "brightness" / "toy" / "k0"
    runs = [evaluate(Brightness(FakeConfig(noise=2.0)), "toy", seed=s, samples=toy, out_dir=root / f"seed{s}")
            for s in (0, 1, 2)]
    agg = aggregate_seeds("brightness", "toy", 0, (0, 1, 2), out_dir=root)
    values = [r["categories"]["disc"]["image_auroc"] for r in runs]
    assert len(set(values)) > 1  # the seed changes the noisy scores
    disc = agg["categories"]["disc"]["image_auroc"]
    assert {k: disc[k] for k in ("mean", "std")} == pytest.approx({"mean": np.mean(values), "std": np.std(values, ddof=1)})
    means = [r["mean"]["pixel_aupro"] for r in runs]
    aupro = agg["mean"]["pixel_aupro"]
    assert {k: aupro[k] for k in ("mean", "std")} == pytest.approx({"mean": np.mean(means), "std": np.std(means, ddof=1)})
    # seed-mean interval: per-seed replicates [S, B], seeds drawn with replacement per resample
    per_seed = np.stack([np.load(root / f"seed{s}" / "bootstrap_disc.npz")["values"][0] for s in (0, 1, 2)])
    assert np.load(root / "seed0" / "bootstrap_disc.npz")["metrics"][0] == "image_ap"
    draws = seed_draws(3, per_seed.shape[1], 0)
    combined = per_seed[draws, np.arange(per_seed.shape[1])[:, None]].mean(1)
    assert (disc := agg["categories"]["disc"]["image_ap"])["ci_low"] == pytest.approx(np.quantile(combined, 0.025))
    assert disc["ci_high"] == pytest.approx(np.quantile(combined, 0.975))
    assert agg["run"]["seeds"] == [0, 1, 2] and read_json(root / "metrics.json") == agg
    rerun = evaluate(Brightness(FakeConfig(noise=2.0)), "toy", seed=1, samples=toy, out_dir=root / "seed1")
    assert rerun == runs[1]
    evaluate(Brightness(FakeConfig(noise=2.0)), "toy", seed=2, samples=toy, config=EvalConfig(eval_size=8),
             out_dir=root / "seed2")
    with pytest.raises(ValueError, match=r"seed 2 .* in \['eval_size', 'map_resize', 'mask_rule'\]"):
        aggregate_seeds("brightness", "toy", 0, (0, 1, 2), out_dir=root)


def test_intervals_come_from_the_shared_image_resamples(toy, tmp_path):
    out = tmp_path / "run"
    result = evaluate(Brightness(FakeConfig(noise=0.3)), "toy", samples=toy, config=EvalConfig(bootstrap=200), out_dir=out)
    assert result["run"]["bootstrap"]["resamples"] == 200 and "stratified" in result["run"]["bootstrap"]["method"]
    scores = pd.read_csv(out / "scores.csv", keep_default_na=False)
    disc = scores[scores.category == "disc"]
    counts = image_resamples(disc.image_path.tolist(), disc.label.to_numpy(), 200)
    assert (counts[:, disc.label.to_numpy() == 1].sum(1) == 3).all()
    want = bootstrap_image_metrics(disc.score.to_numpy(np.float32), disc.label.to_numpy(), counts)["auroc"]
    saved = np.load(out / "bootstrap_disc.npz")
    np.testing.assert_array_equal(saved["values"][list(saved["metrics"]).index("image_auroc")], want)
    assert result["intervals"]["categories"]["disc"]["image_auroc"] == list(percentile_interval(want, 0.95))
    low, high = result["intervals"]["mean"]["pixel_aupro"]
    assert low <= result["mean"]["pixel_aupro"] <= high
    (out / "bootstrap_disc.npz").unlink()                                   # a missing file reruns the category
    again = Brightness(FakeConfig(noise=0.3))
    evaluate(again, "toy", samples=toy, config=EvalConfig(bootstrap=200), out_dir=out)
    assert again.images_seen == 6
    off = evaluate(Brightness(), "toy", samples=toy, config=EvalConfig(bootstrap=0), out_dir=tmp_path / "off")
    assert "intervals" not in off and off["run"]["bootstrap"] is None


def test_image_level_only_and_partial_masks(tmp_path, monkeypatch):
    monkeypatch.setenv("FSAD_ROOT", str(tmp_path))
    no_masks = write_dataset(tmp_path / "d1", categories=("disc",), masks=False)
    result = evaluate(Brightness(), "toy", samples=no_masks, out_dir=tmp_path / "r1")
    assert not any(k.startswith("pixel_") for k in result["categories"]["disc"])
    partial = write_dataset(tmp_path / "d2", categories=("disc",))
    partial.loc[partial.index[-1], "mask_path"] = ""
    with pytest.raises(ValueError, match="'disc': 1 of 3 anomalous"):
        evaluate(Brightness(), "toy", samples=partial, out_dir=tmp_path / "r2")
    with pytest.raises(KeyError, match="nope"):
        evaluate(Brightness(), "toy", samples=partial, categories=["nope"], out_dir=tmp_path / "r3")


def test_legacy_aupro_is_labelled(toy, tmp_path):
    result = evaluate(Brightness(), "toy", samples=toy, config=EvalConfig(legacy_aupro=1),
                      out_dir=tmp_path / "l")
    m = result["categories"]["disc"]
    assert not math.isnan(m["pixel_aupro_cflow200_legacy"])
    assert "pixel_aupro_cflow200_legacy" in result["mean"]


def test_per_category_models_and_aggregate_table(toy, tmp_path):
    from fsadlib.evaluate import aggregate_table

    models = {"disc": Brightness(), "metal_nut": Brightness()}
    for seed in (0, 1):
        evaluate(Brightness(), "toy", seed=seed, samples=toy, out_dir=tmp_path / "k0" / f"seed{seed}",
                 category_models=lambda cat: models[cat])
    assert [c for c, _ in models["disc"].calls] == ["disc", "disc"]
    assert [c for c, _ in models["metal_nut"].calls] == ["metal_nut", "metal_nut"]
    table = aggregate_table(aggregate_seeds("brightness", "toy", 0, [0, 1], out_dir=tmp_path / "k0"))
    row = table[(table.category == "mean") & (table.metric == "pixel_aupro")].iloc[0]
    assert row["mean"] == pytest.approx(1.0) and row["std"] == 0.0
    assert set(table.category) == {"disc", "metal_nut", "mean"}


def test_weights_hash_handles_scalar_buffers():
    from fsadlib.evaluate import _weights_hash

    class WithScalar(Brightness):
        def __init__(self, n):
            super().__init__()
            self.register_buffer("num_batches_tracked", torch.tensor(n))

    assert _weights_hash(WithScalar(1)) != _weights_hash(WithScalar(2))


def overwrite_image(path: str, value: int) -> None:
    """New pixels at the same path; the modification time moves on by a second (coarse file systems)."""
    stat = os.stat(path)
    Image.fromarray(np.full((SIZE, SIZE, 3), value, np.uint8)).save(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))


def test_changed_image_mask_or_model_file_is_evaluated_again(toy, tmp_path):
    out, cfg = tmp_path / "run", EvalConfig(batch_size=4)
    first = evaluate(Brightness(), "toy", samples=toy, config=cfg, out_dir=out)
    assert first["categories"]["disc"]["image_auroc"] == 1.0
    normal = toy[(toy.category == "disc") & (toy.split == "test") & (toy.label == 0)].image_path.iloc[0]
    overwrite_image(normal, 255)  # now the brightest image of disc: AUROC falls
    again = Brightness()
    second = evaluate(again, "toy", samples=toy, config=cfg, out_dir=out)
    assert [c for c, _ in again.calls] == ["disc"], "only the changed category runs again"
    assert second["categories"]["disc"]["image_auroc"] < 1.0
    mask = toy[(toy.category == "metal_nut") & (toy.label == 1)].mask_path.iloc[0]
    overwrite_image(mask, 0)
    after_mask = Brightness()
    third = evaluate(after_mask, "toy", samples=toy, config=cfg, out_dir=out)
    assert [c for c, _ in after_mask.calls] == ["metal_nut"]
    assert third["categories"]["metal_nut"]["n_empty_masks"] == 1
    reloaded = Brightness()
    reloaded.checkpoint_sha1 = "another model file"
    evaluate(reloaded, "toy", samples=toy, config=cfg, out_dir=out)
    assert [c for c, _ in reloaded.calls] == ["disc", "metal_nut"]


def test_category_subsets_merge_and_other_settings_replace(toy, tmp_path):
    out, cfg = tmp_path / "run", EvalConfig(batch_size=4)
    evaluate(Brightness(), "toy", samples=toy, config=cfg, out_dir=out, categories=["metal_nut"])
    merged = evaluate(Brightness(), "toy", samples=toy, config=cfg, out_dir=out, categories=["disc"])
    whole = evaluate(Brightness(), "toy", samples=toy, config=cfg, out_dir=tmp_path / "whole")
    assert list(merged["categories"]) == ["metal_nut", "disc"]
    assert merged["mean"] == whole["mean"] and read_json(out / "metrics.json") == merged
    scores = pd.read_csv(out / "scores.csv", keep_default_na=False)
    assert scores.groupby("category").size().to_dict() == {"disc": 6, "metal_nut": 6}
    assert {p.name for p in out.glob("maps_*.npz")} == {"maps_disc.npz", "maps_metal_nut.npz"}
    with pytest.warns(UserWarning, match=r"holds categories \['disc', 'metal_nut'\] evaluated with other run "
                                         r"settings \['fpr_limit'\]; they are dropped with their maps"):
        other = evaluate(Brightness(), "toy", samples=toy, config=EvalConfig(fpr_limit=0.1), out_dir=out,
                         categories=["disc"])
    assert list(other["categories"]) == ["disc"] and not (out / "maps_metal_nut.npz").exists()
    assert set(pd.read_csv(out / "scores.csv").category) == {"disc"}


class LockProbe(Brightness):
    """Records whether the results folder's lock is free while the model runs."""

    def forward(self, images):
        with open(self.lock_file, "a+") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.lock_was_free = True
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            except BlockingIOError:
                self.lock_was_free = False
        return super().forward(images)


def test_results_folder_is_locked_while_written(toy, tmp_path):
    probe = LockProbe()
    probe.lock_file = tmp_path / "run" / ".lock"
    evaluate(probe, "toy", samples=toy, out_dir=tmp_path / "run", categories=["disc"])
    assert probe.lock_was_free is False
    with open(probe.lock_file, "a+") as fh:  # and released afterwards
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_empty_masks_are_counted_warned_and_recorded(toy, tmp_path):
    bad = toy[(toy.category == "disc") & (toy.label == 1)].iloc[:2]
    for mask in bad.mask_path:
        Image.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(mask)
    with pytest.warns(UserWarning, match=r"category 'disc' of 'toy': 2 anomalous test image\(s\) have an empty "
                                         r"mask at 16 px .*000\.png"):
        result = evaluate(Brightness(), "toy", samples=toy, out_dir=tmp_path / "run")
    disc = read_json(tmp_path / "run" / "metrics.json")["categories"]["disc"]
    assert disc["n_empty_masks"] == 2 and disc["empty_mask_images"] == bad.image_path.tolist()
    assert result["categories"]["metal_nut"]["n_empty_masks"] == 0
    assert "n_empty_masks" not in result["mean"]


def test_a_method_with_neither_forward_nor_score_queries_names_itself():
    """The base class's forward calls score_queries and score_queries calls forward: a method that
    overrides neither gets an error naming it, not an endless recursion."""

    class Neither(Brightness):
        forward = AnomalyMethod.forward

    with pytest.raises(NotImplementedError, match="Neither implements neither forward nor score_queries"):
        Neither()(torch.zeros(1, 3, 4, 4))
    assert Brightness()(torch.zeros(1, 3, 4, 4)).pred_score.shape == (1,)   # overriding forward is enough
