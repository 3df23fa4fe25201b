"""fsadlib.lab: the JupyterLab command `make lab` runs (the browser tests start it for real)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from fsadlib.lab import lab_command, lab_environment


def test_lab_command_serves_the_folder_on_loopback(tmp_path, monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    argv = lab_command(tmp_path, port=9123, token="secret", open_browser=False)
    assert argv[:3] == [sys.executable, "-m", "jupyterlab"]
    assert {"--ServerApp.ip=127.0.0.1", "--ServerApp.port=9123", "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={tmp_path.resolve()}", "--ServerApp.open_browser=False",
            "--IdentityProvider.token=secret"} == set(argv[3:])
    monkeypatch.setattr("os.geteuid", lambda: 0)                 # JupyterLab refuses root without it
    assert lab_command(tmp_path)[-1] == "--allow-root" and not any("token" in a for a in lab_command(tmp_path))


def test_lab_command_names_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        lab_command(tmp_path / "nowhere")


def test_lab_environment_puts_the_project_first():
    env = lab_environment({"PATH": f"/usr/bin:{Path(sys.executable).parent}", "HF_HUB_OFFLINE": "0"})
    assert env["PATH"].split(":") == [str(Path(sys.executable).parent), "/usr/bin"]
    assert env["JUPYTER_PREFER_ENV_PATH"] == "1" and env["HF_HUB_OFFLINE"] == "0"   # an explicit choice stays
    assert lab_environment({})["HF_HUB_OFFLINE"] == "1"
