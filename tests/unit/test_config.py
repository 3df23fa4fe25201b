"""fsadlib.config (sections -> frozen dataclasses, flags, seeding), fsadlib.paths and fsadlib.io."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
import yaml

from fsadlib.config import as_flag, from_dict, load_section, seed_everything, to_dict
from fsadlib.io import atomic_write, read_json, save_torch, write_json
from fsadlib.paths import data_dir, repo_root, shots_dir


@dataclass(frozen=True)
class Inner:
    size: int = 8
    layers: tuple[int, ...] = (1, 2)


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    inner: Inner = field(default_factory=Inner)


def test_from_dict_nested_tuples_and_round_trip():
    cfg = from_dict(Outer, {"name": "y", "inner": {"layers": [3, 4]}})
    assert cfg == Outer("y", Inner(8, (3, 4)))
    assert to_dict(cfg) == {"name": "y", "inner": {"size": 8, "layers": [3, 4]}}
    assert from_dict(Outer, to_dict(cfg)) == cfg
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.name = "z"


def test_unknown_keys_name_key_and_section():
    with pytest.raises(KeyError, match=r"\['sise'\] in params section 'model.inner'"):
        from_dict(Outer, {"inner": {"sise": 3}}, "model")


def test_load_section(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"model": {"name": "m", "inner": {"size": 2}}}))
    assert load_section("model", Outer, path) == Outer("m", Inner(2))
    assert load_section("absent", Outer, path) == Outer()
    with pytest.raises(FileNotFoundError, match="nothing.yaml"):
        load_section("model", Outer, tmp_path / "nothing.yaml")


@pytest.mark.parametrize(("value", "expected"), [(0, False), (1, True), ("0", False), ("1", True),
                                                 ("False", False), ("true", True), (False, False)])
def test_as_flag(value, expected):
    assert as_flag(value) is expected


def test_as_flag_rejects_other_strings():
    with pytest.raises(ValueError, match="'maybe'"):
        as_flag("maybe")


def test_seed_everything_reproduces_draws():
    seed_everything(5)
    a = (np.random.rand(3), torch.rand(3))
    assert seed_everything(5) == 5
    b = (np.random.rand(3), torch.rand(3))
    assert np.array_equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_repo_root_walks_up_and_env_overrides(tmp_path, monkeypatch):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    nested = tmp_path / "notebooks" / "deep"
    nested.mkdir(parents=True)
    monkeypatch.delenv("FSAD_ROOT", raising=False)
    assert repo_root(nested) == tmp_path.resolve()
    monkeypatch.setenv("FSAD_ROOT", str(tmp_path))
    assert data_dir() == tmp_path / "data" and shots_dir() == tmp_path / "data" / "shots"
    monkeypatch.delenv("FSAD_ROOT")
    with pytest.raises(FileNotFoundError, match="no dvc.yaml"):
        repo_root("/")


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = write_json(tmp_path / "a.json", {"b": 1, "a": [1, 2]})
    assert read_json(path) == {"a": [1, 2], "b": 1} and path.read_text().endswith("\n")

    def fail(fh):
        fh.write(b"partial")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic_write(path, fail)
    assert read_json(path) == {"a": [1, 2], "b": 1}
    assert os.listdir(tmp_path) == ["a.json"], "no temp file left behind"


def test_read_json_errors_name_the_file(tmp_path):
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="bad.json"):
        read_json(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="none.json"):
        read_json(tmp_path / "none.json")


def test_write_json_numpy_and_torch_round_trip(tmp_path):
    write_json(tmp_path / "n.json", {"x": np.float32(0.5), "v": np.arange(3)})
    assert json.loads((tmp_path / "n.json").read_text()) == {"v": [0, 1, 2], "x": 0.5}
    save_torch(tmp_path / "t.pt", {"w": torch.arange(4)})
    assert torch.equal(torch.load(tmp_path / "t.pt")["w"], torch.arange(4))
