"""WinCLIP / WinCLIP+ on the tiny backbone (8 x 8 grid): windows and harmonic aggregation on a
hand-computed 3 x 3 grid, window embeddings against an explicit attention mask, the zero-shot map
against a slow loop reference, batch invariance, few-shot behaviour, checkpoint round trips."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fsadlib.methods import create, list_methods, spec_of
from fsadlib.methods.base import load_checkpoint
from fsadlib.methods.winclip.model import WinClip, WinClipConfig, WinClipPlus
from fsadlib.methods.winclip.windows import (
    coverage_matrix,
    encode_windows,
    harmonic_aggregation,
    window_indices,
)

TINY = {"backbone": {"arch": "tiny"}}


def images(n=3, seed=2):
    return torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def zero():
    m = create("winclip", **TINY)
    m.setup_category("metal_nut")
    return m


@pytest.fixture(scope="module")
def plus(zero):
    m = create("winclip_plus", backbone_model=zero.backbone, **TINY)
    m.setup_category("metal_nut", images(2, seed=1))
    return m


def test_registered_with_paper_defaults():
    assert {"winclip", "winclip_plus"} <= set(list_methods())
    assert not WinClip.few_shot and WinClipPlus.few_shot and not spec_of("winclip").trainable
    assert issubclass(WinClipPlus, WinClip)
    cfg = WinClipConfig()
    assert (cfg.backbone.arch, cfg.backbone.pretrained, cfg.backbone.image_size) == \
        ("ViT-B-16-plus-240", "laion400m_e31", 240)
    assert cfg.window_sizes == (2, 3) and cfg.temperature == 0.07 and cfg.patch_layer == 12


def test_paper_grid_window_counts():
    # ViT-B-16+ at 240 px: 15 x 15 patches -> 14*14 = 196 windows of 2x2 and 13*13 = 169 of 3x3
    assert window_indices((15, 15), 2).shape == (196, 4)
    assert window_indices((15, 15), 3).shape == (169, 9)


def test_windows_on_a_3x3_grid_by_hand():
    #  0 1 2
    #  3 4 5
    #  6 7 8
    assert window_indices((3, 3), 2).tolist() == [[0, 1, 3, 4], [1, 2, 4, 5], [3, 4, 6, 7], [4, 5, 7, 8]]
    assert window_indices((3, 3), 3).tolist() == [list(range(9))]
    assert window_indices((3, 3), 1).tolist() == [[p] for p in range(9)]
    cov = coverage_matrix(window_indices((3, 3), 2), 9)
    # which windows cover which patch: corners 1, edges 2, centre 4
    assert cov.sum(0).tolist() == [1, 2, 1, 2, 4, 2, 1, 2, 1]
    assert cov[:, 5].tolist() == [0, 1, 0, 1]
    with pytest.raises(ValueError, match="does not fit"):
        window_indices((3, 3), 4)


def test_harmonic_aggregation_by_hand():
    cov = coverage_matrix(window_indices((3, 3), 2), 9)
    scores = torch.tensor([[0.2, 0.4, 0.5, 1.0]])
    out = harmonic_aggregation(scores, cov)[0]
    expected = {0: 0.2, 1: 2 / (1 / 0.2 + 1 / 0.4), 2: 0.4, 4: 4 / (5 + 2.5 + 2 + 1), 5: 2 / (2.5 + 1),
                6: 0.5, 8: 1.0}
    for p, v in expected.items():
        assert out[p].item() == pytest.approx(v, rel=1e-6)
    # a zero score (a distance to an identical support window) drives its patches to ~0
    assert harmonic_aggregation(torch.tensor([[0.0, 0.4, 0.5, 1.0]]), cov)[0, 4].item() < 1e-7


def test_window_embeddings_equal_attention_masked_full_sequence(zero):
    bb = zero.backbone
    visual = bb.model.visual
    x = images(2)
    windows = [window_indices(bb.grid, 2)[[0, 13, 48]], window_indices(bb.grid, 3)[[0, 35]]]
    fast = encode_windows(bb, x, windows)
    with torch.no_grad():
        tokens = visual._embeds(x)                           # [B, 1+N, Cv]
        t = tokens.shape[1]
        for idx, emb in zip(windows, fast):
            for j, win in enumerate(idx):
                keep = torch.zeros(t, dtype=torch.bool)
                keep[0] = True
                keep[win + 1] = True
                allowed = (keep[:, None] & keep[None, :]) | torch.eye(t, dtype=torch.bool)
                mask = torch.zeros(t, t).masked_fill(~allowed, float("-inf"))
                out = visual.transformer(tokens, attn_mask=mask)
                pooled, _ = visual._pool(out)
                torch.testing.assert_close(emb[:, j], pooled @ visual.proj, atol=1e-5, rtol=1e-4)


def slow_harmonic(scores, windows, n):
    """Reference: loop over patches, harmonic mean of the windows that contain the patch."""
    out = torch.zeros(scores.shape[0], n)
    for p in range(n):
        hit = [j for j, w in enumerate(windows.tolist()) if p in w]
        out[:, p] = len(hit) / (1 / scores[:, hit]).sum(1)
    return out


def test_zero_shot_map_and_score_against_a_loop_reference(zero):
    bb = zero.backbone
    x = images(2)
    out = zero(x)
    text = zero.bank.text
    emb = bb.encode_image(x).embedding
    prob = lambda f: (F.normalize(f, dim=-1) @ text.T / 0.07).softmax(-1)[..., 1]
    image = prob(emb)
    torch.testing.assert_close(out.pred_score, image)
    maps = [slow_harmonic(prob(w), idx, 64) for w, idx in zip(encode_windows(bb, x, zero.windows), zero.windows)]
    m0 = 3 / (1 / maps[0] + 1 / maps[1] + 1 / image[:, None])
    up = F.interpolate(m0.view(2, 1, 8, 8), size=(64, 64), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(out.anomaly_map, up, atol=1e-5, rtol=1e-4)


def test_shapes_and_batch_invariance(zero, plus):
    x = images(2)
    for m in (zero, plus):
        out = m(x)
        assert out.pred_score.shape == (2,) and out.anomaly_map.shape == (2, 64, 64)
        assert torch.isfinite(out.anomaly_map).all()
        single = [m(x[i:i + 1]) for i in range(2)]
        torch.testing.assert_close(out.pred_score, torch.cat([s.pred_score for s in single]), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(out.anomaly_map, torch.cat([s.anomaly_map for s in single]), atol=1e-5, rtol=1e-4)
    bank = plus.bank
    assert [w.shape for w in bank.windows] == [(2 * 49, 24), (2 * 36, 24)] and bank.patches.shape == (2 * 64, 48)
    assert bank.k == 2 and zero.bank.windows is None and zero.bank.k == 0


def test_few_shot_behaviour(zero, plus):
    supports = images(2, seed=1)
    q = torch.cat([supports[:1], images(1, seed=7)])
    zs, fs = zero(q), plus(q)
    with torch.no_grad():
        feats = plus.backbone.encode_image(q, layers=[12])
        fmap = plus.few_shot_map(feats.tokens[0], encode_windows(plus.backbone, q, plus.windows), plus.bank)
    assert fmap[0].abs().max().item() < 1e-5          # a query equal to a support: zero few-shot map
    assert fmap[1].min().item() > 1e-4                # another image: positive distances everywhere
    # WinCLIP+ = zero-shot map + few-shot map; score = (text score + max few-shot map) / 2
    torch.testing.assert_close(fs.anomaly_map[0], zs.anomaly_map[0], atol=1e-5, rtol=1e-4)
    assert (fs.anomaly_map[1] > zs.anomaly_map[1]).all()
    torch.testing.assert_close(fs.pred_score, (zs.pred_score + fmap.amax(1)) / 2)


def test_setup_contract_and_cache(zero):
    p = create("winclip_plus", backbone_model=zero.backbone, **TINY)
    with pytest.raises(RuntimeError, match=r"call setup_category\(category_key, supports\)"):
        p(images(1))
    with pytest.raises(RuntimeError, match=r"call setup_category\(category_key\) "):
        create("winclip", backbone_model=zero.backbone, **TINY)(images(1))
    with pytest.raises(ValueError, match="needs supports"):
        p.setup_category("disc", None)
    with pytest.raises(ValueError, match=r"needs supports \[k, 3, S, S\], got \(3, 64, 64\)"):
        p.setup_category("disc", images(1)[0])
    s = images(1, seed=3)
    p.setup_category("disc", s)
    first = p.bank
    p.setup_category("disc", s.clone())               # same content: cached, nothing recomputed
    assert p.bank is first and p._banks.hits == 1
    p.setup_category("disc", images(1, seed=4))
    assert p.bank is not first
    z = create("winclip", backbone_model=zero.backbone, **TINY)
    z.setup_category("disc", s)                       # zero-shot ignores supports
    assert z.bank.windows is None and z.category == "disc"


def test_bad_parameters_name_the_key():
    with pytest.raises(ValueError, match="winclip.window_sizes"):
        create("winclip", backbone={"arch": "tiny"}, window_sizes=[2, 9])
    with pytest.raises(ValueError, match="winclip.patch_layer"):
        create("winclip", backbone={"arch": "tiny"}, patch_layer=13)
    with pytest.raises(ValueError, match="winclip.temperature"):
        WinClipConfig(temperature=0)
    with pytest.raises(ValueError, match=r"sides >= 1, got \(0, 2\)"):
        WinClipConfig(window_sizes=(0, 2))
    assert WinClipConfig(window_sizes=(1, 2)).window_sizes == (1, 2)  # a one-patch window is a window
    with pytest.raises(KeyError, match="scales"):
        create("winclip", scales=[2, 3], **TINY)


def test_checkpoint_round_trip(tmp_path, zero, plus):
    x = images(2, seed=5)
    supports = images(2, seed=1)
    for m in (zero, plus):
        ckpt = m.save_checkpoint(tmp_path / m.name / "final.pt")
        loaded = load_checkpoint(ckpt, backbone_model=None if m is zero else zero.backbone)
        assert type(loaded) is type(m) and loaded.config == m.config
        for method in (m, loaded):
            method.setup_category("metal_nut", supports)
        a, b = m(x), loaded(x)
        torch.testing.assert_close(a.pred_score, b.pred_score)
        torch.testing.assert_close(a.anomaly_map, b.anomaly_map)
