"""Small in-memory caches for text embeddings and support-image features, keyed by content.

Text embeddings of fixed prompt ensembles and the features of a category's k support images are
computed once per (backbone, content) and reused for every query; the key of a tensor is a SHA-1 of
its bytes, shape and dtype, so two equal support sets share an entry whatever their file names.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import torch


def tensor_key(t: torch.Tensor) -> str:
    """Content hash of a tensor (bytes + shape + dtype)."""
    data = t.detach().contiguous().cpu()
    h = hashlib.sha1(data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    h.update(repr((tuple(data.shape), str(data.dtype))).encode())
    return h.hexdigest()


class FeatureCache:
    """A bounded LRU dict: ``get_or_compute(key, fn)`` calls ``fn`` only on a miss."""

    def __init__(self, max_items: int = 256) -> None:
        self.max_items = max_items
        self._store: OrderedDict[Hashable, Any] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get_or_compute(self, key: Hashable, fn: Callable[[], Any]) -> Any:
        if key in self._store:
            self.hits += 1
            self._store.move_to_end(key)
            return self._store[key]
        self.misses += 1
        value = fn()
        self._store[key] = value
        if len(self._store) > self.max_items:
            self._store.popitem(last=False)
        return value

    def clear(self) -> None:
        self._store.clear()

    def __len__(self) -> int:
        return len(self._store)
