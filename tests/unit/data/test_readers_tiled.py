"""Readers that cut, pool or decode: KolektorSDD bands, KolektorSDD2, RSDD tiles, DAGM, AITEX tiles,
MVTec LOCO union masks, MNIST / CIFAR-10 one-vs-all, each on a tiny tree in its official layout."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
from data_trees import write_png
from PIL import Image
from sklearn.model_selection import train_test_split

from fsadlib.data import read_samples
from fsadlib.data.readers.common import balanced_split


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def grey(h: int, w: int, value: int = 0) -> np.ndarray:
    return np.full((h, w), value, np.uint8)


def label_with(h: int, w: int, rows: list[int]) -> np.ndarray:
    label = grey(h, w)
    label[rows, 0] = 255
    return label


def test_balanced_split_is_a_seeded_permutation():
    train, test = balanced_split(list(range(10)), 3)
    perm = np.random.RandomState(42).permutation(10)
    assert test == sorted(perm[:3].tolist()) and train == sorted(perm[3:].tolist())
    assert balanced_split([0, 1], 5) == ([[0, 1][i] for i in sorted(np.random.RandomState(42).permutation(2)[1:])],
                                         [[0, 1][i] for i in sorted(np.random.RandomState(42).permutation(2)[:1])])


def test_ksdd_bands_and_inctrl_split(workbench):
    root = workbench / "data" / "real" / "KolektorSDD"
    labels = {("kos01", "Part0"): [4], ("kos01", "Part1"): [], ("kos02", "Part0"): [0, 8], ("kos02", "Part1"): []}
    for (folder, part), rows in labels.items():
        image = np.arange(9 * 4, dtype=np.uint8).reshape(9, 4) * 5
        write_png(root / folder / f"{part}.png", image)
        (root / folder / f"{part}.png").rename(root / folder / f"{part}.jpg")  # lossless content, official name
        Image.fromarray(label_with(9, 4, rows)).save(root / folder / f"{part}_label.bmp")
    s = read_samples("ksdd", root, "ksdd")
    bad = s[s.label == 1]
    assert sorted(Path(p).name.split(".")[0] for p in bad.image_path) == ["kos01_Part0_1", "kos02_Part0_0",
                                                                          "kos02_Part0_2"]
    assert all(pixels(workbench / p).shape == (3, 4) for p in s.image_path)
    assert all(int((pixels(workbench / m) > 0).sum()) == 1 for m in bad.mask_path)
    normal = sorted(f"{f}_{p}_{i}" for (f, p), rows in labels.items() for i in range(3) if i not in [r // 3 for r in rows])
    ref_train, ref_test = train_test_split(normal, test_size=0.25, random_state=42)
    stem = lambda paths: sorted(Path(p).name.split(".")[0] for p in paths)
    assert stem(s[s.split == "train"].image_path) == sorted(ref_train)
    assert stem(s[(s.split == "test") & (s.label == 0)].image_path) == sorted(ref_test)
    first_band = pixels(workbench / s[s.image_path.str.contains("kos01_Part1_0")].image_path.iloc[0])
    assert np.array_equal(first_band, np.arange(12, dtype=np.uint8).reshape(3, 4) * 5)
    (root / "kos02" / "Part1_label.bmp").unlink()
    with pytest.raises(FileNotFoundError, match=r"label of .*kos02/Part1\.jpg not found: .*Part1_label\.bmp"):
        read_samples("ksdd", root, "ksdd")


def test_ksdd2_both_splits(tmp_path):
    root = tmp_path / "KolektorSDD2"
    for part, ids, bad in (("train", range(10000, 10006), {10001}), ("test", range(20000, 20003), {20002})):
        for i in ids:
            write_png(root / part / f"{i}.png", grey(4, 4, 9))
            write_png(root / part / f"{i}_GT.png", label_with(4, 4, [1] if i in bad else []))
    s = read_samples("ksdd2", root, "ksdd2")
    bad = s[s.label == 1]
    assert sorted(Path(p).stem for p in bad.image_path) == ["10001", "20002"]
    normal = sorted([str(root / "train" / f"{i}.png") for i in range(10000, 10006) if i != 10001]
                    + [str(root / "test" / f"{i}.png") for i in (20000, 20001)])  # sorted paths: test/ first
    _, ref_test = balanced_split(normal, 2)
    assert sorted(Path(p).name for p in s[(s.split == "test") & (s.label == 0)].image_path) == \
        sorted(Path(p).name for p in ref_test)
    official = read_samples("ksdd2", root, "ksdd2", split="official")
    assert official.groupby(["split", "label"]).size().to_dict() == {("test", 0): 2, ("test", 1): 1, ("train", 0): 5}
    (root / "test" / "20001_GT.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"mask of .*test/20001\.png not found"):
        read_samples("ksdd2", root, "ksdd2")


def test_rsdd_square_tiles(workbench):
    root = workbench / "data" / "real" / "RSDDs"
    folder = root / "RSDDs dataset" / "Type-I RSDDs dataset"
    for name, rows in (("rail_1", [5]), ("rail_2", [0, 9])):
        write_png(folder / "Rail surface images" / f"{name}.png", grey(13, 4, 7))
        (folder / "Rail surface images" / f"{name}.png").rename(folder / "Rail surface images" / f"{name}.jpg")
        (folder / "GroundTruth").mkdir(parents=True, exist_ok=True)
        Image.fromarray(label_with(13, 4, rows)).save(folder / "GroundTruth" / f"{name}.jpg", quality=95)
    s = read_samples("rsdd", root, "rsdd")
    assert set(s.category) == {"express_rail"} and len(s) == 6  # 13 // 4 = 3 tiles per rail, remainder dropped
    bad = s[s.label == 1]
    assert sorted(Path(p).name.split(".")[0] for p in bad.image_path) == ["express_rail_rail_1_1",
                                                                          "express_rail_rail_2_0",
                                                                          "express_rail_rail_2_2"]
    assert (s[s.label == 0].split.value_counts().to_dict()) == {"train": 1, "test": 2}


def write_dagm(root: Path) -> Path:
    for cls in (1, 2):
        for part in ("Train", "Test"):
            for i in range(1, 6):
                write_png(root / f"Class{cls}" / part / f"{i:04d}.PNG", grey(6, 6, i))
            write_png(root / f"Class{cls}" / part / "Label" / f"{cls + 1:04d}_label.PNG", label_with(6, 6, [2]))
    return root


def test_dagm_pooled_and_official_splits(tmp_path):
    root = write_dagm(tmp_path / "DAGM")
    s = read_samples("dagm", root, "dagm")
    assert sorted(set(s.category)) == ["Class1", "Class2"]
    c1 = s[s.category == "Class1"]
    assert sorted(Path(p).parent.name + "/" + Path(p).name for p in c1[c1.label == 1].image_path) == \
        ["Test/0002.PNG", "Train/0002.PNG"]
    assert c1.groupby(["split", "label"]).size().to_dict() == {("test", 0): 2, ("test", 1): 2, ("train", 0): 6}
    official = read_samples("dagm", root, "dagm", split="official", classes=[2])
    assert official.groupby(["split", "label"]).size().to_dict() == {("test", 0): 4, ("test", 1): 1, ("train", 0): 4}
    write_png(root / "Class1" / "Test" / "Label" / "0009_label.PNG", label_with(6, 6, [1]))
    with pytest.raises(ValueError, match=r"label .*Class1/Test/Label/0009_label\.PNG has no image"):
        read_samples("dagm", root, "dagm")
    with pytest.raises(FileNotFoundError, match=r"no folder for DAGM classes \[7\]"):
        read_samples("dagm", root, "dagm", classes=[7])


def test_aitex_tiles(workbench):
    root = workbench / "data" / "real" / "aitex"
    write_png(root / "NODefect_images" / "2311694-2040n7u" / "0001_000_05.png", grey(256, 1024, 3))
    write_png(root / "NODefect_images" / "2306881-210020u" / "0001_000_02.png", grey(256, 512, 3))
    write_png(root / "Defect_images" / "0002_019_02.png", grey(256, 768, 9))
    mask = grey(256, 768)
    mask[10:20, 300:310] = 255
    write_png(root / "Mask_images" / "0002_019_02_mask.png", mask)
    s = read_samples("aitex", root, "aitex")
    bad = s[s.label == 1]
    assert len(bad) == 1 and bad.defect.iloc[0] == "Fuzzyball" and Path(bad.image_path.iloc[0]).name.startswith(
        "0002_019_02_1.")
    assert int((pixels(workbench / bad.mask_path.iloc[0]) > 0).sum()) == 100
    normal = sorted(f"{fabric}_{stem}_{i}" for fabric, stem, n in (("2311694-2040n7u", "0001_000_05", 4),
                                                                    ("2306881-210020u", "0001_000_02", 2))
                    for i in range(n))
    ref_train, _ = train_test_split(sorted(normal), test_size=0.25, random_state=42)
    assert sorted(Path(p).name.split(".")[0] for p in s[s.split == "train"].image_path) == sorted(ref_train)
    assert all(pixels(workbench / p).shape == (256, 256) for p in s.image_path)
    write_png(root / "Defect_images" / "0003_099_02.png", grey(256, 256, 9))
    with pytest.raises(ValueError, match=r"0003_099_02\.png: expected <nnnn>_<defect code>_<fabric>"):
        read_samples("aitex", root, "aitex")


def test_loco_unions_region_masks(workbench):
    root = workbench / "data" / "real" / "loco"
    base = root / "juice_bottle"
    write_png(base / "train" / "good" / "000.png", grey(6, 6, 1))
    write_png(base / "validation" / "good" / "000.png", grey(6, 6, 1))
    write_png(base / "test" / "good" / "000.png", grey(6, 6, 1))
    write_png(base / "test" / "logical_anomalies" / "000.png", grey(6, 6, 2))
    write_png(base / "test" / "structural_anomalies" / "000.png", grey(6, 6, 3))
    write_png(base / "ground_truth" / "logical_anomalies" / "000" / "000.png", label_with(6, 6, [0]))
    write_png(base / "ground_truth" / "logical_anomalies" / "000" / "001.png", label_with(6, 6, [0, 3]))
    write_png(base / "ground_truth" / "structural_anomalies" / "000" / "000.png", label_with(6, 6, [5]))
    s = read_samples("loco", root, "loco")
    assert s.groupby(["split", "label"]).size().to_dict() == {("test", 0): 1, ("test", 1): 2, ("train", 0): 1}
    logical = s[s.defect == "logical_anomalies"].mask_path.iloc[0]
    assert logical.startswith("data/derived/loco/") and int((pixels(workbench / logical) > 0).sum()) == 2
    assert len(read_samples("loco", root, "loco", validation_as_train=1).query("split == 'train'")) == 2
    (base / "ground_truth" / "structural_anomalies" / "000" / "000.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"structural_anomalies/000\.png has no mask"):
        read_samples("loco", root, "loco")


def idx(path: Path, array: np.ndarray, magic: int) -> None:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_mnist_one_vs_all(workbench):
    root = workbench / "data" / "real" / "mnist"
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    y_train, y_test = np.arange(20) % 10, np.array([3, 3, 5, 0, 9, 3, 1, 2, 4, 6, 7, 8])
    idx(root / "train-images-idx3-ubyte.gz", rng.integers(0, 255, (20, 28, 28)), 0x803)
    idx(root / "train-labels-idx1-ubyte.gz", y_train, 0x801)
    idx(root / "t10k-images-idx3-ubyte.gz", (np.arange(12)[:, None, None] * np.ones((1, 28, 28))), 0x803)
    idx(root / "t10k-labels-idx1-ubyte.gz", y_test, 0x801)
    s = read_samples("mnist", root, "mnist")
    three = s[s.category == "digit_3"]
    assert len(three[three.split == "train"]) == 2 and (three[three.split == "test"].label == 0).sum() == 3
    assert len(three[three.split == "test"]) == 12 and set(three[three.label == 1].defect) == \
        {"digit_5", "digit_0", "digit_9", "digit_1", "digit_2", "digit_4", "digit_6", "digit_7", "digit_8"}
    test_pixels = {int(pixels(workbench / p)[0, 0]) for p in three[(three.split == "test") & (three.label == 0)].image_path}
    assert test_pixels == {0, 1, 5}  # the test images at indices 0, 1, 5 are the 3s
    assert len(read_samples("mnist", root, "mnist", limit=1).query("category == 'digit_3' and split == 'test'")) == 10
    idx(root / "t10k-labels-idx1-ubyte.gz", y_test[:5], 0x801)
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte\.gz holds 12 images but .*5 labels"):
        read_samples("mnist", root, "mnist")
    idx(root / "t10k-labels-idx1-ubyte.gz", y_test, 0x803)
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte\.gz: IDX magic 0x803, expected 0x801"):
        read_samples("mnist", root, "mnist")


def test_cifar10_one_vs_all(workbench):
    base = workbench / "data" / "real" / "cifar" / "cifar-10-batches-py"
    base.mkdir(parents=True)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    (base / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}))
    for i in range(1, 6):
        data = np.zeros((2, 3072), np.uint8)
        data[:, :1024] = 10 * i  # red channel
        (base / f"data_batch_{i}").write_bytes(pickle.dumps({b"data": data, b"labels": [i, 0]}))
    (base / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1, 1]}))
    s = read_samples("cifar10", base.parent, "cifar10")
    assert sorted(set(s.category)) == sorted(n.decode() for n in names)
    airplane = s[s.category == "airplane"]
    assert len(airplane[airplane.split == "train"]) == 5 and airplane[airplane.split == "test"].label.tolist() == [0, 1, 1]
    car = s[(s.category == "automobile") & (s.split == "train")]
    assert pixels(workbench / car.image_path.iloc[0])[0, 0].tolist() == [10, 0, 0]
    (base / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((3, 3072), np.uint8)}))
    with pytest.raises(KeyError, match=r"test_batch: missing keys \['labels'\]"):
        read_samples("cifar10", base.parent, "cifar10")
