"""Encode once, score many: a plan of (k, seed) runs equals the per-run path for every method (scores,
maps, metrics files), bit for bit on CPU, also when a category streams in chunks over the budget;
each test image is encoded once per encoding group."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from test_evaluate import write_dataset
from torch.utils.data import DataLoader

from fsadlib import data
from fsadlib.captions import Captions
from fsadlib.clip import BackboneConfig, ClipBackbone
from fsadlib.config import seed_everything
from fsadlib.data.shots import shot_file
from fsadlib.encode_once import feature_bytes
from fsadlib.evaluate import EvalConfig, PlannedRun, evaluate_plan
from fsadlib.io import write_json
from fsadlib.methods import create
from fsadlib.methods.base import AnomalyMethod
from fsadlib.methods.bayes_pfl.model import BayesPFL, BayesPFLConfig
from fsadlib.methods.finegrained.model import FineGrainedAD, FineGrainedConfig

TINY = {"backbone": {"arch": "tiny"}}
CATEGORIES = ("widget", "gadget")
#: batches of 2 over 4 test images per category: 2 batches, so a tiny budget streams in 2 chunks
CONFIG = EvalConfig(batch_size=2, bootstrap=10)
STREAMING = replace(CONFIG, feature_budget_mb=1e-9)


@pytest.fixture(scope="module")
def backbone() -> ClipBackbone:
    return ClipBackbone(BackboneConfig(arch="tiny"))


@pytest.fixture
def toy(tmp_path, monkeypatch):
    monkeypatch.setenv("FSAD_ROOT", str(tmp_path))
    table = write_dataset(tmp_path / "data", categories=CATEGORIES, n_good=2, n_bad=2)
    for cat in CATEGORIES:
        train = table[(table.split == "train") & (table.category == cat)].image_path.tolist()
        for k in (1, 2):
            for seed in (0, 1):
                shots = [train[(seed + i) % len(train)] for i in range(k)]
                write_json(shot_file("toy", cat, k, seed),
                           {"dataset": "toy", "category": cat, "k": k, "seed": seed, "images": shots})
    return table


def randomised(method: AnomalyMethod, seed: int) -> AnomalyMethod:
    """Non-trivial trained weights and BatchNorm statistics (the frozen backbone untouched)."""
    gen = torch.Generator().manual_seed(seed)
    for p in method.trainable_parameters():
        p.data.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    for bn in (m for m in method.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)):
        bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=gen) * 0.1)
        bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=gen) + 0.5)
    return method.eval()


def captions(category: str) -> Captions:
    return Captions(dataset="toy", category=category, class_name=category, foreground=category,
                    background="black", entity=("cap", "body"), number=("one", "one"),
                    location=("top", "center"), relation="the cap is above the body", color=("red", "blue"),
                    texture=("smooth", "smooth"), shape=("round", "square"),
                    entity_caption=("a red cap at the top", "a blue body at the center"),
                    caption=f"a photo of a {category} on a black background.",
                    anomaly_phrases=("{} with hole", "broken {}"))


def finegrained(backbone: ClipBackbone, category: str, seed: int) -> FineGrainedAD:
    torch.manual_seed(seed)
    config = FineGrainedConfig(backbone=BackboneConfig(arch="tiny"), captions_dataset="toy", sigma=1.0)
    model = FineGrainedAD(config, backbone_model=backbone)
    model.set_captions(captions(category), locked=True)
    return randomised(model, seed)


def plan(name: str, backbone: ClipBackbone) -> list[PlannedRun]:
    """Method ``name``'s plan: two seeds at k = 1, one at k = 2 (InCTRL: one model per k, sharing the backbone;
    FineGrainedAD: one model per (category, k, seed)); zero-shot runs differ only in their seed."""
    grid = [(1, 0), (1, 1), (2, 0)]
    if name in ("winclip", "bayes_pfl"):
        bayes = BayesPFLConfig(backbone=BackboneConfig(arch="tiny"), layers=(3, 6, 9, 12), test_samples=2, topk=30,
                               preset="paper", score_rule="public")  # per-image noise, transductive scores
        model = create("winclip", backbone_model=backbone, window_sizes=[2], **TINY) if name == "winclip" \
            else randomised(BayesPFL(bayes), 4)  # its own backbone: the paper preset runs it in fp32
        return [PlannedRun(model, 0, s) for s in (0, 1)]
    if name == "inctrl":
        inctrl = {k: randomised(create("inctrl", backbone_model=backbone, **TINY), k) for k in (1, 2)}
        return [PlannedRun(inctrl[k], k, s) for k, s in grid]
    if name == "finegrained":
        fine = {(k, s, c): finegrained(backbone, c, 10 * k + s) for k, s in grid for c in CATEGORIES}
        return [PlannedRun(fine[(1, 0, CATEGORIES[0])], k, s, category_models=lambda c, k=k, s=s: fine[(k, s, c)])
                for k, s in grid]
    if name == "patchcore":
        model = create("patchcore", backbone={"image_size": 64, "layers": [5, 11]}, sigma=1.0)
    elif name == "winclip_plus":
        model = create("winclip_plus", backbone_model=backbone, window_sizes=[2], **TINY)
    else:
        model = randomised(create("kag_prompt", backbone_model=backbone, layers=[3, 6, 9, 12], proj_dim=24, topk=5,
                                  **TINY), 3)
    return [PlannedRun(model, k, s) for k, s in grid]


def per_run_reference(model: AnomalyMethod, rows: pd.DataFrame, category: str, k: int, seed: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The per-(k, seed) path: seed, set up, ``model(images)`` batch by batch -> scores [N], maps [N, S, S];
    images decoded by PIL, not the decoded-image cache the evaluation reads."""
    bb = model.backbone
    seed_everything(seed)
    model.eval()
    shots = data.load_shots("toy", category, k, seed) if k else []
    supports = data.load_images(shots, bb.image_size, bb.mean, bb.std, use_cache=False) if shots else None
    scores, maps = [], []
    with torch.inference_mode():
        model.setup_category(category, supports)
        loader = DataLoader(data.AnomalyDataset(rows, bb.image_size, mean=bb.mean, std=bb.std, use_cache=False),
                            batch_size=CONFIG.batch_size)
        for batch in loader:
            out = model(batch["image"])
            scores.append(out.pred_score.float())
            maps.append(out.anomaly_map.float())
        return model.category_scores(torch.cat(scores)).numpy(), torch.cat(maps).numpy()


def with_out(runs: list[PlannedRun], root) -> list[PlannedRun]:
    return [replace(r, out=root / f"k{r.k}" / f"seed{r.seed}") for r in runs]


@pytest.mark.parametrize("name", ["winclip", "winclip_plus", "inctrl", "kag_prompt", "bayes_pfl", "finegrained",
                                  "patchcore"])
def test_plan_equals_the_per_run_path(name, toy, tmp_path, backbone):
    runs = plan(name, backbone)
    planned = evaluate_plan(with_out(runs, tmp_path / "plan"), "toy", config=CONFIG, samples=toy)
    streamed = evaluate_plan(with_out(runs, tmp_path / "streamed"), "toy", config=STREAMING, samples=toy)
    test = toy[toy.split == "test"]
    assert planned == streamed  # metrics and input hashes
    for run in runs:
        folder = f"k{run.k}/seed{run.seed}"
        scores = (tmp_path / "plan" / folder / "scores.csv").read_text()
        assert scores == (tmp_path / "streamed" / folder / "scores.csv").read_text()
        table = pd.read_csv(tmp_path / "plan" / folder / "scores.csv")
        for cat in CATEGORIES:
            rows = test[test.category == cat].reset_index(drop=True)
            model = run.category_models(cat) if run.category_models else run.method
            want_scores, want_maps = per_run_reference(model, rows, cat, run.k, run.seed)
            assert np.array_equal(table[table.category == cat].score.to_numpy(np.float32), want_scores)
            for root in ("plan", "streamed"):
                maps = np.load(tmp_path / root / folder / f"maps_{cat}.npz")["maps"]
                assert np.array_equal(maps, want_maps.astype(np.float16)), (root, cat)
    assert len({r["categories"][CATEGORIES[0]]["inputs"] for r in planned}) == len(runs)


def test_each_test_image_is_encoded_once_per_encoding_group(toy, tmp_path, backbone, monkeypatch):
    runs = plan("inctrl", backbone)  # two models (k = 1, 2) with one backbone and config: one group
    encoded: list[int] = []
    original = type(runs[0].method).encode_queries

    def counting(self, images):
        encoded.append(len(images))
        return original(self, images)

    monkeypatch.setattr(type(runs[0].method), "encode_queries", counting)
    evaluate_plan(with_out(runs, tmp_path / "plan"), "toy", config=CONFIG, samples=toy)
    assert sum(encoded) == len(toy[toy.split == "test"])  # 8 images, 3 runs: once each
    encoded.clear()
    evaluate_plan(with_out(runs, tmp_path / "per_run"), "toy", config=replace(CONFIG, encode_once=0), samples=toy)
    assert sum(encoded) == 3 * len(toy[toy.split == "test"])


def test_models_with_other_backbones_or_trained_features_are_encoded_apart(backbone):
    inctrl = create("inctrl", backbone_model=backbone, **TINY)
    assert create("inctrl", backbone_model=backbone, **TINY).encoding_key() == inctrl.encoding_key()
    assert create("inctrl", **TINY).encoding_key() != inctrl.encoding_key()      # another backbone object
    assert create("inctrl", backbone_model=backbone, layers=(3, 5), **TINY).encoding_key() != inctrl.encoding_key()
    kag = plan("kag_prompt", backbone)[0].method                                  # features pass its graph
    assert plan("kag_prompt", backbone)[0].method.encoding_key() != kag.encoding_key()


def test_feature_bytes_counts_every_nested_tensor():
    feats = {"a": torch.zeros(2, 3), "b": [torch.zeros(4, dtype=torch.float16), (torch.zeros(1, dtype=torch.int64),)]}
    assert feature_bytes(feats) == 2 * 3 * 4 + 4 * 2 + 8
    assert feature_bytes(F) == 0


def test_two_runs_of_a_plan_may_not_share_a_folder(toy, tmp_path, backbone):
    runs = plan("winclip", backbone)
    with pytest.raises(ValueError, match="same results folder"):
        evaluate_plan([replace(r, out=tmp_path / "same") for r in runs], "toy", config=CONFIG, samples=toy)
    assert not (tmp_path / "same" / "metrics.json").exists()
