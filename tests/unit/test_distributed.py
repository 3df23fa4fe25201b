"""torch.distributed on CPU (gloo, 2 spawned ranks): training equals one process with the global batch,
a killed 2-rank run resumes with 1 rank, a sharded evaluation writes what one process writes, a rank
that cannot read an image stops the run with the file named and no result, and the launcher's rules.
The worker functions live at module level: the elastic launcher pickles them into spawned processes."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fsadlib import data, distributed
from fsadlib.data import CLIP_MEAN, CLIP_STD, synthetic
from fsadlib.distributed import DistributedConfig, RankFailed, launch, rank_seed, shard
from fsadlib.evaluate import SHARDS, EvalConfig, PlannedRun, evaluate, evaluate_sharded
from fsadlib.io import load_torch, read_json
from fsadlib.methods.base import AnomalyMethod
from fsadlib.methods.output import AnomalyOutput
from fsadlib.train import TrainConfig, fit

TWO_RANKS = DistributedConfig(nproc_per_node=2, threads_per_rank=1, timeout_s=120)
FEATURES = torch.Generator().manual_seed(0)
X = torch.randn(8, 5, generator=FEATURES)                       # 8 samples, 5 features
Y = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1], dtype=torch.float32)


@dataclass(frozen=True)
class ProbeConfig:
    width: int = 5


class StubBackbone(nn.Module):
    """What fit, the evaluation and the checkpoints read of a backbone (no CLIP: spawned ranks start fast)."""

    device = torch.device("cpu")
    geometry = None

    def effective_precision(self) -> str:
        return "fp32"


class LinearProbe(AnomalyMethod):
    """logit = w . x + b on precomputed features x [B, 5]; no dropout, no randomness."""

    name = "linear_probe"

    def __init__(self, config: ProbeConfig = ProbeConfig()) -> None:
        nn.Module.__init__(self)
        self.config, self.backbone, self.category, self.checkpoint_sha1 = config, StubBackbone(), None, ""
        torch.manual_seed(0)
        self.head = nn.Linear(config.width, 1)

    def setup_category(self, category_key, supports=None):
        self.category = category_key

    def forward(self, x):
        s = torch.sigmoid(self.head(x)[:, 0])
        return AnomalyOutput(s, s[:, None, None].expand(-1, 2, 2))


def probe_loss(method, batch):
    return {"loss": F.binary_cross_entropy_with_logits(method.head(batch["x"])[:, 0], batch["y"])}


def batches(size: int, which: int = 0, world: int = 1) -> list[dict[str, torch.Tensor]]:
    """Global batches of ``size`` samples in a fixed order; rank ``which`` of ``world`` gets rows which::world."""
    return [{"x": X[i:i + size][which::world], "y": Y[i:i + size][which::world]} for i in range(0, len(X), size)]


CONFIG = TrainConfig(epochs=3, steps_per_epoch=2, lr=0.05, optimizer="adamw", schedule="cosine", amp=0)


def _train_ranks(out: str) -> None:
    """Rank r of 2: (a) batch 2 per rank, (b) 2 micro-batches of 1 per rank (accumulate 2), (c) a run
    whose rank 1 is killed (SIGKILL) in the middle of epoch 2."""
    which = distributed.rank()
    fit(LinearProbe(), batches(4, which, 2), probe_loss, CONFIG, Path(out, "ranks2_batch2"))
    micro = [{"x": b["x"][j:j + 1], "y": b["y"][j:j + 1]} for b in batches(4, which, 2) for j in range(2)]
    fit(LinearProbe(), micro, probe_loss, TrainConfig(**{**CONFIG.__dict__, "accumulate": 2}),
        Path(out, "ranks2_accumulate2"))
    calls = {"n": 0}

    def dying_loss(method, batch):
        calls["n"] += 1
        if which == 1 and calls["n"] == 4:  # epoch 2, step 2: after last.pt of epoch 1
            os.kill(os.getpid(), signal.SIGKILL)
        return probe_loss(method, batch)

    fit(LinearProbe(), batches(4, which, 2), dying_loss, CONFIG, Path(out, "killed"))


def test_two_ranks_equal_one_rank_with_the_global_batch_and_a_killed_run_resumes_on_one(tmp_path):
    with pytest.raises(RankFailed, match="rank 1"):
        launch(_train_ranks, str(tmp_path), config=TWO_RANKS)
    single = fit(LinearProbe(), batches(4), probe_loss, CONFIG, tmp_path / "rank1_batch4")
    reference = load_torch(single.best_path)["state_dict"]
    for run in ("ranks2_batch2", "ranks2_accumulate2"):
        history = read_json(tmp_path / run / "history.json")
        assert [h["epoch"] for h in history] == [1, 2, 3]
        for mine, theirs in zip(history, single.history):
            assert mine["train_loss"] == pytest.approx(theirs["train_loss"], abs=1e-5), run
        weights = load_torch(tmp_path / run / "final.pt")["state_dict"]
        for name, value in reference.items():
            torch.testing.assert_close(weights[name], value, atol=1e-5, rtol=0, msg=f"{run}: {name}")
        assert read_json(tmp_path / run / "train_config.json")["world_size"] == 2
    assert read_json(tmp_path / "ranks2_accumulate2" / "train_config.json")["micro_batches_per_step"] == 4

    killed = tmp_path / "killed"
    assert (killed / "last.pt").is_file() and not (killed / "final.pt").exists()
    assert load_torch(killed / "last.pt")["train_state"]["epoch"] == 1
    assert not [p.name for p in killed.iterdir() if p.name.startswith(".")]  # no half-written file
    resumed = fit(LinearProbe(), batches(4), probe_loss, CONFIG, killed)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert resumed.history[0] == read_json(tmp_path / "ranks2_batch2" / "history.json")[0]
    assert read_json(killed / "train_config.json")["world_size"] == 1
    assert load_torch(resumed.best_path)["extra"]["epochs_run"] == 3


class Brightness(AnomalyMethod):
    """score = mean intensity + seeded noise (the evaluation seeds every category), map = grey level."""

    name = "brightness"

    def __init__(self) -> None:
        nn.Module.__init__(self)
        self.config, self.backbone, self.checkpoint_sha1 = ProbeConfig(), StubBackbone(), ""
        self.backbone.image_size, self.backbone.mean, self.backbone.std = 32, CLIP_MEAN, CLIP_STD
        self.backbone.random_weights = True

    def setup_category(self, category_key, supports=None):
        self.category = category_key

    def forward(self, images):
        gray = images.mean(1)
        return AnomalyOutput(gray.mean((1, 2)) + 0.05 * torch.rand(len(images)), gray)


CATEGORIES = ("noise", "grid", "disc")
EVAL = EvalConfig(bootstrap=20)


def _tree(root: Path) -> pd.DataFrame:
    """The samples table of a tiny synthetic data set written to ``root``."""
    synthetic.generate(root, image_size=32, n_train=1, n_test_good=2, n_test_bad=2, categories=CATEGORIES)
    return data.read_samples("mvtec", root, "synthetic")


def _evaluate_ranks(tmp: str, table: pd.DataFrame, broken: pd.DataFrame) -> None:
    """Both ranks: a sharded evaluation of ``table``, then of ``broken``, whose first 'grid' test image
    (a category of rank 1) is not an image."""
    evaluate_sharded([PlannedRun(Brightness(), out=Path(tmp, "two_ranks"))], "synthetic", config=EVAL, samples=table)
    evaluate_sharded([PlannedRun(Brightness(), out=Path(tmp, "broken"))], "synthetic", config=EVAL, samples=broken)


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def test_sharded_evaluation_writes_what_one_process_writes_and_a_failing_rank_leaves_no_result(tmp_path):
    table = _tree(tmp_path / "data")
    one = evaluate(Brightness(), "synthetic", config=EVAL, samples=table, out_dir=tmp_path / "one")
    broken = _tree(tmp_path / "broken_data")
    bad = broken[(broken.category == "grid") & (broken.split == "test")].image_path.iloc[0]
    Path(bad).write_bytes(b"not an image")
    assert distributed.shard(sorted(CATEGORIES), 1, 2) == ["grid"]  # the run's order: the table's
    handlers = [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)]
    with pytest.raises(RankFailed, match=f"rank 1 failed: .*{bad}"):
        launch(_evaluate_ranks, str(tmp_path), table, broken, config=TWO_RANKS)
    # the caller's signal handlers are back (a notebook kernel stopped with SIGTERM exits quietly)
    assert [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)] == handlers

    two = tmp_path / "two_ranks"
    assert read_json(two / "metrics.json") == one
    assert (two / "scores.csv").read_bytes() == (tmp_path / "one" / "scores.csv").read_bytes()
    files = sorted(p.name for p in (tmp_path / "one").iterdir() if p.suffix == ".npz")
    assert len(files) == 2 * len(CATEGORIES)  # maps and bootstrap replicates per category
    assert sorted(p.name for p in two.iterdir() if not p.name.startswith(".")) == sorted(
        p.name for p in (tmp_path / "one").iterdir() if not p.name.startswith("."))
    assert not (two / SHARDS).exists()
    for name in files:
        mine, theirs = _arrays(two / name), _arrays(tmp_path / "one" / name)
        assert mine.keys() == theirs.keys()
        for key in mine:
            np.testing.assert_array_equal(mine[key], theirs[key], err_msg=f"{name}: {key}")
    assert not [p.name for p in (tmp_path / "broken").iterdir() if not p.name.startswith(".")]


def test_one_process_runs_in_place_and_config_errors_name_the_key():
    assert launch(os.getpid) == os.getpid()  # world size 1: no worker process
    with pytest.raises(ValueError, match="distributed.nproc_per_node"):
        DistributedConfig(nproc_per_node=0)
    with pytest.raises(ValueError, match="distributed.rdzv_endpoint"):
        DistributedConfig(nnodes=2)
    with pytest.raises(ValueError, match="distributed.backend"):
        DistributedConfig(backend="mpi")


def test_rank_seeds_and_shards():
    assert rank_seed(42, 0) == 42
    assert len({rank_seed(42, r) for r in range(4)}) == 4
    assert rank_seed(42, 1, step=6) != rank_seed(42, 1)
    assert shard(list("abcde"), 0, 2) == ["a", "c", "e"] and shard(list("abcde"), 1, 2) == ["b", "d"]
