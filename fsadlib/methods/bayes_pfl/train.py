"""Bayes-PFL training (spec A2): two stages with early stopping on held-out auxiliary categories.

Zero-shot protocol (field convention, labelled as such): the training data is the TEST split (with
masks) of the auxiliary categories ``protocol.aux_categories``; model selection uses the test split of
``protocol.val_categories`` (never the target categories; ``Protocol.check`` enforces it).

Stage 1 (per step, batch of N images with masks y and labels c; one random bank entry b per step):

    loss = CE(logit_{.,b}, c) + sum_l [ BalancedFocal(p_{l,b}, y) + Dice(p_{l,b}, y) ]
           + kl_weight * (KL_ctx + KL_normal + KL_abnormal) + orth_weight * L_orth

with one flow sample per image (shared by the B entries) and one per state; p_{l,b} the abnormal
probability of layer l at S x S; focal gamma 2, class-balanced (foreground mean + background mean);
Dice on the abnormal channel over the whole batch (smooth 1e-5); L_orth = sum over the two states of
the mean over (N, B, B) of squared off-diagonal cosines between the B bank embeddings (diagonal
counted as 0, as in the public code). Optimiser Adam(betas 0.5, 0.999) with LR groups prompt 1e-3,
temperature 1e-2, flow 1e-3, other 1e-4; cosine schedule with 10 % warmup. Selection metric:
mean pixel AP over the validation categories (R = ``val_samples``); stop after ``patience``
validations without improvement, restore the best stage-1 weights.

Stage 2: CE on the image logits of the stage-2 image branch (M_i(g + Fuse)) only; trains the class
mapping, image mapping and fuse (Adam, constant lr 1e-4); selection by mean image AP, same patience.

Fixed selection (protocol ``selection: fixed``): no validation; each stage takes its last epoch, and
``epoch: n`` ends stage 1 after its epoch n.

Checkpoints: ``<out>/stage1/`` and ``<out>/stage2/`` (fit's last/best/final.pt, resumable), and
``<out>/final.pt`` = the selected stage-2 model with both histories in ``extra``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from fsadlib import distributed
from fsadlib.clip import ImageFeatures
from fsadlib.config import to_dict
from fsadlib.io import load_torch, save_torch
from fsadlib.losses import balanced_focal_loss, dice_loss
from fsadlib.methods.bayes_pfl.augment import AugmentedDataset, BayesPFLAugmentConfig
from fsadlib.methods.bayes_pfl.model import BayesPFL, BayesPFLConfig
from fsadlib.methods.training import TrainReport
from fsadlib.protocol import Protocol, training_files, validation_sets
from fsadlib.train import TrainConfig, fit, input_fingerprint


@dataclass(frozen=True)
class BayesPFLTrainConfig:
    epochs: int = 30                 # stage-1 maximum (public: 30 epochs shared by both stages)
    stage2_epochs: int = 30          # stage-2 maximum
    patience: int = 3                # validations without improvement before switching / stopping
    batch_size: int = 32             # images per micro-batch
    accumulate: int = 1              # micro-batches per optimizer step (the paper: 1 x 32 on one 3090)
    max_steps_per_epoch: int = 0     # optimizer steps; 0 = one pass over the training set
    lr_prompt: float = 1e-3
    lr_temperature: float = 1e-2
    lr_flow: float = 1e-3
    lr_other: float = 1e-4
    lr_stage2: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.999)
    warmup: float = 0.1
    kl_weight: float = 0.01
    orth_weight: float = 1.0
    mosaic_prob: float = 0.0         # public: 0.4 when training on MVTec AD, 0 on VisA
    val_samples: int = 5             # R during validation
    val_max_images: int = 0          # 0 = every test image of a validation category
    seed: int = 333
    amp: int = 0                     # 0: heads in fp32 (the CLIP towers follow backbone.precision)


@dataclass(frozen=True)
class BayesPFLSection:
    """The ``bayes_pfl`` section of params.yaml."""

    model: BayesPFLConfig = field(default_factory=BayesPFLConfig)
    train: BayesPFLTrainConfig = field(default_factory=BayesPFLTrainConfig)
    augment: BayesPFLAugmentConfig = field(default_factory=BayesPFLAugmentConfig)


# -- losses ---------------------------------------------------------------------------------------
def orthogonality_loss(text: torch.Tensor) -> torch.Tensor:
    """text [N, 2, B, D] (normalised) -> sum_s mean_{n,b,c} (1 - [b = c]) cos(T_nsb, T_nsc)^2."""
    cos = torch.einsum("nsbd,nscd->nsbc", text, text)
    off = 1 - torch.eye(text.shape[2], device=text.device)
    return (cos ** 2 * off).mean(dim=(0, 2, 3)).sum()


def _training_prompts(method: BayesPFL, images: torch.Tensor, categories: list[str]
                      ) -> tuple[ImageFeatures, torch.Tensor, torch.Tensor]:
    """Features, text [N, 2, B, D] with one training sample (global RNG), and the KL sum."""
    with torch.no_grad():
        feats = method.backbone.encode_image(images, layers=method.config.layers)
    n, width = images.shape[0], method.backbone.text_width
    noise = torch.randn(n + 2, 1, width, device=method.device)
    text, kl = method.text_embeddings(feats.embedding, categories, noise[:n], noise[n], noise[n + 1])
    return feats, text[:, 0], kl


def stage1_loss(method: BayesPFL, batch: dict[str, Any], cfg: BayesPFLTrainConfig) -> dict[str, torch.Tensor]:
    """batch: image [N, 3, S, S], mask [N, S, S], label [N], category (N names)."""
    feats, text, kl = _training_prompts(method, batch["image"], list(batch["category"]))
    b = int(torch.randint(method.config.bank_size, ()))
    ce = F.cross_entropy(method.image_logits(feats, text[:, :, b]), batch["label"].long())
    probs = method.upsample(method.pixel_logit_gaps(feats.tokens, text[:, None, :, b])[:, :, 0])  # [N, L, S, S]
    gt = (batch["mask"] > 0.5).float()
    focal = sum(balanced_focal_loss(probs[:, l], gt) for l in range(probs.shape[1]))
    dice = sum(dice_loss(probs[:, l].reshape(1, -1), gt.reshape(1, -1), smooth=1e-5) for l in range(probs.shape[1]))
    orth = orthogonality_loss(text)
    loss = ce + focal + dice + cfg.kl_weight * kl + cfg.orth_weight * orth
    return {"loss": loss, "ce": ce.detach(), "focal": focal.detach(), "dice": dice.detach(),
            "kl": kl.detach(), "orth": orth.detach()}


def stage2_loss(method: BayesPFL, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """CE of the stage-2 image branch on one random bank pair (the prompts are fixed here)."""
    with torch.no_grad():
        feats, text, _ = _training_prompts(method, batch["image"], list(batch["category"]))
    b = int(torch.randint(method.config.bank_size, ()))
    ce = F.cross_entropy(method.image_logits(feats, text[:, :, b]), batch["label"].long())
    return {"loss": ce, "ce": ce.detach()}


# -- data -----------------------------------------------------------------------------------------
def category_samples(protocol: Protocol, categories: tuple[str, ...]):
    """Test-split rows of ``categories`` of the auxiliary data set (``KeyError`` naming unknown ones)."""
    from fsadlib import data

    rows = data.load_samples(protocol.aux_dataset, categories=categories)
    return rows[rows["split"] == "test"].reset_index(drop=True)


def make_dataset(method: BayesPFL, rows) -> Dataset:
    """Images at the backbone's size and normalisation, masks at the same size."""
    from fsadlib.data import AnomalyDataset, samples_geometry

    bb = method.backbone
    return AnomalyDataset(rows, bb.image_size, mask_size=bb.image_size, mean=bb.mean, std=bb.std,
                          geometry=samples_geometry(rows, bb.geometry))


def training_dataset(method: BayesPFL, rows, cfg: BayesPFLTrainConfig, augment: BayesPFLAugmentConfig) -> Dataset:
    """The training items: plain (``make_dataset``) unless augmentation, mosaic or the bilinear mask
    rule asks for native-resolution items (:class:`fsadlib.methods.bayes_pfl.augment.AugmentedDataset`)."""
    if not augment.enabled and cfg.mosaic_prob <= 0 and augment.mask_resize == "nearest":
        return make_dataset(method, rows)
    from fsadlib.data import samples_geometry

    bb = method.backbone
    return AugmentedDataset(rows, bb.image_size, bb.mean, bb.std, augment, cfg.mosaic_prob, cfg.seed,
                            samples_geometry(rows, bb.geometry))


def train_loader(method: BayesPFL, protocol: Protocol, cfg: BayesPFLTrainConfig,
                 augment: BayesPFLAugmentConfig) -> Iterable[dict[str, Any]]:
    """Shuffled (seeded) loader over the auxiliary categories' test split (``training_dataset``); on W
    ranks each rank reads its 1/W of every shuffled pass (:func:`fsadlib.distributed.shuffled_loader`)."""
    rows = category_samples(protocol, protocol.aux_categories)
    data = training_dataset(method, rows, cfg, augment)
    return distributed.shuffled_loader(data, cfg.batch_size, cfg.seed)


def training_preview(section: BayesPFLSection, protocol: Protocol, n: int = 12, seed: int = 0) -> dict[str, Any]:
    """``n`` training items as the training data makes them (``augment``, ``train.mosaic_prob``, the
    mask rule, at the backbone's input size), in [0, 1], for :func:`fsadlib.data.figures.training_grid`."""
    from fsadlib.clip.backbone import input_size
    from fsadlib.data import samples_geometry

    rows = category_samples(protocol, protocol.aux_categories)
    data = AugmentedDataset(rows, input_size(section.model.backbone), (0.0,) * 3, (1.0,) * 3, section.augment,
                            section.train.mosaic_prob, seed, samples_geometry(rows, section.model.backbone.geometry))
    items = [data[int(i)] for i in np.random.default_rng(seed).permutation(len(rows))[:n]]
    return {"image": torch.stack([it["image"] for it in items]), "mask": torch.stack([it["mask"] for it in items]),
            "title": [f"{it['category']} {it['defect']}" for it in items]}


def validation_fn(protocol: Protocol, cfg: BayesPFLTrainConfig):
    """``validate(method) -> {pixel_ap, image_ap, pixel_ap_<cat>, image_ap_<cat>}``: means over the
    validation categories (test split, at most ``val_max_images`` each, balanced over the two classes by
    :func:`fsadlib.protocol.validation_sets`), R = ``val_samples``."""
    from fsadlib.data import load_samples
    from fsadlib.metrics import image_metrics, pixel_metrics

    sets = validation_sets(load_samples(protocol.validation_dataset), protocol, cfg.val_max_images)

    def validate(method: BayesPFL) -> dict[str, float]:
        out: dict[str, float] = {}
        for v in sets:
            cat, cat_rows = v.category, v.test
            method.setup_category(cat)
            scores, maps, masks, labels = [], [], [], []
            for batch in DataLoader(make_dataset(method, cat_rows), batch_size=cfg.batch_size):
                pred = method.predict(batch["image"].to(method.device), cfg.val_samples).detach_cpu()
                scores.append(pred.pred_score)
                maps.append(pred.anomaly_map)
                masks.append(batch["mask"])
                labels.append(torch.as_tensor(batch["label"]))
            out[f"pixel_ap_{cat}"] = float(pixel_metrics(torch.cat(maps), torch.cat(masks))["ap"])
            out[f"image_ap_{cat}"] = float(image_metrics(torch.cat(scores), torch.cat(labels))["ap"])
        for key in ("pixel_ap", "image_ap"):
            out[key] = float(np.mean([out[f"{key}_{c}"] for c in protocol.val_categories]))
        return out

    return validate


# -- two-stage training ---------------------------------------------------------------------------
def train_bayes_pfl(section: BayesPFLSection, protocol: Protocol, *, smoke: bool, out_dir: Path, live_dir: Path,
                    batches=None, validate=None) -> TrainReport:
    """Train Bayes-PFL in two stages (the one train signature, :mod:`fsadlib.methods.training`):
    ``<out_dir>/final.pt`` and a history of both stages (column ``stage``); DVCLive in
    ``live_dir/stage1`` and ``live_dir/stage2``. ``batches`` / ``validate`` default to the auxiliary
    loader and the validation-category metrics of ``protocol`` (tests pass small in-memory ones).
    ``smoke`` changes nothing here (the section arrives shrunk).
    """
    protocol.check()
    cfg = section.train
    out_dir, live = Path(out_dir), Path(live_dir)
    torch.manual_seed(cfg.seed)
    method = BayesPFL(section.model)
    files = training_files(protocol) if batches is None else []  # in-memory batches read no file
    batches = train_loader(method, protocol, cfg, section.augment) if batches is None else batches
    if validate is None and protocol.selection == "validation":
        validate = validation_fn(protocol, cfg)
    steps = max(1, len(batches) // cfg.accumulate) if hasattr(batches, "__len__") else cfg.max_steps_per_epoch
    steps = min(steps, cfg.max_steps_per_epoch) if cfg.max_steps_per_epoch else steps
    common = {"steps_per_epoch": steps, "optimizer": "adam", "betas": cfg.betas, "seed": cfg.seed, "amp": cfg.amp,
              "patience": cfg.patience, "accumulate": cfg.accumulate}
    fingerprint = input_fingerprint(files, train=cfg, augment=section.augment, protocol=protocol)
    lrs = {"prompt": cfg.lr_prompt, "temperature": cfg.lr_temperature, "flow": cfg.lr_flow, "other": cfg.lr_other,
           "image": cfg.lr_stage2}

    def groups(stage: int) -> list[dict]:
        return [{"params": p, "lr": lrs[name]} for name, p in method.parameter_sets(stage).items()]

    first = fit(method, batches, lambda m, b: stage1_loss(m, b, cfg),
                TrainConfig(epochs=cfg.epochs, lr=cfg.lr_other, schedule="cosine", warmup=cfg.warmup,
                            select_metric="pixel_ap", **common),
                out_dir / "stage1", validate=validate, param_groups=groups(1),
                live_dir=live / "stage1", desc="bayes_pfl stage 1", fingerprint=fingerprint,
                take_epoch=protocol.fixed_epoch, trained_on=protocol.training_record())
    method.load_trainable_state(load_torch(first.best_path)["state_dict"])
    method.stage.fill_(2)
    second = fit(method, batches, stage2_loss,
                 TrainConfig(epochs=cfg.stage2_epochs, lr=cfg.lr_stage2, schedule="constant",
                             select_metric="image_ap", **common),
                 out_dir / "stage2", validate=validate, param_groups=groups(2),
                 live_dir=live / "stage2", desc="bayes_pfl stage 2",
                 fingerprint={**fingerprint, "stage1": first.history}, trained_on=protocol.training_record())
    ckpt = load_torch(second.best_path)
    ckpt["extra"].update(stage1_history=first.history, stage1_best_epoch=first.best_epoch,
                         stage2_history=second.history, stage2_best_epoch=second.best_epoch,
                         protocol=to_dict(protocol), training_data="auxiliary categories, TEST split")
    final = out_dir / "final.pt"
    if distributed.is_main():
        save_torch(final, ckpt)
    distributed.barrier()
    history = [{"stage": stage, **h} for stage, res in ((1, first), (2, second)) for h in res.history]
    return TrainReport(pd.DataFrame(history), [final])
