"""Real MVTec AD excerpt (../shared/data/mvtec_ad_reduced): counts, mask pairing, mask values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fsadlib.data import AnomalyDataset, read_samples
from fsadlib.paths import shared_data_dir

ROOT = shared_data_dir() / "mvtec_ad_reduced"
pytestmark = [pytest.mark.realdata,
              pytest.mark.skipif(not ROOT.is_dir(), reason=f"real MVTec AD excerpt not found at {ROOT}")]
DEFECTS = {"hazelnut": {"crack", "cut", "hole", "print"},
           "transistor": {"bent_lead", "cut_lead", "damaged_case", "misplaced"}}


@pytest.fixture(scope="module")
def samples():
    return read_samples("mvtec", ROOT, "mvtec")


def test_counts(samples):
    assert sorted(samples.category.unique()) == sorted(DEFECTS)
    for category, defects in DEFECTS.items():
        rows = samples[samples.category == category]
        assert (rows.split == "train").sum() == 50 and ((rows.split == "test") & (rows.label == 0)).sum() == 2
        assert set(rows[rows.label == 1].defect) == defects and (rows.label == 1).sum() == 2 * len(defects)


def test_mask_pairing_and_values(samples):
    anomalous = samples[samples.label == 1]
    for row in anomalous.itertuples():
        image, mask = Path(row.image_path), Path(row.mask_path)
        assert mask.name == f"{image.stem}_mask.png" and mask.parent.name == image.parent.name == row.defect
        values = np.asarray(Image.open(mask)).astype(int)  # this excerpt stores mode "1" (bilevel) masks
        assert len(np.unique(values)) == 2 and values.min() == 0, mask
        assert values.shape == Image.open(image).size[::-1]
    native = AnomalyDataset(anomalous, image_size=256)[0]  # at native size the rule keeps every pixel
    assert native["mask"].sum() == (np.asarray(Image.open(anomalous.mask_path.iloc[0])) > 0).sum()
    item = AnomalyDataset(anomalous, image_size=64)[0]
    assert item["label"] == 1 and 0 < item["mask"].sum() < 64 * 64
    assert set(item["mask"].unique().tolist()) == {0.0, 1.0}
