"""Progress bars that fit where the code runs: widget bars in JupyterLab, text bars elsewhere.

``tqdm.auto`` picks widget bars in every IPython kernel, papermill's included, so a DVC stage's
executed notebook would store a frozen widget ("0%") instead of a bar. :func:`progress` draws:

- widget bars (``tqdm.notebook``) in a kernel a Jupyter server started for a person: an IPython
  kernel (``IPKernelApp`` in its config) whose environment has ``JPY_SESSION_NAME``, which
  jupyter_server (JupyterLab, Notebook 7) sets for the kernels of its sessions and papermill does not;
- text bars (``tqdm.std``) everywhere else: papermill (the stream lands in the executed notebook and,
  with ``papermill --log-output``, in the DVC log), scripts, tests. Off a terminal a text bar redraws
  at most every ``TEXT_MININTERVAL_S`` seconds, so logs stay short.

``FSAD_PROGRESS=widgets|text`` in the environment overrides the choice (``auto`` = the rule above).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

from tqdm.std import tqdm as Bar

ENV = "FSAD_PROGRESS"
MODES = ("auto", "widgets", "text")
TEXT_MININTERVAL_S = 2.0


def progress_mode() -> str:
    """``"widgets"`` or ``"text"``: the kind of bar :func:`progress` draws here (module docstring)."""
    mode = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"environment variable {ENV}={os.environ[ENV]!r}: choose one of {MODES}")
    if mode != "auto":
        return mode
    return "widgets" if _in_jupyter_kernel() and os.environ.get("JPY_SESSION_NAME") else "text"


def progress(iterable: Iterable | None = None, **kwargs: Any) -> Bar:
    """A tqdm bar over ``iterable`` (or a manual one with ``total=``) of the kind :func:`progress_mode`
    names; ``kwargs`` go to tqdm unchanged (``desc``, ``total``, ``unit``, ``leave`` ...)."""
    if progress_mode() == "widgets":
        from tqdm.notebook import tqdm as widget_bar

        return widget_bar(iterable, **kwargs)
    if not sys.stderr.isatty():
        kwargs.setdefault("mininterval", TEXT_MININTERVAL_S)
    return Bar(iterable, **kwargs)


def _in_jupyter_kernel() -> bool:
    """True inside an IPython kernel (not a terminal IPython, not plain Python)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in shell.config
