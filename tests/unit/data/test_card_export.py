"""Data cards (counts, sizes, split rule, which metrics apply) and meta.json export of configured sets."""

from __future__ import annotations

import json
import os

import pytest
import yaml
from data_trees import mask_with, rgb, write_png
from test_readers_official import ELPV_LINES, write_elpv

from fsadlib.data import card_table, data_card, export_meta_json, load_samples, write_data_card
from fsadlib.data.readers import CARDS


def configure(workbench, datasets: dict) -> None:
    (workbench / "params.yaml").write_text(yaml.safe_dump({"datasets": datasets}))


def make_isic(root):
    for stem, area in (("ISIC_0000001", 3), ("ISIC_0000002", 5)):
        write_png(root / "ISBI2016_ISIC_Part1_Test_Data" / f"{stem}.jpg", rgb(area, size=10))
        write_png(root / "ISBI2016_ISIC_Part1_Test_GroundTruth" / f"{stem}_Segmentation.png", mask_with(area, size=10))
    return root


def test_cards_of_three_kinds_of_set(workbench, mvtec_tree):
    write_elpv(workbench / "data" / "real" / "elpv", ELPV_LINES)
    make_isic(workbench / "data" / "real" / "isic")
    configure(workbench, {
        "elpv": {"reader": "elpv", "root": "data/real/elpv"},
        "isic": {"reader": "isic", "root": "data/real/isic"},
        "tiny": {"reader": "mvtec", "root": str(mvtec_tree), "card": {"title": "tiny MVTec-shaped", "licence": "CC0"}},
    })
    elpv = data_card("elpv")
    assert elpv["licence"] == CARDS["elpv"].licence and "random_state=42" in elpv["split"]
    assert elpv["categories"]["elpv"] | {"defects": None, "image_sizes": None} == {
        "train_normal": 9, "test_normal": 3, "test_anomalous": 2, "with_masks": 0, "defects": None,
        "image_sizes": None, "not_applicable": {"pixel": "no masks (image-level labels only)"}}
    assert elpv["categories"]["elpv"]["defects"] == {"mono": 1, "poly": 1}
    assert elpv["categories"]["elpv"]["image_sizes"] == {"6x6": 16 - 2}
    isic = data_card("isic")["categories"]["skin"]
    assert isic["not_applicable"] == {"image": "all 2 test images are anomalous"} and isic["with_masks"] == 2
    tiny = data_card("tiny")
    assert (tiny["title"], tiny["licence"], tiny["citation"]) == ("tiny MVTec-shaped", "CC0", CARDS["mvtec"].citation)
    table = card_table(tiny)
    assert table["metrics"].tolist() == ["image + pixel"] * 2 and table["train_normal"].tolist() == [3, 3]
    path = write_data_card(data_card("isic"))
    assert path == workbench / "reports" / "data_cards" / "isic.json"
    assert json.loads(path.read_text())["categories"]["skin"]["image_sizes"] == {"10x10": 2}
    configure(workbench, {"tiny": {"reader": "mvtec", "root": str(mvtec_tree), "card": {"licence_url": "x"}}})
    with pytest.raises(KeyError, match=r"datasets.tiny.card: unknown keys \['licence_url'\]"):
        data_card("tiny")


def test_meta_json_export_of_a_set_with_derived_masks(workbench):
    make_isic(workbench / "data" / "real" / "isic")
    configure(workbench, {"isic": {"reader": "isic", "root": "data/real/isic"}})
    out = workbench / "export" / "isic"
    meta = export_meta_json("isic", out)
    content = json.loads(meta.read_text())
    entries = content["test"]["skin"]
    assert len(entries) == 2 and all(e["dataset_name"] == "isic" and e["anomaly"] == 1 for e in entries)
    assert all(e["mask_path"].startswith("../../data/derived/isic/") for e in entries)
    # the way AnomalyCLIP / Bayes-PFL resolve them: os.path.join(root, path)
    assert all(os.path.isfile(os.path.join(out, e[key])) for e in entries for key in ("img_path", "mask_path"))
    configure(workbench, {"isic": {"reader": "isic", "root": "data/real/isic"},
                          "back": {"reader": "meta_json", "root": "export/isic", "allow_outside_root": 1}})
    back = load_samples("back").drop(columns="dataset")
    assert back.equals(load_samples("isic").drop(columns="dataset"))
