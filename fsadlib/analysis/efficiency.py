"""Efficiency of a method: parameters, FLOPs, tower passes (caching), latency and throughput.

Used by ``benchmarks/bench_methods.py`` (which writes ``reports/efficiency.csv``) and read back by
the analysis notebook (:func:`read_efficiency`). Definitions:

- frozen / learnable parameters: element counts of the backbone / of
  :meth:`AnomalyMethod.trainable_parameters` (a training-free method has 0 learnable).
- FLOPs per image: ``torch.utils.flop_counter.FlopCounterMode`` over one ``forward`` of a batch
  (call it after a first forward so lazily filled caches are not counted), divided by the batch
  (2 FLOPs per multiply-add; matmuls, convolutions and SDPA are counted, element-wise work is not).
  The per-category ``setup_category`` is not part of it.
- tower passes per image during ``forward``: images through the vision patch embedding (``conv1``)
  and prompt rows through the text transformer. ``text_cached`` = no text rows in ``forward``;
  ``support_cached`` (few-shot) = the image passes per query do not change when the support set
  doubles (k -> 2k), i.e. ``forward`` does not re-encode the supports (WinCLIP embeds each query
  twice, full image and windows, so "one pass per query" would not be the right test).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from fsadlib.paths import reports_dir


def parameter_counts(method: torch.nn.Module) -> dict[str, int]:
    """``{"frozen_params", "learnable_params"}`` (element counts)."""
    frozen = sum(p.numel() for p in method.backbone.parameters())
    learnable = sum(p.numel() for p in method.trainable_parameters())
    return {"frozen_params": int(frozen), "learnable_params": int(learnable)}


def flops_per_image(model: torch.nn.Module, images: torch.Tensor) -> float:
    """FLOPs of ``model(images)`` divided by the batch size (see the module docstring).

    The parameters' ``requires_grad`` is switched off while counting (and restored): the counter's
    module tracker hooks inputs that require grad, which fails under ``inference_mode`` when a
    method passes one of its own parameters into a submodule."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.requires_grad_(False)
    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model(images)
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)
    return counter.get_total_flops() / len(images)


def tower_passes(method: torch.nn.Module, images: torch.Tensor) -> dict[str, float]:
    """Per query image during ``method(images)``: ``image_passes`` (images through the vision patch
    embedding) and ``text_rows`` (prompts through the text transformer). One uncounted call comes
    first, so a cache a method fills lazily on its first forward counts as a cache."""
    model = method.backbone.model
    with torch.inference_mode():
        method(images)
    counts = {"image_passes": 0, "text_rows": 0}

    def counter(key: str):
        def hook(module, args, output):
            counts[key] += int(args[0].shape[0])
        return hook

    handles = [model.visual.conv1.register_forward_hook(counter("image_passes")),
               model.transformer.register_forward_hook(counter("text_rows"))]
    try:
        with torch.inference_mode():
            method(images)
    finally:
        for handle in handles:
            handle.remove()
    return {key: value / len(images) for key, value in counts.items()}


def seconds_per_call(fn: Callable[[], object], repeats: int = 5, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` after ``warmup`` calls (CUDA synchronised around each call)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(repeats):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def read_efficiency(path: str | Path | None = None) -> pd.DataFrame:
    """``reports/efficiency.csv`` written by ``benchmarks/bench_methods.py`` (``FileNotFoundError``
    naming the file and the command when it has not been run)."""
    path = Path(path) if path is not None else reports_dir() / "efficiency.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `python benchmarks/bench_methods.py` first")
    return pd.read_csv(path)
