"""ELPV on real data (the ``elpv-dataset`` package ships the official images and labels.csv): the
InCTRL split of the full set, and one method evaluated on a limited subset, image-level only."""

from __future__ import annotations

from pathlib import Path

import elpv_dataset
import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from fsadlib.data import read_samples
from fsadlib.evaluate import evaluate
from fsadlib.methods import create
from fsadlib.metrics import image_metrics

ELPV_ROOT = Path(elpv_dataset.__file__).parent / "data"


@pytest.fixture(scope="module")
def elpv() -> pd.DataFrame:
    return read_samples("elpv", ELPV_ROOT, "elpv")


def test_full_elpv_follows_inctrl_split(elpv):
    probs, types = _labels()
    names = np.array([line.split()[0] for line in (ELPV_ROOT / "labels.csv").read_text().splitlines()])
    ref_train, ref_test = train_test_split(list(names[probs == 0]), test_size=0.25, random_state=42)
    relative = elpv.image_path.map(lambda p: f"images/{Path(p).name}")
    assert sorted(relative[elpv.split == "train"]) == sorted(ref_train)
    assert sorted(relative[(elpv.split == "test") & (elpv.label == 0)]) == sorted(ref_test)
    anomalous = elpv[elpv.label == 1]
    assert len(anomalous) == int((probs == 1).sum()) and (anomalous.split == "test").all()
    assert anomalous.defect.value_counts().to_dict() == pd.Series(types[probs == 1]).value_counts().to_dict()
    assert (elpv.mask_path == "").all() and len(elpv) == int(((probs == 0) | (probs == 1)).sum())


def _labels() -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and cell types as the package's own ``load_dataset`` parses labels.csv."""
    data = np.genfromtxt(ELPV_ROOT / "labels.csv", dtype=["|S19", "<f8", "|S4"], names=["path", "probability", "type"])
    return data["probability"], np.char.decode(data["type"])


def test_winclip_on_real_elpv_is_image_level_only(tmp_path, monkeypatch):
    monkeypatch.setenv("FSAD_ROOT", str(tmp_path))
    samples = read_samples("elpv", ELPV_ROOT, "elpv", limit=6)
    assert samples.groupby(["split", "label"]).size().tolist() == [6, 6, 6]
    method = create("winclip", backbone={"arch": "tiny"})
    result = evaluate(method, "elpv", samples=samples, out_dir=tmp_path / "run")
    metrics = result["categories"]["elpv"]
    assert metrics["not_applicable"] == {"pixel": "no masks (image-level labels only)"}
    assert (metrics["n_images"], metrics["n_anomalous"]) == (12, 6)
    scores = pd.read_csv(tmp_path / "run" / "scores.csv")
    assert sorted(scores.image_path) == sorted(samples[samples.split == "test"].image_path)
    expected = image_metrics(scores.score.to_numpy(np.float32), scores.label.to_numpy())
    assert metrics["image_auroc"] == pytest.approx(expected["auroc"], abs=1e-9)
    assert metrics["image_ap"] == pytest.approx(expected["ap"], abs=1e-9)
