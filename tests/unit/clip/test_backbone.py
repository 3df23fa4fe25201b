"""Backbone wrapper on the tiny model: taps, V-V path, pos-embed resize, text injection, loading."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from fsadlib.clip import BackboneConfig, ClipBackbone
from fsadlib.clip.backbone import value_value_attention


@pytest.fixture(scope="module")
def backbone() -> ClipBackbone:
    torch.manual_seed(0)
    return ClipBackbone(BackboneConfig(arch="tiny"))


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def test_taps_equal_forward_hook_outputs(backbone, images):
    seen = {}
    blocks = backbone.model.visual.transformer.resblocks
    hooks = [blk.register_forward_hook(lambda m, i, o, k=k: seen.__setitem__(k, o.detach()))
             for k, blk in enumerate(blocks, start=1)]
    try:
        feats = backbone.encode_image(images, layers=[7, 9, 11])
    finally:
        for h in hooks:
            h.remove()
    for layer, tok, cls in zip([7, 9, 11], feats.tokens, feats.cls_tokens):
        assert torch.equal(tok, seen[layer][:, 1:])
        assert torch.equal(cls, seen[layer][:, 0])
    assert torch.allclose(feats.embedding, backbone.model.encode_image(images), atol=1e-6)
    assert feats.tokens[0].shape == (3, 64, 48)


def test_vv_path_matches_explicit_softmax_and_leaves_original_untouched(backbone, images):
    plain = backbone.encode_image(images, layers=[12])
    feats = backbone.encode_image(images, layers=[12], vv_from=11, vv_layers=[11, 12])
    assert torch.equal(plain.tokens[0], feats.tokens[0])
    # slow reference: explicit softmax(V V^T / sqrt(d)) V per head, for blocks 11 and 12
    visual = backbone.model.visual
    x = visual._embeds(images)
    for blk in visual.transformer.resblocks[:10]:
        x = blk(x)
    vv = x
    outs = []
    for blk in visual.transformer.resblocks[10:]:
        attn, h = blk.attn, blk.attn.num_heads
        c = x.shape[-1]
        v = F.linear(blk.ln_1(x), attn.in_proj_weight[2 * c:], attn.in_proj_bias[2 * c:])
        v = v.view(*v.shape[:2], h, c // h).transpose(1, 2)
        w = torch.softmax(v @ v.transpose(-1, -2) / (c // h) ** 0.5, dim=-1)
        vv = vv + attn.out_proj((w @ v).transpose(1, 2).reshape(x.shape))
        outs.append(vv[:, 1:])
        x = blk(x)
    for got, want in zip(feats.vv_tokens, outs):
        assert torch.allclose(got, want, atol=1e-5)


def test_value_value_attention_is_sdpa_with_q_k_v_equal_v(backbone):
    attn = backbone.model.visual.transformer.resblocks[0].attn
    x = torch.randn(2, 5, 48)
    c = 48
    v = F.linear(x, attn.in_proj_weight[2 * c:], attn.in_proj_bias[2 * c:])
    out = value_value_attention(attn, x)
    # reference via nn.MultiheadAttention with q = k = v = V and identity input projections
    mha = torch.nn.MultiheadAttention(c, attn.num_heads, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.eye(c).repeat(3, 1))
        mha.in_proj_bias.zero_()
        mha.out_proj.load_state_dict(attn.out_proj.state_dict())
    want, _ = mha(v, v, v, need_weights=False)
    assert torch.allclose(out, want, atol=1e-5)


def test_layer_and_input_validation(backbone, images):
    with pytest.raises(ValueError, match="out of range"):
        backbone.encode_image(images, layers=[13])
    with pytest.raises(ValueError, match="images must be"):
        backbone.encode_image(torch.randn(1, 3, 32, 32))
    with pytest.raises(KeyError, match="not an open_clip model"):
        ClipBackbone(BackboneConfig(arch="ViT-Q-99"))
    with pytest.raises(ValueError, match="precision"):
        BackboneConfig(precision="fp8")


def test_injection_with_zero_tokens_reproduces_encode_text(backbone):
    texts = ["a photo of a damaged bottle.", "flawless hazelnut"]
    ids = backbone.tokenize(texts)
    emb, eot = backbone.inject(ids, torch.zeros(0, backbone.text_width), position=1)
    assert torch.equal(eot, ids.argmax(-1))
    assert torch.allclose(backbone.encode_text_embeddings(emb, eot), backbone.encode_text(texts), atol=1e-6)
    assert torch.allclose(backbone.encode_text(texts),
                          backbone.model.encode_text(ids), atol=1e-6)


def _tower_lengths(backbone, call):
    """The sequence lengths the text transformer runs on during ``call()``."""
    seen = []
    hook = backbone.model.transformer.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(args[0].shape[1]), with_kwargs=True)
    try:
        out = call()
    finally:
        hook.remove()
    return seen, out


def _full_context(backbone, emb, eot, mask):
    """The text tower on all L positions with ``mask`` (the read-out without the causal cut)."""
    m = backbone.model
    x = m.ln_final(m.transformer(emb + m.positional_embedding, attn_mask=mask))
    return x[torch.arange(len(eot)), eot] @ m.text_projection


def test_text_tower_runs_up_to_the_last_eot_only(backbone):
    texts = ["a photo of a damaged bottle with a long scratch on its side.", "flawless hazelnut"]
    ids = backbone.tokenize(texts)
    emb, eot = backbone.inject(ids, torch.randn(3, backbone.text_width), position=1)
    lengths, out = _tower_lengths(backbone, lambda: backbone.encode_text_embeddings(emb, eot))
    assert lengths == [int(eot.max()) + 1] and lengths[0] < backbone.context_length
    full = _full_context(backbone, emb, eot, backbone.model.attn_mask)
    assert torch.allclose(out, full, atol=1e-6) and not torch.equal(out[0], out[1])
    # without a causal mask every position is attended to: no cut, the full-context read-out
    causal = backbone.model.attn_mask
    backbone.model.attn_mask = None
    try:
        lengths, out = _tower_lengths(backbone, lambda: backbone.encode_text_embeddings(emb, eot))
    finally:
        backbone.model.attn_mask = causal
    assert lengths == [backbone.context_length]
    assert torch.allclose(out, _full_context(backbone, emb, eot, None), atol=1e-6)


def test_injection_shifts_eot_and_replaces_placeholder(backbone):
    ids = backbone.tokenize(["X bottle"])            # [SOS] X bottle [EOT]
    learn = torch.randn(1, 4, backbone.text_width, requires_grad=True)
    emb, eot = backbone.inject(ids, learn, position=1, replace=1)
    assert int(eot) == int(ids.argmax()) + 3
    plain = backbone.token_embeddings(ids)
    assert torch.equal(emb[0, 0], plain[0, 0])
    assert torch.equal(emb[0, 1:5], learn[0].detach())
    assert torch.equal(emb[0, 5:int(eot) + 1], plain[0, 2:int(ids.argmax()) + 1])
    out = backbone.encode_text_embeddings(emb, eot)
    out.sum().backward()
    assert learn.grad is not None and learn.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="EOT past"):
        backbone.inject(ids, torch.randn(1, 80, backbone.text_width))


def test_too_long_prompt_is_an_error_not_a_silent_cut(backbone):
    with pytest.raises(ValueError, match="longer than 77"):
        backbone.tokenize(["word " * 90])


def test_local_checkpoint_files_load_identically_and_pos_embed_resizes(backbone, images, tmp_path):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in backbone.model.state_dict().items()}
    torch.save(state, tmp_path / "tiny.pt")
    save_file(state, str(tmp_path / "tiny.safetensors"))
    want = backbone.encode_image(images, layers=[5])
    for name in ("tiny.pt", "tiny.safetensors"):
        loaded = ClipBackbone(BackboneConfig(arch="tiny", pretrained=str(tmp_path / name)))
        got = loaded.encode_image(images, layers=[5])
        assert torch.equal(got.embedding, want.embedding) and torch.equal(got.tokens[0], want.tokens[0])
    # native size given explicitly: the grid is unchanged
    same = ClipBackbone(BackboneConfig(arch="tiny", pretrained=str(tmp_path / "tiny.pt"), image_size=64))
    assert torch.equal(same.model.visual.positional_embedding, backbone.model.visual.positional_embedding)
    # larger input: 8x8 -> 12x12 grid, CLS row kept, grid resized bicubic with antialias
    big = ClipBackbone(BackboneConfig(arch="tiny", pretrained=str(tmp_path / "tiny.pt"), image_size=96))
    pos0, pos1 = backbone.model.visual.positional_embedding, big.model.visual.positional_embedding
    assert big.grid == (12, 12) and pos1.shape == (145, 48)
    assert torch.equal(pos1[0], pos0[0])
    grid = pos0[1:].reshape(1, 8, 8, 48).permute(0, 3, 1, 2)
    ref = F.interpolate(grid, size=(12, 12), mode="bicubic", antialias=True, align_corners=False)
    assert torch.allclose(pos1[1:], ref.permute(0, 2, 3, 1).reshape(144, 48), atol=1e-6)
    assert big.encode_image(torch.randn(1, 3, 96, 96), layers=[12]).tokens[0].shape == (1, 144, 48)


def test_bad_local_weights_name_the_file_and_never_suggest_unsafe_loading(backbone, tmp_path):
    state = {k: v.contiguous() for k, v in backbone.model.state_dict().items()}
    torch.save(state, tmp_path / "tiny.pt")
    (tmp_path / "truncated.pt").write_bytes((tmp_path / "tiny.pt").read_bytes()[:5000])
    torch.save({"w": torch.zeros(1), "hook": print}, tmp_path / "pickled.pt")
    torch.save({"visual.proj": torch.zeros(3)}, tmp_path / "other.pt")
    for name, reason in (("truncated.pt", "cannot load it into fsad-tiny"), ("pickled.pt", "refused to load"),
                         ("other.pt", "cannot load it into fsad-tiny")):
        with pytest.raises(ValueError, match=rf"backbone\.pretrained file .*{name}: {reason}") as info:
            ClipBackbone(BackboneConfig(arch="tiny", pretrained=str(tmp_path / name)))
        assert "weights_only=False" not in str(info.value) and "weights_only` set to `False" not in str(info.value)


def test_quick_gelu_flag_changes_the_activation():
    gelu = ClipBackbone(BackboneConfig(arch="tiny", quick_gelu=False))
    quick = ClipBackbone(BackboneConfig(arch="tiny", quick_gelu=True))
    act = lambda b: type(b.model.visual.transformer.resblocks[0].mlp.gelu).__name__
    assert act(gelu) == "GELU" and act(quick) == "QuickGELU"


def test_offline_hub_tag_fails_fast_with_instructions(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="local file path"):
        ClipBackbone(BackboneConfig(arch="ViT-B-16-plus-240", pretrained="laion400m_e32"))
    assert time.perf_counter() - t0 < 5
    with pytest.raises(KeyError, match="known tags"):
        ClipBackbone(BackboneConfig(arch="ViT-B-16-plus-240", pretrained="no-such-tag"))


def test_local_dir_arch_requires_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="open_clip_config.json"):
        ClipBackbone(BackboneConfig(arch=f"local-dir:{tmp_path}"))


def test_text_cache_hits(backbone):
    backbone.text_cache.clear()
    a = backbone.encode_text_cached(["a photo of a bottle."])
    b = backbone.encode_text_cached(["a photo of a bottle."])
    assert a is b and backbone.text_cache.hits == 1 and backbone.text_cache.misses == 1


def test_backbone_stays_in_eval_mode(backbone):
    backbone.train()
    assert not backbone.model.training


def test_input_size_without_building_the_model():
    from fsadlib.clip import BackboneConfig
    from fsadlib.clip.backbone import input_size

    assert input_size(BackboneConfig(arch="tiny")) == 64
    assert input_size(BackboneConfig(arch="ViT-L-14-336", pretrained=None)) == 336
    assert input_size(BackboneConfig(arch="ViT-H-14", image_size=518)) == 518
    with pytest.raises(KeyError, match="nope"):
        input_size(BackboneConfig(arch="nope"))
