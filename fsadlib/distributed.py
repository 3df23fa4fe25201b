"""Scale out with torch.distributed: one launcher for notebooks, DVC stages and scripts.

:func:`launch` ``(fn, *args)`` runs ``fn(*args)`` on every rank of the world that the ``distributed``
section of params.yaml (:class:`DistributedConfig`) names and returns rank 0's value (None on a
machine without rank 0; under torchrun every process returns its own):

- world size 1 (the default): ``fn(*args)`` in this process, nothing else happens;
- this process already belongs to a torch.distributed world (it was started by ``torchrun``, e.g.
  from a SLURM script, with ``RANK`` / ``WORLD_SIZE`` / ``MASTER_ADDR`` in its environment): the
  process group is joined here and ``fn`` runs in this process, as every other rank does;
- otherwise torch's elastic launcher (the API behind torchrun, :func:`torch.distributed.launcher.api.elastic_launch`)
  starts ``nproc_per_node`` worker processes on this machine, which meet the workers of the other
  ``nnodes - 1`` machines at the rendezvous endpoint (c10d; ``rdzv_endpoint`` empty = this machine on a
  free port, one machine only). A failing worker stops the whole run: the others are terminated and
  :class:`RankFailed` names the rank and repeats its error (the file it could not read ...).

The same from a shell, a script or a SLURM job: ``python -m fsadlib.scale`` (:mod:`fsadlib.scale`).

Each worker joins the process group (``backend``: NCCL on GPUs, gloo on CPU; ``auto`` picks) and binds
its device (:func:`bind_device`): GPU ``LOCAL_RANK`` when CUDA is present, else a share of the CPU
threads, ``threads_per_rank`` or cores / ranks on this machine.

The helpers below (:func:`rank`, :func:`world_size`, :func:`barrier`, :func:`broadcast`,
:func:`all_gather`, :func:`all_mean`) are no-ops in a single process, so library code calls them
unconditionally. Per-rank random streams come from :func:`rank_seed`: rank 0 keeps the run seed
(a one-process run is unchanged), rank r > 0 gets a seed derived from (seed, r).
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

BACKENDS = ("auto", "gloo", "nccl")
_LAUNCHER_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
T = TypeVar("T")


class RankFailed(RuntimeError):
    """A worker process of a distributed run failed; the message holds its rank and error."""


@dataclass(frozen=True)
class DistributedConfig:
    """``params.yaml: distributed`` (defaults: one process, as without torch.distributed)."""

    nproc_per_node: int = 1       # worker processes per machine (one per GPU on GPUs)
    nnodes: int = 1               # machines; > 1 needs rdzv_endpoint (one machine's host:port)
    rdzv_endpoint: str = ""       # host:port of the c10d rendezvous; "" = this machine, a free port
    rdzv_id: str = ""             # run id shared by the machines of one run; "" = a fresh one (one machine)
    backend: str = "auto"         # auto = nccl with CUDA, else gloo
    threads_per_rank: int = 0     # CPU threads of a rank; 0 = this machine's cores / nproc_per_node
    timeout_s: int = 1800         # collective and rendezvous timeout

    def __post_init__(self) -> None:
        if self.nproc_per_node < 1 or self.nnodes < 1:
            raise ValueError(f"distributed.nproc_per_node ({self.nproc_per_node}) and distributed.nnodes "
                             f"({self.nnodes}) must be >= 1")
        if self.backend not in BACKENDS:
            raise ValueError(f"distributed.backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.nnodes > 1 and not (self.rdzv_endpoint and self.rdzv_id):
            raise ValueError(f"distributed.nnodes = {self.nnodes}: set distributed.rdzv_endpoint (host:port of "
                             "one of the machines) and distributed.rdzv_id (the same on every machine)")
        if self.threads_per_rank < 0 or self.timeout_s < 1:
            raise ValueError("distributed.threads_per_rank must be >= 0 and distributed.timeout_s >= 1")

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes


def load_config(params_path: str | os.PathLike | None = None) -> DistributedConfig:
    """The ``distributed`` section of params.yaml (all defaults when absent)."""
    from fsadlib.config import load_section

    return load_section("distributed", DistributedConfig, params_path)


# -- the world ------------------------------------------------------------------------------------
def initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if initialized() else 0


def world_size() -> int:
    """Number of ranks (1 without a process group)."""
    return dist.get_world_size() if initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def broadcast(obj: T, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` on every rank (picklable plain data)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather(obj: T) -> list[T]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def all_mean(values: dict[str, float]) -> dict[str, float]:
    """The mean over ranks of every value (same keys on every rank), in float64:
    ``m_key = (1 / W) sum_r values_r[key]``."""
    if world_size() == 1 or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t)
    return {k: float(v) / world_size() for k, v in zip(keys, t.tolist())}


def rank_seed(seed: int, which: int | None = None, step: int = 0) -> int:
    """The seed of rank ``which`` (default: this rank) from optimizer step ``step`` on: ``seed`` itself
    for rank 0 at step 0 (a one-process run is unchanged), else the first 32-bit word of numpy's
    ``SeedSequence([seed, rank, step])`` (independent streams per rank and per resume point)."""
    which = rank() if which is None else which
    if which == 0 and step == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed) % 2**63, which, step]).generate_state(1)[0])


def shard(items: Sequence[T], which: int | None = None, world: int | None = None) -> list[T]:
    """The items of rank ``which`` of ``world``: ``items[which::world]`` (round robin, order kept)."""
    which = rank() if which is None else which
    world = world_size() if world is None else world
    return list(items[which::world])


def shuffled_loader(dataset: Dataset, batch_size: int, seed: int) -> Iterable[Any]:
    """Batches of ``dataset`` in a new shuffled order every pass, seeded with ``seed``; the last short
    batch is dropped when the set holds more than one batch. One process: a ``DataLoader`` with a
    seeded generator. W ranks: each pass is a permutation drawn from (``seed``, pass) shared by all
    ranks, of which rank r reads positions r, r + W, ... (``DistributedSampler``), so a pass reads every
    item once over the ranks and ``len`` is the per-rank number of batches."""
    if world_size() == 1:
        return DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=len(dataset) > batch_size,
                          generator=torch.Generator().manual_seed(seed))
    return _EpochLoader(dataset, batch_size, seed)


class _EpochLoader:
    """A ``DataLoader`` over a ``DistributedSampler`` that moves to the next pass (``set_epoch``) each time
    it is iterated."""

    def __init__(self, dataset: Dataset, batch_size: int, seed: int) -> None:
        self.sampler = DistributedSampler(dataset, shuffle=True, seed=seed)
        per_rank = self.sampler.num_samples
        self.loader = DataLoader(dataset, batch_size=batch_size, sampler=self.sampler,
                                 drop_last=per_rank > batch_size)
        self.passes = 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        self.sampler.set_epoch(self.passes)
        self.passes += 1
        return iter(self.loader)


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# -- device placement -----------------------------------------------------------------------------
def bind_device(config: DistributedConfig) -> torch.device:
    """Bind this rank to its device: GPU ``LOCAL_RANK`` (``torch.cuda.set_device``) when CUDA is
    present, else ``threads_per_rank`` CPU threads (0: ``cores // LOCAL_WORLD_SIZE``, at least 1)."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {local_rank}: this machine has {torch.cuda.device_count()} GPU(s); "
                               "lower distributed.nproc_per_node")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(config.threads_per_rank or max(1, (os.cpu_count() or 1) // local_world))
    return torch.device("cpu")


def _backend(config: DistributedConfig) -> str:
    if config.backend != "auto":
        return config.backend
    return "nccl" if torch.cuda.is_available() else "gloo"


# -- launching ------------------------------------------------------------------------------------
def launch(fn: Callable[..., T], *args: Any, config: DistributedConfig | None = None) -> T:
    """``fn(*args)`` on every rank (module docstring); returns rank 0's value. ``fn`` and ``args``
    must be picklable (a module-level function) when workers are started."""
    config = config if config is not None else DistributedConfig()
    if initialized():
        return fn(*args)
    if "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ:
        return _run_rank(config, fn, args)
    if config.world_size == 1:
        return fn(*args)
    return _elastic(config, fn, args)


def _run_rank(config: DistributedConfig, fn: Callable[..., T], args: tuple, error_dir: str = "") -> T:
    """One worker: join the process group, bind the device, run ``fn``, leave the group. An exception
    is recorded in ``error_dir/rank<r>.json`` (time and message) before it ends the worker, so the
    launcher can name the rank that failed first (the others fail later, at the next collective)."""
    bind_device(config)
    dist.init_process_group(_backend(config), timeout=timedelta(seconds=config.timeout_s))
    try:
        return fn(*args)
    except BaseException as err:
        if error_dir:
            record = {"rank": rank(), "time_ns": time.time_ns(), "error": f"{type(err).__name__}: {err}"}
            Path(error_dir, f"rank{rank()}.json").write_text(json.dumps(record))
        raise
    finally:
        dist.destroy_process_group()


def _elastic(config: DistributedConfig, fn: Callable[..., T], args: tuple) -> T:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    launch_config = LaunchConfig(
        min_nodes=config.nnodes, max_nodes=config.nnodes, nproc_per_node=config.nproc_per_node,
        run_id=config.rdzv_id or f"fsad-{uuid.uuid4().hex[:12]}", rdzv_backend="c10d",
        rdzv_endpoint=config.rdzv_endpoint or "127.0.0.1:0",
        rdzv_configs={"timeout": config.timeout_s, "join_timeout": config.timeout_s},
        max_restarts=0, monitor_interval=0.2, start_method="spawn")
    # the launcher turns SIGTERM / SIGINT / SIGHUP / SIGQUIT into exceptions while it runs and leaves
    # its handlers installed: restore the caller's (a notebook kernel is stopped with SIGTERM)
    saved = {sig: signal.getsignal(sig) for sig in _LAUNCHER_SIGNALS}
    with tempfile.TemporaryDirectory(prefix="fsad-ranks-") as error_dir:
        try:
            results = elastic_launch(launch_config, _run_rank)(config, fn, args, error_dir)
        except ChildFailedError as err:
            raise RankFailed(_first_failure(Path(error_dir), err)) from None
        finally:
            for sig, handler in saved.items():
                signal.signal(sig, handler)
    return results.get(0)  # None on a machine that does not hold rank 0


def _first_failure(error_dir: Path, err: Any) -> str:
    """``rank r failed: <error>`` for the rank that caused the failure: one that died without a Python
    exception (killed by a signal ...: the launcher's record names it), else the rank whose exception
    was recorded first (the others fail after it, at their next collective)."""
    records = {r["rank"]: r for r in (json.loads(p.read_text()) for p in error_dir.glob("rank*.json"))}
    silent = sorted(r for r in err.failures if r not in records)
    if silent or not records:
        failed_rank = silent[0] if silent else min(err.failures)
        message = err.failures[failed_rank].message
        message = message.get("message", message) if isinstance(message, dict) else message
        return f"rank {failed_rank} failed: {message}"
    first = min(records.values(), key=lambda r: r["time_ns"])
    return f"rank {first['rank']} failed: {first['error']}"
