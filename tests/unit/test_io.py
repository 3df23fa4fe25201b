"""fsadlib.io: checkpoints load with weights_only=True (a pickled callable is refused, not run), writes
name the file they fail on, and a results-folder lock makes a second writer wait."""

from __future__ import annotations

import errno
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fsadlib.io import atomic_write, file_sha1, load_torch, locked, save_torch
from fsadlib.methods.base import load_checkpoint


class Poison:
    """Unpickling this creates a marker file: proof that loading ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def poisoned_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"format": 1, "method": "dummy", "config": {}, "state_dict": {"w": torch.zeros(2)},
                "extra": {"hook": Poison(marker)}}, path)  # torch.save directly: save_torch refuses it
    return path


def test_loading_a_pickled_callable_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "code-ran"
    path = poisoned_checkpoint(tmp_path / "final.pt", marker)
    with pytest.raises(ValueError, match=r"final\.pt: refused to load: .*pickled objects"):
        load_torch(path)
    with pytest.raises(ValueError, match=r"final\.pt: refused to load"):
        load_checkpoint(path)
    assert not marker.exists(), "the pickled callable ran"
    torch.load(path, weights_only=False)  # the control: an unrestricted load does run it
    assert marker.exists()


def test_truncated_and_missing_checkpoints_name_the_file(tmp_path):
    path = save_torch(tmp_path / "last.pt", {"w": torch.arange(10.0), "rng": [1, 2.5, None, "x", (True,)]})
    assert torch.equal(load_torch(path)["w"], torch.arange(10.0))
    (tmp_path / "cut.pt").write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"cut\.pt: (unreadable checkpoint|refused to load)"):
        load_torch(tmp_path / "cut.pt")
    with pytest.raises(FileNotFoundError, match=r"none\.pt"):
        load_torch(tmp_path / "none.pt")


@pytest.mark.parametrize(("obj", "where"), [
    ({"extra": {"gen": np.random.get_state()}}, r"\['extra'\]\['gen'\]\[1\]: a numpy.ndarray"),
    ({"history": [{"loss": np.float64(0.5)}]}, r"\['history'\]\[0\]\['loss'\]: a numpy.float64"),
    ({"fn": print}, r"\['fn'\]: a builtins.builtin_function_or_method"),
])
def test_save_torch_refuses_what_weights_only_cannot_load(tmp_path, obj, where):
    with pytest.raises(TypeError, match=r"x\.pt" + where):
        save_torch(tmp_path / "x.pt", obj)
    assert not (tmp_path / "x.pt").exists()


def test_a_failed_write_names_the_file_and_keeps_the_old_one(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("old")

    def full_disk(fh):
        fh.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match=r"No space left on device while writing .*metrics\.json") as info:
        atomic_write(path, full_disk)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_file_sha1(tmp_path):
    (tmp_path / "a").write_bytes(b"abc")
    assert file_sha1(tmp_path / "a") == "a9993e364706816aba3e25717850c26c9cd0d89d"


def test_a_second_writer_waits_for_the_lock(tmp_path):
    folder = tmp_path / "results"
    child = textwrap.dedent(f"""
        import time
        from fsadlib.io import locked
        with locked({str(folder)!r}):
            print(time.time(), flush=True)
    """)
    with locked(folder) as lock_file:
        proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        waiting = proc.stderr.readline()  # printed by the child once it finds the lock taken
        released = time.time()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert waiting.startswith(f"waiting for {lock_file}"), waiting + err
    assert float(out) >= released, "the second writer entered while the lock was held"
