"""Toy training: ``fsadlib.train.fit`` pulls ``scale`` towards 1 (loss (scale - 1)^2), one model."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fsadlib.methods.training import TrainReport
from fsadlib.protocol import Protocol
from fsadlib.train import TrainConfig, fit
from toy_fsad.model import ToyConfig, ToyMethod


@dataclass(frozen=True)
class ToySection:
    ks: tuple[int, ...] = (1,)
    model: ToyConfig = field(default_factory=ToyConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=3, steps_per_epoch=1, lr=0.1, optimizer="sgd", momentum=0.0, amp=0))


def train_toy(section: ToySection, protocol: Protocol, *, smoke: bool, out_dir: Path, live_dir: Path) -> TrainReport:
    protocol.check()
    method = ToyMethod(section.model)
    result = fit(method, [{}], lambda m, _: {"loss": (m.scale - 1) ** 2}, section.train, out_dir, live_dir=live_dir,
                 trained_on=protocol.training_record())
    return TrainReport(pd.DataFrame(result.history), [result.best_path])
