"""JupyterLab on the workbench, the way researchers use it (``make lab``; the browser test starts
the same command).

    python -m fsadlib.lab [--port 8888] [--token TOKEN] [--no-browser]

It serves ``notebooks/`` of the checkout on 127.0.0.1 only, from the interpreter that runs it (the
project's venv), so the notebooks open in the project kernel: ``python3`` as ``make venv`` installs
it into the venv (``ipykernel install --sys-prefix``). ``JUPYTER_PREFER_ENV_PATH=1`` makes that
kernel win over a ``python3`` kernel in the user's own Jupyter folders. The venv's ``bin/`` leads
``PATH`` (``!dvc status`` in a cell runs the project's DVC) and ``HF_HUB_OFFLINE=1`` is set, as for
``make run``. JupyterLab refuses to start as root without ``--allow-root``, which is added only then.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from fsadlib.paths import repo_root

HOST = "127.0.0.1"
DEFAULT_PORT = 8888


def lab_command(notebook_dir: str | Path, port: int = DEFAULT_PORT, token: str | None = None,
                open_browser: bool = True) -> list[str]:
    """argv of a JupyterLab server on ``HOST``:``port`` (no retry on another port) serving
    ``notebook_dir``; ``token`` None lets Jupyter draw one and print the URL with it."""
    notebook_dir = Path(notebook_dir)
    if not notebook_dir.is_dir():
        raise FileNotFoundError(f"notebook folder {notebook_dir} not found")
    argv = [sys.executable, "-m", "jupyterlab", f"--ServerApp.ip={HOST}", f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0", f"--ServerApp.root_dir={notebook_dir.resolve()}",
            f"--ServerApp.open_browser={open_browser}"]
    if token is not None:
        argv.append(f"--IdentityProvider.token={token}")
    if os.geteuid() == 0:
        argv.append("--allow-root")
    return argv


def lab_environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with the settings of the module docstring."""
    env = dict(os.environ if base is None else base)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([venv_bin, *[p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin]])
    env["JUPYTER_PREFER_ENV_PATH"] = "1"
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fsadlib.lab", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--token", default=None, help="access token (default: Jupyter draws one)")
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser")
    args = parser.parse_args(argv)
    command = lab_command(repo_root() / "notebooks", args.port, args.token, open_browser=not args.no_browser)
    os.execve(command[0], command, lab_environment())


if __name__ == "__main__":
    main()
