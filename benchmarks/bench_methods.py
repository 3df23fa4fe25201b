"""Efficiency table of every registered method -> reports/efficiency.csv (written atomically).

Per method: backbone and input size, frozen and learnable parameters, GFLOPs per image of one
``forward`` (torch.utils.flop_counter; per-category setup excluded), vision / text tower passes per
query image during ``forward`` (-> text and support caching flags), ms per image at batch 1, images/s
at the best batch of ``--batches``, peak memory (CUDA: max allocated during the best batch; CPU: the
measuring process's max RSS, imports and model included) and, as the reference measured in the same
run, the bare backbone image forward (``encode_image``) at batch 1: ``x_backbone_b1`` = method ms /
backbone ms. Definitions: ``fsadlib/analysis/efficiency.py``.

Configurations (random weights everywhere: weights do not change speed):
- ``paper`` (default on CUDA): each method's Config dataclass defaults (the paper backbone and size),
  ``pretrained`` set to null; bf16 autocast in the backbone (its ``precision: auto``).
- ``tiny`` (default on CPU): the ``model`` section of params.yaml (``winclip`` for winclip_plus).

Each method is measured in a fresh subprocess (so CPU peak RSS and CUDA peaks are its own)::

    python benchmarks/bench_methods.py                         # every method, CUDA if present
    python benchmarks/bench_methods.py --config tiny --methods winclip inctrl --out /tmp/eff.csv
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from fsadlib.analysis.efficiency import flops_per_image, parameter_counts, seconds_per_call, tower_passes
from fsadlib.config import from_dict, load_params
from fsadlib.io import atomic_path
from fsadlib.methods import list_methods
from fsadlib.methods.registry import method_class
from fsadlib.paths import reports_dir

SECTION = {"winclip_plus": "winclip"}   # params.yaml section of a method, when not its own name


def build(name: str, config: str):
    """The method ``name`` at ``config`` ("paper" | "tiny"), random weights, eval mode."""
    cls = method_class(name)
    if config == "tiny":
        section = load_params().get(SECTION.get(name, name), {})
        cfg = from_dict(cls.Config, section.get("model", section), name)
    else:
        cfg = cls.Config()
        cfg = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, pretrained=None))
    return cls(cfg).eval()


def prepare(method, k: int) -> None:
    """``setup_category`` with k random supports; FineGrainedAD gets offline captions of a
    synthetic disc image (its captions normally come from data/captions)."""
    size = method.backbone.image_size
    supports = torch.randn(k, 3, size, size, device=method.device) if method.few_shot else None
    class_name = "object"
    if method.name == "finegrained":
        from fsadlib.captions.offline import OfflineCaptioner
        from fsadlib.captions.vocab import anomaly_phrases
        from fsadlib.data.synthetic import normal_image

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "disc.png"
            Image.fromarray(normal_image("disc", np.random.default_rng(0), 128)).save(path)
            captions = OfflineCaptioner()([str(path)], "synthetic", "disc", "disc", anomaly_phrases("synthetic", "disc"))
        method.set_captions(captions)
        class_name = captions.category
    with torch.inference_mode():
        method.setup_category(class_name, supports)


def measure(name: str, config: str, k: int, batches: list[int], repeats: int) -> dict:
    cuda = torch.cuda.is_available()
    torch.manual_seed(0)
    method = build(name, config)
    bb, size = method.backbone, method.backbone.image_size
    images = torch.randn(max(batches), 3, size, size, device=method.device)
    if method.few_shot:                 # supports re-encoded in forward <=> passes grow with k
        prepare(method, 2 * k)
        passes_2k = tower_passes(method, images[:2])
    prepare(method, k)
    passes = tower_passes(method, images[:2])
    row = {"method": name, "config": config, "backbone": bb.config.arch, "weights": "random", "input_size": size,
           "k": k if method.few_shot else 0, **parameter_counts(method),
           "gflops_per_img": flops_per_image(method, images[:1]) / 1e9,
           "image_passes_per_img": passes["image_passes"], "text_prompts_per_img": passes["text_rows"],
           "text_cached": int(passes["text_rows"] == 0),
           "support_cached": int(passes["image_passes"] == passes_2k["image_passes"]) if method.few_shot else None}
    row["ms_per_img_b1"] = 1000 * seconds_per_call(lambda: method(images[:1]), repeats)
    row["backbone_ms_b1"] = 1000 * seconds_per_call(lambda: bb.encode_image(images[:1]), repeats)
    row["x_backbone_b1"] = row["ms_per_img_b1"] / row["backbone_ms_b1"]
    best = (0.0, 0, float("nan"))
    for b in batches:
        try:
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            rate = b / seconds_per_call(lambda b=b: method(images[:b]), repeats)
        except torch.cuda.OutOfMemoryError:
            break
        peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan")
        best = max(best, (rate, b, peak))
    row |= {"best_batch": best[1], "img_per_s_best": best[0]}
    row["peak_mem_mib"] = best[2] if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row["memory_kind"] = "cuda max allocated at best batch" if cuda else "process max RSS"
    row["precision"] = "bf16 autocast (backbone)" if cuda and bb.config.precision != "fp32" else "fp32"
    row["device"] = torch.cuda.get_device_name() if cuda else "cpu"
    row["torch"] = torch.__version__
    return row


def main() -> None:
    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", nargs="+", default=list_methods(), choices=list_methods())
    ap.add_argument("--config", choices=("paper", "tiny"), default="paper" if cuda else "tiny")
    ap.add_argument("--k", type=int, default=4, help="shots of the few-shot methods")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 64] if cuda else [1, 4, 16])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=reports_dir() / "efficiency.csv")
    ap.add_argument("--one", help=argparse.SUPPRESS)   # internal: measure one method, print JSON
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.config, args.k, sorted(args.batches), args.repeats)))
        return
    rows = []
    for name in args.methods:
        cmd = [sys.executable, __file__, "--one", name, "--config", args.config, "--k", str(args.k),
               "--repeats", str(args.repeats), "--batches", *map(str, args.batches)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"benchmark of '{name}' failed:\n{done.stderr[-3000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    table = pd.DataFrame(rows)
    with atomic_path(args.out, suffix=".csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    cols = ["method", "backbone", "input_size", "learnable_params", "gflops_per_img", "text_cached", "support_cached",
            "ms_per_img_b1", "x_backbone_b1", "best_batch", "img_per_s_best", "peak_mem_mib"]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
