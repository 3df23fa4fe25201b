"""InCTRL on the tiny backbone: paper defaults, residuals against known answers, the public code's
path as a slow reference (correct layout at B = 1, legacy reshape at B > 1), batch-size invariance,
head shapes, training data, loss, 2-step training, checkpoint round trip, train_inctrl end to end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from fsadlib.clip import BackboneConfig
from fsadlib.losses import focal_loss
from fsadlib.methods import create, list_methods, spec_of
from fsadlib.methods.base import load_checkpoint
from fsadlib.methods.inctrl.model import Encoded, Inctrl, InctrlConfig, legacy_layout
from fsadlib.methods.inctrl.reference import public_forward
from fsadlib.methods.inctrl.train import (
    CachedImages,
    InctrlDataConfig,
    InctrlLossConfig,
    InctrlSection,
    PromptedBatches,
    inctrl_loss,
    train_inctrl,
    training_samples,
)
from fsadlib.protocol import Protocol
from fsadlib.train import TrainConfig, fit

TINY = {"backbone": {"arch": "tiny"}}


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def method():
    torch.manual_seed(0)
    m = create("inctrl", **TINY).eval()
    for p in m.trainable_parameters():  # non-trivial weights and BN statistics
        p.data.normal_(0, 0.3)
    for bn in (mod for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm1d)):
        bn.running_mean.normal_(0, 0.1)
        bn.running_var.uniform_(0.5, 1.5)
    m.setup_category("metal_nut", rand(2, 3, 64, 64, seed=1))
    return m


def test_registered_with_paper_defaults():
    assert "inctrl" in list_methods() and Inctrl.few_shot and spec_of("inctrl").trainable
    cfg = InctrlConfig()
    assert (cfg.backbone.arch, cfg.backbone.pretrained, cfg.backbone.image_size) == \
        ("ViT-B-16-plus-240", "laion400m_e32", 240)
    assert cfg.layers == (7, 9, 11) and cfg.adapter_reduction == 4 and cfg.head_hidden == (128, 64)
    assert cfg.text_scale == 100.0 and cfg.legacy_reshape == 0
    sec = InctrlSection()
    assert sec.ks == (2, 4, 8) and (sec.data.normals_per_batch, sec.data.anomalies_per_batch) == (8, 8)
    assert (sec.train.lr, sec.train.optimizer, sec.train.weight_decay, sec.train.epochs) == (1e-3, "adamw", 0.01, 10)
    assert sec.loss.double_sigmoid == 0 and sec.data.prompts_include_query == 0


def test_head_shapes_follow_the_backbone_grid(method):
    bb = method.backbone
    assert method.holistic_head.net[0].in_features == bb.grid[0] * bb.grid[1] == 64
    assert method.image_head.net[0].in_features == bb.embed_dim == 24
    assert method.adapter.net[0].weight.shape == (6, 24) and method.adapter.net[2].weight.shape == (24, 6)
    assert method.holistic_head(rand(5, 64)).shape == (5,) and method.image_head(rand(5, 24)).shape == (5,)
    out = method(rand(3, 3, 64, 64, seed=2))
    assert out.pred_score.shape == (3,) and out.anomaly_map.shape == (3, 64, 64)


def test_trained_model_of_k_is_final_pt_in_its_k_folder():
    protocol = Protocol(aux_dataset="mvtec", target_dataset="visa")
    assert Inctrl.trained_path(protocol, 4, seed=0) == Inctrl.training_dir(protocol) / "k4" / "final.pt"


def test_bad_input_names_the_key():
    with pytest.raises(ValueError, match="inctrl.layers"):
        create("inctrl", backbone={"arch": "tiny"}, layers=[7, 13])
    for hidden in ((8,), (8, 4, 2), (8, 0)):
        with pytest.raises(ValueError, match="inctrl.head_hidden two widths >= 1"):
            InctrlConfig(head_hidden=hidden)
    with pytest.raises(KeyError, match="legacy"):
        create("inctrl", legacy=1, **TINY)
    m = create("inctrl", **TINY)
    with pytest.raises(RuntimeError, match="setup_category"):
        m(rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="supports"):
        m.setup_category("disc", None)


def test_residual_is_zero_when_a_query_patch_equals_a_prompt_patch(method):
    x = rand(2, 3, 64, 64, seed=3)
    q = method.encode(x)
    s = method.score(q, Encoded(q.tokens[:, :1], q.embedding[:1]), method.text)  # prompt = query 0
    assert torch.allclose(s.patch_map[0], torch.zeros(64), atol=1e-6) and float(s.patch[0]) < 1e-6
    assert float(s.patch_map[1].min()) > 1e-4
    # one patch of query 1 planted in a random bank: its residual is 0, the others match a loop
    bank = rand(3, 1, 10, 48, seed=4)
    bank[:, 0, 7] = q.tokens[:, 1, 5] * 2.0
    s = method.score(q, Encoded(bank, rand(1, 24)), method.text)
    assert float(s.patch_map[1, 5]) == pytest.approx(0.0, abs=1e-6)
    want = torch.stack([torch.stack([min((1 - torch.cosine_similarity(q.tokens[l, 1, i], bank[l, 0, j], 0)) / 2
                                         for j in range(10)) for i in range(64)]) for l in range(3)]).mean(0)
    assert torch.allclose(s.patch_map[1], want, atol=1e-6)


def test_scores_compose_as_the_paper_says(method):
    q = method.encode(rand(3, 3, 64, 64, seed=5))
    s = method.score(q, method.prompts, method.text)
    residual = method.adapter(method.prompts.embedding).mean(0) - method.adapter(q.embedding)
    g = torch.nn.functional.normalize(q.embedding, dim=-1)
    s_a = torch.softmax(100 * g @ method.text.T, -1)[:, 1]
    s_i = method.image_head(residual)
    s_h = method.holistic_head(s.patch_map + s_i[:, None] + s_a[:, None])
    assert torch.allclose(s.text, s_a) and torch.allclose(s.image, s_i) and torch.allclose(s.holistic, s_h)
    assert torch.allclose(s.final, (s_h + s.patch_map.amax(1)) / 2)
    assert torch.allclose(method.prompts.tokens.flatten(1, 2)[0, 0],
                          method.encode(rand(2, 3, 64, 64, seed=1)).tokens[0, 0, 0])


def test_batch_of_4_equals_4_batches_of_1(method):
    x = rand(4, 3, 64, 64, seed=6)
    batched = method(x)
    singles = [method(x[i:i + 1]) for i in range(4)]
    assert torch.allclose(batched.pred_score, torch.cat([o.pred_score for o in singles]), atol=1e-6)
    assert torch.allclose(batched.anomaly_map, torch.cat([o.anomaly_map for o in singles]), atol=1e-6)


def test_public_code_path_reference(method):
    """The public forward (per-patch loops, 242 prompts and prompts re-encoded per query, reshape)."""
    x, sup = rand(2, 3, 64, 64, seed=7), rand(2, 3, 64, 64, seed=1)
    final, s_i = public_forward(method, x[:1], sup, "metal_nut")  # batch 1: the public code is correct
    ours = method.score(method.encode(x[:1]), method.prompts, method.text)
    assert torch.allclose(final, ours.final, atol=1e-5) and torch.allclose(s_i, ours.image, atol=1e-5)
    legacy = Inctrl(InctrlConfig(backbone=BackboneConfig(arch="tiny"), legacy_reshape=1),
                    backbone_model=method.backbone).eval()
    legacy.load_trainable_state(method.trainable_state_dict())
    legacy.setup_category("metal_nut", sup)
    final, _ = public_forward(method, x, sup, "metal_nut")
    assert torch.allclose(legacy(x).pred_score, final, atol=1e-5)            # batch 2: the bug, reproduced
    assert not torch.allclose(method(x).pred_score, final, atol=1e-3)        # ... and fixed by default
    assert torch.allclose(legacy(x[:1]).pred_score, method(x[:1]).pred_score, atol=1e-6)


def test_legacy_layout_by_hand():
    # value = 100 * layer + 10 * query + patch (queries); prompts add 1000 * (shot + 1)
    n_layers, b, k, n = 2, 2, 2, 2
    q = torch.tensor([[[[100 * l + 10 * i + t] for t in range(n)] for i in range(b)] for l in range(n_layers)],
                     dtype=torch.float32)                                     # [L, B, N, 1]
    p = torch.stack([q + 1000 * (s + 1) for s in range(k)], dim=2)           # [L, B, k, N, 1]
    e = torch.tensor([[[10 * i + s] for s in range(k)] for i in range(b)], dtype=torch.float32)
    lq, lp = legacy_layout(Encoded(q, torch.zeros(b, 1)), Encoded(p, e))
    # query 0's "layer 1" is query 1's layer 0; query 1's layers are layer 1 of queries 0 and 1
    assert lq.tokens[:, 0, :, 0].tolist() == [[0, 1], [10, 11]]
    assert lq.tokens[:, 1, :, 0].tolist() == [[100, 101], [110, 111]]
    # public prompt rows (shot-major s*B + i): query 0 layer 0 bank = rows 0, 1 of layer 0
    assert lp.tokens[0, 0].flatten().tolist() == [1000, 1001, 1010, 1011]
    assert lp.tokens[1, 0].flatten().tolist() == [2000, 2001, 2010, 2011]
    assert lp.embedding[:, :, 0].tolist() == [[0, 10], [1, 11]]


def test_loss_without_the_image_residual_is_the_final_term_alone(method, monkeypatch):
    import dataclasses

    monkeypatch.setattr(method, "config", dataclasses.replace(method.config, image_residual=0))
    batch = {"image": rand(2, 3, 64, 64, seed=8), "prompts": rand(2, 2, 3, 64, 64, seed=9),
             "label": torch.tensor([0.0, 1.0]), "category": ["stripes", "brick"]}
    s = method.score_with_prompts(batch["image"], batch["prompts"], batch["category"])
    got = inctrl_loss(method, batch, InctrlLossConfig())["loss"]
    assert float(got.detach()) == pytest.approx(float(focal_loss(s.final, batch["label"]).detach()), rel=1e-5)


def test_loss_focal_and_double_sigmoid(method):
    batch = {"image": rand(4, 3, 64, 64, seed=8), "prompts": rand(4, 2, 3, 64, 64, seed=9),
             "label": torch.tensor([0.0, 0.0, 1.0, 1.0]), "category": ["stripes", "stripes", "brick", "brick"]}
    s = method.score_with_prompts(batch["image"], batch["prompts"], batch["category"])
    y = batch["label"]
    plain = inctrl_loss(method, batch, InctrlLossConfig())
    want = focal_loss(s.final, y) + focal_loss(s.image, y)
    assert float(plain["loss"].detach()) == pytest.approx(float(want.detach()), rel=1e-5)
    double = inctrl_loss(method, batch, InctrlLossConfig(double_sigmoid=1))
    want = focal_loss(torch.sigmoid(s.final), y) + focal_loss(torch.sigmoid(s.image), y)
    assert float(double["loss"].detach()) == pytest.approx(float(want.detach()), rel=1e-4)
    # per-query prompts: query i scored against its own prompts only
    one = method.score(method.encode(batch["image"][2:3]), method.encode(batch["prompts"][2]),
                       method.text_features("brick"))
    assert torch.allclose(one.patch_map, s.patch_map[2:3], atol=1e-6)


# -- training data ------------------------------------------------------------------------------
def fake_dataset(n_train=4, n_test_good=2, n_bad=3, cats=("stripes", "brick", "grass", "noise")):
    """Samples table + in-memory loader: normals are smooth, anomalies carry a bright square."""
    rows, images = [], {}
    rng = np.random.default_rng(0)
    for c_i, cat in enumerate(cats):
        for split, label, n in (("train", 0, n_train), ("test", 0, n_test_good), ("test", 1, n_bad)):
            for j in range(n):
                path = f"/fake/{cat}/{split}/{label}/{j}.png"
                img = torch.full((3, 64, 64), 0.2 * c_i) + 0.05 * torch.from_numpy(rng.standard_normal((3, 64, 64))).float()
                if label:
                    img[:, 16:40, 16:40] += 3.0
                images[path] = img
                rows.append({"dataset": "synthetic", "category": cat, "split": split, "label": label,
                                 "defect": "square" if label else "good", "image_path": path, "mask_path": ""})

    def loader(paths, size):
        assert size == 64
        return torch.stack([images[p] for p in paths])

    return pd.DataFrame(rows), loader


PROTOCOL = Protocol(aux_categories=("stripes", "brick"), val_categories=("grass",), target_categories=("noise",))


def test_prompted_batches_balanced_same_category_and_query_excluded():
    samples, loader = fake_dataset()
    aux = training_samples(samples, PROTOCOL)
    assert set(aux.category) == {"stripes", "brick"} and len(aux) == 2 * (4 + 2 + 3)
    data = InctrlDataConfig(normals_per_batch=3, anomalies_per_batch=2)
    batches = PromptedBatches(aux, 5, CachedImages(64, loader), data)  # 6 normals: k = 5 forces "all but self"
    np.random.seed(0)
    for _ in range(5):
        queries = np.concatenate([np.random.choice(batches.normal_idx, 3), np.random.choice(batches.anomaly_idx, 2)])
        for q in queries:
            drawn = batches.draw_prompts(q)
            assert len(set(drawn)) == 5 and q not in drawn
            assert set(aux.category[drawn]) == {aux.category[q]} and set(aux.label[drawn]) == {0}
    batch = next(iter(batches))
    assert batch["image"].shape == (5, 3, 64, 64) and batch["prompts"].shape == (5, 5, 3, 64, 64)
    assert batch["label"].tolist() == [0, 0, 0, 1, 1]
    with pytest.raises(ValueError, match="needs >= 7"):
        PromptedBatches(aux, 6, CachedImages(64, loader), data)
    PromptedBatches(aux, 6, CachedImages(64, loader), InctrlDataConfig(prompts_include_query=1))
    with pytest.raises(ValueError, match="aux_categories"):
        training_samples(samples, Protocol(aux_categories=("nope",), target_categories=("noise",)))


def test_two_training_steps_decrease_the_loss(method, tmp_path):
    samples, loader = fake_dataset()
    aux = training_samples(samples, PROTOCOL)
    np.random.seed(1)
    batch = next(iter(PromptedBatches(aux, 2, CachedImages(64, loader), InctrlDataConfig(normals_per_batch=2, anomalies_per_batch=2))))
    torch.manual_seed(0)
    m = create("inctrl", backbone_model=method.backbone, **TINY)
    loss = lambda mm, b: inctrl_loss(mm, b, InctrlLossConfig())
    m.train()
    before = float(loss(m, batch)["loss"].detach())
    fit(m, [batch], loss, TrainConfig(epochs=1, steps_per_epoch=2, lr=1e-2, amp=0), tmp_path, resume=False)
    m.train()
    after = float(loss(m, batch)["loss"].detach())
    assert after < before


def test_train_inctrl_end_to_end_and_checkpoint_round_trip(method, tmp_path):
    samples, loader = fake_dataset()
    section = InctrlSection(ks=(2,), model=InctrlConfig(backbone=BackboneConfig(arch="tiny")),
                            train=TrainConfig(epochs=1, steps_per_epoch=2, amp=0, seed=3, select_metric="auroc_mean"),
                            data=InctrlDataConfig(normals_per_batch=2, anomalies_per_batch=2))
    report = train_inctrl(section, PROTOCOL, smoke=False, out_dir=tmp_path / "models", live_dir=tmp_path / "reports",
                          samples=samples, loader=loader, backbone_model=method.backbone)
    hist = report.history
    assert list(hist.k) == [2] and "val_auroc_grass" in hist and hist.val_auroc_mean.between(0, 1).all()
    final = tmp_path / "models" / "k2" / "final.pt"
    assert report.models == [final]
    assert final.is_file() and (tmp_path / "reports" / "metrics.json").is_file()
    m = load_checkpoint(final, backbone_model=method.backbone).eval()
    assert isinstance(m, Inctrl) and m.config.backbone.arch == "tiny"
    ckpt = torch.load(final, weights_only=True)
    ref = create("inctrl", backbone_model=method.backbone, **TINY).eval()
    ref.load_trainable_state(ckpt["state_dict"])
    sup, x = rand(2, 3, 64, 64, seed=10), rand(3, 3, 64, 64, seed=11)
    m.setup_category("grass", sup)
    ref.setup_category("grass", sup)
    assert torch.equal(m(x).pred_score, ref(x).pred_score)
    assert all(k.startswith(("adapter.", "image_head.", "holistic_head.")) for k in ckpt["state_dict"])


def test_ablation_flags_remove_the_text_prior_and_the_image_residual():
    import dataclasses

    base = InctrlConfig(backbone=BackboneConfig(arch="tiny"))
    x, sup = torch.randn(3, 3, 64, 64), torch.randn(2, 3, 64, 64)
    scores = {}
    for flags in [(1, 1), (0, 1), (1, 0), (0, 0)]:
        torch.manual_seed(0)  # identical heads for every variant
        m = Inctrl(dataclasses.replace(base, text_prior=flags[0], image_residual=flags[1])).eval()
        s = m.score_with_prompts(x, sup.expand(3, -1, -1, -1, -1), ["disc"] * 3)
        scores[flags] = s
    full, bare = scores[(1, 1)], scores[(0, 0)]
    assert torch.allclose(full.holistic, m.holistic_head(full.patch_map + (full.image + full.text)[:, None]))
    assert torch.allclose(bare.holistic, m.holistic_head(bare.patch_map), atol=1e-6)
    no_text = scores[(0, 1)]
    assert torch.allclose(no_text.holistic, m.holistic_head(no_text.patch_map + no_text.image[:, None]), atol=1e-6)
