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


#: environment variable naming where models/, results/ and reports/ are written (default: the repo root)
OUTPUT_ROOT_ENV = "FSAD_OUTPUT_ROOT"
#: output root of a pipeline notebook run outside DVC (papermill alone, JupyterLab), under the repo root
SCRATCH = "scratch"


def output_root() -> Path:
    """Where models/, results/ and reports/ are written: ``FSAD_OUTPUT_ROOT`` if set, else the repo root.
    Data (data sets, k-shot files, captions) always comes from the repo root."""
    env = os.environ.get(OUTPUT_ROOT_ENV)
    return Path(env).resolve() if env else repo_root()


def use_output_root(parameter: str = "") -> Path:
    """Choose, export (``FSAD_OUTPUT_ROOT``) and return the output root of this process; every pipeline
    notebook calls it first and prints the answer.

    - inside a DVC stage (``DVC_STAGE`` is set by ``dvc repro`` / ``dvc exp run``): the repo root, where
      the stage's outputs are declared; a ``parameter`` or a ``FSAD_OUTPUT_ROOT`` there is an error.
    - outside DVC: ``parameter`` if given, else ``FSAD_OUTPUT_ROOT``, else ``<repo>/scratch``, so a
      papermill or JupyterLab run never overwrites what the pipeline tracks.
    """
    if os.environ.get("DVC_STAGE"):
        given = parameter or os.environ.get(OUTPUT_ROOT_ENV)
        if given and Path(given).resolve() != repo_root():
            raise ValueError(f"output root {given!r} (parameter output_root / {OUTPUT_ROOT_ENV}) inside the DVC "
                             f"stage {os.environ['DVC_STAGE']}: DVC tracks the outputs under {repo_root()}; unset it")
        root = repo_root()
    else:
        root = Path(parameter or os.environ.get(OUTPUT_ROOT_ENV) or repo_root() / SCRATCH).resolve()
    os.environ[OUTPUT_ROOT_ENV] = str(root)
    return root


def data_dir() -> Path:
    """``data/``: data sets (``data/<dataset>/``), k-shot files (``data/shots/``), captions."""
    return repo_root() / "data"


def shots_dir() -> Path:
    return data_dir() / "shots"


def models_dir() -> Path:
    """``<output root>/models/<method>/...``: checkpoints (trainable parameters plus configs)."""
    return output_root() / "models"


def read_dir(name: str) -> Path:
    """Where ``models/`` or ``results/`` are read from: the output root's when it exists (a notebook
    run outside DVC that wrote its own), else the pipeline's ``<repo>/<name>``."""
    own = output_root() / name
    return own if own.is_dir() else repo_root() / name


def trained_models_dir() -> Path:
    """Where trained models are read from (:func:`read_dir`)."""
    return read_dir("models")


def evaluated_results_dir() -> Path:
    """Where evaluation results are read from by the analysis and the explorer (:func:`read_dir`)."""
    return read_dir("results")


def results_dir() -> Path:
    """``<output root>/results/<method>/<dataset>/...``: scores tables, float16 maps, per-category metrics."""
    return output_root() / "results"


def reports_dir() -> Path:
    """``<output root>/reports/``: summary.json, figures, executed notebooks, efficiency table."""
    return output_root() / "reports"


def shared_data_dir() -> Path:
    """``../shared/data`` beside the checkout (real MVTec AD excerpt used by tests); may be absent.

    ``FSAD_SHARED_DATA`` in the environment overrides it (a git worktree nested deeper than the clone)."""
    env = os.environ.get("FSAD_SHARED_DATA")
    return Path(env) if env else repo_root().parent / "shared" / "data"
