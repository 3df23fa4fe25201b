"""Plain torch training loop shared by every trainable method.

``fit(method, batches, loss_fn, config, out_dir, validate=...)`` runs ``config.epochs`` epochs of
``steps_per_epoch`` optimizer steps. Per step: ``n = accumulate`` micro-batches, each moved to the
device, ``loss_fn(method, batch)`` under bf16 autocast on CUDA (``amp``) and ``backward`` of
``loss / n``, so the gradient is the mean of the micro-batch gradients

    g = (1 / n) sum_i grad L_i      (= grad of the mean loss over one batch n times larger, when every
                                     micro-batch has the same size and no layer depends on the batch)

then gradient clipping of ``g`` (``grad_clip``, global norm), optimizer and schedule step. Schedule,
clipping, warmup and ``steps_per_epoch`` count optimizer steps, never micro-batches; the logged losses
are means over all micro-batches of the epoch. Only ``method.trainable_parameters()`` (or the given
``param_groups``) are optimised; the backbone is frozen.

Learning-rate schedule, for step s of S total and warmup W steps (``warmup`` is a step count, or a
fraction of S when < 1):

    lr(s) = lr * s / W                                      s < W  (linear warmup)
    constant: lr                 cosine: min_lr + (lr - min_lr) * (1 + cos(pi * t)) / 2
    linear:   lr + (min_lr - lr) * t                         with t = (s - W) / (S - W)

Validation (``validate(method) -> {name: value}``) runs after every ``val_every`` epochs. It must
use held-out *auxiliary* data, never the target test set; the engine keeps ``best.pt`` by
``select_metric`` (higher is better) and stops after ``patience`` validations without improvement.
A fixed epoch instead (``take_epoch``, protocol ``selection: fixed``): training stops after that
epoch and its model is taken (the model of epoch n does not depend on later epochs; the schedule
still spans ``epochs``).

Checkpoints are atomic (``fsadlib.io``) and hold tensors and plain data only (they load with
``weights_only=True``): ``last.pt`` after every epoch holds the method checkpoint plus optimizer,
epoch, RNG states (as tensors) and the history, so an interrupted run resumes where the last completed
epoch ended (``resume=True``, the default); ``best.pt`` (or ``last.pt`` when there is no validation)
is the model the evaluation uses, and ``final.pt`` is written when training finishes. Checkpoints fall
on optimizer-step boundaries: a run interrupted in the middle of an accumulation cycle resumes from the
last epoch end and replays the cycle.

Resume happens only when ``last.pt`` was written for the same method config, training config and
``fingerprint`` (what else determines the result: loss, data and protocol sections and the training
files, see :func:`fsadlib.data.files.files_fingerprint`); otherwise the run starts fresh (old
``last.pt`` / ``best.pt`` removed) and a warning names what differs.
Metrics go to DVCLive (``fsadlib.tracking``); a progress bar (:mod:`fsadlib.progress`: a widget in
JupyterLab, text elsewhere) counts the steps and shows the epoch and the loss.

Distributed training (a process group of W ranks is initialised, :mod:`fsadlib.distributed`): every
rank calls ``fit`` with its own ``batches``; the trainable parts are wrapped in
``DistributedDataParallel`` (the frozen backbone, and every parameter outside the optimizer, are
ignored: never broadcast, never reduced) and rank 0's initial values are broadcast. Each rank runs
``accumulate`` micro-batches per step and synchronises only on the last one (``no_sync`` before), so

    g = (1 / (W n)) sum_{r < W} sum_{i < n} grad L_{r,i}

the mean over all W n micro-batches of the step: accumulation is counted globally, one optimizer
step is W n micro-batches (``micro_batches_per_step`` in ``train_config.json``), and schedule,
warmup and checkpoints count global optimizer steps, as in one process. Rank r seeds its generators
with :func:`fsadlib.distributed.rank_seed` (rank 0 the run seed itself, so W = 1 is the one-process
run). Logged losses are means over ranks; validation runs on rank 0 and its metrics reach every rank
(so early stopping agrees); only rank 0 writes files (checkpoints, history, DVCLive) and the other
ranks wait for them. ``last.pt`` holds rank 0's generator states: a resume in any world size restores
them on rank 0, and ranks r > 0 draw fresh streams seeded from (seed, r, step).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import random
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fsadlib import distributed
from fsadlib.config import seed_everything, to_dict
from fsadlib.data.files import files_fingerprint
from fsadlib.io import load_torch, save_torch, write_json
from fsadlib.methods.base import AnomalyMethod
from fsadlib.progress import progress
from fsadlib.tracking import open_live

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("constant", "cosine", "linear")

LossFn = Callable[[AnomalyMethod, dict[str, Any]], dict[str, torch.Tensor]]
ValidateFn = Callable[[AnomalyMethod], dict[str, float]]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    steps_per_epoch: int = 100
    lr: float = 1e-3
    optimizer: str = "adamw"
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup: float = 0
    min_lr: float = 0.0
    grad_clip: float = 0.0
    amp: int = 1
    accumulate: int = 1          # micro-batches per optimizer step (gradient accumulation)
    seed: int = 0
    val_every: int = 1
    select_metric: str = ""
    patience: int = 0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"train.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"train.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.epochs < 1 or self.steps_per_epoch < 1:
            raise ValueError("train.epochs and train.steps_per_epoch must be >= 1")
        if self.accumulate < 1:
            raise ValueError(f"train.accumulate must be >= 1, got {self.accumulate!r}")


@dataclass
class TrainResult:
    best_path: Path
    history: list[dict[str, float]]
    best_epoch: int
    stopped_early: bool


def lr_factor(step: int, total: int, config: TrainConfig) -> float:
    """Multiplier of ``config.lr`` at optimizer step ``step`` (0-based) of ``total``."""
    warm = int(config.warmup * total) if 0 < config.warmup < 1 else int(config.warmup)
    if step < warm:
        return (step + 1) / warm
    if config.schedule == "constant":
        return 1.0
    t = min(1.0, (step - warm) / max(1, total - warm))
    floor = config.min_lr / config.lr if config.lr else 0.0
    if config.schedule == "cosine":
        return floor + (1 - floor) * (1 + math.cos(math.pi * t)) / 2
    return 1 + (floor - 1) * t


def make_optimizer(params: list, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW / Adam / SGD over ``params`` (a list of tensors or of param-group dicts)."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay)


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) dict / list batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def fit(method: AnomalyMethod, batches: Iterable[dict[str, Any]], loss_fn: LossFn, config: TrainConfig,
        out_dir: str | Path, validate: ValidateFn | None = None, param_groups: list[dict] | None = None,
        resume: bool = True, live_dir: str | Path | None = None, desc: str = "train",
        fingerprint: dict[str, Any] | None = None, leave: bool = True, take_epoch: int | None = None,
        trained_on: dict[str, Any] | None = None, synchronise: bool = True) -> TrainResult:
    """Train ``method`` (see the module docstring). ``batches`` is re-iterated as needed.

    ``param_groups``: optional ``[{"params": [...], "lr": ...}, ...]``; a group's ``lr`` is its peak
    learning rate (the schedule multiplies every group). ``fingerprint``: plain data naming everything
    else the result depends on (compared on resume). One progress bar counts the run's steps
    (``desc``, epoch and loss beside it); ``leave=False`` removes it when done (for callers that
    train many models under a bar of their own). ``take_epoch``: stop after that epoch and take its model
    (``ValueError`` when it exceeds ``config.epochs`` or comes with ``validate``). ``trained_on``: what the
    model was trained on and how it was selected (:meth:`fsadlib.protocol.Protocol.training_record`),
    stored in the checkpoints' ``extra["trained_on"]``. ``synchronise=False``: this rank trains alone
    even in a process group (callers that give each rank models of its own). Returns the path of the
    model to evaluate.
    """
    if take_epoch is not None and not (1 <= take_epoch <= config.epochs and validate is None):
        raise ValueError(f"{method.name}: fixed epoch {take_epoch} must lie in 1..train.epochs = {config.epochs} "
                         "and comes without validation")
    last_epoch = take_epoch or config.epochs
    world = distributed.world_size() if synchronise else 1
    main = not synchronise or distributed.is_main()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(distributed.rank_seed(config.seed) if world > 1 else config.seed)
    groups = param_groups if param_groups is not None else [{"params": method.trainable_parameters()}]
    if not any(len(list(g["params"])) for g in groups):
        raise ValueError(f"{method.name}: nothing to train (no trainable parameters)")
    opt = make_optimizer(groups, config)
    base_lrs = [g["lr"] for g in opt.param_groups]
    total = config.epochs * config.steps_per_epoch
    state = {"epoch": 0, "step": 0, "history": [], "best": -math.inf, "best_epoch": 0, "bad": 0}
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    stale = _resume_mismatch(method, last_path, config, fingerprint) if resume and last_path.is_file() else None
    if stale and main:
        warnings.warn(f"{last_path}: {stale}; starting fresh", stacklevel=2)
    resuming = resume and last_path.is_file() and not stale
    if world > 1:
        distributed.barrier()  # every rank has read last.pt before rank 0 may remove it
    if resuming:
        state = _resume(method, opt, last_path, config.seed if world > 1 and not distributed.is_main() else None)
        if main:
            print(f"{desc}: resuming from {last_path} after epoch {state['epoch']} "
                  f"(now {world} rank(s))", file=sys.stderr)
    elif main:
        last_path.unlink(missing_ok=True)
        best_path.unlink(missing_ok=True)
    if main:
        write_json(out_dir / "train_config.json", {"train": to_dict(config), "method": to_dict(method.config),
                                                   "world_size": world,
                                                   "micro_batches_per_step": world * config.accumulate})
    ddp = _wrap_ddp(method, loss_fn, opt) if world > 1 else None
    stream = _cycle(batches)
    stopped = state["epoch"] >= last_epoch or (config.patience and state["bad"] >= config.patience)
    bar = progress(total=total, initial=state["step"], desc=desc, unit="step", leave=leave, disable=not main)
    with open_live(live_dir if main else None, resume=state["epoch"] > 0) as live:
        while not stopped and state["epoch"] < last_epoch:
            epoch = state["epoch"] + 1
            method.train()
            sums: dict[str, float] = {}
            bar.set_description(f"{desc} epoch {epoch}/{config.epochs}", refresh=False)
            for _ in range(config.steps_per_epoch):
                for g, base in zip(opt.param_groups, base_lrs):
                    g["lr"] = base * lr_factor(state["step"], total, config)
                opt.zero_grad(set_to_none=True)
                means = accumulate_gradients(method, itertools.islice(stream, config.accumulate), loss_fn,
                                             config.accumulate, config.amp, state["step"], ddp)
                means = distributed.all_mean(means) if world > 1 else means
                if config.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]],
                                                   config.grad_clip)
                opt.step()
                state["step"] += 1
                for k, v in means.items():
                    sums[k] = sums.get(k, 0.0) + v
                bar.set_postfix(loss=f"{means['loss']:.4f}", refresh=False)
                bar.update()
            record = {"epoch": epoch, "lr": opt.param_groups[0]["lr"]}
            record.update({f"train_{k}": v / config.steps_per_epoch for k, v in sums.items()})
            method.eval()
            if validate is not None and epoch % config.val_every == 0:
                with torch.no_grad():
                    scores = {f"val_{k}": float(v) for k, v in validate(method).items()} if main else None
                record.update(distributed.broadcast(scores) if world > 1 else scores)
                key = f"val_{config.select_metric}" if config.select_metric else None
                if key is not None and key not in record:
                    raise KeyError(f"train.select_metric {config.select_metric!r} not among validation "
                                   f"metrics {sorted(record)}")
                if key is not None and record[key] > state["best"]:
                    state.update(best=record[key], best_epoch=epoch, bad=0)
                    if main:
                        method.save_checkpoint(best_path, extra={"epoch": epoch, "selected_by": key,
                                                                 "trained_on": trained_on})
                elif key is not None:
                    state["bad"] += 1
            state["history"].append(record)
            state["epoch"] = epoch
            for k, v in record.items():
                if k != "epoch":
                    live.log_metric(k, v)
            live.next_step()
            if main:
                _save_last(method, opt, state, config, fingerprint, last_path)
            if config.patience and state["bad"] >= config.patience:
                stopped = True
    bar.total = bar.n  # early stopping ends the run here: a complete bar, not a failed one
    bar.close()
    final = out_dir / "final.pt"
    chosen = best_path if best_path.is_file() and config.select_metric else last_path
    extra = {"epochs_run": state["epoch"], "best_epoch": state["best_epoch"] or state["epoch"],
             "selected_from": chosen.name, "history": state["history"], "train_config": to_dict(config),
             "fingerprint": fingerprint, "trained_on": trained_on}
    if main and chosen == best_path:
        ckpt = load_torch(best_path)
        ckpt["extra"].update(extra)
        save_torch(final, ckpt)
    elif main:
        method.save_checkpoint(final, extra=extra)
    if main:
        write_json(out_dir / "history.json", state["history"])
    if world > 1:
        distributed.barrier()  # the files exist for every rank once fit returns
    return TrainResult(final, state["history"], extra["best_epoch"], bool(stopped and state["epoch"] < config.epochs))


def accumulate_gradients(method: AnomalyMethod, micro_batches: Iterable[dict[str, Any]], loss_fn: LossFn,
                         n: int, amp: int = 0, step: int = 0, ddp: Any = None) -> dict[str, float]:
    """Add ``grad (L_i / n)`` of each of the ``n`` micro-batches to the parameters' ``.grad``.

    ``ddp``: the ``DistributedDataParallel`` wrapper of ``fit`` (computes ``loss_fn`` and averages the
    gradients over ranks on the ``n``-th micro-batch; the earlier ones run under ``no_sync``).
    Returns the mean over the micro-batches of every entry of ``loss_fn``'s dict. ``FloatingPointError``
    (naming ``step``, the optimizer step) on a non-finite loss; ``ValueError`` when fewer than ``n``
    micro-batches come.
    """
    means: dict[str, float] = {}
    seen = 0
    for batch in micro_batches:
        sync = ddp is None or seen == n - 1  # DDP averages over ranks on the last micro-batch only
        with contextlib.nullcontext() if sync else ddp.no_sync():
            with _autocast(method.device, amp):
                batch = to_device(batch, method.device)
                losses = loss_fn(method, batch) if ddp is None else ddp(batch)
            loss = losses["loss"]
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{method.name}: loss is {loss.item()} at step {step} "
                                         f"(micro-batch {seen + 1} of {n})")
            (loss / n).backward()
        for k, v in losses.items():
            means[k] = means.get(k, 0.0) + float(v.detach()) / n
        seen += 1
    if seen != n:
        raise ValueError(f"{method.name}: {seen} micro-batches for train.accumulate = {n}")
    return means


def input_fingerprint(files: Iterable[str | Path] = (), **sections: Any) -> dict[str, Any]:
    """The ``fingerprint`` of :func:`fit`: every named section (dataclasses as plain dicts) and
    ``files_fingerprint(files)`` (path, size, modification time) of the files the run reads."""
    return {**{name: to_dict(value) for name, value in sections.items()}, "files": files_fingerprint(files)}


class _LossModule(torch.nn.Module):
    """``forward(batch) = loss_fn(method, batch)``: the module ``DistributedDataParallel`` wraps."""

    def __init__(self, method: AnomalyMethod, loss_fn: LossFn) -> None:
        super().__init__()
        self.method, self.loss_fn = method, loss_fn

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        return self.loss_fn(self.method, batch)


def _wrap_ddp(method: AnomalyMethod, loss_fn: LossFn, opt: torch.optim.Optimizer) -> Any:
    """``DistributedDataParallel`` over the parameters ``opt`` trains (the backbone and every other
    parameter and buffer outside them are ignored); rank 0's values of the rest are broadcast."""
    from torch.nn.parallel import DistributedDataParallel

    module = _LossModule(method, loss_fn)
    trained = {id(p) for g in opt.param_groups for p in g["params"]}
    ignored = [name for name, p in module.named_parameters() if id(p) not in trained]
    ignored += [name for name, _ in module.named_buffers() if name.startswith("method.backbone.")]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, ignored)
    device = method.device
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None,
                                   forward_sync_buffers=False, find_unused_parameters=True)


def _autocast(device: torch.device, amp: int):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def _cycle(batches: Iterable) -> Iterator:
    while True:
        empty = True
        for b in batches:
            empty = False
            yield b
        if empty:
            raise ValueError("training data yielded no batch")


def _save_last(method: AnomalyMethod, opt: torch.optim.Optimizer, state: dict, config: TrainConfig,
               fingerprint: dict[str, Any] | None, path: Path) -> None:
    ckpt = method.checkpoint()
    ckpt["train_state"] = {
        **state,
        "train_config": to_dict(config),
        "fingerprint": fingerprint,
        "optimizer": opt.state_dict(),
        "rng": rng_state(),
    }
    save_torch(path, ckpt)


def rng_state() -> dict[str, Any]:
    """The python, numpy, torch and CUDA generator states as tensors (checkpoint-safe)::

        python: int64 [625] (Mersenne Twister words + position) and gauss (float or None)
        numpy:  uint32 words as int64 [624], pos, has_gauss, cached_gaussian
        torch:  uint8 [5056];  cuda: list of uint8 tensors (one per device)
    """
    version, words, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": torch.tensor(words, dtype=torch.int64), "python_version": version, "python_gauss": gauss,
            "numpy": torch.from_numpy(keys.astype(np.int64)), "numpy_pos": int(pos),
            "numpy_has_gauss": int(has_gauss), "numpy_cached_gaussian": float(cached),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate((state["python_version"], tuple(int(w) for w in state["python"]), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_has_gauss"], state["numpy_cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def _resume_mismatch(method: AnomalyMethod, path: Path, config: TrainConfig,
                     fingerprint: dict[str, Any] | None) -> str:
    """Why ``last.pt`` at ``path`` cannot be resumed ('' when it can): what differs from this run."""
    ckpt = load_torch(path)
    written = ckpt.get("train_state", {})
    parts = {"method config": _differing(ckpt.get("config"), to_dict(method.config)),
             "training settings": _differing(written.get("train_config"), to_dict(config)),
             "inputs": _differing(written.get("fingerprint"), fingerprint)}
    differ = [f"{name} {keys}" for name, keys in parts.items() if keys]
    return "written with other " + ", ".join(differ) if differ else ""


def _differing(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys where two plain-data trees differ ([] when equal)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [k for key in sorted(old.keys() | new.keys(), key=str)
                for k in _differing(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [prefix.rstrip(".") or "(all)"]


def _resume(method: AnomalyMethod, opt: torch.optim.Optimizer, path: Path, reseed: int | None = None) -> dict:
    """Load ``last.pt``: weights, optimizer, counters and the generator states it holds, or, with
    ``reseed`` (the run seed, on ranks r > 0), fresh generators seeded from (seed, r, step)."""
    ckpt = load_torch(path)
    method.load_trainable_state(ckpt["state_dict"])
    ts = ckpt["train_state"]
    opt.load_state_dict(ts["optimizer"])
    if reseed is None:
        set_rng_state(ts["rng"])
    else:
        seed_everything(distributed.rank_seed(reseed, step=int(ts["step"])))
    return {k: ts[k] for k in ("epoch", "step", "history", "best", "best_epoch", "bad")}
