"""What a process read, recorded for the dependency test of the DVC stages (off by default).

With the environment variable ``FSAD_TRACE_READS`` naming a folder, a process that imports
``fsadlib`` writes, when it exits, ``<folder>/<stage>.json`` (``<stage>``: the ``DVC_STAGE`` that dvc
sets for a stage command, ``/`` and ``:`` replaced by ``~``; else ``pid<pid>``) holding

    modules: every loaded module file of the repository's ``fsadlib`` (repository-relative) and of
             any other package outside the Python installation (absolute: outside method packages)
    params:  the params.yaml sections read (``load_section`` names; ``datasets.<name>`` per data set)
    data:    ``samples:<dataset>`` (a data set's files), ``shots:<dataset>``, ``captions:<dataset>``

``tests/pipeline`` compares this with each stage's declared dependencies after the smoke run.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from pathlib import Path

TRACE_ENV = "FSAD_TRACE_READS"
_READS: dict[str, set[str]] = {"params": set(), "data": set()}
_started = False
_disabled = False


def enabled() -> bool:
    return bool(os.environ.get(TRACE_ENV))


def start() -> None:
    """Write the record at exit (once per process; nothing when tracing is off)."""
    global _started
    if enabled() and not _started:
        atexit.register(write)
        _started = True


def disable() -> None:
    """Record nothing for this process: a notebook runner (papermill with the engine of
    :mod:`fsadlib.notebook_engine`, which imports fsadlib), whose kernel runs the stage's code and
    records it; the runner's record would replace the kernel's (the same stage name)."""
    global _disabled
    _disabled = True


def record(kind: str, value: str) -> None:
    """Note one read (``kind``: ``params`` or ``data``)."""
    if enabled():
        _READS[kind].add(value)


def loaded_modules() -> list[str]:
    """Files of the loaded modules of fsadlib and of packages outside the Python installation (only
    files where their module name puts them: not code that a library generates into a temporary file)."""
    package = Path(__file__).resolve().parent
    installed = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    files = set()
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if not path or not os.path.isabs(path) or not os.path.isfile(path):
            continue  # built-ins and pseudo-modules with a bare file name (torch._ops)
        dotted = Path(*name.split("."))
        if not path.endswith((f"{dotted}.py", str(dotted / "__init__.py"))):
            continue  # extensions, and code generated into temporary files (torch_geometric's propagate)
        path = Path(path).resolve()
        if path.is_relative_to(package):
            files.add(path.relative_to(package.parent).as_posix())
        elif not any(path.is_relative_to(p) for p in installed):
            files.add(path.as_posix())
    return sorted(files)


def write() -> Path | None:
    folder = os.environ.get(TRACE_ENV)
    if not folder or _disabled:
        return None
    stage = os.environ.get("DVC_STAGE") or f"pid{os.getpid()}"
    path = Path(folder) / (stage.replace("/", "~").replace(":", "~") + ".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    content = {"stage": stage, "modules": loaded_modules(), **{k: sorted(v) for k, v in _READS.items()}}
    path.write_text(json.dumps(content, indent=1))
    return path
