"""fsadlib.progress: widget bars only in a kernel a Jupyter server started; text bars elsewhere."""

from __future__ import annotations

import io
import sys
import types

import IPython
import pytest
from tqdm.notebook import tqdm as WidgetBar
from tqdm.std import tqdm as TextBar

from fsadlib.progress import TEXT_MININTERVAL_S, progress, progress_mode


@pytest.fixture
def kernel(monkeypatch):
    """Pretend to run inside an IPython kernel (what ipykernel's config holds)."""
    shell = types.SimpleNamespace(config={"IPKernelApp": {}})
    monkeypatch.setattr(IPython, "get_ipython", lambda: shell)
    monkeypatch.delenv("FSAD_PROGRESS", raising=False)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    return monkeypatch


def test_text_outside_a_kernel(monkeypatch):
    monkeypatch.setattr(IPython, "get_ipython", lambda: None)
    monkeypatch.setenv("JPY_SESSION_NAME", "/nb.ipynb")
    monkeypatch.delenv("FSAD_PROGRESS", raising=False)
    assert progress_mode() == "text"


def test_text_under_papermill_widgets_under_jupyterlab(kernel):
    assert progress_mode() == "text"                     # papermill: a kernel, no Jupyter session
    kernel.setattr(sys, "stderr", io.StringIO())         # not a terminal: the bar redraws sparingly
    bar = progress(range(3), desc="x")
    assert type(bar) is TextBar and bar.mininterval == TEXT_MININTERVAL_S and list(bar) == [0, 1, 2]
    kernel.setenv("JPY_SESSION_NAME", "/work/notebooks/60_explore_anomaly_maps.ipynb")
    assert progress_mode() == "widgets"
    bar = progress(total=4, desc="y")
    assert isinstance(bar, WidgetBar) and bar.total == 4
    bar.close()


def test_environment_overrides_and_rejects_unknown_modes(kernel):
    kernel.setenv("JPY_SESSION_NAME", "/nb.ipynb")
    kernel.setenv("FSAD_PROGRESS", "text")
    assert progress_mode() == "text"
    kernel.setenv("FSAD_PROGRESS", "Widgets")
    assert progress_mode() == "widgets"
    kernel.setenv("FSAD_PROGRESS", "fancy")
    with pytest.raises(ValueError, match="FSAD_PROGRESS='fancy'"):
        progress(range(2))
