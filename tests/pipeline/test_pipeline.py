"""End to end: the working tree (git-tracked and untracked-but-not-ignored files) is copied to a temp
dir, ``smoke`` is set to 1 there, and ``dvc repro`` runs every stage (of dvc.yaml and of every method
folder's pipelines/<folder>/dvc.yaml, all upstream of the analysis) with papermill, as a fresh clone would (no data/, no models/, no DVC cache or remote). This is also the papermill smoke run
of every pipeline notebook; interactive notebooks (not run by a stage) are then run once on its outputs.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from pipeline_support import BIN, run

from fsadlib.notebooks import notebook_parameters, notebook_stages, notebooks

STAGE_NOTEBOOKS = {Path(s.notebook).name for s in notebook_stages()}
INTERACTIVE = [p.name for p in notebooks() if p.name not in STAGE_NOTEBOOKS]


@pytest.fixture
def clone(smoke_pipeline):
    return smoke_pipeline


def test_every_stage_ran(clone):
    dst, env = clone
    listed = subprocess.run([str(BIN / "dvc"), "stage", "list", "--all", "--name-only"], cwd=dst, env=env,
                            capture_output=True, text=True, check=True).stdout.split()
    listed = [name for name in listed if not name.endswith(".dvc")]   # data.dvc: data, not a stage that runs
    locked = {}
    for lock in [dst / "dvc.lock", *sorted((dst / "pipelines").glob("*/dvc.lock"))]:
        prefix = "" if lock.parent == dst else f"{lock.parent.relative_to(dst).as_posix()}/dvc.yaml:"
        locked |= {prefix + name: stage for name, stage in yaml.safe_load(lock.read_text())["stages"].items()}
    assert any(name.startswith("pipelines/") for name in listed) and "ablation_analysis" in listed
    assert set(listed) <= set(locked), f"stages not run: {sorted(set(listed) - set(locked))}"
    for stage in locked.values():   # every stage runs in the repository root (the generated ones by wdir)
        for out in stage.get("outs", []):
            assert (dst / out["path"]).exists(), out["path"]


def test_pipeline_is_up_to_date_after_repro(clone):
    dst, env = clone
    status = subprocess.run([str(BIN / "dvc"), "status"], cwd=dst, env=env, capture_output=True, text=True,
                            check=False)
    assert status.returncode == 0 and status.stdout.strip() == "Data and pipelines are up to date.", status.stdout


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
    cmd = [str(BIN / "papermill"), f"notebooks/{name}", str(out), "--execution-timeout", "300", "--engine", "fsadlib", *smoke]
    result = run(cmd, dst, env, dst / f"{name}.log")
    if result.returncode != 0 and "Timeout" in (dst / f"{name}.log").read_text():
        # once (of several runs) papermill and an idle kernel both waited for ever on one cell: retry once
        result = run(cmd, dst, env, dst / f"{name}.log")
    assert result.returncode == 0, (dst / f"{name}.log").read_text()[-4000:]
