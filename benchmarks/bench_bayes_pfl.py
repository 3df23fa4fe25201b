"""Bayes-PFL inference speed and memory at the paper configuration (ViT-L-14-336 at 518 px, random weights).

Reference: the public code's test path, re-implemented here as it runs there: batch 1, fp32,
hand-written attention (explicit softmax(QK^T / sqrt(d)) V, ``need_weights`` style) in both towers,
the flows sampled in a Python loop over the R samples, and the text tower called once per (state,
sample): 2 * R = 20 calls of B = 3 prompts = 60 prompt passes per image; RCA by einsum; the 2 * R * B
pixel logit maps upsampled to S and soft-maxed pair by pair; the Gaussian (sigma 8) by scipy on the
CPU. Ours: one batched backbone pass (open_clip SDPA attention), all N * R * 2 * B prompts of a batch
in ONE text call, vectorised flows / RCA / maps, the Gaussian on the device, bf16 autocast on CUDA.

Both use the same weights and the same seeded base noise; before timing, the image scores
(0.5 * text probability + 0.5 * top-k mean of the raw map, the same global rule) and the blurred maps
(interior, where scipy's and torch's border modes agree) are checked equal with ours in fp32.

    python benchmarks/bench_bayes_pfl.py                               # CUDA when present, else CPU
    python benchmarks/bench_bayes_pfl.py --image-size 224 --images 2   # small CPU run

Prints one JSON line per measurement and the ratios ours / reference; ``--out`` writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from timing import measure
from torch import nn

from fsadlib.clip import BackboneConfig, ClipBackbone
from fsadlib.io import write_json
from fsadlib.methods.bayes_pfl import BayesPFL, BayesPFLConfig


def manual_attention(attn: nn.MultiheadAttention, x: torch.Tensor, mask: torch.Tensor | None = None
                     ) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d_h) + mask) V with the weights of ``attn``; x [B, T, C] (public CLIP copy)."""
    b, t, c = x.shape
    h = attn.num_heads
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (y.view(b, t, h, c // h).transpose(1, 2) for y in (q, k, v))
    weights = q @ k.transpose(-1, -2) / math.sqrt(c // h)
    if mask is not None:
        weights = weights + mask
    out = (weights.softmax(-1) @ v).transpose(1, 2).reshape(b, t, c)
    return attn.out_proj(out)


def manual_blocks(blocks: nn.ModuleList, x: torch.Tensor, mask: torch.Tensor | None, taps=()):
    out = {}
    for i, blk in enumerate(blocks, start=1):
        x = x + blk.ls_1(manual_attention(blk.attn, blk.ln_1(x), mask))
        x = x + blk.ls_2(blk.mlp(blk.ln_2(x)))
        if i in taps:
            out[i] = x
    return x, out


def public_flow(mu, var, u, w, b, noise):
    """Per-sample loop as in the public PFL: noise [R, W] -> z_K [R, W]."""
    zs = []
    for r in range(noise.shape[0]):
        z = mu + var.sqrt() * noise[r]
        for k in range(u.shape[1]):
            h = torch.tanh((z * w[:, k]).sum(-1, keepdim=True) + b[:, k:k + 1])
            z = z + u[:, k] * h
        zs.append(z)
    return torch.cat(zs)


def public_text(method: BayesPFL, ids: torch.Tensor, z_ctx, z_state, states: torch.Tensor) -> torch.Tensor:
    """One text call per sample r for one state: B prompts each; returns [R * B, D]."""
    m, cfg = method.backbone.model, method.config
    n_ins = cfg.context_length + cfg.state_length
    base = m.token_embedding(ids)                                               # [1, L, W]
    eot = int(ids.argmax()) + n_ins - 1
    rows = []
    for r in range(z_ctx.shape[0]):
        inserted = torch.cat([method.context() + z_ctx[r], states + z_state[r]], dim=1)  # [B, P+Q, W]
        x = base.expand(inserted.shape[0], -1, -1)
        x = torch.cat([x[:, :1], inserted, x[:, 2:m.context_length - n_ins + 1]], dim=1) + m.positional_embedding
        x, _ = manual_blocks(m.transformer.resblocks, x, m.attn_mask)
        rows.append(m.ln_final(x)[:, eot] @ m.text_projection)
    return torch.cat(rows)


@torch.no_grad()
def public_inference(method: BayesPFL, image: torch.Tensor, n_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One image [1, 3, S, S] -> (fused score [1], blurred map [1, S, S]) as the public test loop."""
    cfg, bb = method.config, method.backbone
    visual = bb.model.visual
    x, taps = manual_blocks(visual.transformer.resblocks, visual._embeds(image), None, cfg.layers)
    pooled, _ = visual._pool(x)
    g = pooled @ visual.proj
    tokens = [taps[l][:, 1:] for l in cfg.layers]
    e_ctx, e_n, e_a = method.test_noise(1, n_samples)
    e_ctx = e_ctx[0]
    flow = method.context_flow
    mu, var = flow.encoder(g)
    k, width = cfg.n_flows, bb.text_width
    z_ctx = public_flow(mu, var, flow.amor_u(g).view(1, k, width), flow.amor_w(g).view(1, k, width),
                        flow.amor_b(g), e_ctx)
    z_states = []
    for dist, e in ((method.normal_flow, e_n), (method.abnormal_flow, e_a)):
        mu_s, var_s = method.state_encoder(dist.state)
        z_states.append(public_flow(mu_s, var_s, dist.u, dist.w, dist.b, e))
    ids = method.prompt_ids([method.category])
    text = torch.cat([public_text(method, ids, z_ctx, z_states[0], method.normal_state()),
                      public_text(method, ids, z_ctx, z_states[1], method.abnormal_state())])
    text = F.normalize(text, dim=-1)[None]                                     # [1, 2M, D]
    m = text.shape[1] // 2
    t = F.normalize(method.class_mapping(text), dim=-1)
    v = g if int(method.stage) == 1 else method.image_mapping(g + method.fuse(tokens))
    logits = method.log_scale_image.exp() * (t @ F.normalize(v, dim=-1).unsqueeze(2))[..., 0]
    text_prob = sum(torch.stack([logits[:, i], logits[:, i + m]], 1).softmax(-1)[0, 1] for i in range(m)) / m
    maps = []
    rca, h = method.rca, method.rca.heads
    for layer, tok in enumerate(tokens):
        p = F.normalize(tok @ rca.patch_proj[layer].weight.T, dim=-1)           # [1, n, D]
        q = (text @ rca.query.weight.T + rca.query.bias).view(1, 2 * m, h, -1)
        kv = p.view(1, p.shape[1], h, -1)
        att = (torch.einsum("bnkc,bmkc->bknm", q, kv) * text.shape[-1] ** -0.5).softmax(-1)
        t2 = F.normalize(torch.einsum("bknm,bmkc->bnkc", att, kv).reshape(1, 2 * m, -1) + text, dim=-1)
        logit = method.log_scale_pixel.exp() * p @ t2.transpose(1, 2)           # [1, n, 2M]
        logit = F.interpolate(logit.transpose(1, 2).reshape(1, 2 * m, *bb.grid), size=bb.image_size,
                              mode="bilinear", align_corners=True)
        for i in range(m):
            maps.append(torch.stack([logit[:, i], logit[:, i + m]], 1).softmax(1)[:, 1].cpu().numpy())
    raw = np.mean(maps, axis=0)                                                 # [1, S, S]
    flat = raw.reshape(-1)
    top = np.partition(flat, -cfg.topk)[-cfg.topk:].mean()
    score = cfg.text_weight * float(text_prob) + (1 - cfg.text_weight) * float(top)
    return torch.tensor([score]), torch.from_numpy(gaussian_filter(raw, sigma=cfg.sigma, axes=(1, 2)))




def run_ours(method: BayesPFL, images: torch.Tensor, batch: int, n_samples: int, precision: str = "fp32"):
    """Our batched path; ``precision`` is the backbone's (``bf16`` = autocast on CUDA)."""
    method.backbone.config = replace(method.backbone.config, precision=precision)
    scores, maps = [], []
    for i in range(0, images.shape[0], batch):
        out = method.predict(images[i:i + batch], n_samples)
        scores.append(out.pred_score)
        maps.append(out.anomaly_map)
    return torch.cat(scores).cpu(), torch.cat(maps).cpu()


def run_public(method: BayesPFL, images: torch.Tensor, n_samples: int):
    outs = [public_inference(method, images[i:i + 1], n_samples) for i in range(images.shape[0])]
    return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="ViT-L-14-336")
    ap.add_argument("--image-size", type=int, default=518)
    ap.add_argument("--layers", type=int, nargs="+", default=[6, 12, 18, 24])
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--samples", type=int, default=10, help="R")
    ap.add_argument("--stage", type=int, default=2, choices=(1, 2))
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = BayesPFLConfig(backbone=BackboneConfig(arch=args.arch, pretrained=None, image_size=args.image_size,
                                                 quick_gelu=False, precision="fp32"),
                         layers=tuple(args.layers), topk=max(1, round(2000 * (args.image_size / 518) ** 2)),
                         sigma=8.0 * args.image_size / 518, test_samples=args.samples)
    backbone = ClipBackbone(cfg.backbone).to(device)
    torch.manual_seed(0)
    method = BayesPFL(cfg, backbone_model=backbone).to(device).eval()
    method.stage.fill_(args.stage)
    method.setup_category("hazelnut")
    g = torch.Generator().manual_seed(0)
    images = torch.randn(args.images, 3, args.image_size, args.image_size, generator=g).to(device)
    n_params = sum(p.numel() for p in method.trainable_parameters())
    header = {"device": str(device), "arch": args.arch, "image_size": args.image_size, "grid": list(backbone.grid),
              "images": args.images, "batch": args.batch, "R": args.samples, "B": cfg.bank_size,
              "stage": args.stage, "trainable_params": n_params, "torch": torch.__version__}
    print(json.dumps(header))

    # equal outputs (ours in fp32) on the first image(s)
    check = images[:min(2, args.images)]
    ref_s, ref_m = run_public(method, check, args.samples)
    our_s, our_m = run_ours(method, check, args.batch, args.samples)
    pad = int(4 * cfg.sigma + 0.5)
    interior = (slice(None), slice(pad, -pad), slice(pad, -pad))
    diff = {"score_max_abs_diff": float((ref_s - our_s).abs().max()),
            "map_max_abs_diff_interior": float((ref_m[interior] - our_m[interior]).abs().max())}
    print(json.dumps(diff))
    assert diff["score_max_abs_diff"] < 1e-4 and diff["map_max_abs_diff_interior"] < 1e-4, diff

    records = {"equality": diff, "header": header}
    runs = [("public_fp32", lambda: run_public(method, images, args.samples))]
    for prec in ["fp32"] + (["bf16"] if device.type == "cuda" else []):
        runs.append((f"ours_{prec}", lambda prec=prec: run_ours(method, images, args.batch, args.samples, prec)))
    for name, fn in runs:
        if device.type == "cuda":
            fn()                                          # warm-up (CUDA kernels, allocator)
        rec: dict = {"path": name}
        with measure(device, rec):
            out = fn()
        rec["img_per_s"] = args.images / rec["seconds"]
        if name == "ours_bf16":
            rec["score_max_abs_diff_vs_public"] = float((out[0] - records["public_fp32"]["_out"][0]).abs().max())
        records[name] = {**rec, "_out": out}
        print(json.dumps(rec))
    base = records["public_fp32"]["img_per_s"]
    summary = {f"speedup_{n}": records[n]["img_per_s"] / base for n, _ in runs if n != "public_fp32"}
    if device.type == "cuda":
        summary.update({f"memory_ratio_{n}": records[n]["peak_mem_mib"] / records["public_fp32"]["peak_mem_mib"]
                        for n, _ in runs if n != "public_fp32"})
    print(json.dumps(summary))
    if args.out:
        write_json(args.out, {**{k: {kk: vv for kk, vv in v.items() if kk != "_out"} if isinstance(v, dict) else v
                                 for k, v in records.items()}, "summary": summary})


if __name__ == "__main__":
    main()
