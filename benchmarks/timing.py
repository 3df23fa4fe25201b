"""Timing helpers shared by the benchmark scripts (run as ``python benchmarks/bench_<x>.py``)."""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work (no-op on CPU) so wall times cover the kernels."""
    if device.type == "cuda":
        torch.cuda.synchronize()


@contextmanager
def measure(device: torch.device, record: dict) -> Iterator[None]:
    """Wall time and peak memory (CUDA: max allocated in the block; CPU: peak RSS of the process)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    start = time.perf_counter()
    yield
    sync(device)
    record["seconds"] = time.perf_counter() - start
    if device.type == "cuda":
        record["peak_mem_mib"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        record["peak_rss_mib_process"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
