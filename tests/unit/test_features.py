"""Nested feature structures: every tensor counted, and rows of single images joined into a batch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F

from fsadlib.features import cat_rows, feature_bytes


class Pair(NamedTuple):
    tokens: torch.Tensor
    grid: tuple[int, int]


@dataclass
class Rows:
    memory: list[torch.Tensor]
    pair: Pair
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


def rows_of(n: int, start: float) -> Rows:
    """n rows whose values say which row they are: memory [n, 2], pair tokens [n, 3], extra [n]."""
    r = torch.arange(n, dtype=torch.float32)[:, None] + start
    return Rows([r.expand(n, 2).clone()], Pair(r.expand(n, 3).clone(), (4, 4)), {"e": r[:, 0].clone()})


def test_feature_bytes_counts_every_nested_tensor():
    feats = {"a": torch.zeros(2, 3), "b": [torch.zeros(4, dtype=torch.float16), (torch.zeros(1, dtype=torch.int64),)]}
    assert feature_bytes(feats) == 2 * 3 * 4 + 4 * 2 + 8
    assert feature_bytes(rows_of(3, 0.0)) == 4 * (3 * 2 + 3 * 3 + 3)
    assert feature_bytes(F) == 0


def test_cat_rows_joins_every_tensor_along_the_first_dim_and_keeps_plain_data():
    joined = cat_rows([rows_of(1, 10.0), rows_of(2, 20.0)])
    assert isinstance(joined, Rows) and isinstance(joined.pair, Pair)
    assert joined.memory[0].tolist() == [[10, 10], [20, 20], [21, 21]]
    assert joined.pair.tokens[:, 0].tolist() == [10, 20, 21] and joined.pair.grid == (4, 4)
    assert joined.extra["e"].tolist() == [10, 20, 21]
    assert cat_rows([torch.ones(1, 2)]).shape == (1, 2)


def test_cat_rows_refuses_parts_that_differ():
    a = rows_of(1, 0.0)
    with pytest.raises(ValueError, match="plain data differs"):
        cat_rows([a, Rows(a.memory, Pair(a.pair.tokens, (2, 2)), a.extra)])
    with pytest.raises(ValueError, match="differ in structure"):
        cat_rows([[torch.ones(1)], [torch.ones(1), torch.ones(1)]])
    with pytest.raises(ValueError, match="differ in keys"):
        cat_rows([{"a": torch.ones(1)}, {"b": torch.ones(1)}])
    with pytest.raises(ValueError, match="not a tensor"):
        cat_rows([torch.ones(1), 1.0])
    with pytest.raises(ValueError, match="at least one part"):
        cat_rows([])
