"""FineGrainedAD equals the port of its prompts, scoring and MLSA losses (``port_finegrained``) with the
same random prompt parameters: maps and scores (both presets), the ``paper`` training loss and its
gradients to 1e-5, and the region weights guided by the NORMAL entity and background features."""

from __future__ import annotations

from dataclasses import replace

import port_finegrained
import pytest
import torch

from fsadlib.captions import Captions
from fsadlib.clip import BackboneConfig, ClipBackbone
from fsadlib.methods.finegrained.model import FineGrainedAD, FineGrainedConfig
from fsadlib.methods.finegrained.prompts import build_texts
from fsadlib.methods.finegrained.regions import region_weights
from fsadlib.methods.finegrained.train import finegrained_loss, training_batch

CONFIG = FineGrainedConfig(backbone=BackboneConfig(arch="tiny"), captions_dataset="toy", region_upscale=2, sigma=1.5)


def widget() -> Captions:
    return Captions(dataset="toy", category="widget", class_name="widget", foreground="widget", background="black",
                    entity=("cap", "body"), number=("one", "one"), location=("top", "center"),
                    relation="the cap is above the body", color=("red", "blue"), texture=("smooth", "rough"),
                    shape=("round", "square"), entity_caption=("a red cap at the top", "a blue body at the center"),
                    caption="a photo of a widget on a black background.",
                    anomaly_phrases=("{} with hole", "broken {}", "{} with scratch"))


@pytest.fixture(scope="module")
def backbone():
    return ClipBackbone(CONFIG.backbone)


@pytest.fixture(scope="module")
def supports():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))


def make(backbone, supports, preset):
    torch.manual_seed(0)
    m = FineGrainedAD(replace(CONFIG, preset=preset), backbone_model=backbone)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():                      # non-trivial contexts and distinct attribute weights
        for p in m.prompts.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g))
    m.set_captions(widget())
    m.setup_category("widget", supports)
    return m


def weights(m, grad=False):
    return {n: t.detach().clone().requires_grad_(grad) for n, t in m.state_dict().items()
            if not n.startswith("backbone.")}


@pytest.mark.parametrize("preset", ["paper", "workbench"])
def test_forward_equals_the_port(backbone, supports, preset):
    m = make(backbone, supports, preset).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = m(x)
    score, amap = port_finegrained.forward(weights(m), backbone, m.table, m.config, supports, x,
                                           paper=preset == "paper")
    torch.testing.assert_close(out.pred_score, score, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.anomaly_map, amap, rtol=0, atol=1e-5)


@pytest.mark.parametrize("preset", ["paper"])   # the workbench triplet: test_finegrained.py by hand
def test_training_loss_gradients_and_regions_equal_the_port(backbone, supports, preset):
    m = make(backbone, supports, preset).train()
    batch, _ = training_batch(m, supports, seed=0)
    loss = finegrained_loss(m, batch)["loss"]
    loss.backward()
    w = weights(m, grad=True)
    levels = port_finegrained.level_features(w, backbone, m.table)
    ref = port_finegrained.mlsa_loss(levels, batch["tokens"], batch["weights"], m.config, paper=preset == "paper")
    ref.backward()
    torch.testing.assert_close(loss.detach(), ref.detach(), rtol=0, atol=1e-5)
    for name, p in m.prompts.named_parameters():
        torch.testing.assert_close(p.grad, w["prompts." + name].grad, rtol=1e-4, atol=1e-5, msg=name)
    # MLSA's regions are guided by the normal entity and background features
    pair = port_finegrained.pairs([{k: v.detach() for k, v in f.items()} for f in levels])
    with torch.no_grad():
        want = region_weights(m.fine_tokens(supports), pair[2:, 0], pair[1, 0], CONFIG.region_upscale,
                              CONFIG.region_boost, CONFIG.dpc_k_background, CONFIG.dpc_k_entity,
                              generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(batch["weights"], want.weights, rtol=0, atol=1e-6)
    assert (batch["weights"][:, -1] != batch["weights"][:, 0]).any()   # background and entity 0 differ


def test_paper_texts_have_one_abnormal_caption_per_entity_and_randn_attribute_weights(backbone):
    paper, workbench = build_texts(widget(), 111, one_abnormal_per_entity=True), build_texts(widget(), 111)
    assert [len(lv.abnormal) for lv in paper.levels] == [3, 3, 1, 1]
    assert [len(lv.abnormal) for lv in workbench.levels] == [3, 3, 3, 3]
    for level, name in ((paper.levels[2], "cap"), (paper.levels[3], "body")):
        text = level.abnormal[0]
        assert sum(phrase.format(name) in text for phrase in widget().anomaly_phrases) == 1, text
    torch.manual_seed(0)
    logits = FineGrainedAD(replace(CONFIG, preset="paper"), backbone_model=backbone).prompts.attribute_logits
    assert logits.abs().min() > 0 and logits.std() > 0.1
    torch.manual_seed(0)
    assert not FineGrainedAD(CONFIG, backbone_model=backbone).prompts.attribute_logits.any()
