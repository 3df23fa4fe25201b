"""Synthetic generator: layout, determinism, exact masks, defect sizes, category names."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fsadlib.config import load_params
from fsadlib.data import read_samples
from fsadlib.data.synthetic import (
    CATEGORIES,
    MAX_DEFECT_FRACTION,
    OBJECTS,
    TEXTURES,
    defect_image,
    defect_kinds,
    generate,
)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn") / "synthetic"
    return generate(root, seed=3, image_size=48, n_train=2, n_test_good=1, n_test_bad=6)


def test_layout_and_counts(tree):
    s = read_samples("mvtec", tree, "synthetic")  # validates masks, sizes and pairing
    assert sorted(s.category.unique()) == sorted(CATEGORIES)
    per = s.groupby(["category", "split", "label"]).size()
    assert (per.xs(("train", 0), level=(1, 2)) == 2).all() and (per.xs(("test", 1), level=(1, 2)) == 6).all()
    for category in CATEGORIES:
        defects = set(s[(s.category == category) & (s.label == 1)].defect)
        assert defects == set(defect_kinds(category)[:6])
    masks = [np.asarray(Image.open(p)) for p in s[s.label == 1].mask_path]
    assert all(set(np.unique(m)) == {0, 255} for m in masks)
    assert len(TEXTURES) >= 4 and len(OBJECTS) >= 3 and {"brick", "grass", "gravel"} <= set(TEXTURES)


def test_deterministic_per_seed(tree, tmp_path):
    again = generate(tmp_path / "again", seed=3, image_size=48, n_train=2, n_test_good=1, n_test_bad=6,
                     categories=["disc", "grid"])
    other = generate(tmp_path / "other", seed=4, image_size=48, n_train=2, n_test_good=1, n_test_bad=6,
                     categories=["disc"])
    for rel in ["disc/train/good/001.png", "grid/test/hole/000.png", "disc/ground_truth/deformation/000_mask.png"]:
        assert np.array_equal(np.asarray(Image.open(tree / rel)), np.asarray(Image.open(again / rel))), rel
    assert not np.array_equal(np.asarray(Image.open(tree / "disc/train/good/001.png")),
                              np.asarray(Image.open(other / "disc/train/good/001.png")))


@pytest.mark.parametrize("category", CATEGORIES)
def test_masks_are_exact(category):
    """Outside the mask the defective image equals the clean one bit for bit; inside it differs."""
    for i, defect in enumerate(defect_kinds(category)):
        clean, image, mask = defect_image(category, defect, np.random.default_rng([7, i]), 64)
        changed = (clean != image).any(axis=-1)
        assert not changed[~mask].any(), defect
        assert changed[mask].mean() >= 0.9, defect
        assert 1 <= mask.sum() <= MAX_DEFECT_FRACTION * 64 * 64


def test_defect_sizes_span_a_few_pixels_to_ten_percent():
    areas = [defect_image(c, d, np.random.default_rng([i, j]), 128)[2].mean()
             for i, c in enumerate(("gravel", "disc")) for d in defect_kinds(c) for j in range(6)]
    assert min(areas) < 0.002 and max(areas) > 0.04 and max(areas) <= MAX_DEFECT_FRACTION


def test_unknown_names():
    with pytest.raises(KeyError, match=r"unknown synthetic categories \['bottle'\]"):
        defect_kinds("bottle")
    with pytest.raises(KeyError, match="'missing_part' is not drawn for category 'grid'"):
        defect_image("grid", "missing_part", np.random.default_rng(0), 32)


def test_params_name_synthetic_categories():
    params = load_params()
    protocol = params["protocol"]["synthetic"]
    named = set(protocol["aux_categories"]) | set(protocol["val_categories"]) | set(protocol["target_categories"])
    assert named <= set(CATEGORIES)
