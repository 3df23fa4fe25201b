"""Real data under DVC as users keep it: `make data` refuses symbolic links before DVC sees them, then
records the data's hash in data.dvc without copying the data (`cache: false`) or touching its files."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import yaml
from PIL import Image
from pipeline_support import BIN, copy_tree

from fsadlib.paths import repo_root


def make_data(dst, env) -> subprocess.CompletedProcess:
    """The steps of `make data`."""
    check = subprocess.run([str(BIN / "python"), "-m", "fsadlib.data.links"], cwd=dst, env=env,
                           capture_output=True, text=True, check=False)
    if check.returncode == 0:
        subprocess.run([str(BIN / "dvc"), "commit", "-f", "data.dvc"], cwd=dst, env=env, check=True,
                       capture_output=True)
    return check


def data_files(dst) -> list:
    return [p for p in (dst / ".dvc" / "cache").rglob("*") if p.is_file() and not p.name.endswith(".dir")]


def test_make_data_refuses_links_and_never_doubles_the_data(tmp_path):
    dst = copy_tree(repo_root(), tmp_path / "workbench")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "snapshot"]):
        subprocess.run(git + cmd, cwd=dst, check=True, capture_output=True)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "FSAD_ROOT": str(dst)}
    own = dst / "data" / "real" / "own"
    own.mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(own / "a.png")
    Image.fromarray(np.ones((4, 4), np.uint8)).save(tmp_path / "shared.png")
    (own / "b.png").symlink_to(tmp_path / "shared.png")
    refused = make_data(dst, env)
    assert refused.returncode == 1 and "b.png" in refused.stderr and "absolute path" in refused.stderr
    (own / "b.png").unlink()
    inode = (own / "a.png").stat().st_ino
    assert make_data(dst, env).returncode == 0
    out = yaml.safe_load((dst / "data.dvc").read_text())["outs"][0]
    assert out["nfiles"] == 2 and not data_files(dst), "hash recorded (a.png + .gitkeep), nothing copied"
    assert (own / "a.png").stat().st_ino == inode
