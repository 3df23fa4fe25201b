"""KAG-prompt on the tiny backbone: paper defaults, text ensemble, maps and fusion against
hand-computed references, parameters really used, errors, checkpoint round trip, training loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fsadlib.clip import BackboneConfig
from fsadlib.methods import create, list_methods, spec_of
from fsadlib.methods.base import load_checkpoint
from fsadlib.methods.kag_prompt.model import KagPrompt, KagPromptConfig
from fsadlib.methods.kag_prompt.modules import LayerGraph
from fsadlib.methods.kag_prompt.train import KagLossConfig, kag_loss

TINY = {"backbone": {"arch": "tiny"}, "layers": [3, 6, 9, 12], "proj_dim": 24, "topk": 5}


@pytest.fixture(scope="module")
def method():
    torch.manual_seed(0)
    m = create("kag_prompt", **TINY).eval()
    m.setup_category("metal_nut", torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)))
    return m


def images(n=3, seed=2):
    return torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def test_registered_with_paper_defaults():
    assert "kag_prompt" in list_methods() and KagPrompt.few_shot and spec_of("kag_prompt").trainable
    cfg = KagPromptConfig()
    assert (cfg.backbone.arch, cfg.backbone.pretrained, cfg.backbone.image_size) == \
        ("ViT-H-14", "laion2b_s32b_b79k", 224)
    assert cfg.layers == (8, 16, 24, 32) and cfg.proj_dim == 1024 and cfg.rounds == 5
    assert cfg.aggregation == "concat" and cfg.logit_scale == 100.0 and cfg.topk == 30
    assert (cfg.prompt_weight, cfg.text_score_weight, cfg.map_score_weight) == (0.1, 0.1, 0.9)
    assert cfg.kernels == ((1, 4), (4, 1), (2, 2), (3, 3))  # the paper's kernel-aware convolutions


def test_bad_parameters_name_the_key():
    with pytest.raises(ValueError, match="kag_prompt.proj_dim"):
        create("kag_prompt", backbone={"arch": "tiny"}, layers=[3, 6, 9, 12], proj_dim=32)
    with pytest.raises(ValueError, match="kag_prompt.layers"):
        create("kag_prompt", backbone={"arch": "tiny"}, layers=[3, 13], proj_dim=24)
    with pytest.raises(ValueError, match="kag_prompt.aggregation"):
        KagPromptConfig(aggregation="max")
    with pytest.raises(KeyError, match="r_weight"):
        create("kag_prompt", r_weight=0.5, **TINY)


def test_few_shot_contract():
    m = create("kag_prompt", **TINY)
    with pytest.raises(RuntimeError, match="setup_category"):
        m(images())
    with pytest.raises(ValueError, match="needs supports"):
        m.setup_category("disc", None)
    with pytest.raises(ValueError, match=r"needs supports \[k, 3, S, S\], got \(0, 3, 64, 64\)"):
        m.setup_category("disc", torch.zeros(0, 3, 64, 64))


def test_paper_readout_normalises_each_node_map_alone():
    """per_node_norm in training: ReLU((y - mean) / sqrt(var + eps)) with the mean and biased variance
    of each node's own h x w map, y = Conv3x3(x); 6 node maps of 2 channels (more maps than channels)."""
    torch.manual_seed(0)
    graph = LayerGraph(2, 3, rounds=1, aggregation="concat", per_node_norm=True).train()
    x = torch.randn(6, 4, 5, 5)
    y = graph.readout[0](x)
    mean, var = y.mean((2, 3), keepdim=True), y.var((2, 3), unbiased=False, keepdim=True)
    want = F.relu((y - mean) / torch.sqrt(var + graph.readout[1].eps))
    torch.testing.assert_close(graph.read(x), want, rtol=1e-5, atol=1e-5)


def test_text_is_the_kag_ensemble(method):
    bb = method.backbone
    normal = ["{}", "flawless {}", "perfect {}", "unblemished {}", "{} without flaw", "{} without defect",
              "{} without damage"]
    abnormal = ["damaged {}", "broken {}", "{} with flaw", "{} with defect", "{} with damage"]
    tmpl = ["a photo of a {}.", "a photo of the {}."]

    def mean(states):
        e = F.normalize(bb.encode_text([t.format(s.format("metal nut")) for s in states for t in tmpl]), dim=-1)
        return F.normalize(e.mean(0), dim=-1)
    want = torch.stack([mean(normal), mean(abnormal)])
    torch.testing.assert_close(method.text_features, want, rtol=1e-5, atol=1e-5)


def test_prompt_map_of_one_node_by_hand(method):
    x = images()
    feats = method.encode(x)
    probs, cosines = method.prompt_branch(feats, method.text_features)
    assert probs.shape == (3, 8, 64, 64) and cosines.shape == (3, 2)
    # map 4 is the first MMCI node n_1 (maps are o_1..o_4, n_1..n_4)
    nodes = method.kernel_convs(method.projection(feats.tokens, method.backbone.grid))
    f = F.normalize(nodes[:, 0].flatten(2).transpose(1, 2), dim=-1)         # [B, 64, 24]
    logits = 100.0 * f @ method.text_features.T                              # [B, 64, 2]
    up = F.interpolate(logits.transpose(1, 2).reshape(3, 2, 8, 8), size=64, mode="bilinear", align_corners=True)
    torch.testing.assert_close(probs[:, 4], up.softmax(1)[:, 1], rtol=1e-5, atol=1e-5)
    cls = F.normalize(method.adapter(F.normalize(feats.embedding, dim=-1)), dim=-1)
    torch.testing.assert_close(cosines, cls @ method.text_features.T)


def test_memory_map_matches_the_public_broadcast_cosine(method):
    x = images()
    tokens = method.encode(x).tokens
    sims = [F.cosine_similarity(t[:, :, None], bank[None, None], dim=-1).amax(-1)   # [B, N]
            for t, bank in zip(tokens, method.support_bank)]
    sim = torch.stack(sims).mean(0).view(3, 1, 8, 8)
    sim = F.interpolate(sim, size=64, mode="bilinear", align_corners=True)
    want = torch.cat([sim, 1 - sim], 1).softmax(1)[:, 1]
    torch.testing.assert_close(method.memory_map(tokens), want, rtol=1e-5, atol=1e-5)


def test_query_equal_to_support_gives_sigmoid_minus_one():
    m = create("kag_prompt", **{**TINY, "prompt_weight": 0.0, "text_score_weight": 0.0,
                                "map_score_weight": 1.0}).eval()
    x = images(2)
    m.setup_category("disc", x)
    out = m(x)
    expected = torch.sigmoid(torch.tensor(-1.0))
    torch.testing.assert_close(out.anomaly_map, torch.full((2, 64, 64), float(expected)), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.pred_score, torch.full((2,), float(expected)), atol=1e-5, rtol=0)


def test_fusion_and_score_use_the_config_weights():
    torch.manual_seed(0)
    m = create("kag_prompt", **{**TINY, "prompt_weight": 0.3, "text_score_weight": 0.25,
                                "map_score_weight": 0.6, "topk": 7}).eval()
    m.setup_category("disc", images(1, seed=5))
    x = images()
    out = m(x)
    feats = m.encode(x)
    probs, cosines = m.prompt_branch(feats, m.text_features)
    fused = 0.3 * probs.mean(1) + 0.7 * m.memory_map(feats.tokens)
    torch.testing.assert_close(out.anomaly_map, fused)
    top = fused.flatten(1).sort(dim=1, descending=True).values[:, :7].mean(1)
    torch.testing.assert_close(out.pred_score, 0.25 * cosines[:, 1] + 0.6 * top)


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    m = create("kag_prompt", **{**TINY, "aggregation": "attention", "rounds": 2})
    with torch.no_grad():  # make the BatchNorm statistics part of what must round-trip
        m.graph.readout[1].running_mean.normal_()
    m.eval()
    path = m.save_checkpoint(tmp_path / "final.pt")
    back = load_checkpoint(path).eval()
    assert back.config == m.config
    sup, x = images(2, seed=7), images()
    m.setup_category("disc", sup)
    back.setup_category("disc", sup)
    a, b = m(x), back(x)
    torch.testing.assert_close(a.pred_score, b.pred_score)
    torch.testing.assert_close(a.anomaly_map, b.anomaly_map)


def test_loss_by_hand_and_gradients_reach_every_module(method):
    torch.manual_seed(0)
    m = create("kag_prompt", **TINY).train()
    x = images(4)
    mask = torch.zeros(4, 64, 64)
    mask[1, 10:30, 20:40] = 0.8
    mask[3, :5, :5] = 0.2   # below the 0.3 threshold: a normal image
    batch = {"image": x, "mask": mask, "category": ["disc", "disc", "cross", "cross"]}
    cfg = KagLossConfig()
    losses = kag_loss(m, batch, cfg)
    losses["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.trainable_parameters())
    # reference: per map focal + 0.3 (dice(p, gt) + dice(1 - p, 1 - gt)), summed over the 8 maps, + BCE
    with torch.no_grad():  # same batch in train mode: the same BatchNorm statistics
        text = torch.stack([m.text_for(c) for c in batch["category"]])
        probs, cos = m.prompt_branch(m.encode(x), text)
    gt = (mask > 0.3).float()
    label = torch.tensor([0, 1, 0, 0])

    def focal(p, y):
        p = p.clamp(1e-5, 1 - 1e-5)
        return (-(y * (1 - p) ** 2 * p.log() + (1 - y) * p ** 2 * (1 - p).log())).mean()

    def dice(p, y):
        return (1 - (2 * (p * y).flatten(1).sum(1) + 1) / (p.flatten(1).sum(1) + y.flatten(1).sum(1) + 1)).mean()
    pixel = sum(focal(probs[:, i], gt) + 0.3 * (dice(probs[:, i], gt) + dice(1 - probs[:, i], 1 - gt))
                for i in range(8))
    bce = F.binary_cross_entropy(torch.sigmoid(cos), F.one_hot(label, 2).float())
    torch.testing.assert_close(losses["loss"].detach(), pixel + bce, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(losses["image_bce"].detach(), bce, rtol=1e-4, atol=1e-6)


def test_kernel_set_is_a_parameter():
    from fsadlib.methods.kag_prompt.model import KagPromptConfig

    cfg = KagPromptConfig(backbone=BackboneConfig(arch="tiny"), layers=(3, 6), proj_dim=24, kernels=[[3, 3]])
    assert cfg.kernels == ((3, 3),)
    m = create("kag_prompt", backbone={"arch": "tiny"}, layers=[3, 6], proj_dim=24, kernels=[[1, 4], [3, 3]])
    assert [tuple(c.kernel_size) for c in m.kernel_convs.convs] == [(1, 4), (3, 3)]
    with pytest.raises(ValueError, match="kernels"):
        KagPromptConfig(kernels=[])
