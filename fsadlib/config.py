"""``params.yaml`` sections as frozen dataclasses, and seeding.

``params.yaml`` is the single place a tunable lives. A section is read into a frozen dataclass whose
fields give the defaults; unknown keys raise ``KeyError`` naming the key and the section, so a typo
in an ablation never silently falls back to a default. Nested dataclass fields are built recursively.
Flags are 0/1 integers in ``params.yaml`` (DVC renders ``false`` and papermill keeps it as a truthy
string); :func:`as_flag` reads either form.
"""

from __future__ import annotations

import dataclasses
import os
import random
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import yaml

from fsadlib import reads
from fsadlib.paths import repo_root

T = TypeVar("T")


def load_params(path: str | Path | None = None) -> dict[str, Any]:
    """Read the whole ``params.yaml`` (default: the one at the repo root)."""
    path = Path(path) if path is not None else repo_root() / "params.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"params file not found: {path}")
    with open(path) as fh:
        return yaml.safe_load(fh) or {}


def from_dict(cls: type[T], values: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from ``values``; reject keys that are not fields of ``cls``.

    Nested dataclass fields accept dicts; tuple fields accept lists. ``where`` names the section
    in error messages.
    """
    values = dict(values or {})
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise KeyError(f"unknown key(s) {unknown} in params section '{where or cls.__name__}'; "
                       f"allowed: {sorted(names)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, val in values.items():
        hint = hints.get(key)
        sub = _dataclass_in(hint)
        if sub is not None and isinstance(val, dict):
            val = from_dict(sub, val, f"{where}.{key}" if where else key)
        elif isinstance(val, list) and _is_tuple(hint):
            val = tuple(val)
        kwargs[key] = val
    return cls(**kwargs)


def load_section(name: str, cls: type[T], path: str | Path | None = None) -> T:
    """``params.yaml[name]`` as a ``cls`` instance (missing section -> all defaults)."""
    params = load_params(path)
    reads.record("params", name)
    return from_dict(cls, params.get(name), name)


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass (possibly nested) as a plain dict with lists for tuples (JSON/YAML friendly)."""
    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (tuple, list)):
            return [conv(x) for x in v]
        return v
    return conv(obj)


def as_flag(value: Any) -> bool:
    """A 0/1 flag as papermill or DVC may deliver it: 0, 1, "0", "1", "False", "true", False ..."""
    if isinstance(value, str):
        low = value.strip().lower()
        if low in {"0", "false", "no", "off", ""}:
            return False
        if low in {"1", "true", "yes", "on"}:
            return True
        raise ValueError(f"not a 0/1 flag: {value!r}")
    return bool(value)


def seed_everything(seed: int, deterministic: bool = False) -> int:
    """Seed ``random``, numpy and torch (all devices). Returns the seed so callers can record it."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    return seed


def _dataclass_in(hint: Any) -> type | None:
    if dataclasses.is_dataclass(hint):
        return hint
    for arg in typing.get_args(hint):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def _is_tuple(hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin is tuple:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(typing.get_origin(a) is tuple for a in typing.get_args(hint))
    return False
