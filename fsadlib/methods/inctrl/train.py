"""InCTRL training (spec A2): real anomalies of the auxiliary categories, few-shot normal prompts
re-drawn per query, balanced batches, focal loss on the final and the image-level score.

Training pool of every auxiliary category c (the public ``gen_train_json``): queries are all its
images (train/good, test/good, test anomalies); its prompt pool is its normal images. Each step draws
``normals_per_batch`` normal and ``anomalies_per_batch`` anomalous queries uniformly with replacement
(the public BalancedBatchSampler) and, for every query, k prompts uniformly without replacement from
the normals of its category, the query itself excluded (``prompts_include_query = 1``: the public
code, where a normal query can be its own prompt, residual 0). All draws use numpy's global RNG, which
:func:`fsadlib.train.fit` seeds and checkpoints, so a resumed run draws what an uninterrupted one would.

Loss (labels y in {0, 1}, s final score, s_i image-level score, gamma 2, alpha 1):

    loss = FL(s, y) + FL(s_i, y)                  FL of fsadlib.losses on the probabilities
    double_sigmoid = 1:  FL_logits(s, y) + FL_logits(s_i, y)   (the public BinaryFocalLoss(logits=True)
                         applied to probabilities, i.e. FL(sigmoid(s), y): a double sigmoid)

One model per k of ``inctrl.ks``, trained from the same seed, selected on the image AUROC of the
held-out validation categories (``protocol.val_categories``; supports: k normal training images drawn
with ``val_seed``), never on target data. Layout: ``<out_dir>/k<k>/{last,best,final}.pt``
(``models/inctrl/``), DVCLive logs in ``<live_dir>/k<k>/``, a summary in ``<live_dir>/metrics.json``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from fsadlib import distributed
from fsadlib.clip import ClipBackbone
from fsadlib.config import seed_everything
from fsadlib.io import write_json
from fsadlib.layout import k_name, per_k_dir
from fsadlib.losses import focal_loss, focal_loss_with_logits
from fsadlib.methods.inctrl.model import Inctrl, InctrlConfig
from fsadlib.methods.training import TrainReport
from fsadlib.protocol import Protocol, training_files, validation_sets
from fsadlib.protocol import training_samples as protocol_samples
from fsadlib.train import TrainConfig, fit, input_fingerprint

ImageLoader = Callable[[Sequence[str], int], torch.Tensor]


@dataclass(frozen=True)
class InctrlLossConfig:
    gamma: float = 2.0
    alpha: float = 1.0
    double_sigmoid: int = 0       # 1 = the public code's focal-with-logits on probabilities


@dataclass(frozen=True)
class InctrlDataConfig:
    normals_per_batch: int = 8
    anomalies_per_batch: int = 8
    prompts_include_query: int = 0      # 1 = the public code (a normal query may be its own prompt)
    val_seed: int = 0                   # draws the validation supports (and images, if capped)
    val_max_images: int = 0             # 0 = every test image of a validation category
    eval_batch_size: int = 32


@dataclass(frozen=True)
class InctrlSection:
    """The ``inctrl`` section of params.yaml (defaults: the paper / public code): one model per k of ``ks``."""

    ks: tuple[int, ...] = (2, 4, 8)
    model: InctrlConfig = field(default_factory=InctrlConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        epochs=10, steps_per_epoch=100, lr=1e-3, optimizer="adamw", betas=(0.9, 0.999), weight_decay=0.01,
        amp=0, seed=10, select_metric="auroc_mean"))
    loss: InctrlLossConfig = field(default_factory=InctrlLossConfig)
    data: InctrlDataConfig = field(default_factory=InctrlDataConfig)


def inctrl_loss(method: Inctrl, batch: dict[str, Any], cfg: InctrlLossConfig) -> dict[str, torch.Tensor]:
    """batch: image [B, 3, S, S], prompts [B, k, 3, S, S], label [B], category (B names)."""
    s = method.score_with_prompts(batch["image"], batch["prompts"], batch["category"])
    y = batch["label"].float()
    fl = focal_loss_with_logits if cfg.double_sigmoid or method.config.paper else focal_loss
    final, image = fl(s.final, y, cfg.gamma, cfg.alpha), fl(s.image, y, cfg.gamma, cfg.alpha)
    loss = final + image * float(method.config.image_residual)  # ablation image_residual = 0: no s_i term
    return {"loss": loss, "focal_final": final.detach(), "focal_image": image.detach()}


def backbone_loader(backbone: ClipBackbone, geometry: str) -> ImageLoader:
    """``loader(paths, S) -> [n, 3, S, S]`` images by image transform ``geometry``, normalised with the
    backbone's own mean and std (:func:`fsadlib.data.load_images`)."""
    from fsadlib.data import load_images

    return lambda paths, image_size: load_images(list(paths), image_size, backbone.mean, backbone.std, geometry)


class CachedImages:
    """``load(paths) -> [n, 3, S, S]`` through ``loader``, each path read once (no augmentation in InCTRL)."""

    def __init__(self, image_size: int, loader: ImageLoader) -> None:
        self.image_size, self.loader = image_size, loader
        self._store: dict[str, torch.Tensor] = {}

    def load(self, paths: Sequence[str]) -> torch.Tensor:
        missing = [p for p in dict.fromkeys(paths) if p not in self._store]
        if missing:
            self._store.update(zip(missing, self.loader(missing, self.image_size)))
        return torch.stack([self._store[p] for p in paths])


class PromptedBatches:
    """Infinite balanced batches with per-query normal prompts (module docstring)."""

    def __init__(self, samples: pd.DataFrame, k: int, images: CachedImages, data: InctrlDataConfig) -> None:
        self.k, self.images, self.data = k, images, data
        self.paths = samples.image_path.to_numpy()
        self.categories = samples.category.to_numpy()
        labels = samples.label.to_numpy()
        self.normal_idx, self.anomaly_idx = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
        self.pool = {c: np.flatnonzero((self.categories == c) & (labels == 0)) for c in np.unique(self.categories)}
        need = k + (0 if data.prompts_include_query else 1)
        for c, pool in self.pool.items():
            if len(pool) < need:
                raise ValueError(f"inctrl: category '{c}' has {len(pool)} normal images, needs >= {need} "
                                 f"for k={k} prompts per query")
        for what, idx, n in (("normal", self.normal_idx, data.normals_per_batch),
                             ("anomalous", self.anomaly_idx, data.anomalies_per_batch)):
            if n > 0 and len(idx) == 0:
                raise ValueError(f"inctrl: the auxiliary categories have no {what} images")

    def draw_prompts(self, query: int) -> np.ndarray:
        pool = self.pool[self.categories[query]]
        if not self.data.prompts_include_query:
            pool = pool[pool != query]
        return np.random.choice(pool, self.k, replace=False)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            queries = np.concatenate([np.random.choice(self.normal_idx, self.data.normals_per_batch),
                                      np.random.choice(self.anomaly_idx, self.data.anomalies_per_batch)])
            prompts = np.stack([self.draw_prompts(q) for q in queries])               # [B, k]
            yield {
                "image": self.images.load(self.paths[queries]),
                "prompts": self.images.load(self.paths[prompts.ravel()]).unflatten(0, prompts.shape),
                "label": torch.as_tensor(np.isin(queries, self.anomaly_idx), dtype=torch.float32),
                "category": [str(c) for c in self.categories[queries]],
            }


def training_samples(samples: pd.DataFrame, protocol: Protocol) -> pd.DataFrame:
    """Rows of the auxiliary categories: train normals plus the whole test split (real anomalies)."""
    rows = samples[(samples.dataset == protocol.aux_dataset) & samples.category.isin(protocol.aux_categories)]
    missing = sorted(set(protocol.aux_categories) - set(rows.category))
    if missing:
        raise ValueError(f"protocol.aux_categories {missing}: not in dataset '{protocol.aux_dataset}'")
    rows = rows[(rows.split == "test") | (rows.label == 0)]
    return rows.reset_index(drop=True)


def training_preview(section: InctrlSection, protocol: Protocol, n: int = 8, seed: int = 0) -> dict[str, Any]:
    """``n`` training queries of the auxiliary categories (half normal, half real anomalies with their
    masks; InCTRL trains without augmentation) at the backbone's input size, in [0, 1], for
    :func:`fsadlib.data.figures.training_grid`."""
    from fsadlib.clip.backbone import input_size
    from fsadlib.data import AnomalyDataset, load_samples, samples_geometry

    rows = training_samples(load_samples(protocol.aux_dataset), protocol)
    rng = np.random.default_rng(seed)
    normal, anomalous = np.flatnonzero(rows.label == 0), np.flatnonzero(rows.label == 1)
    pick = [*rng.choice(normal, n // 2), *(rng.choice(anomalous, n - n // 2) if len(anomalous) else [])]
    data = AnomalyDataset(rows.iloc[pick], input_size(section.model.backbone), mean=(0.0,) * 3, std=(1.0,) * 3,
                          geometry=samples_geometry(rows, section.model.backbone.geometry))
    items = [data[i] for i in range(len(data))]
    return {"image": torch.stack([it["image"] for it in items]), "mask": torch.stack([it["mask"] for it in items]),
            "title": [f"{it['category']} {it['defect']}" for it in items]}


def make_validate(samples: pd.DataFrame, protocol: Protocol, k: int, images: CachedImages,
                  data: InctrlDataConfig) -> Callable[[Inctrl], dict[str, float]]:
    """Image AUROC per validation category (test split, or ``val_max_images`` of it, half of each class)
    and its mean ``auroc_mean``; each category's k supports are normal training images drawn with
    ``val_seed`` (the same draw for every epoch)."""
    sets = [(v.category, v.supports, list(v.test.image_path), torch.tensor(v.test.label.to_numpy()))
            for v in validation_sets(samples, protocol, data.val_max_images, k, data.val_seed)]

    def validate(method: Inctrl) -> dict[str, float]:
        from fsadlib.metrics import image_metrics

        out = {}
        for cat, supports, paths, labels in sets:
            method.setup_category(cat, images.load(supports).to(method.device))
            scores = torch.cat([method(images.load(paths[i:i + data.eval_batch_size]).to(method.device))
                                .pred_score.float().cpu() for i in range(0, len(paths), data.eval_batch_size)])
            out[f"auroc_{cat}"] = float(image_metrics(scores, labels)["auroc"])
        out["auroc_mean"] = float(np.mean(list(out.values())))
        return out

    return validate


def train_inctrl(section: InctrlSection, protocol: Protocol, *, smoke: bool, out_dir: Path, live_dir: Path,
                 samples: pd.DataFrame | None = None, loader: ImageLoader | None = None,
                 backbone_model: ClipBackbone | None = None) -> TrainReport:
    """Train one InCTRL model per k of ``section.ks`` (the one train signature,
    :mod:`fsadlib.methods.training`); the history has one row per (k, epoch), and
    ``live_dir/metrics.json`` the best validation AUROC per k.

    ``samples`` defaults to ``fsadlib.data.load_samples`` of the auxiliary data set, ``loader`` to
    :func:`backbone_loader` (images normalised as the backbone expects); ``backbone_model`` shares an already-built backbone (it must match
    ``section.model.backbone``).
    """
    protocol.check()
    data = section.data
    if section.model.paper:  # the public code draws a normal query's prompts from all its normals
        data = replace(data, prompts_include_query=1)
    if samples is None:
        samples = protocol_samples(protocol)
    out_dir, live_dir = Path(out_dir), Path(live_dir)
    backbone = backbone_model if backbone_model is not None else \
        ClipBackbone(Inctrl.with_paper_precision(section.model).backbone)
    if loader is None:
        from fsadlib.data import samples_geometry

        loader = backbone_loader(backbone, samples_geometry(samples, backbone.geometry))
    images = CachedImages(backbone.image_size, loader)
    aux = training_samples(samples, protocol)
    files = training_files(protocol, samples)
    history, summary, models = [], {}, []
    for k in section.ks:
        seed_everything(section.train.seed)  # the same head initialisation for every k
        method = Inctrl(section.model, backbone_model=backbone)
        validate = make_validate(samples, protocol, k, images, section.data) if protocol.val_categories else None
        result = fit(method, PromptedBatches(aux, k, images, section.data),
                     lambda m, b: inctrl_loss(m, b, section.loss), section.train, per_k_dir(out_dir, k),
                     validate=validate, live_dir=live_dir / k_name(k), desc=f"inctrl k={k}",
                     take_epoch=protocol.fixed_epoch, trained_on=protocol.training_record(),
                     fingerprint=input_fingerprint(files, loss=section.loss, data=section.data, protocol=protocol,
                                                   k=k))
        history += [{"k": k, **rec} for rec in result.history]
        models.append(result.best_path)
        summary[k_name(k)] = {"best_epoch": result.best_epoch,
                              **{key: v for key, v in result.history[result.best_epoch - 1].items()
                                 if key.startswith(("val_", "train_"))}}
    if distributed.is_main():
        write_json(live_dir / "metrics.json", {"seed": section.train.seed, "smoke": int(bool(smoke)), "runs": summary})
    return TrainReport(pd.DataFrame(history), models)
