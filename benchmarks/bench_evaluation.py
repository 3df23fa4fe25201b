"""Evaluation cost: the full plan (every k x seed) with and without encode-once against one run, and
the decoded-image cache against PIL decoding.

Per few-shot method, on one synthetic category of ``--images`` test images (half anomalous, masks,
``--source-size`` px PNGs) with k-shot files drawn from its train images, three timed evaluations in
one process, each into a fresh results folder (no resume), bootstrap off and maps not written (the
cost measured is reading, encoding and scoring; the metrics are the same per run in all three):

- ``single_s``:        one run, (k, seed) = (first k, first seed): the reference;
- ``plan_once_s``:     every (k, seed) of ``--ks`` x ``--seeds`` in one plan, encode-once (the default);
- ``plan_per_run_s``:  the same plan with ``evaluate.encode_once: 0`` (each run reads and encodes again).

``x_plan_once`` = plan_once_s / single_s (goal: at most 1.5 for every few-shot method),
``x_plan_per_run`` = plan_per_run_s / single_s, ``speedup`` = plan_per_run_s / plan_once_s.
Zero-shot methods have one run per plan and are not measured.

Decode throughput (``--decode-sizes``, one core: ``torch.set_num_threads(1)``, one process): images/s
of the PIL path (read by the one loader, geometry ``resize_crop``, PIL bicubic) and of the warm
decoded-image cache (:mod:`fsadlib.data.decoded`: a memory-mapped entry, CRC-checked, copied out) on
``--decode-images`` sources, half MVTec-like 1024 x 1024 PNGs, half VisA-like 1500 x 1000 JPEGs; the
pixels of both are checked equal. Goal: at least 1,000 images/s from the cache at 240 and 518 px.

Configurations (random weights: weights do not change speed): ``paper`` = each method's Config defaults
(the paper backbone and input size), ``tiny`` = the params.yaml ``model`` sections.

    python benchmarks/bench_evaluation.py --config paper --images 16 --ks 1 2 4 --seeds 0 1 2   # this CPU
    python benchmarks/bench_evaluation.py --config paper --images 160 --device cuda             # a GPU
    python benchmarks/bench_evaluation.py --methods --decode-sizes 240 518                     # decoding only
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fsadlib.config import from_dict, load_params
from fsadlib.data.dataset import fitted_pixels
from fsadlib.data.decoded import DecodedCache
from fsadlib.evaluate import EvalConfig, PlannedRun, evaluate_plan
from fsadlib.io import write_json
from fsadlib.layout import shot_file
from fsadlib.methods.registry import method_class

FEW_SHOT = ("winclip_plus", "inctrl", "kag_prompt", "finegrained")
SECTION = {"winclip_plus": "winclip"}   # params.yaml section of a method, when not its own name
CATEGORY = "disc"


def build(name: str, config: str, device: str, params: dict):
    """Method ``name`` at ``config`` ("paper" | "tiny": its section of ``params``), random weights,
    eval mode, on ``device``."""
    cls = method_class(name)
    if config == "tiny":
        section = params.get(SECTION.get(name, name), {})
        cfg = from_dict(cls.Config, section.get("model", section), name)
    else:
        cfg = cls.Config()
        cfg = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, pretrained=None))
    method = cls(cfg).eval().to(device)
    if name == "finegrained":
        method.set_captions(bench_captions(), locked=True)
    return method


def bench_captions():
    """Offline captions of one synthetic disc image (FineGrainedAD's prompts need a category's captions)."""
    from fsadlib.captions.offline import OfflineCaptioner
    from fsadlib.captions.vocab import anomaly_phrases
    from fsadlib.data.synthetic import normal_image

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "disc.png"
        Image.fromarray(normal_image(CATEGORY, np.random.default_rng(0), 128)).save(path)
        return OfflineCaptioner()([str(path)], "synthetic", CATEGORY, CATEGORY,
                                  anomaly_phrases("synthetic", CATEGORY))


def write_data(root: Path, n_images: int, ks: list[int], seeds: list[int], size: int):
    """A synthetic category of ``n_images`` test images and its k-shot files -> samples table."""
    from fsadlib.data.samples import read_samples
    from fsadlib.data.synthetic import generate

    generate(root / "synthetic", image_size=size, n_train=max(ks) + len(seeds), n_test_good=n_images // 2,
             n_test_bad=n_images - n_images // 2, categories=(CATEGORY,))
    table = read_samples("mvtec", root / "synthetic", "synthetic")
    train = table[table.split == "train"].image_path.tolist()
    for k in ks:
        for seed in seeds:
            write_json(shot_file("synthetic", CATEGORY, k, seed),
                       {"dataset": "synthetic", "category": CATEGORY, "k": k, "seed": seed,
                        "images": [train[(seed + i) % len(train)] for i in range(k)]})
    return table


def timed_plan(runs: list[PlannedRun], table, config: EvalConfig, out: Path) -> float:
    runs = [dataclasses.replace(r, out=out / f"k{r.k}" / f"seed{r.seed}") for r in runs]
    start = time.perf_counter()
    evaluate_plan(runs, "synthetic", config=config, samples=table)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def plan_costs(name: str, args: argparse.Namespace, params: dict, table, root: Path) -> dict:
    method = build(name, args.config, args.device, params)
    config = EvalConfig(batch_size=args.batch_size, bootstrap=0, save_maps=0)
    plan = [PlannedRun(method, k, s) for k in args.ks for s in args.seeds]
    row = {"method": name, "backbone": method.backbone.config.arch, "input_size": method.backbone.image_size,
           "images": args.images, "runs": len(plan)}
    timed_plan(plan[:1], table, config, root / f"{name}_warmup")        # text caches, allocator, kernels
    row["single_s"] = timed_plan(plan[:1], table, config, root / f"{name}_single")
    row["plan_once_s"] = timed_plan(plan, table, config, root / f"{name}_once")
    row["plan_per_run_s"] = timed_plan(plan, table, dataclasses.replace(config, encode_once=0), root / f"{name}_per_run")
    row["x_plan_once"] = row["plan_once_s"] / row["single_s"]
    row["x_plan_per_run"] = row["plan_per_run_s"] / row["single_s"]
    row["speedup"] = row["plan_per_run_s"] / row["plan_once_s"]
    return row


def write_sources(root: Path, n: int) -> list[Path]:
    """``n`` sources: half MVTec-like 1024 x 1024 PNGs, half VisA-like 1500 x 1000 JPEGs (quality 95),
    from the synthetic generator's grass texture."""
    from fsadlib.data.synthetic import normal_image

    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        image = Image.fromarray(normal_image("grass", np.random.default_rng(i), 1024))
        if i % 2 == 0:
            path = root / f"mvtec_{i:03d}.png"
            image.save(path)
        else:
            path = root / f"visa_{i:03d}.jpg"
            image.resize((1500, 1000)).save(path, quality=95)
        paths.append(path)
    return paths


def decode_rates(paths: list[Path], size: int, cache_root: Path) -> dict:
    """Images/s on one core of the PIL path and of the warm cache at ``size`` px (pixels checked equal)."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    direct = [fitted_pixels(p, size, "resize_crop") for p in paths]
    pil_s = time.perf_counter() - start
    cache = DecodedCache(cache_root)
    for p in paths:                                                     # build the entries
        fitted_pixels(p, size, "resize_crop", cache)
    start = time.perf_counter()
    cached = [np.array(fitted_pixels(p, size, "resize_crop", cache)) for p in paths]
    cache_s = time.perf_counter() - start
    if not all(np.array_equal(a, b) for a, b in zip(direct, cached)) or cache.hits != len(paths):
        raise AssertionError("the cache's pixels differ from PIL's, or it missed")
    return {"size": size, "images": len(paths), "pil_img_per_s": len(paths) / pil_s,
            "cache_img_per_s": len(paths) / cache_s, "x_cache": pil_s / cache_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", nargs="*", default=list(FEW_SHOT), choices=FEW_SHOT)
    ap.add_argument("--config", choices=("paper", "tiny"), default="paper")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--images", type=int, default=16, help="test images of the category")
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--source-size", type=int, default=256, help="side of the synthetic PNGs")
    ap.add_argument("--decode-sizes", type=int, nargs="*", default=[240, 518])
    ap.add_argument("--decode-images", type=int, default=32)
    ap.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = ap.parse_args()
    rows, decode, params = [], [], load_params()  # the repository's, before FSAD_ROOT points elsewhere
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["FSAD_ROOT"] = tmp
        table = write_data(Path(tmp) / "data", args.images, args.ks, args.seeds, args.source_size)
        for name in args.methods:
            rows.append(plan_costs(name, args, params, table, Path(tmp) / "results"))
            print(json.dumps(rows[-1]), flush=True)
        sources = write_sources(Path(tmp) / "sources", args.decode_images) if args.decode_sizes else []
        for size in args.decode_sizes:
            decode.append(decode_rates(sources, size, Path(tmp) / "decoded"))
            print(json.dumps(decode[-1]), flush=True)
    print(f"{'method':14s} {'backbone':20s} {'size':>4s} {'runs':>4s} {'single s':>9s} {'plan once s':>11s} "
          f"{'x once':>7s} {'plan per-run s':>14s} {'x per-run':>9s}")
    for r in rows:
        print(f"{r['method']:14s} {r['backbone']:20s} {r['input_size']:4d} {r['runs']:4d} {r['single_s']:9.2f} "
              f"{r['plan_once_s']:11.2f} {r['x_plan_once']:7.2f} {r['plan_per_run_s']:14.2f} {r['x_plan_per_run']:9.2f}")
    for r in decode:
        print(f"decode {r['size']:4d} px: PIL {r['pil_img_per_s']:8.1f} img/s, cache {r['cache_img_per_s']:8.1f} img/s "
              f"({r['x_cache']:.1f}x), {r['images']} images, one core")
    if args.out:
        write_json(args.out, {"device": args.device, "config": args.config, "rows": rows, "decode": decode})


if __name__ == "__main__":
    main()
