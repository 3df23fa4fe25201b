"""Fixtures of the browser tests: a copy of the smoke pipeline's results, JupyterLab serving its
``notebooks/`` as ``make lab`` does, and a headless Chromium page."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from lab_support import LabServer, chromium_or_reason
from pipeline_support import copy_tree, git_snapshot

from fsadlib.paths import repo_root


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium; a missing browser fails the run in CI (``CI`` set) and skips it elsewhere."""
    path, reason = chromium_or_reason()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"the browser tests must run in CI: {reason}")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def ui_workbench(chromium, smoke_pipeline, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A git snapshot of the smoke pipeline's tree with its ``data/`` and ``results/``, for the notebooks
    the browser runs (they write reports/ and models/; the shared pipeline copy stays untouched).
    ``FSAD_ROOT`` is dropped: as in Jupyter, a notebook finds its checkout from its folder."""
    dst, env = smoke_pipeline
    root = copy_tree(dst, tmp_path_factory.mktemp("ui") / "workbench")
    for folder in ("data", "results"):
        shutil.copytree(dst / folder, root / folder, dirs_exist_ok=True)
    git_snapshot(root)
    env = {k: v for k, v in env.items() if k != "FSAD_ROOT"} | {"PYTHONPATH": str(root)}
    return root, env


@pytest.fixture(scope="session")
def lab(ui_workbench, tmp_path_factory) -> LabServer:
    root, env = ui_workbench
    with LabServer(root / "notebooks", env, tmp_path_factory.mktemp("lab")) as server:
        yield server


@pytest.fixture(scope="session")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chrome = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield chrome
        chrome.close()


@pytest.fixture
def page(browser, lab):
    context = browser.new_context(viewport={"width": 1500, "height": 1000})
    page = context.new_page()
    yield page
    context.close()
    lab.shut_down_kernels()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """``reports/ui/`` of this checkout (git-ignored): what the browser showed, for people to look at."""
    folder = repo_root() / "reports" / "ui"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
