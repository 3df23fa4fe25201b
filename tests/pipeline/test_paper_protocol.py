"""The paper protocol in miniature: fake MVTec AD and VisA trees in their official layouts (MVTec's
folders, VisA's ``split_csv/1cls.csv``) with real category names and non-square images; methods train
on one data set and are evaluated on the other, in both directions, next to the synthetic default, and
the results of every evaluation coexist in ``reports/summary.json``.

The test takes the YAML and the commands of the README section "The paper configuration on a GPU,
with real weights and data" (steps 2 to 4) from the README itself, so that the two cannot drift: the
``datasets`` block as written, the ``protocol`` block with each ``...`` list filled with the fake trees'
categories, the ``methods`` example (default run) or every method (``slow``), then the commands of the
bash block, in a copy of the finished smoke pipeline (its smoke sizes stay). Kept cheap: 2 + 3
categories, 8 normal training images (the largest k of ``shots.ks``) and 2 + 2 test images each, at
40 x 30 (MVTec) and 48 x 32 (VisA) px.
"""

from __future__ import annotations

import json
import re
import shlex
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from pipeline_support import BIN, TIMEOUT_S, copy_finished, dvc_status, run

from fsadlib.io import load_torch
from fsadlib.methods import list_methods, spec_of
from fsadlib.paths import repo_root

MVTEC = ("metal_nut", "capsule")
VISA = ("pcb1", "capsules", "pipe_fryum")
CATEGORIES = {"mvtec": MVTEC, "visa": VISA}
SECTION = "## The paper configuration on a GPU, with real weights and data"


def readme_blocks() -> list[tuple[str, str]]:
    """(language, text) of every fenced block of the README's paper-configuration section, in order."""
    text = (repo_root() / "README.md").read_text()
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return [(lang, textwrap.dedent(body)) for lang, body in re.findall(r"```(\w+)\n(.*?)```", section, re.DOTALL)]


def readme_yaml(key: str) -> dict:
    """The README's YAML block whose top-level key is ``key``."""
    blocks = [yaml.safe_load(body) for lang, body in readme_blocks() if lang == "yaml"]
    found = [block for block in blocks if isinstance(block, dict) and key in block]
    assert len(found) == 1, f"README section {SECTION!r}: one YAML block with '{key}', found {len(found)}"
    return found[0]


def readme_commands() -> list[list[str]]:
    """The README's bash block, one command per ``&&``-separated part of each line, comments dropped."""
    bash = [body for lang, body in readme_blocks() if lang == "bash"]
    assert len(bash) == 1, f"README section {SECTION!r}: one bash block, found {len(bash)}"
    lines = [line.split("#", 1)[0] for line in bash[0].splitlines()]
    return [shlex.split(part) for line in lines for part in line.split("&&") if part.strip()]


def paper_protocol() -> dict:
    """The README's ``protocol`` block (the synthetic default left as it is), each list with ``...``
    replaced by the categories of the data set it names: ``aux_categories`` of ``aux_dataset``,
    ``target_categories`` of the target."""
    evaluations = {}
    for target, evaluation in readme_yaml("protocol")["protocol"].items():
        if target == "synthetic":
            continue
        filled = {"aux_categories": CATEGORIES[evaluation["aux_dataset"]], "target_categories": CATEGORIES[target]}
        evaluations[target] = {key: list(filled[key]) if isinstance(value, list) and "..." in value else value
                               for key, value in evaluation.items()}
    assert set(evaluations) == {"mvtec", "visa"}, "the README's example is both directions of MVTec AD <-> VisA"
    return evaluations


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


def write_mvtec(root: Path, rng: np.random.Generator, size=(40, 30)) -> None:
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


def write_visa(root: Path, rng: np.random.Generator, size=(48, 32)) -> None:
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
                image.save(root / path, format="JPEG", quality=95)
                mask_path = ""
                if label == "anomaly":
                    mask_path = f"{category}/Data/Masks/Anomaly/{i:03d}.png"
                    (root / mask_path).parent.mkdir(parents=True, exist_ok=True)
                    mask.save(root / mask_path)
                rows.append(f"{category},{split},{label},{path},{mask_path}")
    (root / "split_csv").mkdir(parents=True)
    (root / "split_csv" / "1cls.csv").write_text("object,split,label,image,mask\n" + "\n".join(rows) + "\n")


def run_the_readme(smoke_pipeline, tmp_path: Path, methods, timeout: float = TIMEOUT_S) -> tuple[Path, dict, str]:
    """The finished smoke pipeline, copied, with fake MVTec AD and VisA trees, after the README's steps 2
    to 4 with ``methods`` (params.yaml ``methods``), each command within ``timeout`` s; returns the copy,
    its environment and the repro log."""
    src, env = smoke_pipeline
    dst = copy_finished(src, tmp_path / "workbench")
    env = {**env, "PYTHONPATH": str(dst), "FSAD_ROOT": str(dst), "FSAD_TRACE_READS": ""}
    datasets = readme_yaml("datasets")["datasets"]
    rng = np.random.default_rng(0)
    write_mvtec(dst / datasets["mvtec"]["root"], rng)   # step 2: the unpacked archives, declared as written
    write_visa(dst / datasets["visa"]["root"], rng)
    params = yaml.safe_load((dst / "params.yaml").read_text())
    params["datasets"] |= datasets
    params["protocol"] |= paper_protocol()               # step 3: both directions, beside the synthetic default
    params["methods"] = methods
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    log = ""
    for number, (program, *args) in enumerate(readme_commands()):   # step 4
        assert program in {"python", "dvc"}, f"README command {program!r}: the test runs python and dvc only"
        result = run([str(BIN / program), *args], dst, env, tmp_path / f"step{number}.log", timeout)
        log = (tmp_path / f"step{number}.log").read_text()
        assert result.returncode == 0, f"{program} {' '.join(args)}:\n{log[-6000:]}"
    return dst, env, log


def check_every_evaluation(dst: Path, env: dict, log: str, methods: list[str]) -> None:
    """What both tests check: each method's results on both targets beside the synthetic ones, tracked
    by DVC, with their own notebooks, models, curves and records of what they were trained on."""
    protocol = paper_protocol()
    summary = json.loads((dst / "reports" / "summary.json").read_text())
    for method in methods:
        assert {"synthetic", "mvtec", "visa"} <= set(summary[method]), f"{method}: {sorted(summary[method])}"
        for target in protocol:
            assert (dst / "reports" / "notebooks" / f"40_evaluate_{method}_{target}.ipynb").is_file()
            results = json.loads(next((dst / "results" / method / target).glob("k*/metrics.json")).read_text())
            assert sorted(results["categories"]) == sorted(CATEGORIES[target]), (method, target)
            assert results["run"]["geometry"] == "resize_crop", results["run"]     # non-square: the papers' crop
    reran = re.findall(r"Running stage '([^']+)'", log)
    assert not [s for s in reran if s.endswith("synthetic") and ("train_" in s or "evaluate@" in s)], reran
    assert dvc_status(dst, env) == {}, "every stage of every evaluation is tracked and up to date"
    folders = sorted({spec_of(m).name for m in methods if spec_of(m).trainable})
    curves = {p.parent.relative_to(dst).as_posix() for p in dst.glob("reports/train_*/*/**/plots/metrics/*.tsv")}
    declared = {next(iter(p)).removeprefix("../../") for name in folders
                for p in yaml.safe_load((dst / "pipelines" / name / "dvc.yaml").read_text())["plots"]}
    assert {c.split("/")[2] for c in curves if c.split("/")[1] in {f"train_{f}" for f in folders}} == {
        "synthetic", "mvtec", "visa"}
    assert {c for c in curves if c.split("/")[1] in {f"train_{f}" for f in folders}} <= declared
    for target, evaluation in protocol.items():
        aux = evaluation["aux_dataset"]
        if "inctrl" in methods:   # trained on the other data set, recorded in the model and beside the numbers
            checkpoint = load_torch(dst / "models" / "inctrl" / target / f"trained_on_{aux}" / "k2" / "final.pt")
            assert checkpoint["extra"]["trained_on"] == {
                "data": "auxiliary", "aux_dataset": aux, "aux_categories": list(CATEGORIES[aux]),
                "selection": "fixed", "val_dataset": "", "val_categories": [], "epoch": "last"}
            results = json.loads((dst / "results" / "inctrl" / target / "k2" / "metrics.json").read_text())
            assert results["run"]["trained_on"] == checkpoint["extra"]["trained_on"]
        if "finegrained" in methods:   # trained on the target's shots, with the captions of the target data set
            for category in CATEGORIES[target]:
                model = next((dst / "models" / "finegrained" / target).glob(f"**/{category}.pt"))
                checkpoint = load_torch(model)
                captions = checkpoint["extra"]["captions"]
                assert checkpoint["config"]["captions_dataset"] == target, model
                assert (captions["dataset"], captions["category"]) == (target, category), model


def test_some_methods_train_on_one_data_set_and_report_on_the_other_in_both_directions(smoke_pipeline, tmp_path):
    """FineGrainedAD (trains on target shots, captions of a real-named data set), InCTRL (trains on the
    other data set) and WinCLIP (zero-shot): the README's ``methods`` example."""
    methods = readme_yaml("methods")["methods"]
    assert {"finegrained", "inctrl", "winclip"} <= set(methods)
    dst, env, log = run_the_readme(smoke_pipeline, tmp_path, methods)
    check_every_evaluation(dst, env, log, methods)
    left_out = {spec_of(m).name for m in list_methods()} - {spec_of(m).name for m in methods}
    assert not any((dst / "pipelines" / name / "dvc.yaml").exists() for name in left_out)
    # the data under data/real as DVC sees it: a touched image reruns nothing (content hashes), a changed
    # one reruns the stages that read its data set directly (its shots and captions), and nothing else
    image = dst / "data" / "real" / "mvtec" / MVTEC[0] / "test" / "scratch" / "000.png"
    image.touch()
    assert dvc_status(dst, env) == {}
    pixels = np.array(Image.open(image))
    pixels[0, 0] = 255 - pixels[0, 0]
    Image.fromarray(pixels).save(image)
    assert set(dvc_status(dst, env)) == {"make_shots@mvtec", "build_captions@mvtec"}


@pytest.mark.slow
def test_every_method_trains_on_one_data_set_and_reports_on_the_other_in_both_directions(smoke_pipeline, tmp_path):
    """Every method (the README's default, ``methods: all``): 29 stages, about twice the default run's
    (a run on a loaded 2-core machine passed the 30 min guard of one command: three times that here)."""
    dst, env, log = run_the_readme(smoke_pipeline, tmp_path, "all", timeout=3 * TIMEOUT_S)
    check_every_evaluation(dst, env, log, list_methods())
