"""fsadlib.config (sections -> frozen dataclasses, flags, seeding), fsadlib.paths and fsadlib.io."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pytest
import torch
import yaml

from fsadlib.config import as_flag, from_dict, load_params, load_section, seed_everything, to_dict
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


@dataclass(frozen=True)
class Typed:
    epochs: int = 1
    lr: float = 0.1
    flag: int = 1
    switch: bool = False
    name: str = "a"
    betas: tuple[float, float] = (0.9, 0.99)
    layers: tuple[int, ...] = (1,)
    kernels: tuple[tuple[int, int], ...] = ((1, 1),)
    words: list[str] = field(default_factory=list)
    size: int | None = None
    tag: str | None = None
    mode: Literal["perlin", "cutpaste"] = "perlin"
    options: dict[str, Any] = field(default_factory=dict)
    inner: Inner = field(default_factory=Inner)


def test_from_dict_converts_by_annotation():
    cfg = from_dict(Typed, {"epochs": "3", "lr": "1e-3", "flag": "0", "switch": "true", "betas": [0.9, "0.95"],
                            "layers": [7.0, "9"], "kernels": [[1, 4], [4, 1]], "words": ["x"], "size": "64",
                            "tag": None, "mode": "cutpaste", "options": {"k": [1]}, "inner": {"size": True}}, "sec")
    assert cfg == Typed(3, 0.001, 0, True, "a", (0.9, 0.95), (7, 9), ((1, 4), (4, 1)), ["x"], 64, None,
                        "cutpaste", {"k": [1]}, Inner(1, (1, 2)))
    assert type(cfg.epochs) is int and type(cfg.lr) is float and type(cfg.layers[0]) is int
    assert from_dict(Typed, to_dict(cfg)) == cfg  # a checkpoint's config (lists for tuples) reloads equal


@pytest.mark.parametrize(("values", "message"), [
    ({"epochs": "three"}, "params key 'sec.epochs' = 'three' (str): expected int"),
    ({"epochs": 2.5}, "params key 'sec.epochs' = 2.5 (float): expected int"),
    ({"lr": True}, "params key 'sec.lr' = True (bool): expected float"),
    ({"lr": [1]}, "params key 'sec.lr' = [1] (list): expected float"),
    ({"switch": 2}, "params key 'sec.switch' = 2 (int): expected bool"),
    ({"name": 3}, "params key 'sec.name' = 3 (int): expected str"),
    ({"betas": [0.9]}, "params key 'sec.betas' = [0.9]: expected 2 items (tuple[float, float]), got 1"),
    ({"layers": 3}, "params key 'sec.layers' = 3 (int): expected tuple[int, ...]"),
    ({"kernels": [[1, "x"]]}, "params key 'sec.kernels[0][1]' = 'x' (str): expected int"),
    ({"size": "big"}, "params key 'sec.size' = 'big' (str): expected int | None"),
    ({"mode": "nsa"}, "params key 'sec.mode' = 'nsa': expected one of ['perlin', 'cutpaste']"),
    ({"options": [1]}, "params key 'sec.options' = [1] (list): expected dict[str, Any]"),
    ({"inner": {"size": "s"}}, "params key 'sec.inner.size' = 's' (str): expected int"),
    ({"inner": 4}, "params key 'sec.inner' = 4 (int): expected Inner"),
])
def test_from_dict_type_errors_name_key_value_and_type(values, message):
    with pytest.raises(TypeError, match=re.escape(message)):
        from_dict(Typed, values, "sec")


def test_load_params_reads_exponent_floats_like_dvc(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  lr: 1e-3\n  min_lr: 5E+2\n  name: '1e-3'\n  epochs: 10\n")
    assert load_params(path) == {"train": {"lr": 0.001, "min_lr": 500.0, "name": "1e-3", "epochs": 10}}
    (tmp_path / "bad.yaml").write_text("a: [1\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: invalid YAML"):
        load_params(tmp_path / "bad.yaml")


@dataclass(frozen=True)
class Required:
    reader: str


def test_missing_required_key_names_it():
    with pytest.raises(KeyError, match=r"params section 'datasets\.x' lacks required key\(s\) \['reader'\]"):
        from_dict(Required, {}, "datasets.x")


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
