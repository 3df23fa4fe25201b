"""numpy / torch inputs -> torch tensors without copying (numpy memory is shared, never written)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch


def as_tensor(x: Any, name: str) -> torch.Tensor:
    """A numpy array or torch tensor as a tensor on its own device (``TypeError`` naming ``name``)."""
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, np.ndarray):
        with warnings.catch_warnings():  # read-only arrays are fine: the metrics only read them
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(np.ascontiguousarray(x))
    raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")


def check_binary(t: torch.Tensor, name: str) -> torch.Tensor:
    """``t`` as bool, ``ValueError`` naming ``name`` unless every value is 0 or 1."""
    if t.dtype == torch.bool:
        return t
    if not ((t == 0) | (t == 1)).all():
        bad = t[(t != 0) & (t != 1)][0].item()
        raise ValueError(f"{name} must be binary (0/1), found {bad!r}; binarise them first")
    return t != 0
