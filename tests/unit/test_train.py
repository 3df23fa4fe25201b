"""Training engine: loss goes down, schedules, resume equals an uninterrupted run, selection, atomic files,
gradient accumulation equals one large batch."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from fsadlib.clip import BackboneConfig
from fsadlib.io import file_sha1
from fsadlib.methods import AnomalyOutput
from fsadlib.methods.base import AnomalyMethod, load_checkpoint
from fsadlib.train import TrainConfig, accumulate_gradients, fit, lr_factor


@dataclass(frozen=True)
class DummyConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)


class Dummy(AnomalyMethod):
    """Linear head on the normalised CLIP embedding: score = sigmoid(w . e + b)."""

    name = "dummy"
    Config = DummyConfig
    trainable = True

    def __init__(self, config, backbone_model=None):
        super().__init__(config, backbone_model)
        self.head = torch.nn.Linear(self.backbone.embed_dim, 1)

    def setup_category(self, class_name, supports=None):
        self.category = class_name

    def logits(self, images):
        with torch.no_grad():
            e = F.normalize(self.backbone.encode_image(images).embedding, dim=-1)
        return self.head(e).squeeze(-1)

    def forward(self, images):
        s = torch.sigmoid(self.logits(images))
        return AnomalyOutput(s, s[:, None, None].expand(-1, *images.shape[-2:]))


def loss_fn(method, batch):
    loss = F.binary_cross_entropy_with_logits(method.logits(batch["image"]), batch["label"].float())
    return {"loss": loss}


def make_batches(n=3):
    g = torch.Generator().manual_seed(0)
    return [{"image": torch.randn(4, 3, 64, 64, generator=g), "label": torch.tensor([0, 1, 0, 1])}
            for _ in range(n)]


def new_method(seed=0):
    torch.manual_seed(seed)
    return Dummy(DummyConfig())


def test_loss_decreases(tmp_path):
    m = new_method()
    res = fit(m, make_batches(), loss_fn, TrainConfig(epochs=4, steps_per_epoch=3, lr=0.05), tmp_path)
    losses = [h["train_loss"] for h in res.history]
    assert losses[-1] < losses[0]
    assert {"last.pt", "final.pt", "history.json", "train_config.json"} <= {p.name for p in tmp_path.iterdir()}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_resume_after_interruption_is_exact(tmp_path, monkeypatch):
    cfg = TrainConfig(epochs=3, steps_per_epoch=3, lr=0.05, optimizer="adamw", schedule="linear")
    full = new_method()
    fit(full, make_batches(), loss_fn, cfg, tmp_path / "full")

    calls = {"n": 0}

    def failing_loss(method, batch):
        calls["n"] += 1
        if calls["n"] == 7:  # first step of epoch 3
            raise KeyboardInterrupt
        return loss_fn(method, batch)

    crashed = new_method()
    with pytest.raises(KeyboardInterrupt):
        fit(crashed, make_batches(), failing_loss, cfg, tmp_path / "run")
    resumed = new_method()  # a fresh process; the head is scrambled so its state must come from last.pt
    with torch.no_grad():
        resumed.head.weight.normal_()
    res = fit(resumed, make_batches(), loss_fn, cfg, tmp_path / "run")
    assert [h["epoch"] for h in res.history] == [1, 2, 3]
    for a, b in zip(full.trainable_parameters(), resumed.trainable_parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_selection_on_validation_and_early_stop(tmp_path):
    values = iter([0.5, 0.9, 0.7, 0.6, 0.95])
    res = fit(new_method(), make_batches(), loss_fn,
              TrainConfig(epochs=5, steps_per_epoch=1, lr=0.01, select_metric="auroc", patience=2),
              tmp_path, validate=lambda m: {"auroc": next(values)})
    assert res.best_epoch == 2 and res.stopped_early and len(res.history) == 4
    ckpt = torch.load(res.best_path, weights_only=True)
    assert ckpt["extra"]["epoch"] == 2 and ckpt["extra"]["selected_from"] == "best.pt"
    with pytest.raises(KeyError, match="select_metric"):
        fit(new_method(), make_batches(), loss_fn,
            TrainConfig(epochs=1, steps_per_epoch=1, select_metric="nope"), tmp_path / "x",
            validate=lambda m: {"auroc": 0.5})


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path, monkeypatch):
    from fsadlib.methods import registry

    monkeypatch.setattr(registry, "method_class", lambda name: Dummy)
    m = new_method()
    with torch.no_grad():
        m.head.weight.normal_()
    path = m.save_checkpoint(tmp_path / "ckpt.pt")
    ckpt = torch.load(path, weights_only=True)
    assert all(not k.startswith("backbone.") for k in ckpt["state_dict"])
    assert ckpt["config"]["backbone"] == {"arch": "tiny", "pretrained": None, "image_size": None,
                                          "quick_gelu": None, "precision": "auto", "geometry": None}
    again = load_checkpoint(path)
    assert again.checkpoint_sha1 == file_sha1(path) and m.checkpoint_sha1 == ""
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(m(x).pred_score, again(x).pred_score)
    bad = dict(ckpt["state_dict"], extra=torch.zeros(1))
    with pytest.raises(KeyError, match="unexpected"):
        again.load_trainable_state(bad)


def test_lr_schedules_by_hand():
    cfg = TrainConfig(lr=1.0, schedule="cosine", warmup=2, min_lr=0.0)
    assert lr_factor(0, 10, cfg) == 0.5 and lr_factor(1, 10, cfg) == 1.0
    assert lr_factor(2, 10, cfg) == 1.0
    assert math.isclose(lr_factor(6, 10, cfg), 0.5)
    lin = TrainConfig(lr=1.0, schedule="linear", min_lr=0.2)
    assert math.isclose(lr_factor(5, 10, lin), 0.6)
    assert lr_factor(3, 10, TrainConfig(warmup=0.5)) == 0.8
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="lion")


def test_rng_state_is_plain_tensors_and_restores_every_generator(tmp_path):
    import random

    import numpy as np

    from fsadlib.io import load_torch, save_torch
    from fsadlib.train import rng_state, set_rng_state

    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's state
    state = load_torch(save_torch(tmp_path / "rng.pt", rng_state()))  # weights_only round trip
    draws = (random.random(), np.random.standard_normal(), np.random.rand(), torch.rand(2))
    set_rng_state(state)
    again = (random.random(), np.random.standard_normal(), np.random.rand(), torch.rand(2))
    assert draws[:3] == again[:3] and torch.equal(draws[3], again[3])


def test_resume_only_when_everything_matches_else_fresh_with_the_reason(tmp_path):
    cfg = TrainConfig(epochs=2, steps_per_epoch=2, lr=0.05)
    inputs = {"loss": {"dice_weight": 0.3}, "files": "abc"}
    reference = fit(new_method(), make_batches(2), loss_fn, cfg, tmp_path / "ref", fingerprint=inputs)
    calls = {"n": 0}

    def failing_loss(method, batch):
        calls["n"] += 1
        if calls["n"] == 3:  # first step of epoch 2
            raise KeyboardInterrupt
        return loss_fn(method, batch)

    with pytest.raises(KeyboardInterrupt):
        fit(new_method(), make_batches(2), failing_loss, cfg, tmp_path / "run", fingerprint=inputs)
    changed = {"loss": {"dice_weight": 0.5}, "files": "abc"}
    with pytest.warns(UserWarning, match=r"last\.pt: written with other inputs \['loss\.dice_weight'\]; "
                                         "starting fresh"):
        fresh = fit(new_method(), make_batches(2), loss_fn, cfg, tmp_path / "run", fingerprint=changed)
    assert [h["epoch"] for h in fresh.history] == [1, 2]
    assert fresh.history == reference.history  # a full run from scratch, not epoch 2 on top of the old one
    with pytest.warns(UserWarning, match=r"other training settings \['lr'\]"):
        fit(new_method(), make_batches(2), loss_fn, TrainConfig(epochs=2, steps_per_epoch=2, lr=0.01),
            tmp_path / "run", fingerprint=changed)


def test_input_fingerprint_follows_sections_and_file_size_and_mtime(tmp_path):
    import os

    from fsadlib.protocol import Protocol, training_files
    from fsadlib.train import input_fingerprint

    image = tmp_path / "a.png"
    image.write_bytes(b"12345")
    first = input_fingerprint([image], loss={"w": 1}, protocol=Protocol(aux_categories=("a",)))
    assert first == input_fingerprint([image], loss={"w": 1}, protocol=Protocol(aux_categories=("a",)))
    assert first["protocol"]["aux_categories"] == ["a"]
    assert input_fingerprint([image], loss={"w": 2}, protocol=Protocol(aux_categories=("a",))) != first
    os.utime(image, ns=(0, image.stat().st_mtime_ns + 10**9))
    assert input_fingerprint([image], loss={"w": 1}, protocol=Protocol(aux_categories=("a",)))["files"] != first["files"]
    samples = pd.DataFrame({"category": ["a", "b", "v"], "image_path": ["x/a.png", "x/b.png", "x/v.png"],
                            "mask_path": ["x/a_mask.png", "", ""]})
    protocol = Protocol(aux_categories=("a",), val_categories=("v",), target_categories=("b",))
    assert training_files(protocol, samples) == ["x/a.png", "x/a_mask.png", "x/v.png"]


def split_batches(batches, n):
    """Each batch of ``make_batches`` cut into ``n`` equal micro-batches, in order."""
    return [{k: v[i * len(v) // n:(i + 1) * len(v) // n] for k, v in b.items()} for b in batches for i in range(n)]


def test_accumulated_gradients_equal_one_large_batch():
    big = make_batches(1)[0]
    reference = new_method()
    reference.zero_grad()
    loss_fn(reference, big)["loss"].backward()
    accumulated = new_method()
    accumulated.zero_grad()
    means = accumulate_gradients(accumulated, split_batches([big], 4), loss_fn, 4)
    assert math.isclose(means["loss"], loss_fn(reference, big)["loss"].item(), rel_tol=1e-6)
    for a, b in zip(reference.trainable_parameters(), accumulated.trainable_parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), (a.grad, b.grad)
    with pytest.raises(ValueError, match="3 micro-batches for train.accumulate = 4"):
        accumulate_gradients(new_method(), split_batches([big], 4)[:3], loss_fn, 4)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_fit_with_accumulation_equals_fit_on_large_batches(tmp_path, optimizer):
    """Schedule, warmup and clipping (active: the bound is far below the gradient norm) are counted in
    optimizer steps, so n micro-batches per step train exactly as batches n times larger."""
    common = {"epochs": 2, "steps_per_epoch": 3, "lr": 0.5, "optimizer": optimizer, "schedule": "linear",
              "warmup": 2, "grad_clip": 0.01}
    large = new_method()
    res_large = fit(large, make_batches(), loss_fn, TrainConfig(**common), tmp_path / "large")
    small = new_method()
    res_small = fit(small, split_batches(make_batches(), 4), loss_fn, TrainConfig(**common, accumulate=4),
                    tmp_path / "small")
    for a, b in zip(large.trainable_parameters(), small.trainable_parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(large.head.weight, new_method().head.weight, atol=1e-3)  # it did train
    for h_large, h_small in zip(res_large.history, res_small.history):
        assert h_large["lr"] == h_small["lr"]
        assert math.isclose(h_large["train_loss"], h_small["train_loss"], rel_tol=1e-6)


def test_resume_in_the_middle_of_an_accumulation_cycle_is_exact(tmp_path):
    cfg = TrainConfig(epochs=3, steps_per_epoch=3, lr=0.05, optimizer="adamw", schedule="cosine",
                      grad_clip=0.5, accumulate=2)
    micro = split_batches(make_batches(), 2)
    full = new_method()
    fit(full, micro, loss_fn, cfg, tmp_path / "full")

    calls = {"n": 0}

    def failing_loss(method, batch):
        calls["n"] += 1
        if calls["n"] == 2 * 3 + 2 * 1 + 2:  # epoch 2, step 2, second micro-batch (its first was added)
            raise KeyboardInterrupt
        return loss_fn(method, batch)

    with pytest.raises(KeyboardInterrupt):
        fit(new_method(), micro, failing_loss, cfg, tmp_path / "run")
    resumed = new_method()
    with torch.no_grad():
        resumed.head.weight.normal_()
    res = fit(resumed, micro, loss_fn, cfg, tmp_path / "run")
    assert [h["epoch"] for h in res.history] == [1, 2, 3]
    for a, b in zip(full.trainable_parameters(), resumed.trainable_parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError, match="train.accumulate must be >= 1"):
        TrainConfig(accumulate=0)
