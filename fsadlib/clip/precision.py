"""Numeric precision of a frozen encoder and the branches that run under its autocast.

``precision`` (a backbone config key, so one per method):

- ``fp32``: no autocast anywhere (what every public implementation of the four papers runs);
- ``bf16``: ``torch.autocast(dtype=bfloat16)`` on the encoder's device, CPU included;
- ``auto``: ``bf16`` on CUDA, ``fp32`` elsewhere.

:func:`effective_precision` is what a run really used; the evaluation records it beside every number.
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")


def check_precision(precision: str, key: str = "backbone.precision") -> str:
    """``precision`` if valid, else ``ValueError`` naming the key and the choices."""
    if precision not in PRECISIONS:
        raise ValueError(f"{key} must be one of {PRECISIONS}, got {precision!r}")
    return precision


def effective_precision(precision: str, device: torch.device) -> str:
    """``"bf16"`` or ``"fp32"``: what ``precision`` means on ``device``."""
    if check_precision(precision) == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` when :func:`effective_precision` is ``bf16``, else a no-op context."""
    if effective_precision(precision, device) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
