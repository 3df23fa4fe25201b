"""Tiny data trees written by the tests, and a throw-away workbench root (FSAD_ROOT)."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_trees import mask_with, rgb, write_png


@pytest.fixture
def mvtec_tree(tmp_path: Path) -> Path:
    """Two categories; ``crack`` images ``a.png`` / ``a_b.png`` sort in the opposite order of their
    masks (``a_b_mask.png`` < ``a_mask.png``), so pairing by sorted index would swap them. An image's
    grey value equals the area of its mask."""
    root = tmp_path / "mvtec"
    for category in ("bottle", "screw"):
        base = root / category
        for i in range(3):
            write_png(base / "train" / "good" / f"{i:03d}.png", rgb(1))
        write_png(base / "test" / "good" / "000.png", rgb(0))
        for stem, area in (("a", 3), ("a_b", 5)):
            write_png(base / "test" / "crack" / f"{stem}.png", rgb(area))
            write_png(base / "ground_truth" / "crack" / f"{stem}_mask.png", mask_with(area))
    return root


@pytest.fixture
def workbench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty workbench root (dvc.yaml + params.yaml) that fsadlib.paths.repo_root() returns."""
    root = tmp_path / "bench"
    root.mkdir()
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / "params.yaml").write_text("{}\n")
    monkeypatch.setenv("FSAD_ROOT", str(root))
    return root
