"""Speed of the exact stratified bootstrap of all four pixel metrics (``fsadlib.stats.bootstrap_pixel_metrics``:
AUROC, AP, F1-max, AUPRO under B image resamples at once) against the naive bootstrap (replicate the
resampled images, call ``fsadlib.metrics.pixel_metrics`` once per resample), on MVTec-like maps.

    python benchmarks/bench_bootstrap.py                              # 200 x 256^2, B = 1000, float16 maps
    python benchmarks/bench_bootstrap.py --images 400 --precision float32
    python benchmarks/bench_bootstrap.py --device cuda

Data: ``bench_metrics.mvtec_like`` (half the images hold 1-3 ellipses). ``--precision float16`` rounds the
maps as ``fsadlib.evaluate`` stores them (the bootstrap's cost grows with the number of distinct defect
scores). The naive reference is timed on ``--check`` resamples in the same run and extrapolated to B;
the same resamples give the largest difference between the two (must be <= 1e-9).
Goal (issue 21): < 10 s for B = 1000 on one full-resolution MVTec-sized category (100-400 images, 256 px).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from bench_metrics import mvtec_like
from timing import measure, sync

from fsadlib.metrics import pixel_metrics
from fsadlib.stats import bootstrap_pixel_metrics, resample_counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--precision", choices=["float16", "float32"], default="float16")
    parser.add_argument("--check", type=int, default=3, help="resamples run the naive way (timing + agreement)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)

    maps, masks = mvtec_like(args.images, args.size, 0, device)
    if args.precision == "float16":
        maps = maps.half().float()
    labels = masks.flatten(1).any(1).cpu().numpy()
    counts = resample_counts(labels, args.resamples, np.random.default_rng(0))
    print(f"{args.images} x {args.size}^2 = {maps.numel() / 1e6:.1f} M pixels on {device}, "
          f"{int(masks.sum()):,} defect pixels, {torch.unique(maps[masks]).numel():,} distinct defect scores "
          f"({args.precision}), {int(labels.sum())} anomalous images, B = {args.resamples}")

    vectorised: dict = {}
    with measure(device, vectorised):
        replicates = bootstrap_pixel_metrics(maps, masks, counts)
    naive_seconds, largest = [], 0.0
    for b in range(args.check):
        index = torch.from_numpy(np.repeat(np.arange(args.images), counts[b])).to(device)
        sync(device)
        start = time.perf_counter()
        want = pixel_metrics(maps[index], masks[index])
        sync(device)
        naive_seconds.append(time.perf_counter() - start)
        largest = max(largest, *(abs(want[k] - replicates[k][b]) for k in want))
    naive = float(np.median(naive_seconds)) * args.resamples
    memory = {k: v for k, v in vectorised.items() if k != "seconds"}
    print(f"vectorised bootstrap: {vectorised['seconds']:.2f} s for {args.resamples} resamples, all 4 metrics {memory}")
    print(f"naive bootstrap:      {naive:.1f} s (median of {args.check} pixel_metrics calls x {args.resamples})")
    print(f"vectorised = {vectorised['seconds'] / np.median(naive_seconds):.1f} x one pixel_metrics call "
          "(a ratio that holds on a loaded machine)")
    print(f"ratio naive / vectorised: {naive / vectorised['seconds']:.0f}x; goal < 10 s: "
          f"{'met' if vectorised['seconds'] < 10 else 'NOT met'}")
    print(f"largest difference to the naive bootstrap over {args.check} resamples: {largest:.2e}")
    assert largest <= 1e-9, largest


if __name__ == "__main__":
    main()
