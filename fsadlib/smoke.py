"""The one smoke policy (``params.yaml: smoke = 1``): what a smoke run keeps.

- of every list of shot counts k and of shot seeds, only the first (:func:`first_only`): training
  and evaluation alike;
- the method's own shrunken schedule: the dotted overrides of its spec's ``smoke`` mapping applied
  to its params section (:func:`smoke_section`), e.g. ``{"train.epochs": 1}``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def first_only(values: Sequence[T], smoke: bool) -> tuple[T, ...]:
    """``values[:1]`` in a smoke run, else all of them."""
    return tuple(values[:1]) if smoke else tuple(values)


def smoke_section(section: Any, overrides: Mapping[str, Any], where: str = "") -> Any:
    """``section`` (a frozen dataclass) with ``overrides`` (``"train.epochs": 1`` ...) applied and,
    when it declares ``ks``, only its first k. An override naming no field raises ``KeyError``."""
    for dotted, value in overrides.items():
        section = _replace(section, dotted.split("."), value, f"{where}.{dotted}" if where else dotted)
    if any(f.name == "ks" for f in dataclasses.fields(section)):
        section = dataclasses.replace(section, ks=first_only(section.ks, True))
    return section


def _replace(obj: Any, path: list[str], value: Any, where: str) -> Any:
    names = {f.name for f in dataclasses.fields(obj)}
    if path[0] not in names:
        raise KeyError(f"smoke override '{where}': no field '{path[0]}' (fields: {sorted(names)})")
    inner = value if len(path) == 1 else _replace(getattr(obj, path[0]), path[1:], value, where)
    return dataclasses.replace(obj, **{path[0]: inner})
