"""The paper protocol in miniature: fake MVTec AD and VisA trees in their official layouts (MVTec's
folders, VisA's ``split_csv/1cls.csv``) with real category names and non-square images; every method
trains on one data set and is evaluated on the other, in both directions, next to the synthetic
default, and the results of every evaluation coexist in ``reports/summary.json``.

The test runs, in a copy of the finished smoke pipeline, exactly the commands of the README section
"The paper configuration" (steps 2 to 4; the fake trees stand in for the unpacked archives, and the
smoke sizes of the copy stay). Kept cheap: 2 categories per data set, 8 normal training images
(the largest k of ``shots.ks``) and 2 + 2 test images each, at 40 x 30 (MVTec) and 48 x 32 (VisA) px.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image
from pipeline_support import BIN, copy_finished, run

from fsadlib.io import load_torch
from fsadlib.methods import list_methods

MVTEC = ("metal_nut", "capsule")
VISA = ("pcb1", "macaroni1")
#: README, step 3: both directions of the cross-data-set protocol, the model of the last epoch (no
#: validation data), every category of one data set trained on and every one of the other reported
PROTOCOL = {
    "visa": {"aux_dataset": "mvtec", "aux_categories": list(MVTEC), "selection": "fixed", "val_dataset": "mvtec",
             "val_categories": [], "epoch": "last", "target_categories": list(VISA)},
    "mvtec": {"aux_dataset": "visa", "aux_categories": list(VISA), "selection": "fixed", "val_dataset": "visa",
              "val_categories": [], "epoch": "last", "target_categories": list(MVTEC)},
}
DATASETS = {"mvtec": {"reader": "mvtec", "root": "data/real/mvtec"}, "visa": {"reader": "visa", "root": "data/real/visa"}}


def picture(rng: np.random.Generator, size: tuple[int, int], defect: bool) -> tuple[Image.Image, Image.Image]:
    """A textured RGB image of ``size`` (W, H) and its mask: a bright box near the right border when
    ``defect``, nothing otherwise."""
    w, h = size
    pixels = rng.integers(60, 120, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    if defect:
        top = int(rng.integers(2, h - 10))
        mask[top:top + 8, w - 10:w - 2] = 255
        pixels[mask > 0] = 250
    return Image.fromarray(pixels), Image.fromarray(mask)


def write_mvtec(root, rng: np.random.Generator, size=(40, 30)) -> None:
    """MVTec AD's layout: ``<category>/train/good``, ``test/{good,<defect>}``, ``ground_truth/<defect>/*_mask.png``."""
    for category in MVTEC:
        for split, defect, n in (("train", "good", 8), ("test", "good", 2), ("test", "scratch", 2)):
            for i in range(n):
                image, mask = picture(rng, size, defect != "good")
                (root / category / split / defect).mkdir(parents=True, exist_ok=True)
                image.save(root / category / split / defect / f"{i:03d}.png")
                if defect != "good":
                    (root / category / "ground_truth" / defect).mkdir(parents=True, exist_ok=True)
                    mask.save(root / category / "ground_truth" / defect / f"{i:03d}_mask.png")


def write_visa(root, rng: np.random.Generator, size=(48, 32)) -> None:
    """VisA's layout: ``<object>/Data/Images/{Normal,Anomaly}/*.JPG``, ``Data/Masks/Anomaly/*.png`` and the
    1-class split ``split_csv/1cls.csv`` (object, split, label, image, mask)."""
    rows = []
    for category in VISA:
        for split, label, n, start in (("train", "normal", 8, 0), ("test", "normal", 2, 8), ("test", "anomaly", 2, 0)):
            folder = "Normal" if label == "normal" else "Anomaly"
            for i in range(start, start + n):
                image, mask = picture(rng, size, label == "anomaly")
                path = f"{category}/Data/Images/{folder}/{i:03d}.JPG"
                (root / path).parent.mkdir(parents=True, exist_ok=True)
                image.save(root / path, quality=95)
                mask_path = ""
                if label == "anomaly":
                    mask_path = f"{category}/Data/Masks/Anomaly/{i:03d}.png"
                    (root / mask_path).parent.mkdir(parents=True, exist_ok=True)
                    mask.save(root / mask_path)
                rows.append(f"{category},{split},{label},{path},{mask_path}")
    (root / "split_csv").mkdir(parents=True)
    (root / "split_csv" / "1cls.csv").write_text("object,split,label,image,mask\n" + "\n".join(rows) + "\n")


@pytest.fixture
def paper_run(smoke_pipeline, tmp_path):
    """The finished smoke pipeline, copied, with fake MVTec AD and VisA trees, after the README's commands."""
    src, env = smoke_pipeline
    dst = copy_finished(src, tmp_path / "workbench")
    env = {**env, "PYTHONPATH": str(dst), "FSAD_ROOT": str(dst), "FSAD_TRACE_READS": ""}
    rng = np.random.default_rng(0)
    write_mvtec(dst / "data" / "real" / "mvtec", rng)   # step 2: the unpacked archives under data/real/<name>/ ...
    write_visa(dst / "data" / "real" / "visa", rng)
    params = yaml.safe_load((dst / "params.yaml").read_text())
    params["datasets"] |= DATASETS                      # ... declared with their readers
    params["protocol"] |= PROTOCOL                      # step 3: both directions, beside the synthetic default
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for number, cmd in enumerate([["python", "-m", "fsadlib.data.links"], ["dvc", "commit", "-f", "data.dvc"],
                                  ["python", "-m", "fsadlib.pipeline"], ["dvc", "repro"]]):  # step 4
        result = run([str(BIN / cmd[0]), *cmd[1:]], dst, env, tmp_path / f"step{number}.log")
        assert result.returncode == 0, (tmp_path / f"step{number}.log").read_text()[-6000:]
    return dst, (tmp_path / "step3.log").read_text()


def test_every_method_trains_on_one_data_set_and_reports_on_the_other_in_both_directions(paper_run):
    dst, log = paper_run
    summary = json.loads((dst / "reports" / "summary.json").read_text())
    for method in list_methods():
        assert {"synthetic", "mvtec", "visa"} <= set(summary[method]), f"{method}: {sorted(summary[method])}"
        for target in PROTOCOL:
            assert (dst / "reports" / "notebooks" / f"40_evaluate_{method}_{target}.ipynb").is_file()
    assert "train_inctrl@synthetic" not in log, "adding evaluations reran the synthetic one"
    curves = {p.parent.relative_to(dst).as_posix() for p in dst.glob("reports/train_*/*/**/plots/metrics/*.tsv")}
    declared = {next(iter(p)).removeprefix("../../") for name in ("inctrl", "kag_prompt", "bayes_pfl", "finegrained")
                for p in yaml.safe_load((dst / "pipelines" / name / "dvc.yaml").read_text())["plots"]}
    assert {c.split("/")[2] for c in curves} == {"synthetic", "mvtec", "visa"} and curves <= declared
    for target, evaluation in PROTOCOL.items():
        aux = evaluation["aux_dataset"]
        checkpoint = load_torch(dst / "models" / "inctrl" / target / f"trained_on_{aux}" / "k2" / "final.pt")
        assert checkpoint["extra"]["trained_on"] == {
            "data": "auxiliary", "aux_dataset": aux, "aux_categories": evaluation["aux_categories"],
            "selection": "fixed", "val_dataset": "", "val_categories": [], "epoch": "last"}
        results = json.loads((dst / "results" / "inctrl" / target / "k2" / "metrics.json").read_text())
        assert results["run"]["trained_on"] == checkpoint["extra"]["trained_on"]   # recorded beside the numbers
        assert list(results["categories"]) == evaluation["target_categories"]
