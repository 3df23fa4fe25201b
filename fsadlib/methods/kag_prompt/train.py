"""KAG-prompt training (spec B2): normal images of the auxiliary categories plus synthetic anomalies.

Every step draws ``batch_size`` normal training images of the auxiliary categories; each yields two
training images, the clean one (zero mask) and its synthetic anomaly (:mod:`fsadlib.data.augment`,
soft mask; ``data.synthesis: nsa`` is the paper's NSA, :mod:`fsadlib.data.nsa`). With gt = [mask > ``mask_threshold``], y = max gt, the 2L probability maps P_f of
:meth:`KagPrompt.prompt_branch` and the CLS cosines c = (<a, t_n>, <a, t_a>):

    loss = sum_f [ Focal(P_f, gt) + dice_weight * (Dice(P_f, gt) + Dice(1 - P_f, 1 - gt)) ]
           + BCE(sigmoid(c), onehot(y))

(focal gamma 2, alpha 1 on probabilities; soft Dice with smooth 1 per sample; :mod:`fsadlib.losses`).
Training is shot-agnostic (the memory bank appears only at test). Model selection uses the held-out
validation categories only (``protocol.val_categories``, test split, real anomalies), each scored
with ``val_shots`` normal supports drawn from its own training split with ``val_seed``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from fsadlib import distributed
from fsadlib.config import seed_everything
from fsadlib.losses import dice_loss, focal_loss
from fsadlib.methods.kag_prompt.model import KagPrompt, KagPromptConfig
from fsadlib.methods.training import TrainReport
from fsadlib.protocol import Protocol, training_files, validation_sets
from fsadlib.train import TrainConfig, fit, input_fingerprint


@dataclass(frozen=True)
class KagLossConfig:
    mask_threshold: float = 0.3     # soft synthetic mask -> binary gt
    dice_weight: float = 0.3
    focal_gamma: float = 2.0
    focal_alpha: float = 1.0
    focal_eps: float = 1e-5         # the public FocalLoss' clamp


@dataclass(frozen=True)
class KagDataConfig:
    batch_size: int = 18            # normal images per micro-batch (x2 with their synthetic anomalies)
    val_shots: int = 1              # supports per validation category
    val_seed: int = 0
    val_max_images: int = 0         # 0 = every test image of a validation category
    synthesis: str = "nsa"          # fsadlib.data.augment mode: nsa (the paper's) | cutpaste | perlin

    def __post_init__(self) -> None:
        from fsadlib.data.augment import MODES

        if self.synthesis not in MODES:
            raise ValueError(f"kag_prompt.data.synthesis must be one of {MODES}, got {self.synthesis!r}")
        if self.batch_size < 1 or self.val_shots < 1:
            raise ValueError("kag_prompt.data.batch_size and kag_prompt.data.val_shots must be >= 1")


@dataclass(frozen=True)
class KagTrainSection:
    """The ``kag_prompt`` section of params.yaml; ``ks``: the k it is evaluated at (training is shot-agnostic)."""

    ks: tuple[int, ...] = (1, 2, 4)
    model: KagPromptConfig = field(default_factory=KagPromptConfig)
    # one GPU: 18 items x 16 micro-batches = the paper's 288 items (576 images) per optimizer step
    # (18 per GPU x 8 accumulation x 2 GPUs); 13 steps ~ one pass over MVTec AD's 3,629 normals
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=50, steps_per_epoch=13, accumulate=16, lr=1e-3, optimizer="adamw", betas=(0.9, 0.95), weight_decay=1e-3,
        schedule="linear", warmup=0.1, grad_clip=1.0, amp=0, seed=42, select_metric="auroc_mean"))
    loss: KagLossConfig = field(default_factory=KagLossConfig)
    data: KagDataConfig = field(default_factory=KagDataConfig)


def kag_loss(method: KagPrompt, batch: dict[str, Any], cfg: KagLossConfig) -> dict[str, torch.Tensor]:
    """batch: image [B, 3, S, S], mask [B, S, S] (soft), category (B names) -> {"loss", parts}."""
    feats = method.encode(batch["image"])
    text = torch.stack([method.text_for(c) for c in batch["category"]])      # [B, 2, D]
    probs, cosines = method.prompt_branch(feats, text)                        # [B, M, S, S], [B, 2]
    gt = (batch["mask"] > cfg.mask_threshold).float()
    label = gt.flatten(1).amax(1).long()
    n_maps = probs.shape[1]
    maps = probs.flatten(0, 1)                                                 # [B*M, S, S]
    gts = gt.repeat_interleave(n_maps, dim=0)
    # each term is a mean over the B*M maps; times M = the sum over maps of per-map means
    focal = n_maps * focal_loss(maps, gts, cfg.focal_gamma, cfg.focal_alpha, cfg.focal_eps)
    dice = n_maps * (dice_loss(maps, gts) + dice_loss(1 - maps, 1 - gts))
    bce = F.binary_cross_entropy(torch.sigmoid(cosines), F.one_hot(label, 2).float())
    loss = focal + cfg.dice_weight * dice + bce
    return {"loss": loss, "focal": focal.detach(), "dice": dice.detach(), "image_bce": bce.detach()}


def aux_normal_samples(protocol: Protocol):
    """Normal training images of the auxiliary categories (samples table rows)."""
    from fsadlib.data import load_samples

    s = load_samples(protocol.aux_dataset)
    rows = s[s.category.isin(protocol.aux_categories) & (s.split == "train") & (s.label == 0)]
    missing = sorted(set(protocol.aux_categories) - set(rows.category))
    if missing:
        raise ValueError(f"protocol.aux_categories {missing}: no normal training images in "
                         f"dataset '{protocol.aux_dataset}'")
    return rows.reset_index(drop=True)


class SyntheticAnomalyBatches:
    """Training batches: ``batch_size`` normal images + their synthetic anomalies.

    Each pass shuffles the normal images with the global numpy RNG (seeded and restored on resume by
    :func:`fsadlib.train.fit`), so a resumed run draws what an uninterrupted one would; on W ranks
    (:mod:`fsadlib.distributed`) a rank keeps every W-th image of its own (rank-seeded) shuffle, so a pass
    has N / W images per rank. Anomalies come
    from :func:`fsadlib.data.augment.synthesize_anomaly` (``mode``) on the [0, 1] image; with
    ``cutpaste`` the patch is cut from the previous image of the batch (the public code's NSA takes
    it from the previously visited image); with ``nsa`` likewise, with each category's public NSA
    parameters (:func:`fsadlib.data.nsa.nsa_params`). Every batch is a dict: image [2b, 3, S, S] (clean ones
    first), mask [2b, S, S] (zeros, then the synthetic masks), category (2b names).
    """

    def __init__(self, samples, image_size: int, batch_size: int, mode: str, mean: tuple[float, ...],
                 std: tuple[float, ...], method_geometry: str | None = None) -> None:
        from fsadlib.data import AnomalyDataset, samples_geometry

        world = distributed.world_size()
        if len(samples) // world < batch_size:
            raise ValueError(f"kag_prompt.data.batch_size {batch_size} exceeds the {len(samples)} normal "
                             f"training images" + (f" / {world} ranks" if world > 1 else ""))
        self.dataset = AnomalyDataset(samples, image_size, mask_size=image_size, mean=mean, std=std,
                                      geometry=samples_geometry(samples, method_geometry))
        self.batch_size, self.mode = batch_size, mode
        self.mean, self.std = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        from fsadlib.data.augment import synthesize_anomaly
        from fsadlib.data.nsa import nsa_params

        order = distributed.shard(np.random.permutation(len(self.dataset)))  # this rank's 1/W of the pass
        for start in range(0, len(order) - self.batch_size + 1, self.batch_size):
            items = [self.dataset[int(i)] for i in order[start:start + self.batch_size]]
            rng = np.random.default_rng(np.random.randint(2**31))
            clean = torch.stack([it["image"] for it in items])
            unit = clean * self.std + self.mean                              # [b, 3, S, S] in [0, 1]
            fakes = [synthesize_anomaly(x, rng, source=None if self.mode == "perlin" else src, mode=self.mode,
                                        nsa=nsa_params(it["category"]) if self.mode == "nsa" else None)
                     for x, src, it in zip(unit, unit.roll(1, dims=0), items)]
            yield {
                "image": torch.cat([clean, (torch.stack([f[0] for f in fakes]) - self.mean) / self.std]),
                "mask": torch.cat([torch.zeros(len(items), *fakes[0][1].shape), torch.stack([f[1] for f in fakes])]),
                "category": [it["category"] for it in items] * 2,
            }


def training_preview(section: KagTrainSection, protocol: Protocol, n: int = 6, seed: int = 0) -> dict[str, Any]:
    """``n`` normal training images, each followed by its synthetic anomaly, as the training batches
    make them (``data.synthesis`` at the backbone's input size), in [0, 1], for
    :func:`fsadlib.data.figures.training_grid`; the global numpy RNG is left as it was."""
    from fsadlib.clip.backbone import input_size

    rows = aux_normal_samples(protocol)
    batches = SyntheticAnomalyBatches(rows, input_size(section.model.backbone), min(n, len(rows)),
                                      section.data.synthesis, (0.0,) * 3, (1.0,) * 3, section.model.backbone.geometry)
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        batch = next(iter(batches))
    finally:
        np.random.set_state(state)
    b = len(batch["category"]) // 2
    order = [i for pair in zip(range(b), range(b, 2 * b)) for i in pair]
    titles = [f"{c} normal" for c in batch["category"][:b]] + [f"{c} {section.data.synthesis}"
                                                              for c in batch["category"][b:]]
    return {"image": batch["image"][order], "mask": batch["mask"][order], "title": [titles[i] for i in order]}


def make_validate(protocol: Protocol, data: KagDataConfig, image_size: int, mean: tuple[float, ...],
                  std: tuple[float, ...], method_geometry: str | None = None) -> Callable[[KagPrompt], dict[str, float]]:
    """Validation on the held-out auxiliary categories (test split): mean image and pixel AUROC.

    Supports: ``val_shots`` normal training images per category; test images: all, or
    ``val_max_images`` balanced over the two classes (:func:`fsadlib.protocol.validation_sets`,
    seeded with ``val_seed``), loaded once.
    """
    from fsadlib.data import AnomalyDataset, load_images, load_samples, samples_geometry

    sets = []
    samples = load_samples(protocol.validation_dataset)
    geometry = samples_geometry(samples, method_geometry)
    for v in validation_sets(samples, protocol, data.val_max_images, data.val_shots, data.val_seed):
        test_set = AnomalyDataset(v.test, image_size, mask_size=image_size, mean=mean, std=std, geometry=geometry)
        items = [test_set[i] for i in range(len(test_set))]
        sets.append((v.category, load_images(v.supports, image_size, mean=mean, std=std, geometry=geometry),
                     torch.stack([it["image"] for it in items]),
                     torch.tensor([int(it["label"]) for it in items]),
                     torch.stack([torch.as_tensor(it["mask"]) for it in items])))

    def validate(method: KagPrompt) -> dict[str, float]:
        from fsadlib.metrics import image_metrics, pixel_metrics

        img, pix = [], []
        for cat, supports, images, labels, masks in sets:
            method.setup_category(cat, supports.to(method.device))
            outs = [method(x.to(method.device)).detach_cpu() for x in images.split(data.batch_size)]
            img.append(image_metrics(torch.cat([o.pred_score for o in outs]), labels)["auroc"])
            pix.append(pixel_metrics(torch.cat([o.anomaly_map for o in outs]), masks)["auroc"])
        out = {"image_auroc": float(np.mean(img)), "pixel_auroc": float(np.mean(pix))}
        out["auroc_mean"] = (out["image_auroc"] + out["pixel_auroc"]) / 2
        return out

    return validate


def train_kag_prompt(section: KagTrainSection, protocol: Protocol, *, smoke: bool, out_dir: Path,
                     live_dir: Path) -> TrainReport:
    """Train KAG-prompt on ``protocol``'s auxiliary categories (the one train signature,
    :mod:`fsadlib.methods.training`): ``<out_dir>/{last,best,final}.pt`` (``models/kag_prompt/``),
    DVCLive metrics in ``live_dir``; the history has one row per epoch. ``smoke`` changes nothing
    here (the section arrives shrunk)."""
    protocol.check()
    seed_everything(section.train.seed)
    method = KagPrompt(section.model)
    size, mean, std = method.backbone.image_size, method.backbone.mean, method.backbone.std
    data = section.data
    geometry = method.backbone.geometry
    batches = SyntheticAnomalyBatches(aux_normal_samples(protocol), size, data.batch_size, data.synthesis, mean, std,
                                      geometry)
    validate = make_validate(protocol, data, size, mean, std, geometry) if protocol.val_categories else None
    fingerprint = input_fingerprint(training_files(protocol), loss=section.loss, data=data, protocol=protocol)
    result = fit(method, batches, lambda m, b: kag_loss(m, b, section.loss), section.train, out_dir,
                 validate=validate, live_dir=live_dir, desc="kag_prompt", fingerprint=fingerprint,
                 take_epoch=protocol.fixed_epoch, trained_on=protocol.training_record())
    return TrainReport(pd.DataFrame(result.history), [result.best_path])
