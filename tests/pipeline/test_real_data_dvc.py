"""Real data under DVC as users keep it: the check `make data` / `make run` run before DVC refuses
symbolic links, and committing real data links the files to the cache (the configured link type)
instead of doubling them."""

from __future__ import annotations

import os
import subprocess

import numpy as np
from PIL import Image

from fsadlib.paths import repo_root

from pipeline_support import BIN, copy_tree


def test_links_are_refused_and_commit_does_not_double_the_data(tmp_path):
    dst = copy_tree(repo_root(), tmp_path / "workbench")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "snapshot"]):
        subprocess.run(git + cmd, cwd=dst, check=True, capture_output=True)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "FSAD_ROOT": str(dst)}
    dvc = [str(BIN / "dvc")]
    own = dst / "data" / "real" / "own"
    own.mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(own / "a.png")
    Image.fromarray(np.ones((4, 4), np.uint8)).save(tmp_path / "shared.png")
    (own / "b.png").symlink_to(tmp_path / "shared.png")
    refused = subprocess.run([str(BIN / "python"), "-m", "fsadlib.data.links"], cwd=dst, env=env,
                             capture_output=True, text=True, check=False)
    assert refused.returncode == 1 and "b.png" in refused.stderr
    (own / "b.png").unlink()
    for step in (["commit", "-f", "data.dvc"], ["checkout", "--relink", "data.dvc"]):  # as `make data`
        subprocess.run(dvc + step, cwd=dst, env=env, check=True, capture_output=True)
    cached = [p for p in (dst / ".dvc" / "cache").rglob("*") if p.is_file() and not p.name.endswith(".dir")]
    assert len(cached) == 1 and os.path.samefile(cached[0], own / "a.png"), "the data file is linked, not copied"
