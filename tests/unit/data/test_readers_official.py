"""Readers of the papers' data sets on tiny trees in each official layout: counts, split rules, pairing,
and an error naming the file for each malformed entry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_trees import mask_with, rgb, write_png
from PIL import Image
from sklearn.model_selection import train_test_split

from fsadlib.data import read_samples
from fsadlib.data.readers import CARDS, READERS
from fsadlib.data.readers.common import inctrl_split


def names(paths) -> list[str]:
    return [Path(p).name for p in paths]


def test_every_reader_has_a_card():
    assert set(CARDS) == set(READERS)


@pytest.mark.parametrize("n", [2, 3, 7, 40, 101])
def test_inctrl_split_is_sklearns_train_test_split(n):
    items = [f"img{i:03d}" for i in range(n)]
    train, test = inctrl_split(items)
    ref_train, ref_test = train_test_split(items, test_size=0.25, random_state=42)
    assert (train, test) == (ref_train, ref_test)
    with pytest.raises(ValueError, match="cannot split 1"):
        inctrl_split(items[:1])


def make_btad(root: Path) -> Path:
    for category, suffix, mask_suffix in (("01", ".bmp", ".png"), ("03", ".bmp", ".bmp")):
        base = root / category
        for i in range(3):
            write_png(base / "train" / "ok" / f"{i:04d}{suffix}", rgb(0))
        write_png(base / "test" / "ok" / f"0000{suffix}", rgb(0))
        for stem, area in (("0001", 3), ("0000", 5)):
            write_png(base / "test" / "ko" / f"{stem}{suffix}", rgb(area))
            write_png(base / "ground_truth" / "ko" / f"{stem}{mask_suffix}", mask_with(area))
    return root


def test_btad_ok_ko_and_masks_without_suffix(tmp_path):
    s = read_samples("btad", make_btad(tmp_path / "BTech_Dataset_transformed"), "btad")
    assert sorted(set(s.category)) == ["01", "03"]
    assert s.groupby(["category", "split", "label"]).size().tolist() == [1, 2, 3] * 2
    bad = s[s.label == 1]
    assert set(bad.defect) == {"ko"} and set(s[s.label == 0].defect) == {"good"}
    areas = [int((np.asarray(Image.open(m)) > 0).sum()) for m in bad.mask_path]
    assert areas == [int(np.asarray(Image.open(i))[0, 0, 0]) for i in bad.image_path]
    (tmp_path / "BTech_Dataset_transformed" / "03" / "ground_truth" / "ko" / "0001.bmp").unlink()
    with pytest.raises(FileNotFoundError, match=r"03/test/ko/0001\.bmp has no mask"):
        read_samples("btad", tmp_path / "BTech_Dataset_transformed", "btad")


def test_bayes_pfl_standardised_copy(tmp_path):
    base = tmp_path / "DATA_three" / "Metal13"
    write_png(base / "train" / "good" / "a_0000000001.bmp", rgb(0))
    write_png(base / "test" / "good" / "b_0000000002.bmp", rgb(0))
    write_png(base / "test" / "anomaly" / "c_0000000003.bmp", rgb(4))
    write_png(base / "ground_truth" / "anomaly" / "c_0000000003.png", mask_with(4))
    s = read_samples("bayes_pfl", tmp_path / "DATA_three", "ksdd2_frozen")
    assert s.label.tolist() == [0, 1, 0] and names(s.mask_path) == ["", "c_0000000003.png", ""]


def write_elpv(root: Path, lines: list[str]) -> Path:
    for line in lines:
        if line.split() and line.split()[0].startswith("images/"):
            write_png(root / line.split()[0], np.full((6, 6), 9, np.uint8))
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


ELPV_LINES = ([f"images/cell{i:04d}.png  0.0                 {'mono' if i % 2 else 'poly'}" for i in range(1, 13)]
              + ["images/cell0013.png  1.0                 mono", "images/cell0014.png  0.3333333333333333  poly",
                 "images/cell0015.png  1.0                 poly", "images/cell0016.png  0.6666666666666666  mono"])


def test_elpv_inctrl_split_in_label_file_order(tmp_path):
    root = write_elpv(tmp_path / "elpv", ELPV_LINES)
    s = read_samples("elpv", root, "elpv")
    normal = [f"cell{i:04d}.png" for i in range(1, 13)]
    ref_train, ref_test = train_test_split(normal, test_size=0.25, random_state=42)
    assert sorted(names(s[s.split == "train"].image_path)) == sorted(ref_train)
    assert sorted(names(s[(s.split == "test") & (s.label == 0)].image_path)) == sorted(ref_test)
    bad = s[s.label == 1]
    assert names(bad.image_path) == ["cell0013.png", "cell0015.png"] and bad.defect.tolist() == ["mono", "poly"]
    assert (s.mask_path == "").all()
    limited = read_samples("elpv", root, "elpv", limit=1)
    assert limited.groupby(["split", "label"]).size().tolist() == [1, 1, 1]
    assert set(limited.image_path) <= set(s.image_path)
    assert set(limited[limited.split == "train"].image_path) <= set(s[s.split == "train"].image_path)


def test_elpv_malformed_line_names_the_file_and_line(tmp_path):
    root = write_elpv(tmp_path / "a", [*ELPV_LINES[:3], "images/cell0099.png  0.0  cigs"])
    with pytest.raises(ValueError, match=r"labels\.csv, line 4: expected '<image> <probability> <mono\|poly>'"):
        read_samples("elpv", root, "elpv")
    root = write_elpv(tmp_path / "b", [*ELPV_LINES, "images/cell0017.png  high  mono"])
    with pytest.raises(ValueError, match=r"line 17: defect probability 'high' is not a number"):
        read_samples("elpv", root, "elpv")
    root = write_elpv(tmp_path / "c", ELPV_LINES)
    (root / "images" / "cell0005.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"line 5: image not found: .*cell0005\.png"):
        read_samples("elpv", root, "elpv")


def write_headct(root: Path, labels: list[int], header: str = "id, hemorrhage") -> Path:
    for i in range(len(labels)):
        write_png(root / "head_ct" / "head_ct" / f"{i:03d}.png", np.full((5, 5), i, np.uint8))
    rows = "\n".join(f"{i},{label}" for i, label in enumerate(labels))
    (root / "labels.csv").write_text(f"{header}\n{rows}\n")
    return root


def test_headct_labels_csv_and_both_splits(tmp_path):
    labels = [0, 1, 0, 0, 1, 0, 0, 0, 1]
    root = write_headct(tmp_path / "headct", labels)
    s = read_samples("headct", root, "headct")
    normal = [f"{i:03d}.png" for i, v in enumerate(labels) if v == 0]
    ref_train, ref_test = train_test_split(normal, test_size=0.25, random_state=42)
    assert sorted(names(s[s.split == "train"].image_path)) == sorted(ref_train)
    assert sorted(names(s[(s.split == "test") & (s.label == 0)].image_path)) == sorted(ref_test)
    assert sorted(names(s[s.label == 1].image_path)) == ["001.png", "004.png", "008.png"]
    assert set(s.category) == {"head_ct"} and (s.mask_path == "").all()
    zero_shot = read_samples("headct", root, "headct", split="test_only")
    assert (zero_shot.split == "test").all() and len(zero_shot) == len(labels)
    (root / "labels.csv").write_text("id, hemorrhage\n0,0\n1,yes\n")
    with pytest.raises(ValueError, match=r"labels\.csv, line 3: expected '<integer id>,<0\|1>'"):
        read_samples("headct", root, "headct")
    with pytest.raises(ValueError, match="unknown split 'half'"):
        read_samples("headct", write_headct(tmp_path / "h2", labels), "headct", split="half")


def test_brainmri_and_br35h_folders(tmp_path):
    base = tmp_path / "brainmri" / "brain_tumor_dataset"
    for i in range(4):
        write_png(base / "no" / f"No{i}.jpg", rgb(i))
    for i in range(3):
        write_png(base / "yes" / f"Y{i}.JPG", rgb(i))
    s = read_samples("brainmri", tmp_path / "brainmri", "brainmri")
    ref_train, ref_test = train_test_split([f"No{i}.jpg" for i in range(4)], test_size=0.25, random_state=42)
    assert names(s[s.split == "train"].image_path) == sorted(ref_train)
    assert names(s[(s.split == "test") & (s.label == 0)].image_path) == ref_test
    assert (s[s.label == 1].defect == "tumor").all() and len(s[s.label == 1]) == 3
    for i in range(2):
        write_png(tmp_path / "br35h" / "no" / f"no{i}.jpg", rgb(i))
        write_png(tmp_path / "br35h" / "yes" / f"y{i}.jpg", rgb(i))
        write_png(tmp_path / "br35h" / "pred" / f"pred{i}.jpg", rgb(i))
    b = read_samples("br35h", tmp_path / "br35h", "br35h")
    assert (b.split == "test").all() and b.label.tolist() == [0, 0, 1, 1]
    write_png(tmp_path / "empty" / "no" / "no0.jpg", rgb(0))
    with pytest.raises(FileNotFoundError, match=r"image folder not found: .*empty/yes"):
        read_samples("br35h", tmp_path / "empty", "br35h")


def noisy_mask(area: int, size: int = 8) -> np.ndarray:
    """A JPEG-like mask: the first ``area`` pixels 200, compression noise 40 elsewhere."""
    return np.where(mask_with(area, size) > 0, 200, 40).astype(np.uint8)


def test_isic_pairs_by_name_and_binarises(workbench):
    root = workbench / "data" / "real" / "isic"
    for stem, area in (("ISIC_0000003", 3), ("ISIC_0000001", 6)):
        write_png(root / "ISBI2016_ISIC_Part1_Test_Data" / f"{stem}.jpg", rgb(area))
        write_png(root / "ISBI2016_ISIC_Part1_Test_GroundTruth" / f"{stem}_Segmentation.png", noisy_mask(area))
    s = read_samples("isic", root, "isic")
    assert (s.label == 1).all() and (s.split == "test").all() and set(s.category) == {"skin"}
    assert s.mask_path.str.startswith("data/derived/isic/").all()
    masks = [np.asarray(Image.open(workbench / m)) for m in s.mask_path]
    assert [int((m == 255).sum()) for m in masks] == [6, 3] and all(set(np.unique(m)) <= {0, 255} for m in masks)
    again = read_samples("isic", root, "isic")
    assert again.equals(s)
    (root / "ISBI2016_ISIC_Part1_Test_GroundTruth" / "ISIC_0000001_Segmentation.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"ISIC_0000001\.jpg has no mask .*ISIC_0000001_Segmentation"):
        read_samples("isic", root, "isic")


@pytest.mark.parametrize(("reader", "images", "masks", "suffix"), [
    ("kvasir", "images", "masks", ".jpg"), ("endo", "images", "masks", ".jpg"),
    ("colondb", "images", "masks", ".png"), ("clinicdb", "PNG/Original", "PNG/Ground Truth", ".png")])
def test_polyp_sets(workbench, reader, images, masks, suffix):
    root = workbench / "data" / "real" / reader
    for stem, area in (("1", 2), ("10", 5)):
        write_png(root / images / f"{stem}{suffix}", rgb(area))
        write_png(root / masks / f"{stem}{suffix}", noisy_mask(area))
    s = read_samples(reader, root, reader)
    assert set(s.category) == {"colon"} and (s.defect == "polyp").all() and len(s) == 2
    areas = [int((np.asarray(Image.open(workbench / m)) > 0).sum()) for m in s.mask_path]
    assert areas == [2, 5]
    write_png(root / masks / f"7{suffix}", noisy_mask(1))
    with pytest.raises(ValueError, match=rf"mask .*7\{suffix} has no image"):
        read_samples(reader, root, reader)


def test_dtd_synthetic_masks_with_or_without_suffix(tmp_path):
    base = tmp_path / "DTD-Synthetic" / "Woven_001"
    write_png(base / "train" / "good" / "000.png", rgb(0))
    for stem, mask_name, area in (("000", "000.png", 2), ("001", "001_mask.png", 4)):
        write_png(base / "test" / "bad" / f"{stem}.png", rgb(area))
        write_png(base / "ground_truth" / "bad" / mask_name, mask_with(area))
    s = read_samples("dtd_synthetic", tmp_path / "DTD-Synthetic", "dtd")
    assert names(s[s.label == 1].mask_path) == ["000.png", "001_mask.png"]
    write_png(base / "ground_truth" / "bad" / "002.png", mask_with(1))
    with pytest.raises(ValueError, match=r"mask .*bad/002\.png has no image test/bad/002\.\*"):
        read_samples("dtd_synthetic", tmp_path / "DTD-Synthetic", "dtd")
