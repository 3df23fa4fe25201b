"""Encode once, score many: every (k, seed) run of one category from one pass over its test images.

Most of a method's forward does not depend on the support set (:mod:`fsadlib.methods.base`): the
evaluation of a plan (k x seeds) reads, decodes and encodes each test image of a category once
(``encode_queries``) and scores the features for every run (``score_queries``), each run with its own
per-category state and random-number state.

For R runs of a category with N test images in batches of b:

0. supports: for the runs whose models encode their supports apart (``encodes_supports``: the
   few-shot methods with :meth:`~fsadlib.methods.base.AnomalyMethod.encode_support`), each distinct
   support image of the category is decoded and encoded once per slot (:class:`SupportRows`). The
   one canonical support encoding (:meth:`~fsadlib.methods.base.AnomalyMethod.encode_supports`,
   what a run's own ``setup_category`` computes) encodes a k-shot list [k, 3, S, S] in batches of
   ``SUPPORT_CHUNK`` = 8 images, the last one zero-padded, so image j of a list sits at slot j % 8
   of batch j // 8. Exactness: on a CPU a row's features depend on the batch's shape and the row's
   slot, never on what the other rows hold (the same kernels over the same operands; measured bit
   for bit, while a batch of another size differs by about 4e-6), so the features of (image, slot)
   are the same bits in every chunk that holds them. The runs with shots are visited in order of
   decreasing k; every chunk of a run's list with an (image, slot) not yet encoded is decoded,
   padded and encoded once, and each of its real rows is kept under (image transform, the model's
   ``support_key()``, image path, slot). With the nested draws of :mod:`fsadlib.data.shots` (the
   k = 1 list a prefix of k = 2's, ...) that encodes each seed's largest list once and nothing else
   (k in 1, 2, 4, 8 and 3 seeds: 3 chunks, 24 image encodings, where the per-run path encodes 12
   chunks, 96 with the padding, for 45 shot images); with other shot files it is still exact and
   only encodes more. A run's support features are its shots' rows in its file order
   (:func:`fsadlib.features.cat_rows`), given to ``setup_category_encoded``;
1. every run is prepared in plan order: ``seed_everything(seed)``, then ``setup_category_encoded
   (category, features)`` with its rows of step 0, or for the other methods ``setup_category(category,
   supports)`` with its k-shot images (zero-shot runs: none), then its category state and the
   random-number state of torch, numpy and ``random`` are captured (:class:`PreparedRun`);
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
Memory: the features of one chunk, plus the maps of all R runs of the category (R x N x E^2 float32);
while the runs are prepared, the rows of step 0 (freed then: the runs' states keep what they use).
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from fsadlib import data
from fsadlib.config import seed_everything
from fsadlib.features import cat_rows, feature_bytes, take_rows
from fsadlib.methods.base import SUPPORT_CHUNK, AnomalyMethod
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


class SupportRows:
    """Step 0 of the module docstring: the support features of one category's plan, each real row of
    every encoded chunk kept under (image transform, ``support_key()``, image path, slot)."""

    def __init__(self) -> None:
        self._rows: dict[tuple, Any] = {}

    @staticmethod
    def _key(run: CategoryRun) -> tuple:
        return _image_key(run.model, run.geometry), run.model.support_key()

    def encode(self, runs: Sequence[CategoryRun]) -> None:
        """Encode every chunk of the runs' shot lists that holds an (image, slot) not yet kept, the
        runs visited in order of decreasing k (so nested lists are encoded once, by their longest)."""
        for run in sorted(runs, key=lambda r: -len(r.shots)):
            key, bb = self._key(run), run.model.backbone
            for start in range(0, len(run.shots), SUPPORT_CHUNK):
                paths = list(run.shots[start:start + SUPPORT_CHUNK])
                if all((key, path, slot) in self._rows for slot, path in enumerate(paths)):
                    continue
                images = data.load_images(paths, int(bb.image_size), bb.mean, bb.std, run.geometry).to(run.model.device)
                with torch.inference_mode():
                    rows = run.model.encode_supports(images)  # one chunk: padded to SUPPORT_CHUNK inside
                for slot, path in enumerate(paths):
                    self._rows.setdefault((key, path, slot), take_rows(rows, slice(slot, slot + 1)))

    def features(self, run: CategoryRun) -> Any:
        """The run's support features: its shots' rows in its file order (k rows), as its model's
        ``encode_supports`` of its k-shot images gives them; ``KeyError`` naming the image when
        :meth:`encode` has not seen the run."""
        key = self._key(run)
        try:
            parts = [self._rows[key, path, i % SUPPORT_CHUNK] for i, path in enumerate(run.shots)]
        except KeyError as err:
            raise KeyError(f"support image {err.args[0][1]} (slot {err.args[0][2]}) was not encoded: "
                           "SupportRows.encode the run first") from None
        with torch.inference_mode():
            return cat_rows(parts)


def prepare_run(run: CategoryRun, category: str, supports: SupportRows | None = None) -> PreparedRun:
    """Step 1 of the module docstring for one run: its support features from ``supports`` (step 0)
    when given and its model encodes supports apart, else its k-shot images go to ``setup_category``."""
    model, backbone = run.model, run.model.backbone
    model.eval()
    encoded = supports is not None and _shares_supports(run)
    features = supports.features(run) if encoded else None
    images = data.load_images(list(run.shots), int(backbone.image_size), backbone.mean, backbone.std,
                              run.geometry).to(model.device) if run.shots and not encoded else None
    seed_everything(run.seed)
    with torch.inference_mode():
        if encoded:
            model.setup_category_encoded(category, features)
        else:
            model.setup_category(category, images)
    return PreparedRun(model, model.category_state(), RandomState.capture())


def _shares_supports(run: CategoryRun) -> bool:
    """Whether a run's supports come from step 0: it has shots and its model encodes supports apart."""
    return bool(run.shots) and run.model.encodes_supports


def score_category(category: str, rows: pd.DataFrame, runs: Sequence[CategoryRun], *, eval_size: int,
                   batch_size: int = 16, num_workers: int = 0, budget_bytes: int = 2 << 30,
                   encode_once: bool = True, bar: Bar | None = None) -> list[Scored]:
    """Score every run of ``runs`` on ``category``'s test ``rows`` (module docstring); one
    :class:`Scored` per run, in the order of ``runs``. ``encode_once=False`` encodes the test images
    and the supports for each run separately (the per-run path, as a reference and for the benchmark)."""
    supports = None
    if encode_once:
        supports = SupportRows()
        supports.encode([run for run in runs if _shares_supports(run)])
    prepared = [prepare_run(run, category, supports) for run in runs]
    del supports  # the runs' states keep what they use
    groups: dict[Any, list[int]] = {}
    for i, (run, p) in enumerate(zip(runs, prepared)):
        key = (_image_key(p.model, run.geometry), eval_size, p.model.encoding_key()) if encode_once else i
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


def _image_key(model: AnomalyMethod, geometry: str) -> tuple:
    """What a model's decoded input images depend on: geometry, input size, normalisation."""
    bb = model.backbone
    return geometry, int(bb.image_size), tuple(bb.mean), tuple(bb.std)


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
