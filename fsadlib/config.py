"""``params.yaml`` sections as frozen dataclasses, and seeding.

``params.yaml`` is the single place a tunable lives. A section is read into a frozen dataclass whose
fields give the defaults; unknown keys raise ``KeyError`` naming the key and the section, so a typo
in an ablation never silently falls back to a default. Nested dataclass fields are built recursively.
Flags are 0/1 integers in ``params.yaml`` (DVC renders ``false`` and papermill keeps it as a truthy
string); :func:`as_flag` reads either form.

Values are checked and converted by the field annotations (:func:`convert`): ``int`` takes integers,
integral floats, 0/1 booleans and their strings (``"3"``); ``float`` takes numbers and numeric
strings (``"1e-3"``); ``bool`` takes flags (:func:`as_flag`); ``str`` takes strings; ``tuple[X, ...]``,
``tuple[X, Y]`` and ``list[X]`` take lists; ``dict[str, X]`` dicts; ``X | None`` also ``None``;
``Literal[...]`` one of its values; a dataclass a dict. Anything else raises ``TypeError`` naming the
section and key, the value and the expected type. :func:`load_params` reads ``1e-3`` as a float, as
YAML 1.2 and DVC do (PyYAML's YAML 1.1 would give the string ``'1e-3'``).
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import yaml

from fsadlib.paths import repo_root

T = TypeVar("T")


def load_params(path: str | Path | None = None) -> dict[str, Any]:
    """Read the whole ``params.yaml`` (default: the one at the repo root)."""
    path = Path(path) if path is not None else repo_root() / "params.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"params file not found: {path}")
    with open(path) as fh:
        try:
            return yaml.load(fh, Loader=_Yaml12FloatLoader) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: invalid YAML ({err})") from err


class _Yaml12FloatLoader(yaml.SafeLoader):
    """SafeLoader that also reads YAML 1.2 floats without a dot (``1e-3``, ``5E+2``) as floats."""


_Yaml12FloatLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def from_dict(cls: type[T], values: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from ``values``, each converted by its field's annotation
    (:func:`convert`); reject keys that are not fields of ``cls`` and missing required ones.

    ``where`` names the section in error messages.
    """
    where = where or cls.__name__
    if values is not None and not isinstance(values, dict):
        raise TypeError(f"params section '{where}' must be a mapping of keys to values, got {values!r}")
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(fields), key=str)
    if unknown:
        raise KeyError(f"unknown key(s) {unknown} in params section '{where}'; allowed: {sorted(fields)}")
    missing = [name for name, f in fields.items() if name not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise KeyError(f"params section '{where}' lacks required key(s) {missing}")
    hints = typing.get_type_hints(cls)
    return cls(**{key: convert(val, hints[key], f"{where}.{key}") for key, val in values.items()})


def convert(value: Any, hint: Any, key: str) -> Any:
    """``value`` checked against / converted to the annotation ``hint`` (rules: module docstring);
    ``TypeError`` naming ``key``, the value and the expected type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return convert(value, option, key)
            except TypeError:
                continue
        raise _type_error(key, value, hint)
    if origin is typing.Literal:
        if value in args:
            return value
        raise TypeError(f"params key '{key}' = {value!r}: expected one of {list(args)}")
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if isinstance(value, dict):
            return from_dict(hint, value, key)
        raise _type_error(key, value, hint)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise _type_error(key, value, hint)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise TypeError(f"params key '{key}' = {value!r}: expected {len(args)} items ({_name(hint)}), "
                                f"got {len(value)}")
            return tuple(convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise _type_error(key, value, hint)
        item = args[1] if args else Any
        return {k: convert(v, item, f"{key}.{k}") for k, v in value.items()}
    scalar = _SCALARS.get(hint)
    if scalar is not None:
        try:
            return scalar(value)
        except (TypeError, ValueError, OverflowError):
            raise _type_error(key, value, hint) from None
    if isinstance(hint, type) and isinstance(value, hint):
        return value
    raise _type_error(key, value, hint)


def load_section(name: str, cls: type[T], path: str | Path | None = None) -> T:
    """``params.yaml[name]`` as a ``cls`` instance (missing section -> all defaults)."""
    params = load_params(path)
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


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    number = float(value.strip()) if isinstance(value, str) else value
    if isinstance(number, (float, np.floating)) and float(number).is_integer():
        return int(number)
    raise ValueError(value)


def _to_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str, np.integer, np.floating)):
        raise TypeError(value)
    return float(value.strip() if isinstance(value, str) else value)


def _to_str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(value)
    return value


def _to_bool(value: Any) -> bool:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value not in (0, 1):
        raise TypeError(value)
    if not isinstance(value, (bool, int, str, np.integer)):
        raise TypeError(value)
    return as_flag(value)


_SCALARS: dict[Any, Any] = {int: _to_int, float: _to_float, bool: _to_bool, str: _to_str}


def _name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def _type_error(key: str, value: Any, hint: Any) -> TypeError:
    return TypeError(f"params key '{key}' = {value!r} ({type(value).__name__}): expected {_name(hint)}")
