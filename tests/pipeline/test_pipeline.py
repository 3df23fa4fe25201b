"""End to end: the working tree (git-tracked and untracked-but-not-ignored files) is copied to a temp
dir, ``smoke`` is set to 1 there, and ``dvc repro`` runs every stage of dvc.yaml with papermill, as a
fresh clone would (no data/, no models/, no DVC cache or remote). This is also the papermill smoke run
of every pipeline notebook; interactive notebooks (not run by a stage) are then run once on its outputs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fsadlib.notebooks import notebook_parameters, notebook_stages, notebooks
from fsadlib.paths import repo_root

BIN = Path(sys.executable).parent
STAGE_NOTEBOOKS = {Path(s.notebook).name for s in notebook_stages()}
INTERACTIVE = [p.name for p in notebooks() if p.name not in STAGE_NOTEBOOKS]
TIMEOUT_S = 900


def run(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.CompletedProcess:
    with open(log, "w") as fh:
        return subprocess.run(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=TIMEOUT_S,
                              check=False)


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A smoke-mode copy of the working tree after ``dvc repro``."""
    src = repo_root()
    dst = tmp_path_factory.mktemp("pipeline") / "workbench"
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=src, check=True, capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        if (src / rel).is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, dst / rel)
    params = yaml.safe_load((dst / "params.yaml").read_text())
    params["smoke"] = 1
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = ["git", "-c", "user.name=pipeline-test", "-c", "user.email=test@localhost"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "snapshot"]):  # like a fresh clone
        subprocess.run(git + cmd, cwd=dst, check=True, capture_output=True)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(dst), "FSAD_ROOT": str(dst)}  # the copy's fsadlib, not the installed checkout
    result = run([str(BIN / "dvc"), "repro"], dst, env, dst / "repro.log")
    log = (dst / "repro.log").read_text()
    assert result.returncode == 0, f"dvc repro failed:\n{log[-6000:]}"
    return dst, env


def test_every_stage_ran(clone):
    dst, env = clone
    listed = subprocess.run([str(BIN / "dvc"), "stage", "list", "--name-only"], cwd=dst, env=env,
                            capture_output=True, text=True, check=True).stdout.split()
    locked = yaml.safe_load((dst / "dvc.lock").read_text())["stages"]
    assert listed and set(listed) <= set(locked), f"stages not run: {sorted(set(listed) - set(locked))}"
    for stage in locked.values():
        for out in stage.get("outs", []):
            assert (dst / out["path"]).exists(), out["path"]


def test_pipeline_is_up_to_date_after_repro(clone):
    dst, env = clone
    status = subprocess.run([str(BIN / "dvc"), "status"], cwd=dst, env=env, capture_output=True, text=True,
                            check=False)
    lines = [line for line in status.stdout.splitlines() if line.strip()]
    # data.dvc (real data, absent in a fresh clone) is the one entry allowed to be missing
    changed = [line for line in lines if not line.startswith(("data.dvc", "\t", "Data and pipelines"))]
    assert status.returncode == 0 and not changed, status.stdout


def test_synthetic_data_and_shots_exist(clone):
    dst, _ = clone
    assert (dst / "data" / "synthetic" / "synthetic.json").is_file()
    assert sorted(p.name for p in (dst / "data" / "shots" / "synthetic" / "disc").iterdir())[:2] == [
        "k1_seed0.json", "k1_seed1.json"]


@pytest.mark.parametrize("name", INTERACTIVE)
def test_interactive_notebook_runs_on_pipeline_outputs(clone, name):
    dst, env = clone
    smoke = ["-p", "smoke", "1"] if "smoke" in notebook_parameters(dst / "notebooks" / name) else []
    out = dst / "reports" / "notebooks" / name
    result = run([str(BIN / "papermill"), f"notebooks/{name}", str(out), *smoke], dst, env, dst / f"{name}.log")
    assert result.returncode == 0, (dst / f"{name}.log").read_text()[-4000:]
