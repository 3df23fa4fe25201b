"""KAG-prompt equals the port of the public test loop and training loss (``port_kag_prompt``) with the
same random weights: maps and scores (both presets: they differ only in training-mode BatchNorm),
and under ``preset: paper`` the training loss and every gradient, to 1e-5."""

from __future__ import annotations

import port_kag_prompt
import pytest
import torch

from fsadlib.methods import create
from fsadlib.methods.kag_prompt.train import KagLossConfig, kag_loss

TINY = {"backbone": {"arch": "tiny"}, "layers": [3, 6, 9, 12], "proj_dim": 24, "topk": 5, "rounds": 2}


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def backbone():
    return create("kag_prompt", **TINY).backbone


def make(backbone, preset):
    torch.manual_seed(0)
    m = create("kag_prompt", backbone_model=backbone, preset=preset, **TINY)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, t in m.state_dict().items():
            if name.startswith("backbone.") or not t.is_floating_point():
                continue
            t.copy_(0.5 + torch.rand(t.shape, generator=g) if name.endswith("running_var")
                    else 0.2 * torch.randn(t.shape, generator=g))
    return m


def weights(m, grad=False):
    return {n: t.detach().clone().requires_grad_(grad and "running" not in n and t.is_floating_point())
            for n, t in m.state_dict().items() if not n.startswith("backbone.")}


def test_test_loop_equals_the_port_under_both_presets(backbone):
    sup, x = rand(1, 3, 64, 64, seed=1), rand(2, 3, 64, 64, seed=2)
    out = {}
    for preset in ("paper", "workbench"):
        m = make(backbone, preset).eval()
        m.setup_category("metal_nut", sup)
        out[preset] = m(x)
    score, amap = port_kag_prompt.public_test(weights(m), backbone, x, sup, "metal_nut", m.config)
    for o in out.values():
        torch.testing.assert_close(o.anomaly_map, amap, rtol=0, atol=1e-5)
        torch.testing.assert_close(o.pred_score, score, rtol=0, atol=1e-5)


def test_paper_preset_training_loss_and_gradients_equal_the_port(backbone):
    m = make(backbone, "paper").train()
    x = rand(2, 3, 64, 64, seed=3)
    mask = torch.zeros(2, 64, 64)
    mask[1, 10:30, 20:40] = 0.8
    batch = {"image": x, "mask": mask, "category": ["metal_nut", "screw"]}
    loss = kag_loss(m, batch, KagLossConfig())["loss"]
    loss.backward()
    w = weights(m, grad=True)
    ref = port_kag_prompt.public_loss(w, backbone, x, mask, batch["category"], m.config)
    ref.backward()
    torch.testing.assert_close(loss.detach(), ref.detach(), rtol=0, atol=1e-5)
    for name, p in m.named_parameters():
        if not name.startswith("backbone."):
            torch.testing.assert_close(p.grad, w[name].grad, rtol=1e-4, atol=1e-5, msg=name)


def test_workbench_training_batchnorm_differs_from_the_public_per_node_statistics(backbone):
    x = rand(2, 3, 64, 64, seed=3)
    out = {}
    for preset in ("paper", "workbench"):
        m = make(backbone, preset).train()
        out[preset] = m.prompt_branch(m.encode(x), m.text_for("metal_nut"))[0]
    assert (out["paper"] - out["workbench"]).abs().max() > 1e-3
