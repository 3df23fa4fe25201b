"""The folder reader's grown-up options: several patterns per role, excludes, masks beside their
images (matched by suffix), and a recorded ratio/seed split of one folder of normal images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_trees import mask_with, rgb, write_png
from PIL import Image
from sklearn.model_selection import train_test_split

from fsadlib.data import read_samples


def make_flat_set(root: Path) -> Path:
    """widget/good/g0..g7.jpg (plus a thumbnail), defects with their masks beside them as PNG."""
    for i in range(8):
        write_png(root / "widget" / "good" / f"g{i}.jpg", rgb(0))
    write_png(root / "widget" / "good" / "thumbs" / "g0.jpg", rgb(0))
    write_png(root / "widget" / "extra_good" / "e0.bmp", rgb(0))
    for defect, stem, area in (("dent", "d1", 3), ("burn", "b1", 7)):
        write_png(root / "widget" / "defects" / defect / f"{stem}.jpg", rgb(area))
        write_png(root / "widget" / "defects" / defect / f"{stem}.png", mask_with(area))
    return root


OPTIONS = {"normal": ["{category}/good/**/*.jpg", "{category}/extra_good/*.bmp"], "test_ratio": 0.25,
           "split_seed": 7, "test_anomalous": "{category}/defects/*/*", "masks": "{category}/defects/*/*.png",
           "mask_suffix": "", "exclude": "{category}/good/thumbs/*"}


def test_one_normal_folder_split_by_ratio_and_seed(tmp_path):
    root = make_flat_set(tmp_path / "mine")
    s = read_samples("folder", root, "mine", **OPTIONS)
    normal = sorted([root / "widget" / "good" / f"g{i}.jpg" for i in range(8)] + [root / "widget" / "extra_good" / "e0.bmp"])
    ref_train, ref_test = train_test_split(normal, test_size=0.25, random_state=7)
    assert sorted(s[s.split == "train"].image_path) == sorted(map(str, ref_train))
    assert sorted(s[(s.split == "test") & (s.label == 0)].image_path) == sorted(map(str, ref_test))
    assert not s.image_path.str.contains("thumbs").any() and not s.image_path.str.endswith(".png").any()
    bad = s[s.label == 1]
    assert sorted(bad.defect) == ["burn", "dent"]
    assert [int((np.asarray(Image.open(m)) > 0).sum()) for m in bad.mask_path] == \
        [int(np.asarray(Image.open(i))[0, 0, 0]) for i in bad.image_path]
    other_seed = read_samples("folder", root, "mine", **{**OPTIONS, "split_seed": 8})
    assert set(other_seed[other_seed.split == "train"].image_path) != set(s[s.split == "train"].image_path)


def test_folder_option_errors(tmp_path):
    root = make_flat_set(tmp_path / "mine")
    with pytest.raises(ValueError, match=r"test_ratio must be in \(0, 1\), got 1.5"):
        read_samples("folder", root, "mine", **{**OPTIONS, "test_ratio": 1.5})
    with pytest.raises(ValueError, match=r"good/g0\.jpg matches both 'train_normal' and 'normal'"):
        read_samples("folder", root, "mine", **{**OPTIONS, "train_normal": "{category}/good/g0.jpg"})
    with pytest.raises(TypeError, match="a pattern must be a string or a list of strings"):
        read_samples("folder", root, "mine", **{**OPTIONS, "exclude": 3})
    (root / "widget" / "defects" / "burn" / "b1.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"defects/burn/b1\.jpg has no mask \(no mask named b1\.\*\)"):
        read_samples("folder", root, "mine", **OPTIONS)
