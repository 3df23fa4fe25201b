"""InCTRL equals the port of the public forward and loss (``port_inctrl``) with the same random
weights: ``preset: paper`` at any batch size (scores, maps, loss, gradients to 1e-5), the workbench
at batch 1 (where the public layout is correct) and at any batch size query by query."""

from __future__ import annotations

import port_inctrl
import pytest
import torch

from fsadlib.methods import create
from fsadlib.methods.inctrl.train import InctrlLossConfig, inctrl_loss

TINY = {"backbone": {"arch": "tiny"}}
CATEGORIES = ["metal_nut", "metal_nut", "screw"]


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def randomised(method):
    """Non-trivial weights (biases included) and BatchNorm statistics, drawn from a fixed seed."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, t in method.trainable_state_dict().items():
            target = method.get_parameter(name) if name.endswith(("weight", "bias")) else method.get_buffer(name)
            if name.endswith("running_var"):
                target.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif t.is_floating_point():
                target.copy_(0.3 * torch.randn(t.shape, generator=g))
    return method


@pytest.fixture(scope="module")
def backbone():
    return create("inctrl", **TINY).backbone


def make(backbone, preset):
    torch.manual_seed(0)
    return randomised(create("inctrl", backbone_model=backbone, preset=preset, **TINY))


def weights(method, grad=False):
    return {n: t.detach().clone().requires_grad_(grad and t.is_floating_point() and "running" not in n)
            for n, t in method.state_dict().items() if not n.startswith("backbone.")}


def test_paper_preset_equals_the_public_test_path_at_batch_3(backbone):
    m = make(backbone, "paper").eval()
    sup, x = rand(2, 3, 64, 64, seed=1), rand(3, 3, 64, 64, seed=2)
    m.setup_category("metal_nut", sup)
    out = m(x)
    ref = port_inctrl.public_forward(weights(m), backbone, m.config.layers, x, sup.expand(3, -1, -1, -1, -1),
                                     ["metal_nut"] * 3)
    torch.testing.assert_close(out.pred_score, ref["final"], rtol=0, atol=1e-5)
    s = m.score(m.encode(x), m.prompts, m.text)
    for key in ("image", "holistic", "text"):
        torch.testing.assert_close(getattr(s, key), ref[key], rtol=0, atol=1e-5)
    torch.testing.assert_close(s.patch_map, ref["map"], rtol=0, atol=1e-5)


def test_workbench_equals_the_public_path_query_by_query(backbone):
    m = make(backbone, "workbench").eval()
    sup, x = rand(2, 3, 64, 64, seed=1), rand(3, 3, 64, 64, seed=2)
    m.setup_category("metal_nut", sup)
    out = m(x)
    for i in range(3):
        ref = port_inctrl.public_forward(weights(m), backbone, m.config.layers, x[i:i + 1], sup[None], ["metal_nut"])
        torch.testing.assert_close(out.pred_score[i:i + 1], ref["final"], rtol=0, atol=1e-5)


def test_paper_preset_loss_and_gradients_equal_the_public_training_step(backbone):
    m = make(backbone, "paper").train()
    batch = {"image": rand(3, 3, 64, 64, seed=3), "prompts": rand(3, 2, 3, 64, 64, seed=4),
             "label": torch.tensor([0.0, 1.0, 1.0]), "category": CATEGORIES}
    loss = inctrl_loss(m, batch, InctrlLossConfig())["loss"]
    loss.backward()
    w = weights(m, grad=True)
    ref = port_inctrl.public_loss(port_inctrl.public_forward(w, backbone, m.config.layers, batch["image"],
                                                             batch["prompts"], CATEGORIES, training=True),
                                  batch["label"])
    ref.backward()
    torch.testing.assert_close(loss.detach(), ref.detach(), rtol=0, atol=1e-5)
    for name, p in m.named_parameters():
        if not name.startswith("backbone."):
            torch.testing.assert_close(p.grad, w[name].grad, rtol=0, atol=1e-5, msg=name)
