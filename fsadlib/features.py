"""Nested feature structures: what a method's ``encode_queries`` / ``encode_support`` return.

A structure is a tensor, or a list, tuple (named tuples included), dict or dataclass of structures;
any other leaf (an int, a shape tuple of ints, None) is plain data. Every tensor of a structure holds
its images along dim 0 (batch first): rows of a structure are taken by slicing each tensor along dim 0
(:func:`take_rows`), and structures of some images each join into the structure of all of them by
concatenating each tensor along dim 0 (:func:`cat_rows`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import fields, is_dataclass, replace
from typing import Any

import torch


def feature_tensors(features: Any) -> Iterator[torch.Tensor]:
    """Every tensor of ``features``, depth first."""
    if isinstance(features, torch.Tensor):
        yield features
    elif isinstance(features, (list, tuple)):
        for f in features:
            yield from feature_tensors(f)
    elif isinstance(features, dict):
        for f in features.values():
            yield from feature_tensors(f)
    elif is_dataclass(features) and not isinstance(features, type):
        for f in fields(features):
            yield from feature_tensors(getattr(features, f.name))


def feature_bytes(features: Any) -> int:
    """Bytes of every tensor in ``features`` (sum of numel x element size)."""
    return sum(t.numel() * t.element_size() for t in feature_tensors(features))


def map_tensors(features: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``features`` with every tensor t replaced by ``fn(t)`` (same structure, plain leaves kept)."""
    if isinstance(features, torch.Tensor):
        return fn(features)
    if isinstance(features, (list, tuple)):
        items = [map_tensors(f, fn) for f in features]
        return type(features)(*items) if hasattr(features, "_fields") else type(features)(items)
    if isinstance(features, dict):
        return {key: map_tensors(f, fn) for key, f in features.items()}
    if is_dataclass(features) and not isinstance(features, type):
        return replace(features, **{f.name: map_tensors(getattr(features, f.name), fn)
                                    for f in fields(features) if f.init})
    return features


def take_rows(features: Any, rows: slice) -> Any:
    """Rows ``rows`` of every tensor of ``features`` along dim 0 (views: [n, ...] -> [len(rows), ...])."""
    return map_tensors(features, lambda t: t[rows])


def cat_rows(parts: Sequence[Any]) -> Any:
    """One structure from ``parts`` (structures alike in shape, e.g. one per image): each tensor is
    ``torch.cat`` of the parts' tensors at its place along dim 0 ([n_1, ...] + [n_2, ...] ->
    [n_1 + n_2, ...]); plain leaves must be equal in every part and are kept. ``ValueError`` when the
    parts differ in structure or plain data, or when there is no part."""
    if not parts:
        raise ValueError("cat_rows needs at least one part")
    first = parts[0]
    if isinstance(first, torch.Tensor):
        if not all(isinstance(p, torch.Tensor) for p in parts):
            raise ValueError("cat_rows: a tensor in one part is not a tensor in another")
        return torch.cat(list(parts))
    if isinstance(first, (list, tuple)):
        if any(type(p) is not type(first) or len(p) != len(first) for p in parts):
            raise ValueError(f"cat_rows: parts differ in structure ({type(first).__name__} of {len(first)})")
        items = [cat_rows([p[i] for p in parts]) for i in range(len(first))]
        return type(first)(*items) if hasattr(first, "_fields") else type(first)(items)
    if isinstance(first, dict):
        if any(not isinstance(p, dict) or p.keys() != first.keys() for p in parts):
            raise ValueError(f"cat_rows: parts differ in keys ({sorted(first)})")
        return {key: cat_rows([p[key] for p in parts]) for key in first}
    if is_dataclass(first) and not isinstance(first, type):
        if any(type(p) is not type(first) for p in parts):
            raise ValueError(f"cat_rows: parts differ in type ({type(first).__name__})")
        return replace(first, **{f.name: cat_rows([getattr(p, f.name) for p in parts])
                                 for f in fields(first) if f.init})
    if any(p != first for p in parts):
        raise ValueError(f"cat_rows: plain data differs between parts: {list(parts[:3])}")
    return first
