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


class FrozenEncoder(torch.nn.Module):
    """What every frozen image encoder shares (:class:`~fsadlib.clip.ClipBackbone`,
    :class:`~fsadlib.clip.cnn.CnnBackbone`): a ``config`` with ``pretrained`` and ``precision``, a
    ``device``, eval mode for good, and autocast at its precision."""

    @property
    def random_weights(self) -> bool:
        """Whether the weights are a random initialisation (``pretrained: null``: nothing was loaded)."""
        return self.config.pretrained is None

    def train(self, mode: bool = True) -> FrozenEncoder:
        """The encoder always stays in eval mode (frozen, BatchNorm statistics included); a no-op."""
        super().train(False)
        return self

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast when the effective precision is bf16."""
        return autocast(self.config.precision, self.device)

    def effective_precision(self) -> str:
        """``"bf16"`` or ``"fp32"``: the precision this encoder runs at on its device."""
        return effective_precision(self.config.precision, self.device)
