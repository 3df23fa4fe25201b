"""KAG-prompt speed and memory at the paper configuration (ViT-H-14 at 224 px, random weights).

Reference: the public code's test path, re-implemented here as it runs there: one image at a time,
fp32, the 24 prompts tokenised and encoded for every query, the query encoded twice (maps / CLS, then
the memory bank), the k supports encoded again for every query, the graph as a dense per-image
module (:mod:`fsadlib.methods.kag_prompt.reference`), support matching with a broadcast
``F.cosine_similarity`` ([N, k*N, Cv]). Ours: text and support features cached per category, one
batched backbone pass, the torch-geometric graph, matmul nearest neighbours, bf16 autocast on CUDA.
Both use the same module weights; their maps and scores are checked equal (in fp32) before timing.

Training step: ours (batched graph, one batch) vs the reference graph (per-image loop, as the public
code), both with backward and an optimizer step, at ``--train-batch`` images (paper: 36 = 18 normal
images + their synthetic anomalies per GPU).

    python benchmarks/bench_kag_prompt.py                     # CUDA when present, else CPU
    python benchmarks/bench_kag_prompt.py --images 2 --train-batch 2 --shots 1   # small CPU run

Prints a JSON line per measurement and the ratios ours / reference; ``--out`` writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from timing import measure

from fsadlib.io import write_json
from fsadlib.methods import create
from fsadlib.methods.kag_prompt.model import KagPrompt
from fsadlib.methods.kag_prompt.reference import dense_layer_graph
from fsadlib.methods.kag_prompt.train import KagLossConfig, kag_loss
from fsadlib.prompts import build_prompts, class_name
from fsadlib.prompts.ensemble import ABNORMAL_STATES_KAG, NORMAL_STATES, TEMPLATES_KAG


def hooked_forward(method: KagPrompt, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The public code's encoder call: a full fp32 forward, taps read by hooks (CLS dropped)."""
    model = method.backbone.model
    taps: dict[int, torch.Tensor] = {}
    hooks = [model.visual.transformer.resblocks[l - 1].register_forward_hook(
        lambda _m, _i, out, l=l: taps.__setitem__(l, out[:, 1:])) for l in method.config.layers]
    try:
        embedding = model.encode_image(images)
    finally:
        for h in hooks:
            h.remove()
    return embedding, [taps[l] for l in method.config.layers]


def public_text(method: KagPrompt, category: str) -> torch.Tensor:
    model, prompts = method.backbone.model, build_prompts(class_name(category), NORMAL_STATES,
                                                          ABNORMAL_STATES_KAG, TEMPLATES_KAG)
    rows = []
    for group in (prompts.normal, prompts.abnormal):
        e = F.normalize(model.encode_text(method.backbone.tokenize(group)), dim=-1)
        rows.append(F.normalize(e.mean(0), dim=-1))
    return torch.stack(rows)


def public_inference(method: KagPrompt, query: torch.Tensor, supports: torch.Tensor, category: str
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """One query [1, 3, S, S] -> (map [1, S, S], score [1]) the way the public test loop computes it."""
    cfg, bb = method.config, method.backbone
    text = public_text(method, category)
    embedding, tokens = hooked_forward(method, query)
    nodes = method.kernel_convs(method.projection(tokens, bb.grid))
    maps = torch.cat([dense_layer_graph(method.graph, nodes), nodes], dim=1)[0]
    probs = []
    for f in maps:                                   # [C, h, w] each
        t = F.normalize(f.flatten(1).T, dim=-1)
        logit = (cfg.logit_scale * t @ text.T).T.reshape(1, 2, *bb.grid)
        logit = F.interpolate(logit, size=bb.image_size, mode="bilinear", align_corners=True)
        probs.append(logit.softmax(1)[:, 1])
    prompt_map = torch.stack(probs).mean(0)
    _, q_tokens = hooked_forward(method, query)      # second forward of the same query
    _, s_tokens = hooked_forward(method, supports)   # supports, not cached
    sims = [F.cosine_similarity(q[0][:, None], s.reshape(1, -1, s.shape[-1]), dim=2).amax(1)
            for q, s in zip(q_tokens, s_tokens)]
    sim = torch.stack(sims).mean(0).reshape(1, 1, *bb.grid)
    sim = F.interpolate(sim, size=bb.image_size, mode="bilinear", align_corners=True)
    memory_map = torch.cat([sim, 1 - sim], 1).softmax(1)[:, 1]
    fused = cfg.prompt_weight * prompt_map + (1 - cfg.prompt_weight) * memory_map
    cls = F.normalize(method.adapter(F.normalize(embedding, dim=-1)), dim=-1)
    s1 = (cls @ text.T)[:, 1]
    s2 = fused.flatten(1).topk(cfg.topk, dim=1).values.mean(1)
    return fused, cfg.text_score_weight * s1 + cfg.map_score_weight * s2




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="ViT-H-14")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--layers", type=int, nargs="+", default=[8, 16, 24, 32])
    ap.add_argument("--proj-dim", type=int, default=1024)
    ap.add_argument("--images", type=int, default=None, help="test images (default 32 on CUDA, 2 on CPU)")
    ap.add_argument("--batch", type=int, default=None, help="our inference batch (default 32 / 2)")
    ap.add_argument("--shots", type=int, default=4)
    ap.add_argument("--train-batch", type=int, default=None, help="training images (default 36 / 2)")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device.type == "cuda"
    n_img = args.images or (32 if gpu else 2)
    batch = args.batch or (32 if gpu else 2)
    n_train = args.train_batch or (36 if gpu else 2)
    torch.manual_seed(0)
    backbone = {"arch": args.arch, "pretrained": None, "image_size": args.image_size, "precision": args.precision}
    method = create("kag_prompt", backbone=backbone, layers=args.layers, proj_dim=args.proj_dim).to(device).eval()
    s = method.backbone.image_size
    g = torch.Generator().manual_seed(1)
    queries = torch.randn(n_img, 3, s, s, generator=g).to(device)
    supports = torch.randn(args.shots, 3, s, s, generator=g).to(device)
    results: dict = {"device": torch.cuda.get_device_name() if gpu else "cpu", "arch": args.arch,
                     "image_size": s, "shots": args.shots, "precision": args.precision,
                     "trainable_params_m": sum(p.numel() for p in method.trainable_parameters()) / 1e6}

    # equality in fp32 on one image (ours under bf16 on CUDA differs by rounding only)
    with torch.no_grad():
        ref_map, ref_score = public_inference(method, queries[:1], supports, "metal_nut")
        method.setup_category("metal_nut", supports)
        ours = method(queries[:1])
    results["max_abs_diff_map"] = float((ours.anomaly_map - ref_map).abs().max())
    results["abs_diff_score"] = float((ours.pred_score - ref_score).abs().max())
    if args.precision == "fp32" or not gpu:
        assert results["max_abs_diff_map"] < 1e-3 and results["abs_diff_score"] < 1e-3, results

    rec_ref: dict = {}
    with torch.no_grad(), measure(device, rec_ref):
        for q in queries.split(1):
            public_inference(method, q, supports, "metal_nut")
    rec_setup: dict = {}
    with torch.no_grad(), measure(device, rec_setup):
        method.backbone.text_cache.clear()
        method.setup_category("metal_nut", supports)
    rec_ours: dict = {}
    with torch.no_grad(), measure(device, rec_ours):
        for q in queries.split(batch):
            method(q)
    results["inference"] = {
        "reference": {**rec_ref, "img_per_s": n_img / rec_ref["seconds"]},
        "ours_setup_category": rec_setup,
        "ours": {**rec_ours, "img_per_s": n_img / rec_ours["seconds"], "batch": batch},
    }
    results["inference_speedup"] = rec_ref["seconds"] / rec_ours["seconds"]

    # one training step (forward, backward, AdamW step), ours vs the per-image reference graph
    x = torch.randn(n_train, 3, s, s, generator=g).to(device)
    mask = torch.zeros(n_train, s, s, device=device)
    mask[1::2, s // 4: s // 2, s // 4: s // 2] = 1.0
    batch_d = {"image": x, "mask": mask, "category": ["metal_nut"] * n_train}
    method.train()
    opt = torch.optim.AdamW(method.trainable_parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=1e-3)
    kag_loss(method, batch_d, KagLossConfig())["loss"].backward()  # warm-up (allocations, text cache)
    opt.zero_grad(set_to_none=True)
    train: dict = {}
    for name, graph_fn in (("ours", None), ("reference_graph", dense_layer_graph)):
        rec: dict = {}
        if graph_fn is not None:
            method.graph.forward = lambda nodes, fn=graph_fn: fn(method.graph, nodes)  # per-image loop
        try:
            with measure(device, rec):
                with method.backbone.autocast() if name == "ours" else torch.autocast(device.type, enabled=False):
                    loss = kag_loss(method, batch_d, KagLossConfig())["loss"]
                loss.backward()
                torch.nn.utils.clip_grad_norm_(method.trainable_parameters(), 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
        finally:
            method.graph.__dict__.pop("forward", None)
        train[name] = {**rec, "img_per_s": n_train / rec["seconds"], "images": n_train}
    results["train_step"] = train
    results["train_speedup"] = train["reference_graph"]["seconds"] / train["ours"]["seconds"]
    print(json.dumps(results, indent=2))
    if args.out is not None:
        write_json(args.out, results)


if __name__ == "__main__":
    main()
