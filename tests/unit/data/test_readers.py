"""Every reader on tiny trees: counts, labels, name-based mask pairing, and each bad-input error."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from data_trees import mask_with, rgb, write_png
from PIL import Image

from fsadlib.data import load_samples, read_samples, select_categories, write_meta_json
from fsadlib.data.samples import SAMPLE_COLUMNS


def mask_area(path: str) -> int:
    return int((np.asarray(Image.open(path)) > 0).sum())


def image_value(path: str) -> int:
    return int(np.asarray(Image.open(path))[0, 0, 0])


def test_mvtec_counts_labels_and_name_pairing(mvtec_tree):
    s = read_samples("mvtec", mvtec_tree, "tiny")
    assert list(s.columns) == list(SAMPLE_COLUMNS)
    assert len(s) == 2 * (3 + 1 + 2)
    counts = s.groupby(["category", "split", "label"]).size()
    assert counts[("bottle", "train", 0)] == 3 and counts[("bottle", "test", 0)] == 1
    assert counts[("bottle", "test", 1)] == 2
    normal = s[s.label == 0]
    assert (normal.mask_path == "").all() and (normal.defect == "good").all()
    anomalous = s[s.label == 1]
    assert (anomalous.defect == "crack").all()
    # each image's grey value is the area of its own mask: pairing is by name, not by sorted position
    assert [image_value(p) for p in anomalous.image_path] == [mask_area(p) for p in anomalous.mask_path]
    assert all(Path(m).stem == Path(i).stem + "_mask" for i, m in zip(anomalous.image_path, anomalous.mask_path))


def test_mvtec_missing_mask_names_the_image(mvtec_tree):
    (mvtec_tree / "screw" / "ground_truth" / "crack" / "a_b_mask.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"screw/test/crack/a_b\.png"):
        read_samples("mvtec", mvtec_tree, "tiny")


def test_mvtec_mask_without_image(mvtec_tree):
    write_png(mvtec_tree / "bottle" / "ground_truth" / "crack" / "zzz_mask.png", mask_with(2))
    with pytest.raises(ValueError, match="zzz_mask.png has no image"):
        read_samples("mvtec", mvtec_tree, "tiny")


def test_mvtec_mask_of_another_size_names_the_mask(mvtec_tree):
    write_png(mvtec_tree / "bottle" / "ground_truth" / "crack" / "a_mask.png", mask_with(3, size=6))
    with pytest.raises(ValueError, match=r"bottle/ground_truth/crack/a_mask\.png is \(6, 6\)"):
        read_samples("mvtec", mvtec_tree, "tiny")


def test_unreadable_image_names_the_file(mvtec_tree):
    (mvtec_tree / "screw" / "train" / "good" / "001.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"unreadable image .*screw/train/good/001\.png"):
        read_samples("mvtec", mvtec_tree, "tiny")


def test_empty_category(mvtec_tree):
    (mvtec_tree / "cable" / "train" / "good").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"empty category .*cable"):
        read_samples("mvtec", mvtec_tree, "tiny")


def test_unknown_category_names_it_and_the_known_ones(mvtec_tree):
    s = read_samples("mvtec", mvtec_tree, "tiny")
    assert set(select_categories(s, ["screw"]).category) == {"screw"}
    with pytest.raises(KeyError, match=r"\['cable'\].*\['bottle', 'screw'\]"):
        select_categories(s, ["screw", "cable"])


def write_visa(root: Path, rows: list[tuple[str, str, str, str, str]]) -> Path:
    for _, _, label, image, mask in rows:
        write_png(root / image, rgb(3 if label == "anomaly" else 0))
        if mask:
            write_png(root / mask, np.where(mask_with(3) > 0, 2, 0))  # VisA-like: instance id 2, not 255
    csv = root / "split_csv" / "1cls.csv"
    csv.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["object", "split", "label", "image", "mask"]).to_csv(csv, index=False)
    return root


VISA_ROWS = [
    ("candle", "train", "normal", "candle/Data/Images/Normal/0000.JPG", ""),
    ("candle", "test", "normal", "candle/Data/Images/Normal/0001.JPG", ""),
    ("candle", "test", "anomaly", "candle/Data/Images/Anomaly/000.JPG", "candle/Data/Masks/Anomaly/000.png"),
    ("pcb1", "train", "normal", "pcb1/Data/Images/Normal/0000.JPG", ""),
    ("pcb1", "test", "anomaly", "pcb1/Data/Images/Anomaly/001.JPG", "pcb1/Data/Masks/Anomaly/001.png"),
]


def test_visa_split_csv(tmp_path):
    s = read_samples("visa", write_visa(tmp_path / "visa", VISA_ROWS), "visa")
    assert len(s) == 5 and set(s.category) == {"candle", "pcb1"}
    assert s.groupby("split").size().to_dict() == {"test": 3, "train": 2}
    anomalous = s[s.label == 1]
    assert (anomalous.defect == "anomaly").all()
    assert [Path(p).stem for p in anomalous.mask_path] == [Path(p).stem for p in anomalous.image_path]


def test_visa_errors(tmp_path):
    rows = [*VISA_ROWS[:2], ("candle", "test", "anomaly", "candle/Data/Images/Anomaly/000.JPG",
                             "candle/Data/Masks/Anomaly/007.png")]
    with pytest.raises(ValueError, match=r"line 4: mask .*007\.png does not match image .*000\.JPG"):
        read_samples("visa", write_visa(tmp_path / "a", rows), "visa")
    rows = [*VISA_ROWS[:2], ("candle", "test", "anomaly", "candle/Data/Images/Anomaly/000.JPG", "")]
    with pytest.raises(FileNotFoundError, match=r"anomalous image .*000\.JPG has no mask"):
        read_samples("visa", write_visa(tmp_path / "b", rows), "visa")
    root = write_visa(tmp_path / "c", VISA_ROWS)
    pd.read_csv(root / "split_csv" / "1cls.csv").drop(columns="mask").to_csv(root / "split_csv" / "1cls.csv")
    with pytest.raises(KeyError, match=r"1cls\.csv: missing columns \['mask'\]"):
        read_samples("visa", root, "visa")


def test_meta_json_round_trip(mvtec_tree):
    original = read_samples("mvtec", mvtec_tree, "tiny")
    meta = write_meta_json(original, mvtec_tree)
    content = json.loads(meta.read_text())
    entry = content["test"]["bottle"][-1]
    assert entry == {"img_path": "bottle/test/crack/a_b.png", "mask_path": "bottle/ground_truth/crack/a_b_mask.png",
                     "cls_name": "bottle", "specie_name": "crack", "anomaly": 1}
    pd.testing.assert_frame_equal(read_samples("meta_json", mvtec_tree, "tiny"), original)


def test_meta_json_errors(mvtec_tree):
    write_meta_json(read_samples("mvtec", mvtec_tree, "tiny"), mvtec_tree)
    content = json.loads((mvtec_tree / "meta.json").read_text())
    del content["test"]["screw"][0]["anomaly"]
    (mvtec_tree / "meta.json").write_text(json.dumps(content))
    with pytest.raises(KeyError, match=r"meta\.json \[test\]\[screw\]\[0\]: missing keys \['anomaly'\]"):
        read_samples("meta_json", mvtec_tree, "tiny")
    with pytest.raises(ValueError, match="not under the meta.json root"):
        write_meta_json(read_samples("mvtec", mvtec_tree, "tiny"), mvtec_tree / "bottle")


def make_folder_set(root: Path) -> Path:
    for category in ("widget", "gizmo"):
        for i in range(2):
            write_png(root / category / "ok" / f"n{i}.png", rgb(0))
        write_png(root / category / "ok_test" / "t0.png", rgb(0))
        for stem, area, defect in (("x1", 4, "dent"), ("x2", 6, "burn")):
            write_png(root / category / "ng" / defect / f"{stem}.png", rgb(area))
            write_png(root / category / "masks" / f"{stem}_mask.png", mask_with(area))
    return root


FOLDER_OPTIONS = {"train_normal": "{category}/ok/*.png", "test_normal": "{category}/ok_test/*.png",
                  "test_anomalous": "{category}/ng/*/*.png", "masks": "{category}/masks/*.png"}


def test_folder_patterns(tmp_path):
    s = read_samples("folder", make_folder_set(tmp_path / "mine"), "mine", **FOLDER_OPTIONS)
    assert set(s.category) == {"widget", "gizmo"} and len(s) == 10
    anomalous = s[s.label == 1]
    assert sorted(set(anomalous.defect)) == ["burn", "dent"]
    assert [image_value(p) for p in anomalous.image_path] == [mask_area(p) for p in anomalous.mask_path]
    image_level = read_samples("folder", tmp_path / "mine", "mine",
                               **{k: v for k, v in FOLDER_OPTIONS.items() if k != "masks"})
    assert (image_level.mask_path == "").all() and image_level.label.sum() == 4


def test_folder_errors(tmp_path):
    root = make_folder_set(tmp_path / "mine")
    (root / "gizmo" / "masks" / "x2_mask.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"anomalous image .*gizmo/ng/burn/x2\.png has no mask"):
        read_samples("folder", root, "mine", **FOLDER_OPTIONS)
    write_png(root / "gizmo" / "masks" / "x2_mask.png", mask_with(6))
    write_png(root / "gizmo" / "ng" / "dent" / "x2.png", rgb(6))
    with pytest.raises(ValueError, match="share the stem 'x2'"):
        read_samples("folder", root, "mine", **FOLDER_OPTIONS)
    with pytest.raises(ValueError, match="empty category 'gizmo'"):
        read_samples("folder", root, "mine", **{**FOLDER_OPTIONS, "categories": ["gizmo"],
                                                 "train_normal": "{category}/nothing/*.png", "test_normal": "",
                                                 "test_anomalous": "{category}/nothing/*.png", "masks": ""})


def test_load_samples_from_params(workbench, mvtec_tree):
    datasets = {"tiny": {"reader": "mvtec", "root": str(mvtec_tree)},
                "odd": {"reader": "mvtec", "root": str(mvtec_tree), "options": {"split_csv": "x.csv"}}}
    (workbench / "params.yaml").write_text(yaml.safe_dump({"datasets": datasets}))
    assert len(load_samples("tiny")) == 12
    assert set(load_samples("tiny", categories=["bottle"]).category) == {"bottle"}
    with pytest.raises(KeyError, match=r"unknown dataset 'mvtec'.*\['odd', 'tiny'\]"):
        load_samples("mvtec")
    with pytest.raises(KeyError, match=r"dataset 'odd': unknown options \['split_csv'\]"):
        load_samples("odd")


def test_paths_inside_the_repo_are_portable(workbench):
    tree = workbench / "data" / "mine"
    make_folder_set(tree)
    s = read_samples("folder", tree, "mine", **FOLDER_OPTIONS)
    assert s.image_path.str.startswith("data/mine/").all()
    assert s[s.label == 1].mask_path.str.startswith("data/mine/").all()


# -- hostile names and paths: nothing may be written or read outside the data set's root ------------
@pytest.mark.parametrize("name", ["../../x", "/abs/x", "..", "a\\b", ""])
def test_visa_category_must_be_a_plain_name(tmp_path, name):
    rows = [(name, "train", "normal", "candle/Data/Images/Normal/0000.JPG", ""), *VISA_ROWS[1:]]
    with pytest.raises(ValueError, match=r"visa reader, .*1cls\.csv, line 2, column 'object': category name "
                                         + re.escape(repr(name)) + " is not a plain folder name"):
        read_samples("visa", write_visa(tmp_path / "visa", rows), "visa")


def test_meta_json_category_and_paths_stay_inside(mvtec_tree, tmp_path):
    write_meta_json(read_samples("mvtec", mvtec_tree, "tiny"), mvtec_tree)
    content = json.loads((mvtec_tree / "meta.json").read_text())
    hostile = json.loads(json.dumps(content))
    hostile["train"]["../../x"] = [dict(e, cls_name="../../x") for e in hostile["train"].pop("bottle")]
    (mvtec_tree / "meta.json").write_text(json.dumps(hostile))
    with pytest.raises(ValueError, match=r"meta_json reader, .*meta\.json \[train\]: category name '\.\./\.\./x'"):
        read_samples("meta_json", mvtec_tree, "tiny")
    outside = [write_png(tmp_path / "elsewhere" / f"n{i}.png", rgb(1)) for i in range(2)]
    escaped = json.loads(json.dumps(content))
    escaped["train"]["bottle"][0]["img_path"] = "../elsewhere/n0.png"  # climbs out of the root
    escaped["train"]["bottle"][1]["img_path"] = str(outside[1])  # absolute
    (mvtec_tree / "meta.json").write_text(json.dumps(escaped))
    with pytest.raises(ValueError, match=r"dataset 'tiny' \(reader 'meta_json'\): 2 image/mask path\(s\) lie "
                                         r"outside its root .*elsewhere/n0\.png.*allow_outside_root: 1"):
        read_samples("meta_json", mvtec_tree, "tiny")
    allowed = read_samples("meta_json", mvtec_tree, "tiny", allow_outside_root=True)
    assert sorted(allowed.image_path[allowed.image_path.str.contains("elsewhere")]) == [str(p) for p in outside]


def test_folder_categories_option_and_dataset_names_are_checked(tmp_path, workbench):
    root = make_folder_set(tmp_path / "mine")
    with pytest.raises(ValueError, match=r"folder reader, .*mine: category name '\.\.'"):
        read_samples("folder", root, "mine", **{**FOLDER_OPTIONS, "categories": [".."]})
    write_png(tmp_path / "stray.png", rgb(0))
    with pytest.raises(ValueError, match=r"dataset 'mine' \(reader 'folder'\): 1 image/mask .* outside its root"):
        read_samples("folder", root, "mine", train_normal="../*.png", categories=["widget"])
    (workbench / "params.yaml").write_text(yaml.safe_dump({"datasets": {"../up": {"reader": "folder",
                                                                                  "root": str(root)}}}))
    with pytest.raises(ValueError, match=r"params\.yaml datasets: dataset name '\.\./up'"):
        load_samples("../up")
