"""WinCLIP / WinCLIP+ speed and memory at the paper configuration (ViT-B-16-plus-240 at 240 px,
15 x 15 grid, 196 + 169 windows; random weights: weights do not change speed).

Reference: the public re-implementation's test path (zqhang/Accurate-WinCLIP-pytorch, the one the
AnomalyCLIP / AdaptCLIP tables use), re-implemented here as it runs there: fp32; windows gathered by a
Python loop of ``index_select`` over every window (masks from ``unfold`` of a 1-based index board),
each scale's windows then run as short sequences (CLS + window tokens) through all blocks; harmonic
aggregation by a Python loop over patches with one ``torch.isin`` per (patch, window) pair; few-shot
distances by ``bmm`` against the class memory. Ours: index gather of all windows of all images in one
batch per scale, a coverage matrix computed once (harmonic aggregation = one matmul), chunked matmul
nearest neighbours, bf16 autocast on CUDA. Both use the same weights, text features and support
memory; their maps and scores are checked equal (ours in fp32) before timing.

Text features: random unit vectors (with random weights the ensemble is arbitrary anyway); they are
computed once per category and are not part of the per-image cost.

    python benchmarks/bench_winclip.py                              # CUDA when present, else CPU
    python benchmarks/bench_winclip.py --images 4 --batch 2         # small CPU run

Prints one JSON line per measurement and the ratios ours / reference; ``--out`` writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from fsadlib.clip import BackboneConfig
from fsadlib.io import write_json
from fsadlib.methods.winclip.model import WinClip, WinClipBank, WinClipConfig, WinClipPlus


# -- the reference path (public code structure) -----------------------------------------------------
def reference_masks(grid: tuple[int, int], size: int) -> torch.Tensor:
    """[size*size, W] 1-based patch indices of every window (the public ``patch_scale.make_mask``)."""
    board = torch.arange(1, grid[0] * grid[1] + 1, dtype=torch.float32).reshape(1, 1, *grid)
    return F.unfold(board, kernel_size=size, stride=1).squeeze(0)


def reference_encode(visual, images: torch.Tensor, masks: list[torch.Tensor]):
    """(per-scale window embeddings [B, W, D], CLS embedding [B, D], raw last-block tokens [B, N, Cv])."""
    b = images.shape[0]
    x = visual.conv1(images).flatten(2).permute(0, 2, 1)
    x = torch.cat([visual.class_embedding.to(x.dtype) + torch.zeros(b, 1, x.shape[-1], dtype=x.dtype,
                                                                    device=x.device), x], dim=1)
    x = x + visual.positional_embedding.to(x.dtype)
    windows = []
    for mask in masks:
        rows = mask.T.int()
        rows = torch.cat([torch.zeros(rows.shape[0], 1, dtype=torch.int32, device=rows.device), rows], dim=1)
        selected = torch.cat([torch.index_select(x, 1, r) for r in rows])   # Python loop over windows
        out = visual.transformer(visual.ln_pre(selected))
        pooled = visual.ln_post(out[:, 0]) @ visual.proj
        windows.append(pooled.reshape(rows.shape[0], b, -1).permute(1, 0, 2))
    out = visual.transformer(visual.ln_pre(x))
    return windows, visual.ln_post(out[:, 0]) @ visual.proj, out[:, 1:]


def reference_harmonic(scores: torch.Tensor, mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """The public harmonic aggregation: loop over patches, ``torch.isin`` per window."""
    b, n = scores.shape[0], grid[0] * grid[1]
    scores = scores.double()
    out = torch.zeros(b, n, dtype=torch.float64, device=scores.device)
    windows = mask.T
    for idx in range(n):
        hit = [bool(torch.isin(idx + 1, w)) for w in windows]
        out[:, idx] = sum(hit) / torch.sum(1.0 / scores[:, hit], dim=-1)
    return out


def reference_distance(tokens: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """1/2 min(1 - cos) of every token [B, W, C] against the memory [M, C] by one bmm."""
    bank = F.normalize(memory, dim=-1).T.unsqueeze(0).expand(tokens.shape[0], -1, -1)
    return 0.5 * torch.min(1.0 - torch.bmm(F.normalize(tokens, dim=-1), bank), dim=-1)[0]


def reference_forward(method: WinClip, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    bb, bank = method.backbone, method.bank
    grid, sizes = bb.grid, method.config.window_sizes
    masks = [reference_masks(grid, s).to(images.device) for s in sizes]
    windows, cls, tokens = reference_encode(bb.model.visual, images, masks)
    prob = lambda f: (F.normalize(f, dim=-1) @ bank.text.T / method.config.temperature).softmax(-1)[..., 1]
    z = prob(cls).double()
    maps = [reference_harmonic(prob(w), m, grid) for w, m in zip(windows, masks)]
    score_map = (len(maps) + 1) / (sum(1.0 / m for m in maps) + 1.0 / z[:, None])
    if method.few_shot:
        fs = [reference_distance(tokens, bank.patches).double()]
        fs += [reference_harmonic(reference_distance(w, r), m, grid) for w, r, m in zip(windows, bank.windows, masks)]
        few = sum(fs) / len(fs)
        score_map = score_map + few
        z = (z + few.max(dim=1)[0]) / 2
    up = F.interpolate(score_map.float().view(-1, 1, *grid), size=images.shape[-2:], mode="bilinear")
    return z.float(), up[:, 0]


# -- measurement ------------------------------------------------------------------------------------
def build(cls: type[WinClip], args: argparse.Namespace, precision: str, device: torch.device, backbone=None
          ) -> WinClip:
    cfg = WinClipConfig(backbone=BackboneConfig(arch=args.arch, pretrained=None, image_size=args.image_size,
                                                precision=precision))
    return cls(cfg, backbone_model=backbone).to(device)


def set_bank(method: WinClip, text: torch.Tensor, supports: torch.Tensor) -> None:
    if not method.few_shot:
        method.bank = WinClipBank("bench", text)
        return
    with torch.no_grad():
        windows, patches = method.support_banks(method.encode_supports(supports))
    method.bank = WinClipBank("bench", text, windows, patches, k=supports.shape[0])


def measure(fn: Callable[[torch.Tensor], object], images: torch.Tensor, batch: int, device: torch.device) -> dict:
    """img/s over ``images`` in batches (after one warm-up batch) and peak extra CUDA memory."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.no_grad():
        fn(images[:batch])
        sync()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() if device.type == "cuda" else 0
        start = time.perf_counter()
        for i in range(0, images.shape[0], batch):
            fn(images[i:i + batch])
        sync()
        seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if device.type == "cuda" else None
    return {"img_per_s": images.shape[0] / seconds, "ms_per_img": 1e3 * seconds / images.shape[0],
            "peak_extra_mib": peak}


def main() -> None:
    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="ViT-B-16-plus-240")
    ap.add_argument("--image-size", type=int, default=240)
    ap.add_argument("--images", type=int, default=64 if cuda else 4)
    ap.add_argument("--batch", type=int, default=32 if cuda else 2)
    ap.add_argument("--shots", type=int, default=1)
    ap.add_argument("--reference-images", type=int, default=0,
                    help="images timed on the (slow) reference path; default: --images")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    device = torch.device("cuda" if cuda else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    gen = torch.Generator().manual_seed(0)
    zero = build(WinClip, args, "fp32", device)
    fp32 = {WinClip: zero, WinClipPlus: build(WinClipPlus, args, "fp32", device, zero.backbone)}
    bb = zero.backbone
    size = bb.image_size
    images = torch.randn(args.images, 3, size, size, generator=gen).to(device)
    supports = torch.randn(args.shots, 3, size, size, generator=gen).to(device)
    text = F.normalize(torch.randn(2, bb.embed_dim, generator=gen), dim=-1).to(device)
    n_ref = args.reference_images or args.images

    rows = []
    for cls in (WinClip, WinClipPlus):
        ours32 = fp32[cls]
        set_bank(ours32, text, supports)
        with torch.no_grad():
            check = images[:min(2, args.images)]
            ref_score, ref_map = reference_forward(ours32, check)
            out = ours32(check)
        diff = {"score_max_abs_diff": (out.pred_score - ref_score).abs().max().item(),
                "map_max_abs_diff": (out.anomaly_map - ref_map).abs().max().item()}
        assert diff["score_max_abs_diff"] < 1e-4 and diff["map_max_abs_diff"] < 1e-4, diff
        paths = {"reference_fp32": (lambda x, m=ours32: reference_forward(m, x), images[:n_ref]),
                 "ours_fp32": (ours32, images)}
        if cuda:  # bf16 autocast is the default precision on CUDA
            ours16 = build(cls, args, "auto", device)
            set_bank(ours16, text, supports)
            with torch.no_grad():
                diff["bf16_map_max_abs_diff"] = (ours16(check).anomaly_map - out.anomaly_map).abs().max().item()
            paths["ours_bf16"] = (ours16, images)
        for name, (fn, imgs) in paths.items():
            row = {"method": cls.name, "path": name, "device": torch.cuda.get_device_name() if cuda else "cpu",
                   "arch": args.arch, "image_size": size, "batch": args.batch, "images": imgs.shape[0],
                   "shots": args.shots if cls.few_shot else 0, **measure(fn, imgs, args.batch, device), **diff}
            print(json.dumps(row))
            rows.append(row)
    ratios = {}
    for method in ("winclip", "winclip_plus"):
        ref = next(r for r in rows if r["method"] == method and r["path"] == "reference_fp32")
        for r in rows:
            if r["method"] == method and r["path"] != "reference_fp32":
                ratios[f"{method}:{r['path']}/reference_fp32 speed-up"] = r["img_per_s"] / ref["img_per_s"]
    summary = {"rows": rows, "ratios": ratios,
               "cpu_max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print(json.dumps({"ratios": ratios, "cpu_max_rss_mib": summary["cpu_max_rss_mib"]}, indent=1))
    if args.out:
        write_json(args.out, summary)


if __name__ == "__main__":
    main()
