"""Tensors: CLIP transform on a known image, the mask rule on known masks, dataset items."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data_trees import mask_with, rgb, write_png

from fsadlib.data import CLIP_MEAN, CLIP_STD, AnomalyDataset, load_images, load_mask, read_samples


def test_clip_constants_equal_open_clip():
    from open_clip import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    assert CLIP_MEAN == tuple(OPENAI_DATASET_MEAN) and CLIP_STD == tuple(OPENAI_DATASET_STD)


def test_load_images_normalises_a_constant_image(tmp_path):
    colour = np.array([10, 128, 250], np.uint8)
    path = write_png(tmp_path / "c.png", np.broadcast_to(colour, (20, 30, 3)))
    x = load_images([str(path), str(path)], image_size=16)
    assert x.shape == (2, 3, 16, 16) and x.dtype == torch.float32
    expected = (torch.tensor(colour / 255.0) - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    torch.testing.assert_close(x[0, :, 7, 9], expected.float(), atol=1e-6, rtol=0)
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_images([str(tmp_path / "nope.png")], 16)
    with pytest.raises(ValueError, match="empty"):
        load_images([], 16)


def test_mask_rule_nonzero_then_nearest(tmp_path):
    pattern = np.array([[0, 1, 0, 0], [0, 2, 0, 0], [0, 0, 0, 255], [0, 0, 0, 0]], np.uint8)  # VisA-style ids
    path = write_png(tmp_path / "m.png", pattern)
    up = load_mask(path, 8)
    expected = np.kron(pattern > 0, np.ones((2, 2))).astype(np.float32)  # nearest x2: 2x2 blocks
    assert up.dtype == torch.float32 and torch.equal(up, torch.from_numpy(expected))
    down = load_mask(write_png(tmp_path / "big.png", np.kron(pattern, np.ones((4, 4), np.uint8))), 4)
    assert torch.equal(down, torch.from_numpy((pattern > 0).astype(np.float32)))
    with pytest.raises(ValueError, match=r"m\.png is \(4, 4\) but its image is \(5, 5\)"):
        load_mask(path, 8, image_size_wh=(5, 5))


def test_dataset_items(mvtec_tree):
    samples = read_samples("mvtec", mvtec_tree, "tiny")
    ds = AnomalyDataset(samples, image_size=12, mask_size=8)
    assert len(ds) == len(samples) and ds.mask_rule.startswith("nonzero")
    items = [ds[i] for i in range(len(ds))]
    for item, row in zip(items, samples.itertuples()):
        assert item["image"].shape == (3, 12, 12) and item["mask"].shape == (8, 8)
        assert set(item["mask"].unique().tolist()) <= {0.0, 1.0}
        assert item["label"] == row.label and item["category"] == row.category and item["defect"] == row.defect
        # masks (8 px source, 8 px target) keep their exact area; normal images get zeros
        expected_area = int(row.image_path.split("/")[-1] == "a.png") * 3 + int("a_b" in row.image_path) * 5
        assert int(item["mask"].sum()) == (expected_area if row.label else 0)
    assert ds[0]["image_path"] == samples.image_path[0]


def test_dataset_rejects_mask_of_another_size_at_load(tmp_path):
    import pandas as pd

    image = write_png(tmp_path / "i.png", rgb(3, size=8))
    mask = write_png(tmp_path / "i_mask.png", mask_with(3, size=6))
    samples = pd.DataFrame([{"dataset": "d", "category": "c", "split": "test", "label": 1, "defect": "x",
                                 "image_path": str(image), "mask_path": str(mask)}])
    with pytest.raises(ValueError, match="i_mask.png"):
        AnomalyDataset(samples, 8)[0]
