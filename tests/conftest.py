"""Shared fixtures of the pipeline tests: one smoke-mode ``dvc repro`` of a copy of the working tree per
test session (``smoke_pipeline``), reused by every test that only reads its outputs. A test that changes
the copy must make its own copy with ``pipeline_support.copy_tree`` instead.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from fsadlib.paths import repo_root

from pipeline_support import BIN, copy_tree, run


@pytest.fixture(scope="session")
def smoke_pipeline(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A smoke-mode copy of the working tree after ``dvc repro``."""
    dst = copy_tree(repo_root(), tmp_path_factory.mktemp("pipeline") / "workbench")
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
