"""JupyterLab driven by a real headless Chromium (Playwright for Python pointed at Debian's
``chromium``), for the browser tests of this folder.

:class:`LabServer` starts ``fsadlib.lab.lab_command`` (what ``make lab`` runs) on a free loopback
port with a token, its Jupyter settings in a temporary folder (no news pop-up, no autosave, every
cell kept in the page, the notebook's kernel started without asking). :class:`NotebookPage` does what a person does in the page: open a notebook,
type into a cell, Run > Run All Cells, wait, read what the outputs show.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Self

import numpy as np
from PIL import Image

from fsadlib.lab import HOST, lab_command, lab_environment

CHROMIUM = os.environ.get("FSAD_CHROMIUM", "/usr/bin/chromium")
SETTINGS = {  # JupyterLab user settings: plugin id -> values
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/docmanager-extension:plugin": {"autosave": False},
    "@jupyterlab/notebook-extension:tracker": {"windowingMode": "none", "autoStartDefaultKernel": True},
}
START_TIMEOUT_S = 120
RUN_TIMEOUT_S = 420
# the status bar says "<kernel name> | Idle": the notebook's kernel is started and connected
_KERNEL_IDLE = "() => [...document.querySelectorAll('.jp-StatusBar-TextItem')].some(e => / \\| Idle$/.test(e.textContent))"
NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden)"             # the notebook in front
IMAGES = f"{NOTEBOOK} .jp-OutputArea-output img"               # images the outputs show
_PROMPTS = f"[...document.querySelectorAll('{NOTEBOOK} .jp-CodeCell .jp-InputPrompt')]"
_RUN_STARTED = f"() => {_PROMPTS}.some(p => /\\[(\\d+|\\*)\\]/.test(p.textContent))"
# the last code cell has run: no cell waits ("[*]") and at least one shows its execution number
_RUN_FINISHED = f"""() => {{
    const prompts = {_PROMPTS}.map(p => p.textContent);
    return prompts.some(t => /\\[\\d+\\]/.test(t)) && !prompts.some(t => t.includes('*'));
}}"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class LabServer:
    """A JupyterLab server serving ``notebook_dir``; use as a context manager."""

    def __init__(self, notebook_dir: Path, env: dict[str, str], state_dir: Path) -> None:
        self.port, self.token = free_port(), secrets.token_hex(16)
        self.state_dir = state_dir
        settings = state_dir / "settings"
        for plugin, values in SETTINGS.items():
            package, name = plugin.split(":")
            path = settings / package / f"{name}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        self.env = lab_environment(env) | {
            "JUPYTER_CONFIG_DIR": str(state_dir / "config"), "JUPYTER_RUNTIME_DIR": str(state_dir / "runtime"),
            "JUPYTERLAB_SETTINGS_DIR": str(settings), "JUPYTERLAB_WORKSPACES_DIR": str(state_dir / "workspaces")}
        self.command = lab_command(notebook_dir, self.port, self.token, open_browser=False)
        self.log = state_dir / "lab.log"
        self.process: subprocess.Popen | None = None

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}/{path.lstrip('/')}?token={self.token}"

    def api(self, path: str, method: str = "GET") -> dict | list | None:
        request = urllib.request.Request(self.url(f"api/{path}"), method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shut_down_kernels(self) -> None:
        """End every notebook session (a test leaves no kernel running for the next)."""
        for session in self.api("sessions"):
            self.api(f"sessions/{session['id']}", method="DELETE")

    def __enter__(self) -> Self:
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                self.api("status")
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.__exit__(None, None, None)
                    raise RuntimeError(f"JupyterLab did not start ({' '.join(self.command)}):\n"
                                       f"{self.log.read_text()[-3000:]}") from None
                time.sleep(0.3)

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class NotebookPage:
    """One notebook open in JupyterLab in a Playwright ``page``."""

    def __init__(self, page, server: LabServer, notebook: str) -> None:
        self.page = page
        page.goto(server.url(f"lab/workspaces/{Path(notebook).stem}/tree/{notebook}"))  # no tab of another test
        self.panel = page.locator(NOTEBOOK)
        self.panel.locator(".jp-Cell").first.wait_for(timeout=START_TIMEOUT_S * 1000)
        page.wait_for_function(_KERNEL_IDLE, timeout=START_TIMEOUT_S * 1000, polling=250)
        open_sidebar = page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current")
        if open_sidebar.count():
            open_sidebar.first.click()                          # fold the file browser away: more room

    def set_cell_text(self, index: int, text: str) -> None:
        """Replace the source of code cell ``index`` by typing, as a person edits the parameters."""
        editor = self.panel.locator(".jp-CodeCell").nth(index).locator(".cm-content")
        editor.click()
        self.page.keyboard.press("Control+A")
        self.page.keyboard.type(text)
        self.page.keyboard.press("Escape")

    def run_all(self, timeout_s: float = RUN_TIMEOUT_S) -> None:
        """Run > Run All Cells, then wait until the last queued cell has run (or one failed)."""
        self.page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        item = self.page.locator(".lm-Menu-item:not(.lm-mod-disabled)").filter(
            has=self.page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")))
        item.wait_for()
        self.page.wait_for_timeout(300)                     # the menu settles before it takes a click
        item.click()
        self.page.wait_for_function(_RUN_STARTED, timeout=30_000, polling=200)
        self.page.wait_for_function(_RUN_FINISHED, timeout=timeout_s * 1000, polling=500)

    def prompts(self) -> list[str]:
        return [t.strip() for t in self.panel.locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts()]

    def errors(self) -> list[str]:
        """Text of every output that shows an error traceback (empty: no cell shows an error)."""
        texts = self.panel.locator(".jp-OutputArea-output").all_inner_texts()
        return [t for t in texts if "Traceback" in t or re.search(r"^\w*Error\b", t, re.MULTILINE)]

    def dropdown(self, label: str):
        """The ``<select>`` of the ipywidgets Dropdown whose description is ``label``."""
        labelled = self.panel.locator(".widget-dropdown").filter(
            has=self.page.locator("label.widget-label", has_text=re.compile(f"^{re.escape(label)}$")))
        return labelled.locator("select")

    def output_images(self):
        """Every image the outputs show (matplotlib figures, widget outputs)."""
        return self.page.locator(IMAGES)


def decode_image(src: str) -> np.ndarray:
    """RGB uint8 [H, W, 3] of a ``data:image/png;base64,...`` source."""
    if not src.startswith("data:image/png;base64,"):
        raise ValueError(f"not an inline PNG: {src[:40]}...")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB"))


def count_colour(image: np.ndarray, rgb: tuple[int, int, int], tolerance: int = 40) -> int:
    """Pixels of ``image`` [H, W, 3] within ``tolerance`` of ``rgb`` in every channel."""
    return int((np.abs(image.astype(int) - np.array(rgb)) <= tolerance).all(axis=-1).sum())


def chromium_or_reason() -> tuple[str | None, str]:
    """(path of the Chromium executable, "") or (None, why the browser tests cannot run)."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        return None, "the Python package playwright is not installed (make venv installs it)"
    path = shutil.which(CHROMIUM) or (CHROMIUM if os.access(CHROMIUM, os.X_OK) else None)
    if path is None:
        return None, f"{CHROMIUM} not found (Debian: apt-get install chromium; `make browser` does it as root)"
    return path, ""
