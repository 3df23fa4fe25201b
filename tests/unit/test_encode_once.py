"""Encode once, score many: a plan of (k, seed) runs equals the per-run path for every method (scores,
maps, metrics files), bit for bit on CPU, also when a category streams in chunks over the budget;
each test image is encoded once per encoding group. Supports: each few-shot method's plan path (each
distinct (support image, slot) encoded once) equals its per-run path bit for bit, with nested and
non-nested shot lists over two chunks; nested lists are encoded once per seed; a support's features
do not depend on the other images of its chunk (the slot property), and the canonical chunked
encoding agrees with one batched forward (exactly for a full chunk, to float rounding otherwise)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from test_evaluate import write_dataset
from torch.utils.data import DataLoader

from fsadlib import data
from fsadlib.captions import Captions
from fsadlib.clip import BackboneConfig, ClipBackbone
from fsadlib.config import seed_everything
from fsadlib.data.shots import shot_file
from fsadlib.encode_once import CategoryRun, SupportRows, score_category
from fsadlib.evaluate import EvalConfig, PlannedRun, evaluate_plan
from fsadlib.features import feature_tensors, take_rows
from fsadlib.io import write_json
from fsadlib.methods import create
from fsadlib.methods.base import SUPPORT_CHUNK, AnomalyMethod
from fsadlib.methods.bayes_pfl.model import BayesPFL, BayesPFLConfig
from fsadlib.methods.finegrained.model import FineGrainedAD, FineGrainedConfig
from fsadlib.methods.winclip.windows import encode_windows

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


FEW_SHOT = ["winclip_plus", "inctrl", "kag_prompt", "finegrained", "patchcore"]


def support_pool(root, n: int = 10) -> list[str]:
    """``n`` distinct random support images (PNG) under ``root``."""
    rng = np.random.default_rng(7)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = root / f"support_{i}.png"
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def support_runs(name: str, backbone: ClipBackbone, pool: list[str]) -> list[CategoryRun]:
    """Runs of ``name`` on CATEGORIES[0], each model of :func:`plan` in turn: seed 0 nested (k = 1, 2, 9:
    two chunks), seed 1 not (its k = 2 list in another order: pool[3] at slot 0, pool[0] at slot 1)."""
    runs = plan(name, backbone)
    models = [r.category_models(CATEGORIES[0]) if r.category_models else r.method for r in runs]
    lists = [(0, pool[:1]), (0, pool[:2]), (1, [pool[3], pool[0]]), (0, pool[:9])]
    return [CategoryRun(models[i % len(models)], seed, shots) for i, (seed, shots) in enumerate(lists)]


@pytest.mark.parametrize("name", FEW_SHOT)
def test_plan_with_shared_supports_equals_the_per_run_path(name, toy, tmp_path, backbone, monkeypatch):
    runs = support_runs(name, backbone, support_pool(tmp_path / "pool"))
    rows = toy[(toy.split == "test") & (toy.category == CATEGORIES[0])].reset_index(drop=True)
    size = runs[0].model.backbone.image_size
    chunks: list[int] = []
    original = type(runs[0].model).encode_support
    monkeypatch.setattr(type(runs[0].model), "encode_support", lambda self, x: chunks.append(len(x)) or original(self, x))
    planned = score_category(CATEGORIES[0], rows, runs, eval_size=size, batch_size=2)
    assert len(chunks) == 3  # pool[:9] in 2 chunks, [pool[3], pool[0]] in 1; the other lists' rows are shared
    per_run = score_category(CATEGORIES[0], rows, runs, eval_size=size, batch_size=2, encode_once=False)
    assert len(chunks) == 3 + 1 + 1 + 1 + 2
    for got, want in zip(planned, per_run, strict=True):
        assert torch.equal(got.scores, want.scores) and torch.equal(got.maps, want.maps)
    assert len({tuple(s.scores.tolist()) for s in planned}) > 1  # the runs' supports matter


def test_nested_supports_are_encoded_once_per_seed(toy, tmp_path, backbone, monkeypatch):
    pool = support_pool(tmp_path / "pool", 8)
    model = plan("kag_prompt", backbone)[0].method
    runs = [CategoryRun(model, seed, pool[4 * seed:4 * seed + k]) for k in (1, 2, 4) for seed in (0, 1)]
    chunks: list[int] = []
    original = type(model).encode_support

    def counting(self, images):
        chunks.append(len(images))
        return original(self, images)

    monkeypatch.setattr(type(model), "encode_support", counting)
    rows = toy[(toy.split == "test") & (toy.category == CATEGORIES[0])].reset_index(drop=True)
    score_category(CATEGORIES[0], rows, runs, eval_size=model.backbone.image_size, batch_size=2)
    assert chunks == [SUPPORT_CHUNK] * 2  # each seed's k = 4 list, one padded chunk
    chunks.clear()
    score_category(CATEGORIES[0], rows, runs, eval_size=model.backbone.image_size, batch_size=2, encode_once=False)
    assert chunks == [SUPPORT_CHUNK] * len(runs)


def test_support_rows_name_an_image_that_was_not_encoded(backbone, tmp_path):
    run = CategoryRun(plan("patchcore", backbone)[0].method, 0, support_pool(tmp_path / "pool", 1))
    with pytest.raises(KeyError, match="support_0.png"):
        SupportRows().features(run)


def support_state(name: str, model: AnomalyMethod) -> list[torch.Tensor]:
    """The support part of a method's category state, the supports' rows first."""
    if name == "inctrl":
        return [model.prompts.tokens.transpose(0, 1), model.prompts.embedding]
    if name == "winclip_plus":
        return [*model.bank.windows, model.bank.patches]
    return {"kag_prompt": lambda: model.support_bank, "finegrained": lambda: model.memory,
            "patchcore": lambda: [model.bank]}[name]()


def batched_support_state(name: str, model: AnomalyMethod, x: torch.Tensor) -> list[torch.Tensor]:
    """:func:`support_state` computed independently, from one batched forward of the supports ``x``
    [k, 3, S, S] (the code before the canonical encoding)."""
    bb = model.backbone
    if name == "inctrl":
        enc = model.encode(x)
        return [enc.tokens.transpose(0, 1), enc.embedding]
    if name == "winclip_plus":
        tokens = bb.encode_image(x, layers=[model.config.patch_layer]).tokens[0]
        return [w.flatten(0, 1) for w in encode_windows(bb, x, model.windows)] + \
            [model.memory_tokens(tokens).flatten(0, 1)]
    if name == "kag_prompt":
        return [t.flatten(0, 1) for t in bb.encode_image(x, layers=model.config.layers).tokens]
    if name == "finegrained":
        return [m.flatten(0, 1) for m in model.encode(x).memory]  # with the V-V path the queries take
    return [model.patch_features(x)[0].flatten(0, 1)]


@pytest.mark.parametrize("name", FEW_SHOT)
def test_canonical_support_encoding(name, backbone):
    model = plan(name, backbone)[0].method
    size = model.backbone.image_size
    gen = torch.Generator().manual_seed(5)
    x, other = (torch.randn(SUPPORT_CHUNK, 3, size, size, generator=gen) for _ in range(2))
    mixed = torch.cat([x[:3], other[3:]])
    with torch.inference_mode():
        # the slot property: rows [:3] of a full chunk do not depend on the chunk's other rows
        got = list(feature_tensors(model.encode_supports(x[:3])))
        want = list(feature_tensors(take_rows(model.encode_support(mixed), slice(0, 3))))
        # setup_category(key, supports) = setup_category_encoded(key, encode_supports(supports))
        model.setup_category(CATEGORIES[0], x[:3])
        direct = support_state(name, model)
        model.setup_category_encoded(CATEGORIES[0], model.encode_supports(x[:3]))
        encoded = support_state(name, model)
        # against one batched forward: exact for a full chunk, to float rounding for k = 3
        model.setup_category(CATEGORIES[0], x)
        full = support_state(name, model)
        batched_full, batched_3 = batched_support_state(name, model, x), batched_support_state(name, model, x[:3])
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(direct, encoded, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(full, batched_full, strict=True))
    for a, b in zip(direct, batched_3, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_models_with_other_backbones_or_trained_features_are_encoded_apart(backbone):
    inctrl = create("inctrl", backbone_model=backbone, **TINY)
    assert create("inctrl", backbone_model=backbone, **TINY).encoding_key() == inctrl.encoding_key()
    assert create("inctrl", **TINY).encoding_key() != inctrl.encoding_key()      # another backbone object
    assert create("inctrl", backbone_model=backbone, layers=(3, 5), **TINY).encoding_key() != inctrl.encoding_key()
    kag = plan("kag_prompt", backbone)[0].method                                  # features pass its graph
    assert plan("kag_prompt", backbone)[0].method.encoding_key() != kag.encoding_key()


def test_two_runs_of_a_plan_may_not_share_a_folder(toy, tmp_path, backbone):
    runs = plan("winclip", backbone)
    with pytest.raises(ValueError, match="same results folder"):
        evaluate_plan([replace(r, out=tmp_path / "same") for r in runs], "toy", config=CONFIG, samples=toy)
    assert not (tmp_path / "same" / "metrics.json").exists()
