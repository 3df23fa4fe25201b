"""Repository root and canonical folders.

The root is found by walking up from the current directory (or from this file) to the first folder
that holds ``dvc.yaml``; papermill runs notebooks with ``cwd=notebooks/``, so relative paths in
notebooks are never trusted.
"""

from __future__ import annotations

import os
from pathlib import Path


def repo_root(start: str | Path | None = None) -> Path:
    """Return the first ancestor of ``start`` (default: cwd, then this file) containing ``dvc.yaml``.

    ``FSAD_ROOT`` in the environment overrides the search.
    """
    env = os.environ.get("FSAD_ROOT")
    if env:
        return Path(env).resolve()
    candidates = [Path(start)] if start is not None else [Path.cwd(), Path(__file__).resolve().parent]
    for base in candidates:
        for folder in [base.resolve(), *base.resolve().parents]:
            if (folder / "dvc.yaml").is_file():
                return folder
    raise FileNotFoundError(
        f"no dvc.yaml found above {candidates[0]}; run from inside the workbench or set FSAD_ROOT"
    )


def data_dir() -> Path:
    """``data/``: data sets (``data/<dataset>/``), k-shot files (``data/shots/``), captions."""
    return repo_root() / "data"


def shots_dir() -> Path:
    return data_dir() / "shots"


def models_dir() -> Path:
    """``models/<method>/...``: checkpoints (trainable parameters plus configs)."""
    return repo_root() / "models"


def results_dir() -> Path:
    """``results/<method>/<dataset>/...``: scores tables, float16 maps, per-category metrics."""
    return repo_root() / "results"


def reports_dir() -> Path:
    """``reports/``: summary.json, figures, executed notebooks, efficiency table."""
    return repo_root() / "reports"


def shared_data_dir() -> Path:
    """``../shared/data`` beside the checkout (real MVTec AD excerpt used by tests); may be absent."""
    return repo_root().parent / "shared" / "data"
