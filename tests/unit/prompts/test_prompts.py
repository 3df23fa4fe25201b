"""Prompt ensembles, class names and learnable tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fsadlib.clip import ClipBackbone
from fsadlib.prompts import LearnableTokens, build_prompts, class_name, ensemble_text_features
from fsadlib.prompts.ensemble import ABNORMAL_STATES_KAG, TEMPLATES_KAG


def test_class_names():
    assert class_name("pcb3") == "printed circuit board"
    assert class_name("metal_nut") == "metal nut"
    assert class_name("Wood_Grain") == "wood grain"
    assert class_name("pcb3", mapping={}) == "pcb3"


def test_prompt_counts_match_the_papers():
    inctrl = build_prompts("bottle")
    assert (len(inctrl.normal), len(inctrl.abnormal)) == (154, 88)  # 7 x 22 and 4 x 22 (InCTRL)
    assert inctrl.normal[0] == "a cropped photo of the bottle."
    assert "a photo of a flawless bottle for anomaly detection." in inctrl.normal
    kag = build_prompts("bottle", abnormal_states=ABNORMAL_STATES_KAG, templates=TEMPLATES_KAG)
    assert (len(kag.normal), len(kag.abnormal)) == (14, 10)
    assert "a photo of a broken bottle." in kag.abnormal


def test_ensemble_equals_slow_per_prompt_average():
    bb = ClipBackbone()
    got = ensemble_text_features(bb, "hazelnut", templates=TEMPLATES_KAG)
    prompts = build_prompts("hazelnut", templates=TEMPLATES_KAG)
    rows = []
    for group in (prompts.normal, prompts.abnormal):
        embs = torch.stack([F.normalize(bb.model.encode_text(bb.tokenize([p]))[0], dim=-1) for p in group])
        rows.append(F.normalize(embs.mean(0), dim=-1))
    assert got.shape == (2, bb.embed_dim)
    assert torch.allclose(got, torch.stack(rows), atol=1e-5)


def test_learnable_tokens_inject_per_set_with_offset():
    bb = ClipBackbone()
    tokens = LearnableTokens(n_sets=2, n_tokens=3, width=bb.text_width, mean=0.5, std=0.02)
    assert 0.45 <= float(tokens.tokens.mean()) <= 0.55 and float(tokens.tokens.max()) <= 0.54 + 1e-6
    ids = bb.tokenize(["X bottle", "X bottle"])
    offset = torch.ones(2, bb.text_width)
    emb, eot = tokens.embed(bb, ids, set_index=torch.tensor([1, 0]), replace=1, offset=offset)
    assert torch.allclose(emb[0, 1:4], tokens.tokens[1] + 1) and torch.allclose(emb[1, 1:4], tokens.tokens[0] + 1)
    assert torch.equal(eot, ids.argmax(-1) + 2)
    bb.encode_text_embeddings(emb, eot).sum().backward()
    assert tokens.tokens.grad.abs().sum() > 0
