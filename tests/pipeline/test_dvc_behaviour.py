"""DVC behaves as a user expects: each test edits a throw-away copy of the finished smoke pipeline
(``smoke_pipeline``, copied whole so ``dvc status`` starts clean) and checks what ``dvc status`` says
would rerun. One test adds a toy method as an outside package and runs its stages there."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from pipeline_support import BIN, copy_finished, dvc_status, run

TOY_SOURCE = Path(__file__).resolve().parents[1] / "toy_method"
METHODS = [("winclip", "winclip"), ("winclip", "winclip_plus"), ("inctrl", "inctrl"), ("kag_prompt", "kag_prompt"),
           ("bayes_pfl", "bayes_pfl"), ("finegrained", "finegrained")]
EVALUATIONS = {f"pipelines/{folder}/dvc.yaml:evaluate@{method}-synthetic" for folder, method in METHODS}


@pytest.fixture
def finished(smoke_pipeline, tmp_path):
    """A throw-away copy of the finished smoke pipeline (its own FSAD_ROOT and PYTHONPATH)."""
    src, env = smoke_pipeline
    dst = copy_finished(src, tmp_path / "workbench")
    env = {**env, "PYTHONPATH": str(dst), "FSAD_ROOT": str(dst), "FSAD_TRACE_READS": ""}
    assert dvc_status(dst, env) == {}, "the copy starts up to date"
    return dst, env


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def test_editing_a_method_readme_or_the_explorer_reruns_nothing(finished):
    dst, env = finished
    append(dst / "fsadlib" / "methods" / "inctrl" / "README.md", "\nA note.\n")
    append(dst / "fsadlib" / "viz" / "explorer.py", "\n# a comment\n")
    assert dvc_status(dst, env) == {}


def test_editing_inctrl_reruns_only_its_training_and_evaluation(finished):
    dst, env = finished
    append(dst / "fsadlib" / "methods" / "inctrl" / "model.py", "\n# a comment\n")
    assert set(dvc_status(dst, env)) == {"pipelines/inctrl/dvc.yaml:train_inctrl@synthetic",
                                          "pipelines/inctrl/dvc.yaml:evaluate@inctrl-synthetic"}
    # ... and then the analysis, which depends on every result folder (dvc only sees it once results change)
    analysis = yaml.safe_load((dst / "dvc.yaml").read_text())["stages"]["ablation_analysis"]
    evaluate = yaml.safe_load((dst / "pipelines" / "inctrl" / "dvc.yaml").read_text())["stages"]["evaluate"]
    assert "results" in analysis["deps"] and evaluate["outs"][0].startswith("results/")


def test_changing_one_target_image_reruns_its_shots_and_every_evaluation(finished):
    dst, env = finished
    image = min((dst / "data" / "synthetic" / "disc" / "test" / "good").iterdir())
    pixels = np.array(Image.open(image))
    pixels[0, 0] = 255 - pixels[0, 0]   # one pixel of one image of the target data set
    Image.fromarray(pixels).save(image)
    assert "make_shots@synthetic" in dvc_status(dst, env)
    result = run([str(BIN / "dvc"), "repro", "-s", "make_shots@synthetic"], dst, env, dst / "shots.log")
    assert result.returncode == 0, (dst / "shots.log").read_text()[-3000:]
    changed = set(dvc_status(dst, env))
    assert EVALUATIONS <= changed, f"evaluations not rerun: {sorted(EVALUATIONS - changed)}"


def test_changing_the_target_dataset_reruns_what_reads_it(finished):
    dst, env = finished
    params = yaml.safe_load((dst / "params.yaml").read_text())
    params["datasets"]["synthetic_again"] = dict(params["datasets"]["synthetic"])
    params["protocol"] = {"synthetic_again": params["protocol"]["synthetic"]}   # the evaluation's key is its target
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = set(dvc_status(dst, env))
    assert {e.replace("-synthetic", "-synthetic_again") for e in EVALUATIONS} <= changed
    assert "pipelines/finegrained/dvc.yaml:train_finegrained@synthetic_again" in changed   # trains on target shots
    assert "build_captions@synthetic" not in changed                               # it does not read it
    # (prepare_data and make_shots@<dataset> do: notebooks 10 and 15 check the protocol's categories)


def porcelain(root: Path) -> list[str]:
    """``git status --porcelain`` lines, every untracked file listed."""
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=root, capture_output=True,
                          text=True, check=True).stdout.splitlines()


def install_outside_package(site: Path) -> Path:
    """The toy method as an outside package: its source folder plus a distribution declaring the
    ``fsadlib.methods`` entry point, both in ``site`` (a temporary folder put on PYTHONPATH)."""
    import shutil

    shutil.copytree(TOY_SOURCE / "toy_fsad", site / "toy_fsad")
    info = site / "toy_fsad-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-fsad\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[fsadlib.methods]\ntoy = toy_fsad:SPEC\n")
    return site


def test_an_outside_method_trains_and_evaluates_through_dvc_with_no_shared_file_edited(finished, tmp_path):
    dst, env = finished
    site = install_outside_package(tmp_path / "site")
    env = {**env, "PYTHONPATH": f"{dst}:{site}"}
    before_toy = set(porcelain(dst))
    for cmd in ([sys.executable, "scripts/build_notebooks.py"], [sys.executable, "-m", "fsadlib.pipeline"]):
        subprocess.run(cmd, cwd=dst, env=env, check=True, capture_output=True)
    append(dst / "params.yaml", "\n# the toy method's own section\ntoy:\n  ks: [1]\n")
    result = run([str(BIN / "dvc"), "repro", "pipelines/toy/dvc.yaml:evaluate@toy-synthetic"], dst, env, tmp_path / "toy.log")
    log = (tmp_path / "toy.log").read_text()
    assert result.returncode == 0, log[-4000:]
    assert "Running stage 'pipelines/toy/dvc.yaml:train_toy@synthetic'" in log and "Running stage 'make_shots" not in log
    assert (dst / "models" / "toy" / "synthetic" / "trained_on_synthetic" / "final.pt").is_file()
    assert (dst / "results" / "toy" / "synthetic" / "k1" / "metrics.json").is_file()
    outputs = ("data/", "models/", "results/", "reports/")
    changed = sorted(line[3:] for line in set(porcelain(dst)) - before_toy if not line[3:].startswith(outputs))
    assert changed == ["notebooks/39_train_toy.ipynb", "params.yaml", "pipelines/toy/dvc.lock",
                       "pipelines/toy/dvc.yaml"], changed
    before = subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=dst, capture_output=True, text=True,
                            check=True).stdout
    after = yaml.safe_load((dst / "params.yaml").read_text())
    assert after.pop("toy") == {"ks": [1]} and after == yaml.safe_load(before), "only its own section is added"
