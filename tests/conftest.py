"""Fixtures shared by the test folders: one smoke-mode ``dvc repro`` of a copy of the working tree per
test session (``smoke_pipeline``), reused by every test that only reads its outputs (``pipeline/``,
``ui/``). A test that changes the copy must make its own copy: ``pipeline_support.copy_tree`` (a fresh
clone's view) or ``pipeline_support.copy_finished`` (the finished tree with its data, models, results
and DVC state). Every process of the run records what it read (``fsadlib.reads``) into
``env["FSAD_TRACE_READS"]``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from pipeline_support import BIN, copy_tree, git_snapshot, run

from fsadlib.paths import repo_root


@pytest.fixture(scope="session")
def smoke_pipeline(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A smoke-mode copy of the working tree after ``dvc repro``."""
    dst = copy_tree(repo_root(), tmp_path_factory.mktemp("pipeline") / "workbench")
    params = yaml.safe_load((dst / "params.yaml").read_text())
    params["smoke"] = 1
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git_snapshot(dst)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(dst), "FSAD_ROOT": str(dst),  # the copy's fsadlib, not the installed checkout
           "FSAD_TRACE_READS": str(tmp_path_factory.mktemp("reads"))}
    result = run([str(BIN / "dvc"), "repro"], dst, env, dst / "repro.log")
    log = (dst / "repro.log").read_text()
    assert result.returncode == 0, f"dvc repro failed:\n{log[-6000:]}"
    return dst, env
