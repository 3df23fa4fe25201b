"""Encode once, score many: every (k, seed) run of one category from one pass over its test images.

Most of a method's forward does not depend on the support set (:mod:`fsadlib.methods.base`): the
evaluation of a plan (k x seeds) reads, decodes and encodes each test image of a category once
(``encode_queries``) and scores the features for every run (``score_queries``), each run with its own
per-category state and random-number state.

For R runs of a category with N test images in batches of b:

1. every run is prepared in plan order: ``seed_everything(seed)``, ``setup_category(category, supports)``
   (supports: its k-shot images), then its category state and the random-number state of torch,
   numpy and ``random`` are captured (:class:`PreparedRun`);
2. runs whose models give the same encoding key (:meth:`~fsadlib.methods.base.AnomalyMethod.encoding_key`
   plus the image transform) form one group; each group's test images are decoded and encoded once,
   batch by batch, with the group's first model;
3. the encoded batches are kept on the model's device until their features reach the budget
   (``budget_bytes``; the bytes of every tensor in them), then each run of the group scores them: its
   state and random-number state restored, ``score_queries`` per batch, both states captured again.
   A category within the budget is scored run after run from one chunk; a larger one streams in chunks
   and still gives every run the same batches in the same order with the same states, so its results
   are those of the per-run path (bit for bit on CPU);
4. each run's image scores are its ``category_scores`` of all its scores, its state active (a
   transductive rule such as Bayes-PFL's ``score_rule: public`` reads what its scoring recorded).

Data path: each group's test images come from :class:`fsadlib.data.AnomalyDataset` as uint8 (decoded
once into the decoded-image cache, :mod:`fsadlib.data.decoded`), through a DataLoader with
:func:`loader_workers` workers and pinned memory on CUDA, copied without blocking and normalised on
the device (:func:`fsadlib.data.dataset.normalise`, the same float32 operations as the CPU path).

Scores come back as float32 [N] on the CPU, maps as float32 [N, E, E] resized bilinearly
(align_corners=False) to the evaluation size E, masks as bool [N, E, E], maps and masks on the device.
Memory: the features of one chunk, plus the maps of all R runs of the category (R x N x E^2 float32).
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from fsadlib import data
from fsadlib.config import seed_everything
from fsadlib.methods.base import AnomalyMethod
from fsadlib.progress import Bar


@dataclass(frozen=True)
class CategoryRun:
    """One (k, seed) run to score on a category: its model, its seed, its k-shot image paths (empty for
    zero-shot runs) and its image transform (:mod:`fsadlib.data.geometry`)."""

    model: AnomalyMethod
    seed: int
    shots: Sequence[str] = ()
    geometry: str = data.DEFAULT_GEOMETRY


@dataclass(frozen=True)
class Scored:
    """What a run gives for a category: scores [N] float32 (CPU), maps [N, E, E] float32 and masks
    [N, E, E] bool (on the model's device), in the order of the category's rows."""

    scores: torch.Tensor
    maps: torch.Tensor
    masks: torch.Tensor


@dataclass
class RandomState:
    """The states of torch's CPU (and CUDA) generators, numpy's and ``random``'s."""

    torch_cpu: torch.Tensor
    torch_cuda: list[torch.Tensor]
    numpy: Any
    python: Any

    @classmethod
    def capture(cls) -> RandomState:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        return cls(torch.get_rng_state(), cuda, np.random.get_state(), random.getstate())

    def restore(self) -> None:
        torch.set_rng_state(self.torch_cpu)
        if self.torch_cuda:
            torch.cuda.set_rng_state_all(self.torch_cuda)
        np.random.set_state(self.numpy)
        random.setstate(self.python)


@dataclass
class PreparedRun:
    """A run after ``setup_category``: its model, the model's category state and the random state."""

    model: AnomalyMethod
    state: dict[str, Any]
    rng: RandomState

    def activate(self) -> None:
        """Make this run's category state and random state the current ones."""
        self.model.restore_category_state(self.state)
        self.rng.restore()

    def suspend(self) -> None:
        """Keep the states as scoring left them (the next chunk continues from there)."""
        self.state = self.model.category_state()
        self.rng = RandomState.capture()


def feature_bytes(features: Any) -> int:
    """Bytes of every tensor in ``features`` (tensors, lists, tuples, dicts, dataclasses, nested)."""
    if isinstance(features, torch.Tensor):
        return features.numel() * features.element_size()
    if isinstance(features, (list, tuple)):
        return sum(feature_bytes(f) for f in features)
    if isinstance(features, dict):
        return sum(feature_bytes(f) for f in features.values())
    if is_dataclass(features):
        return sum(feature_bytes(getattr(features, f.name)) for f in fields(features))
    return 0


def prepare_run(run: CategoryRun, category: str) -> PreparedRun:
    """Step 1 of the module docstring for one run."""
    model, backbone = run.model, run.model.backbone
    seed_everything(run.seed)
    model.eval()
    supports = data.load_images(list(run.shots), int(backbone.image_size), backbone.mean, backbone.std,
                                run.geometry).to(model.device) if run.shots else None
    with torch.inference_mode():
        model.setup_category(category, supports)
    return PreparedRun(model, model.category_state(), RandomState.capture())


def score_category(category: str, rows: pd.DataFrame, runs: Sequence[CategoryRun], *, eval_size: int,
                   batch_size: int = 16, num_workers: int = 0, budget_bytes: int = 2 << 30,
                   encode_once: bool = True, bar: Bar | None = None) -> list[Scored]:
    """Score every run of ``runs`` on ``category``'s test ``rows`` (module docstring); one
    :class:`Scored` per run, in the order of ``runs``. ``encode_once=False`` encodes for each run
    separately (the per-run path, as a reference and for the benchmark)."""
    prepared = [prepare_run(run, category) for run in runs]
    groups: dict[Any, list[int]] = {}
    for i, (run, p) in enumerate(zip(runs, prepared)):
        key = (_transform_key(p.model, run.geometry, eval_size), p.model.encoding_key()) if encode_once else i
        groups.setdefault(key, []).append(i)
    results: list[Scored | None] = [None] * len(runs)
    for indices in groups.values():
        scored = _score_group(rows, [prepared[i] for i in indices], runs[indices[0]].geometry, eval_size,
                              batch_size, num_workers, budget_bytes, bar)
        for i, s in zip(indices, scored):
            results[i] = s
    return results


def loader_workers(requested: int, device: torch.device) -> int:
    """DataLoader workers: ``requested`` when >= 0; ``-1`` (auto): none on a CPU device (the model needs
    the cores), else one per usable core up to 8 (decoding, mostly from the cache, feeds the GPU)."""
    if requested >= 0:
        return requested
    if requested != -1:
        raise ValueError(f"evaluate.num_workers must be -1 (auto) or >= 0, got {requested}")
    return 0 if device.type == "cpu" else min(8, len(os.sched_getaffinity(0)))


def _transform_key(model: AnomalyMethod, geometry: str, eval_size: int) -> tuple:
    """What the group's decoded images depend on: geometry, input size, normalisation, mask size."""
    bb = model.backbone
    return geometry, int(bb.image_size), tuple(bb.mean), tuple(bb.std), eval_size


def _score_group(rows: pd.DataFrame, runs: list[PreparedRun], geometry: str, eval_size: int, batch_size: int,
                 num_workers: int, budget_bytes: int, bar: Bar | None) -> list[Scored]:
    """Steps 2-3 of the module docstring for the runs of one encoding group."""
    encoder = runs[0].model
    bb = encoder.backbone
    device = encoder.device
    loader = DataLoader(data.AnomalyDataset(rows, int(bb.image_size), mask_size=eval_size, geometry=geometry,
                                            normalised=False),
                        batch_size=batch_size, num_workers=loader_workers(num_workers, device),
                        pin_memory=device.type == "cuda")
    scores: list[list[torch.Tensor]] = [[] for _ in runs]
    maps: list[list[torch.Tensor]] = [[] for _ in runs]
    masks: list[torch.Tensor] = []
    chunk: list[Any] = []
    used = 0
    for batch in loader:
        with torch.inference_mode():
            images = data.normalise(batch["image"].to(device, non_blocking=True), bb.mean, bb.std)
            chunk.append(encoder.encode_queries(images))
        masks.append(batch["mask"].to(device, non_blocking=True) > 0.5)
        used += feature_bytes(chunk[-1])
        if used >= budget_bytes:
            _score_chunk(chunk, runs, scores, maps, eval_size, bar)
            chunk, used = [], 0
    if chunk:
        _score_chunk(chunk, runs, scores, maps, eval_size, bar)
    all_masks = torch.cat(masks)
    return [Scored(_category_scores(run, torch.cat(s)), torch.cat(m), all_masks)
            for run, s, m in zip(runs, scores, maps)]


def _category_scores(run: PreparedRun, scores: torch.Tensor) -> torch.Tensor:
    """The run's ``category_scores`` of all its scores [N], with its state active (a transductive rule
    reads what its scoring recorded)."""
    run.activate()
    with torch.inference_mode():
        return run.model.category_scores(scores)


def _score_chunk(chunk: list[Any], runs: list[PreparedRun], scores: list[list[torch.Tensor]],
                 maps: list[list[torch.Tensor]], eval_size: int, bar: Bar | None) -> None:
    """Every run scores the encoded batches of ``chunk``; appends to its ``scores`` and ``maps``."""
    for run, run_scores, run_maps in zip(runs, scores, maps):
        run.activate()
        with torch.inference_mode():
            for features in chunk:
                out = run.model.score_queries(features)
                amap = out.anomaly_map.float()
                if amap.shape[-2:] != (eval_size, eval_size):
                    amap = F.interpolate(amap[:, None], size=(eval_size, eval_size), mode="bilinear",
                                         align_corners=False)[:, 0]
                run_scores.append(out.pred_score.float().cpu())
                run_maps.append(amap)
                if bar is not None:
                    bar.update(len(amap))
        run.suspend()
