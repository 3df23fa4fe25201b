"""Bayes-PFL: flows against autograd, KL against closed forms, RCA and maps against explicit
references, one batched text call, seeded order-independent sampling, training, checkpoints."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from fsadlib.clip import BackboneConfig, ClipBackbone
from fsadlib.losses import balanced_focal_loss
from fsadlib.maps import fused_image_score
from fsadlib.methods import create
from fsadlib.methods.base import load_checkpoint
from fsadlib.methods.bayes_pfl import SPEC
from fsadlib.methods.bayes_pfl.augment import BayesPFLAugmentConfig
from fsadlib.methods.bayes_pfl.flows import ImageAgnosticFlow, planar_flow, sample_flow
from fsadlib.methods.bayes_pfl.layers import ResidualCrossModalAttention
from fsadlib.methods.bayes_pfl.model import BayesPFL, BayesPFLConfig, public_image_scores, public_topk
from fsadlib.methods.bayes_pfl.train import (
    BayesPFLSection,
    BayesPFLTrainConfig,
    orthogonality_loss,
    stage1_loss,
    train_bayes_pfl,
)
from fsadlib.protocol import Protocol
from fsadlib.smoke import smoke_section
from fsadlib.train import TrainConfig, fit

TINY = BayesPFLConfig(backbone=BackboneConfig(arch="tiny"), layers=(3, 6, 9, 12), test_samples=3, topk=30,
                      sigma=1.0)


@pytest.fixture(scope="module")
def backbone():
    return ClipBackbone(TINY.backbone)


def make_method(backbone, seed=0, **overrides):
    torch.manual_seed(seed)
    return BayesPFL(replace(TINY, **overrides), backbone_model=backbone).eval()


def synthetic_batch(n=4, seed=0):
    """Noise images; anomalous ones carry a bright square, and the mask marks it."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, 64, 64, generator=g) * 0.3
    masks = torch.zeros(n, 64, 64)
    labels = torch.tensor([i % 2 for i in range(n)])
    for i in range(n):
        if labels[i]:
            y, x = (int(v) for v in torch.randint(0, 40, (2,), generator=g))
            masks[i, y:y + 20, x:x + 20] = 1
            images[i, :, y:y + 20, x:x + 20] += 2.0
    return {"image": images, "mask": masks, "label": labels, "category": ["brick", "cross"] * (n // 2)}


# -- flows ----------------------------------------------------------------------------------------
def test_planar_log_det_matches_autograd_jacobian():
    g = torch.Generator().manual_seed(0)
    d, k = 4, 3
    u, w = (torch.randn(k, d, generator=g, dtype=torch.float64) for _ in range(2))
    b = torch.randn(k, generator=g, dtype=torch.float64)
    z = torch.randn(d, generator=g, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda x: planar_flow(x, u, w, b, eps=0.0)[0], z)
    _, log_det = planar_flow(z, u, w, b, eps=0.0)
    assert float(log_det) == pytest.approx(float(torch.linalg.slogdet(jac).logabsdet), abs=1e-10)
    # batched evaluation equals per-sample evaluation; the public eps only nudges the value
    zs = torch.randn(5, d, generator=g, dtype=torch.float64)
    zk, ld = planar_flow(zs, u, w, b)
    for i in range(5):
        zi, li = planar_flow(zs[i], u, w, b)
        assert torch.allclose(zk[i], zi) and float(ld[i]) == pytest.approx(float(li))
    assert float(planar_flow(z, u, w, b)[1]) == pytest.approx(float(log_det), abs=1e-4)


def test_a_state_flow_has_one_set_of_free_parameters():
    flow = ImageAgnosticFlow(width=8, n_flows=3)
    shapes = {name: tuple(p.shape) for name, p in flow.named_parameters()}
    assert shapes == {"state": (1, 8), "u": (1, 3, 8), "w": (1, 3, 8), "b": (1, 3)}


def test_kl_of_standard_normal_base_is_zero_and_gaussian_kl_matches_closed_form():
    g = torch.Generator().manual_seed(0)
    d, k, r = 6, 10, 20000
    zero_flow = (torch.zeros(1, k, d), torch.zeros(1, k, d), torch.zeros(1, k))
    noise = torch.randn(1, r, d, generator=g)
    _, kl = sample_flow(torch.zeros(1, d), torch.ones(1, d), *zero_flow, noise)
    # q = N(0, I) = prior: every sample's estimate is 0 up to the public eps, -K log(1 + 1e-5)
    assert torch.allclose(kl, torch.full_like(kl, -k * math.log1p(1e-5)), atol=1e-6)
    mu, var = torch.randn(1, d, generator=g), torch.rand(1, d, generator=g) + 0.5
    _, kl = sample_flow(mu, var, *zero_flow, noise)
    closed = 0.5 * float((var + mu ** 2 - 1 - var.log()).sum())
    assert float(kl.mean()) == pytest.approx(closed, rel=0.03)


# -- model pieces against explicit references -------------------------------------------------------
def test_rca_matches_explicit_multi_head_attention():
    torch.manual_seed(0)
    rca = ResidualCrossModalAttention(vision_width=10, embed_dim=8, n_layers=2, heads=4)
    text, tokens = F.normalize(torch.randn(2, 5, 8), dim=-1), torch.randn(2, 7, 10)
    patches = rca.patches(tokens, 1)
    assert torch.allclose(patches, F.normalize(tokens @ rca.patch_proj[1].weight.T, dim=-1))
    q = (text @ rca.query.weight.T + rca.query.bias).view(2, 5, 4, 2)
    kv = patches.view(2, 7, 4, 2)
    att = (torch.einsum("btkc,bmkc->bktm", q, kv) * 8 ** -0.5).softmax(-1)   # scale D^-1/2, public
    want = F.normalize(text + torch.einsum("bktm,bmkc->btkc", att, kv).reshape(2, 5, 8), dim=-1)
    assert torch.allclose(rca(text, patches), want, atol=1e-6)


def test_pixel_probability_equals_softmax_of_upsampled_logits(backbone):
    m = make_method(backbone)
    gaps_logits = torch.randn(2, 2, 64)                    # [N, (normal, abnormal), n] on the 8 x 8 grid
    up = F.interpolate(gaps_logits.view(2, 2, 8, 8), size=(64, 64), mode="bilinear", align_corners=True)
    want = up.softmax(dim=1)[:, 1]
    got = m.upsample((gaps_logits[:, 1] - gaps_logits[:, 0])[:, None])[:, 0]
    assert torch.allclose(got, want, atol=1e-6)


def test_orthogonality_loss_by_hand():
    eye = torch.eye(3, 4)[None, None].expand(2, 2, 3, 4)   # orthonormal bank -> 0
    assert float(orthogonality_loss(eye)) == pytest.approx(0.0)
    same = F.normalize(torch.ones(1, 2, 3, 4), dim=-1)      # identical -> 2 states * 6 / 9
    assert float(orthogonality_loss(same)) == pytest.approx(2 * 6 / 9)


def test_public_rule_and_fusion_by_hand():
    text, top = torch.tensor([0.2, 0.6, 1.0]), torch.tensor([3.0, 1.0, 2.0])
    want = 0.5 * torch.tensor([0.0, 0.5, 1.0]) + 0.5 * torch.tensor([1.0, 0.0, 0.5])
    assert torch.allclose(public_image_scores(text, top), want, atol=1e-6)
    assert [public_topk(c) for c in ("pipe_fryum", "pipe fryum", "macaroni2", "bottle")] == [20, 20, 20, 2000]
    maps = torch.tensor([[[1.0, 4.0], [3.0, 2.0]]])
    assert torch.allclose(fused_image_score(torch.tensor([0.5]), maps, k=2, text_weight=0.25),
                          torch.tensor([0.25 * 0.5 + 0.75 * 3.5]))


def test_balanced_focal_loss_by_hand():
    p, y = torch.tensor([0.8, 0.3, 0.4]), torch.tensor([1.0, 0.0, 0.0])
    fg = -(0.2 ** 2) * math.log(0.8)
    bg = (-(0.3 ** 2) * math.log(0.7) - (0.4 ** 2) * math.log(0.6)) / 2
    assert float(balanced_focal_loss(p, y)) == pytest.approx(fg + bg, rel=1e-5)
    assert float(balanced_focal_loss(p[1:], y[1:])) == pytest.approx(bg, rel=1e-5)   # no foreground: + 0


# -- method --------------------------------------------------------------------------------------
def test_shapes_one_text_call_and_parameter_groups(backbone, monkeypatch):
    m = make_method(backbone)
    m.setup_category("metal_nut")
    calls = []
    original = backbone.encode_text_embeddings
    monkeypatch.setattr(backbone, "encode_text_embeddings",
                        lambda emb, eot: calls.append(emb.shape[0]) or original(emb, eot))
    out = m(synthetic_batch(2)["image"])
    assert out.pred_score.shape == (2,) and out.anomaly_map.shape == (2, 64, 64)
    assert calls == [2 * 3 * 2 * 3]                                   # N * R * 2 * B prompts, one call
    assert ((out.anomaly_map >= 0) & (out.anomaly_map <= 1)).all()
    assert m.prompt_ids(["metal_nut"])[0].argmax() == 4              # SOS X metal nut EOT
    for stage in (1, 2):
        sets = m.parameter_sets(stage)
        ids = [id(p) for ps in sets.values() for p in ps]
        assert len(ids) == len(set(ids))
    assert {id(p) for ps in m.parameter_sets(1).values() for p in ps} | {
        id(p) for p in m.image_mapping.parameters()} | {id(p) for p in m.fuse.parameters()} == {
        id(p) for p in m.trainable_parameters()}


def test_sampling_is_seeded_and_independent_of_image_order(backbone):
    m = make_method(backbone)
    m.setup_category("brick")
    x = synthetic_batch(4)["image"]
    a = m(x)
    b = m(x.flip(0))
    assert torch.allclose(a.pred_score, b.pred_score.flip(0), atol=1e-5)
    assert torch.allclose(a.anomaly_map, b.anomaly_map.flip(0), atol=1e-5)
    single = torch.cat([m(x[i:i + 1]).pred_score for i in range(4)])
    assert torch.allclose(a.pred_score, single, atol=1e-5)
    other = make_method(backbone, sample_seed=1)
    other.setup_category("brick")
    assert not torch.allclose(other(x).pred_score, a.pred_score)
    # sampling "mean" uses no noise: the sample seed cannot matter, and it differs from sampling
    means = [make_method(backbone, sampling="mean", sample_seed=seed) for seed in (0, 1)]
    for mm in means:
        mm.setup_category("brick")
    at_mean = means[0](x).pred_score
    assert torch.allclose(at_mean, means[1](x).pred_score, atol=1e-6)
    assert not torch.allclose(at_mean, a.pred_score, atol=1e-4)


def test_public_score_rule_records_parts(backbone):
    m = make_method(backbone, score_rule="public")
    m.setup_category("screw")
    x = synthetic_batch(4)["image"]
    m(x[:2])
    m(x[2:])
    parts = torch.cat(m.score_parts)
    assert parts.shape == (4, 2)
    assert torch.allclose(m.public_scores(), public_image_scores(parts[:, 0], parts[:, 1]))
    assert torch.equal(m.category_scores(torch.zeros(4)), m.public_scores())  # the evaluation's image scores
    m.setup_category("screw")
    with pytest.raises(ValueError, match="public_scores"):
        m.public_scores()


def test_paper_defaults_and_initial_pixel_scale(backbone):
    assert BayesPFLConfig().layers == (6, 12, 18, 24)                   # ViT-L-14: every sixth block
    assert float(make_method(backbone).log_scale_pixel) == pytest.approx(math.log(1 / 0.07))  # CLIP's init


def test_only_the_public_rule_reports_target_statistics(backbone):
    assert "min-max normalised per class" in make_method(backbone, score_rule="public").target_statistics()
    assert make_method(backbone).target_statistics() is None
    assert make_method(backbone, score_rule="public_text").target_statistics() is None


def test_bad_parameters_name_the_key(backbone):
    with pytest.raises(ValueError, match="score_rule"):
        replace(TINY, score_rule="max")
    with pytest.raises(ValueError, match="sampling"):
        replace(TINY, sampling="mode")
    with pytest.raises(ValueError, match="bayes_pfl.layers"):
        BayesPFL(replace(TINY, layers=(6, 24)), backbone_model=backbone)
    with pytest.raises(KeyError, match="unknown key"):
        create("bayes_pfl", backbone={"arch": "tiny"}, flows=3)
    with pytest.raises(ValueError, match="setup_category"):
        make_method(backbone)(torch.zeros(1, 3, 64, 64))


def test_two_training_steps_decrease_the_loss(backbone, tmp_path):
    m = make_method(backbone).train()
    batch = synthetic_batch(4)
    cfg = BayesPFLTrainConfig()

    def loss_at_fixed_noise():
        torch.manual_seed(123)
        with torch.no_grad():
            return float(stage1_loss(m, batch, cfg)["loss"])

    before = loss_at_fixed_noise()
    groups = [{"params": p, "lr": 1e-2} for p in m.parameter_sets(1).values()]
    fit(m, [batch], lambda mm, b: stage1_loss(mm, b, cfg),
        TrainConfig(epochs=1, steps_per_epoch=2, optimizer="adam", betas=(0.5, 0.999)),
        tmp_path, param_groups=groups)
    assert loss_at_fixed_noise() < before


def test_two_stage_training_and_checkpoint_round_trip(tmp_path):
    section = BayesPFLSection(model=TINY, train=BayesPFLTrainConfig(epochs=2, stage2_epochs=2, patience=1,
                                                                   max_steps_per_epoch=1))
    scores = iter([0.5, 0.4, 0.3, 0.6])   # stage 1: epoch 1 best; stage 2: epoch 2 best

    def validate(method):
        value = next(scores)
        return {"pixel_ap": value, "image_ap": value}

    protocol = Protocol(aux_categories=("brick", "cross"), val_categories=("grass",), target_categories=("disc",))
    res = train_bayes_pfl(section, protocol, smoke=False, out_dir=tmp_path, live_dir=tmp_path / "live",
                          batches=[synthetic_batch(4)], validate=validate)
    assert res.models == [tmp_path / "final.pt"]
    assert list(res.history.stage) == [1, 1, 2, 2] and list(res.history.epoch) == [1, 2, 1, 2]
    ckpt = torch.load(res.models[0], weights_only=True)
    assert ckpt["extra"]["stage1_best_epoch"] == 1 and ckpt["extra"]["stage2_best_epoch"] == 2
    assert int(ckpt["state_dict"]["stage"]) == 2
    assert ckpt["extra"]["training_data"].endswith("TEST split")
    loaded = load_checkpoint(res.models[0]).eval()
    again = load_checkpoint(res.models[0]).eval()
    x = synthetic_batch(2, seed=5)["image"]
    for mm in (loaded, again):
        mm.setup_category("disc")
    assert int(loaded.stage) == 2
    out, out2 = loaded(x), again(x)
    assert torch.equal(out.pred_score, out2.pred_score) and torch.equal(out.anomaly_map, out2.anomaly_map)
    for name, value in loaded.trainable_state_dict().items():
        assert torch.equal(value, ckpt["state_dict"][name]), name


def test_smoke_training_on_a_synthetic_tree_with_real_loader_and_validation(tmp_path, monkeypatch):
    from fsadlib import data
    from fsadlib.data import synthetic

    root = synthetic.generate(tmp_path / "synthetic", image_size=64, n_train=1, n_test_good=2, n_test_bad=3,
                              categories=("brick", "grass", "disc"))
    table = data.read_samples("mvtec", root, "synthetic")
    monkeypatch.setattr(data, "load_samples",
                        lambda dataset, categories=None: table if categories is None else data.select_categories(table, categories))
    protocol = Protocol(aux_categories=("brick",), val_categories=("grass",), target_categories=("disc",))
    section = smoke_section(BayesPFLSection(model=TINY, train=BayesPFLTrainConfig(batch_size=2, mosaic_prob=0.5,
                                                                                seed=1),
                                            augment=BayesPFLAugmentConfig(enabled=1, mask_resize="bilinear")),
                            SPEC.smoke)
    res = train_bayes_pfl(section, protocol, smoke=True, out_dir=tmp_path / "out", live_dir=tmp_path / "live")
    assert list(res.history.stage) == [1, 2]
    assert (tmp_path / "live" / "stage1" / "metrics.json").is_file() and (tmp_path / "live" / "stage2" / "metrics.json").is_file()
    assert res.history.val_pixel_ap.between(0, 1).all() and res.history.val_image_ap.between(0, 1).all()
    assert {"val_pixel_ap_grass", "val_image_ap_grass"} <= set(res.history)
    assert torch.load(res.models[0], weights_only=True)["extra"]["protocol"]["val_categories"] == ["grass"]
    with pytest.raises(KeyError, match="unknown categories"):
        train_bayes_pfl(section, replace(protocol, val_categories=("gravel",)), smoke=True, out_dir=tmp_path / "bad",
                        live_dir=tmp_path / "bad_live")
    with pytest.raises(ValueError, match="'validation' needs protocol.val_categories"):
        train_bayes_pfl(section, replace(protocol, val_categories=()), smoke=True, out_dir=tmp_path / "empty",
                        live_dir=tmp_path / "empty_live")


def test_distribution_ablation_switches_off_samples_and_kl():
    g = torch.randn(2, 24)
    noise = torch.randn(2, 3, 32), torch.randn(3, 32), torch.randn(3, 32)
    outs = {}
    for dist in ("both", "image_specific", "image_agnostic", "none"):
        torch.manual_seed(0)
        m = BayesPFL(replace(TINY, distributions=dist))
        with torch.no_grad():
            outs[dist] = m.text_embeddings(g, ["disc", "disc"], *noise)
    text_none, kl_none = outs["none"]
    assert float(kl_none) == 0.0
    assert torch.allclose(text_none[:, 0], text_none[:, 1])      # no sample: every R gives the same prompts
    assert not torch.allclose(outs["both"][0][:, 0], outs["both"][0][:, 1])
    assert not torch.allclose(outs["image_specific"][0], outs["image_agnostic"][0])
    with pytest.raises(ValueError, match="distributions"):
        replace(TINY, distributions="context")


def test_public_text_rule_scores_by_the_text_probability_alone(backbone):
    """The public rule for image-level-only sets: the score is the text part of the public rule."""
    x = synthetic_batch(4)["image"]
    public, text_only = make_method(backbone, score_rule="public"), make_method(backbone, score_rule="public_text")
    public.setup_category("brain")
    text_only.setup_category("brain")
    public(x)
    scores = text_only(x).pred_score
    assert torch.allclose(scores, public.score_parts[0][:, 0], atol=1e-6)
    assert text_only.category_scores(scores) is scores                    # not transductive: kept as scored
