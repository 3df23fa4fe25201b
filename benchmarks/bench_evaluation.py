"""Evaluation cost: the full plan (every k x seed) of each few-shot method against one run of it, and
the decoded-image cache against PIL decoding.

Per few-shot method, on one synthetic category at a realistic size: ``--images`` test images (half
anomalous, masks, ``--source-size`` px PNGs; default 115, the mean of MVTec AD's categories, which
hold 42-167; VisA's 1cls test split holds about 180), ``--train-images`` normal training images, and
the k-shot files of ``--seeds`` drawn by :func:`fsadlib.data.shots.make_shots` (the protocol's
draw: nested per seed, so the plan's distinct supports are at most seeds x max k). A method's plan is
every k of its params.yaml section's ``ks`` (``--ks`` sets one list for all) x every seed. The
plan's models are laid out as the pipeline's: InCTRL one model per k, FineGrainedAD one model per
(k, seed) (each with its own learned prompts), the others one model; all share one backbone. Timed
evaluations in one process, each into a fresh results folder (no resume), bootstrap off and maps not
written (the cost measured is reading, encoding and scoring, plus the per-run metrics):

- ``single_first_s``:   one run, (first k, first seed): a reference;
- ``single_largest_s``: one run, (largest k, first seed): the other reference;
- ``plan_once_s``:      every (k, seed) in one plan, encode-once (the default: each test image of the
  category encoded once, and each distinct support image once, in chunks of 8 images: the nested
  lists of a seed cost one encoding of its largest list, padded to a multiple of 8);
- ``plan_per_run_s``:   (``--per-run`` only) the same plan with ``evaluate.encode_once: 0``.

``x_first`` = plan_once_s / single_first_s, ``x_largest`` = plan_once_s / single_largest_s (goal: at
most 1.5 for every few-shot method), ``x_per_run`` = plan_per_run_s / single_first_s. A warm-up run
on two test images comes first (text caches, allocator, kernels). ``--images-for NAME=N`` runs a
method on N test images instead (the first N/2 normal and N - N/2 anomalous of the category): on a
CPU the paper backbone of KAG-prompt (ViT-H-14) costs seconds per image. Fewer test images for the
same supports make the plan's share of support encoding larger, so such a ratio is an upper bound of
the ratio at full size. ``supports`` / ``shot_images`` in each row: the distinct support images the
plan encodes once, and the images of all its k-shot sets (what the per-run path encodes); both paths
encode supports in zero-padded chunks of 8 (``fsadlib.methods.base.SUPPORT_CHUNK``), so a k-shot
list costs ceil(k / 8) x 8 image encodings.

Decode throughput (``--decode-sizes``, one core: ``torch.set_num_threads(1)``, one process): images/s
of the PIL path (read by the one loader, geometry ``resize_crop``, PIL bicubic) and of the warm
decoded-image cache (:mod:`fsadlib.data.decoded`: a memory-mapped entry, its pixel digest checked, copied out) on
``--decode-images`` sources, half MVTec-like 1024 x 1024 PNGs, half VisA-like 1500 x 1000 JPEGs; the
pixels of both are checked equal. Goal: at least 1,000 images/s from the cache at 240 and 518 px.

Configurations (random weights: weights do not change speed): ``paper`` = each method's Config defaults
(the paper backbone and input size), ``tiny`` = the params.yaml ``model`` sections.

    nice -n 5 python benchmarks/bench_evaluation.py --images-for kag_prompt=24 --decode-sizes  # this CPU
    python benchmarks/bench_evaluation.py --images 180 --per-run --device cuda                 # a GPU
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
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from fsadlib.config import from_dict, load_params
from fsadlib.data.dataset import fitted_pixels
from fsadlib.data.decoded import DecodedCache
from fsadlib.data.shots import load_shots, make_shots
from fsadlib.evaluate import EvalConfig, PlannedRun, evaluate_plan
from fsadlib.io import write_json
from fsadlib.methods.base import AnomalyMethod
from fsadlib.methods.registry import method_class

FEW_SHOT = ("winclip_plus", "inctrl", "kag_prompt", "finegrained", "patchcore")
SECTION = {"winclip_plus": "winclip"}   # params.yaml section of a method, when not its own name
CATEGORY = "disc"


def build(name: str, config: str, device: str, params: dict, backbone: Any = None) -> AnomalyMethod:
    """Method ``name`` at ``config`` ("paper" | "tiny": its section of ``params``), random weights,
    eval mode, on ``device``; on ``backbone`` when given."""
    cls = method_class(name)
    if config == "tiny":
        section = params.get(SECTION.get(name, name), {})
        cfg = from_dict(cls.Config, section.get("model", section), name)
    else:
        cfg = cls.Config()
        cfg = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, pretrained=None))
    method = cls(cfg, backbone_model=backbone).eval().to(device)
    if name == "finegrained":
        method.set_captions(bench_captions(), locked=True)
    return method


def plan_ks(name: str, args: argparse.Namespace, params: dict) -> list[int]:
    """The k of method ``name``'s plan: ``--ks``, else its params section's ``ks``."""
    return list(args.ks or params[SECTION.get(name, name)]["ks"])


def plan_of(name: str, ks: list[int], args: argparse.Namespace, params: dict) -> list[PlannedRun]:
    """Every (k, seed) of the plan, k-major, with the pipeline's model layout (module docstring)."""
    first = build(name, args.config, args.device, params)
    models: dict[tuple[int, int], AnomalyMethod] = {}
    for k in ks:
        for seed in args.seeds:
            if name == "finegrained":
                key = (k, seed)
            elif name == "inctrl":
                key = (k, args.seeds[0])
            else:
                key = (ks[0], args.seeds[0])
            if key not in models:
                shared = first.backbone
                models[key] = first if not models else build(name, args.config, args.device, params, shared)
            models[k, seed] = models[key]
    return [PlannedRun(models[k, s], k, s, category_models=(lambda c, m=models[k, s]: m)) for k in ks
            for s in args.seeds]


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


def write_data(root: Path, n_images: int, n_train: int, ks: list[int], seeds: list[int], size: int
               ) -> pd.DataFrame:
    """A synthetic category of ``n_images`` test images, ``n_train`` training images and the k-shot
    files of ``ks`` x ``seeds`` (:func:`fsadlib.data.shots.make_shots`) -> samples table."""
    from fsadlib.data.samples import read_samples
    from fsadlib.data.synthetic import generate

    generate(root / "synthetic", image_size=size, n_train=n_train, n_test_good=n_images // 2,
             n_test_bad=n_images - n_images // 2, categories=(CATEGORY,))
    table = read_samples("mvtec", root / "synthetic", "synthetic")
    make_shots(table, tuple(ks), tuple(seeds))
    return table


def with_test_images(table: pd.DataFrame, n: int) -> pd.DataFrame:
    """``table`` with its first n // 2 normal and n - n // 2 anomalous test images only."""
    test = table[table.split == "test"]
    keep = pd.concat([test[test.label == 0].head(n // 2), test[test.label == 1].head(n - n // 2)])
    return pd.concat([table[table.split != "test"], keep]).reset_index(drop=True)


def timed_plan(runs: list[PlannedRun], table: pd.DataFrame, config: EvalConfig, out: Path) -> float:
    runs = [dataclasses.replace(r, out=out / f"k{r.k}" / f"seed{r.seed}") for r in runs]
    start = time.perf_counter()
    evaluate_plan(runs, "synthetic", config=config, samples=table)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def plan_costs(name: str, args: argparse.Namespace, params: dict, table: pd.DataFrame, root: Path) -> dict:
    """The timings and ratios of the module docstring for method ``name``."""
    n_images = dict(args.images_for).get(name, args.images)
    table = with_test_images(table, n_images)
    ks = plan_ks(name, args, params)
    plan = plan_of(name, ks, args, params)
    first = plan[0]
    largest = next(r for r in plan if r.k == max(ks) and r.seed == args.seeds[0])
    config = EvalConfig(batch_size=args.batch_size, bootstrap=0, save_maps=0)
    shots = [load_shots("synthetic", CATEGORY, r.k, r.seed) for r in plan]
    row = {"method": name, "backbone": first.method.backbone.config.arch,
           "input_size": first.method.backbone.image_size, "images": n_images, "ks": ks, "runs": len(plan),
           "supports": len({p for s in shots for p in s}), "shot_images": sum(len(s) for s in shots),
           "reference_first": f"k{first.k} seed{first.seed}",
           "reference_largest": f"k{largest.k} seed{largest.seed}"}
    timed_plan([first], with_test_images(table, 2), config, root / f"{name}_warmup")
    row["single_first_s"] = timed_plan([first], table, config, root / f"{name}_first")
    row["single_largest_s"] = timed_plan([largest], table, config, root / f"{name}_largest")
    row["plan_once_s"] = timed_plan(plan, table, config, root / f"{name}_once")
    row["x_first"] = row["plan_once_s"] / row["single_first_s"]
    row["x_largest"] = row["plan_once_s"] / row["single_largest_s"]
    if args.per_run:
        row["plan_per_run_s"] = timed_plan(plan, table, dataclasses.replace(config, encode_once=0),
                                           root / f"{name}_per_run")
        row["x_per_run"] = row["plan_per_run_s"] / row["single_first_s"]
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


def method_images(text: str) -> tuple[str, int]:
    """``NAME=N`` of ``--images-for``."""
    name, _, n = text.partition("=")
    if name not in FEW_SHOT or not n.isdigit() or int(n) < 2:
        raise argparse.ArgumentTypeError(f"--images-for takes NAME=N with NAME in {FEW_SHOT} and N >= 2, "
                                         f"got {text!r}")
    return name, int(n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", nargs="*", default=list(FEW_SHOT), choices=FEW_SHOT)
    ap.add_argument("--config", choices=("paper", "tiny"), default="paper")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--images", type=int, default=115, help="test images of the category")
    ap.add_argument("--images-for", type=method_images, nargs="*", default=[], metavar="NAME=N",
                    help="test images for one method (fewer for a backbone too slow here)")
    ap.add_argument("--train-images", type=int, default=100, help="normal training images (the shots' pool)")
    ap.add_argument("--ks", type=int, nargs="+", help="the k of every plan (default: each method's params ks)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--per-run", action="store_true", help="also time the plan without encode-once")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--source-size", type=int, default=256, help="side of the synthetic PNGs")
    ap.add_argument("--decode-sizes", type=int, nargs="*", default=[240, 518])
    ap.add_argument("--decode-images", type=int, default=32)
    ap.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = ap.parse_args()
    if args.images < 2:
        ap.error("--images must be >= 2")
    rows, decode, params = [], [], load_params()  # the repository's, before FSAD_ROOT points elsewhere
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["FSAD_ROOT"] = tmp
        n_test = max([args.images, *(n for _, n in args.images_for)])
        ks = sorted({k for name in args.methods for k in plan_ks(name, args, params)})
        table = write_data(Path(tmp) / "data", n_test, args.train_images, ks, args.seeds, args.source_size)
        for name in args.methods:
            rows.append(plan_costs(name, args, params, table, Path(tmp) / "results"))
            print(json.dumps(rows[-1]), flush=True)
        sources = write_sources(Path(tmp) / "sources", args.decode_images) if args.decode_sizes else []
        for size in args.decode_sizes:
            decode.append(decode_rates(sources, size, Path(tmp) / "decoded"))
            print(json.dumps(decode[-1]), flush=True)
    print(f"{'method':13s} {'backbone':18s} {'size':>4s} {'imgs':>4s} {'runs':>4s} {'supp':>4s} {'shots':>5s} "
          f"{'first s':>8s} {'largest s':>9s} {'plan s':>8s} {'x first':>7s} {'x largest':>9s} "
          f"{'x per-run':>9s}")
    for r in rows:
        per_run = f"{r['x_per_run']:9.2f}" if "x_per_run" in r else f"{'-':>9s}"
        print(f"{r['method']:13s} {r['backbone']:18s} {r['input_size']:4d} {r['images']:4d} {r['runs']:4d} "
              f"{r['supports']:4d} {r['shot_images']:5d} {r['single_first_s']:8.2f} "
              f"{r['single_largest_s']:9.2f} "
              f"{r['plan_once_s']:8.2f} {r['x_first']:7.2f} {r['x_largest']:9.2f} {per_run}")
    for r in decode:
        print(f"decode {r['size']:4d} px: PIL {r['pil_img_per_s']:8.1f} img/s, cache {r['cache_img_per_s']:8.1f} img/s "
              f"({r['x_cache']:.1f}x), {r['images']} images, one core")
    if args.out:
        write_json(args.out, {"device": args.device, "config": args.config, "rows": rows, "decode": decode})


if __name__ == "__main__":
    main()
