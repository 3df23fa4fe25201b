"""Timing helpers shared by the benchmark scripts (run as ``python benchmarks/bench_<x>.py``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psutil
import torch


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work (no-op on CPU) so wall times cover the kernels."""
    if device.type == "cuda":
        torch.cuda.synchronize()


@contextmanager
def measure(device: torch.device, record: dict) -> Iterator[None]:
    """Wall time (``seconds``) and peak memory of the block into ``record``: on CUDA the maximum
    allocated (``peak_mem_mib``), on CPU the peak growth of the process RSS sampled every 5 ms
    (``peak_rss_growth_mib``), so two paths measured in one process are told apart."""
    sync(device)
    proc, peak, stop = psutil.Process(), [0], threading.Event()
    base = proc.memory_info().rss

    def sample() -> None:
        while not stop.wait(0.005):
            peak[0] = max(peak[0], proc.memory_info().rss - base)

    sampler = threading.Thread(target=sample, daemon=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:
        sampler.start()
    start = time.perf_counter()
    yield
    sync(device)
    record["seconds"] = time.perf_counter() - start
    if device.type == "cuda":
        record["peak_mem_mib"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        stop.set()
        sampler.join()
        record["peak_rss_growth_mib"] = peak[0] / 2**20
