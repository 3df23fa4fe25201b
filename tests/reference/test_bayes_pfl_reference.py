"""Bayes-PFL equals the port of the public prompt learner, test path and stage-1 loss
(``port_bayes_pfl``) with the same random weights and noise: scores, blurred maps, the loss and every
gradient to 1e-5 under ``preset: paper``; the workbench's test path is the same port with one noise
draw shared by all images and scipy's ``mirror`` borders."""

from __future__ import annotations

from dataclasses import replace

import port_bayes_pfl
import pytest
import torch

from fsadlib.clip import BackboneConfig, ClipBackbone
from fsadlib.methods.bayes_pfl.model import BayesPFL, BayesPFLConfig
from fsadlib.methods.bayes_pfl.train import BayesPFLTrainConfig, stage1_loss

TINY = BayesPFLConfig(backbone=BackboneConfig(arch="tiny"), layers=(3, 12), bank_size=2, context_length=2,
                      state_length=2, n_flows=3, test_samples=2, topk=30, sigma=1.5)


@pytest.fixture(scope="module")
def backbone():
    return ClipBackbone(TINY.backbone)


def make(backbone, preset):
    torch.manual_seed(0)
    return BayesPFL(replace(TINY, preset=preset), backbone_model=backbone)


def weights(m, grad=False):
    return {n: t.detach().clone().requires_grad_(grad and t.is_floating_point())
            for n, t in m.state_dict().items() if not n.startswith("backbone.")}


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_paper_test_path_equals_the_port_at_stage_2(backbone):
    m = make(backbone, "paper").eval()
    m.stage.fill_(2)
    m.setup_category("metal_nut")
    x = rand(2, 3, 64, 64, seed=1)
    out = m(x)
    g = torch.Generator().manual_seed(TINY.sample_seed)             # the documented draw order
    states = torch.randn(2, 2, 32, generator=g)
    ctx = torch.randn(2, 2, 32, generator=g)
    score, amap = port_bayes_pfl.public_test(weights(m), backbone, m.config, x, "metal_nut", ctx, *states)
    torch.testing.assert_close(out.pred_score, score, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.anomaly_map, amap, rtol=0, atol=1e-5)
    again = m(x[:1])                                                # the next image gets fresh context noise
    assert not torch.allclose(again.pred_score, out.pred_score[:1])


def test_workbench_test_path_equals_the_port_with_shared_noise(backbone):
    m = make(backbone, "workbench").eval()
    m.setup_category("metal_nut")
    x = rand(2, 3, 64, 64, seed=1)
    out = m(x)
    e = torch.randn(3, 2, 32, generator=torch.Generator().manual_seed(TINY.sample_seed))
    score, amap = port_bayes_pfl.public_test(weights(m), backbone, m.config, x, "metal_nut",
                                             e[0].expand(2, -1, -1), e[1], e[2], paper=False)
    torch.testing.assert_close(out.pred_score, score, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.anomaly_map, amap, rtol=0, atol=1e-5)


@pytest.mark.parametrize("preset", ["paper", "workbench"])
def test_stage1_loss_and_gradients_equal_the_port(backbone, preset):
    m = make(backbone, preset).train()
    mask = torch.zeros(2, 64, 64)
    mask[1, 8:30, 20:44] = 1
    batch = {"image": rand(2, 3, 64, 64, seed=2), "mask": mask, "label": torch.tensor([0, 1]),
             "category": ["metal_nut", "screw"]}
    torch.manual_seed(11)
    loss = stage1_loss(m, batch, BayesPFLTrainConfig())["loss"]
    loss.backward()
    torch.manual_seed(11)                                           # the same draws: noise, then bank entry
    noise = torch.randn(4, 1, 32)
    b = int(torch.randint(TINY.bank_size, ()))
    w = weights(m, grad=True)
    ref = port_bayes_pfl.stage1_loss(w, backbone, m.config, batch, noise, b, paper=preset == "paper")
    ref.backward()
    torch.testing.assert_close(loss.detach(), ref.detach(), rtol=0, atol=1e-5)
    for name, p in m.named_parameters():
        if not name.startswith("backbone.") and p.grad is not None:
            torch.testing.assert_close(p.grad, w[name].grad, rtol=1e-4, atol=1e-5, msg=name)
