"""DVCLive helpers: one place that decides how training metrics are logged.

Inside ``dvc repro`` / ``dvc exp run`` DVCLive attaches the metrics to the experiment; in a notebook
session it simply writes ``<dir>/metrics.json`` and ``<dir>/plots/``. ``dvcyaml=None`` keeps DVCLive
from rewriting the project's ``dvc.yaml`` (stages declare their metrics and plots themselves).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class NullLive:
    """Stand-in with DVCLive's logging methods when no log folder is given."""

    def log_metric(self, name: str, value: Any, **_: Any) -> None:
        pass

    def log_param(self, name: str, value: Any) -> None:
        pass

    def next_step(self) -> None:
        pass


@contextlib.contextmanager
def open_live(directory: str | Path | None, resume: bool = False) -> Iterator[Any]:
    """A DVCLive ``Live`` writing to ``directory`` (``NullLive`` when ``directory`` is None)."""
    if directory is None:
        yield NullLive()
        return
    from dvclive import Live

    live = Live(dir=str(directory), resume=resume, save_dvc_exp=False, dvcyaml=None, report=None)
    try:
        yield live
    finally:
        live.end()
