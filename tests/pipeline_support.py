"""Helpers of the tests that run the pipeline (imported by tests/conftest.py, pipeline/ and ui/)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
TIMEOUT_S = 1800  # a guard against a hung run; a loaded shared machine needs more than 15 min


def run(cmd: list[str], cwd: Path, env: dict[str, str], log: Path,
        timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    with open(log, "w") as fh:
        return subprocess.run(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout,
                              check=False)


def copy_finished(src: Path, dst: Path) -> Path:
    """Copy a finished pipeline tree whole (data, models, results, dvc.lock files, .dvc, .git), so that
    ``dvc status`` starts clean there."""
    shutil.copytree(src, dst, symlinks=True)
    return dst


def dvc_status(cwd: Path, env: dict[str, str]) -> dict[str, list]:
    """``dvc status --json``: stage address -> its changes (data.dvc, absent in a fresh clone, left out)."""
    result = subprocess.run([str(BIN / "dvc"), "status", "--json"], cwd=cwd, env=env, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return {stage: changes for stage, changes in json.loads(result.stdout or "{}").items() if stage != "data.dvc"}


def copy_tree(src: Path, dst: Path) -> Path:
    """Copy the git-tracked and untracked-but-not-ignored files of ``src`` to ``dst`` (a fresh clone's view)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=src, check=True, capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        if (src / rel).is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, dst / rel)
    return dst


def git_snapshot(folder: Path) -> Path:
    """``git init`` + commit of everything in ``folder`` not ignored (like a fresh clone)."""
    git = ["git", "-c", "user.name=pipeline-test", "-c", "user.email=test@localhost"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "snapshot"]):
        subprocess.run(git + cmd, cwd=folder, check=True, capture_output=True)
    return folder
