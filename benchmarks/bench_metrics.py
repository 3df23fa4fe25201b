"""Speed of ``fsadlib.metrics.pixel_metrics`` (AUROC + AP + F1-max + AUPRO, one sort) against
scikit-learn (roc_auc_score + average_precision_score + precision_recall_curve) and a numpy port of
the MVTec AD reference AUPRO (``pro_curve_util.compute_pro`` + ``trapezoid``), on MVTec-like maps.

    python benchmarks/bench_metrics.py                          # 80 x 512^2 = 21 M pixels, CPU
    python benchmarks/bench_metrics.py --device cuda --images 160 --size 1024 --skip-sklearn  # 168 M

Data (research/performance.md Appendix A): half the images hold 1-3 filled ellipses with radii of
0.5-12 % of the side; maps = bilinearly upsampled 8 x 8 noise + Gaussian-blurred mask x a gain in
[0.2, 2]. Prints each timing, the ratios, and the largest difference to the references (must be
<= 1e-6). Goals: >= 20x faster than scikit-learn on a 2-core CPU; < 0.2 s for 168 M pixels on a GPU.
"""

from __future__ import annotations

import argparse
import resource
import time
from bisect import bisect

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from fsadlib.maps import gaussian_blur
from fsadlib.metrics import pixel_metrics
from fsadlib.metrics.pixel import BYTES_PER_DEFECT_PIXEL, BYTES_PER_PIXEL


def mvtec_like(n: int, size: int, seed: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Maps [n, size, size] float32 and bool masks on ``device`` (see the module docstring)."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size, device=device), torch.arange(size, device=device),
                            indexing="ij")
    masks = torch.zeros(n, size, size, dtype=torch.bool, device=device)
    maps = torch.empty(n, size, size, dtype=torch.float32, device=device)
    for i in range(n):
        if i % 2 == 0:
            for _ in range(int(torch.randint(1, 4, (1,), generator=gen))):
                cy, cx = (torch.rand(2, generator=gen) * size).tolist()
                ry, rx = ((torch.rand(2, generator=gen) * 0.115 + 0.005) * size + 0.5).tolist()
                masks[i] |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        noise = torch.rand(1, 1, 8, 8, generator=gen).to(device)
        gain = float(torch.rand(1, generator=gen)) * 1.8 + 0.2
        blurred = gaussian_blur(masks[i:i + 1].float(), sigma=size / 128)
        maps[i] = F.interpolate(noise, size=(size, size), mode="bilinear")[0, 0] + gain * blurred[0]
    return maps, masks


def sklearn_three(maps: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    y, s = masks.ravel(), maps.ravel()
    p, r, _ = precision_recall_curve(y, s)
    with np.errstate(invalid="ignore"):
        f1 = float(np.nan_to_num(2 * p * r / (p + r)).max())
    return {"auroc": roc_auc_score(y, s), "ap": average_precision_score(y, s), "f1_max": f1}


def mvtec_reference_aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3) -> float:
    """The MVTec AD evaluation code's algorithm, in numpy: uint32 FP and float64 PRO increments per
    pixel, one argsort, cumsums, float32 FPRs, tie-merge, clip, (0,0)/(1,1) ends, trapezoid to the
    limit with linear interpolation, divided by the limit."""
    fp_changes = np.zeros(maps.shape, dtype=np.uint32)
    pro_changes = np.zeros(maps.shape, dtype=np.float64)
    n_ok, n_regions = 0, 0
    for i, mask in enumerate(masks):
        labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=int))
        n_regions += n
        ok = labels == 0
        n_ok += ok.sum()
        fp_changes[i, ok] = 1
        areas = np.bincount(labels.ravel())
        pro_changes[i, ~ok] = 1.0 / areas[labels[~ok]]
    scores = maps.ravel()
    order = np.argsort(scores).astype(np.uint32)[::-1]
    scores = scores[order]
    fprs = np.cumsum(fp_changes.ravel()[order]).astype(np.float32) / np.float32(n_ok)
    pros = np.cumsum(pro_changes.ravel()[order]) / n_regions
    del order, fp_changes, pro_changes
    keep = np.append(np.diff(scores) != 0, True)
    x = np.concatenate([[0.0], np.clip(fprs[keep], None, 1.0), [1.0]])
    y = np.concatenate([[0.0], np.clip(pros[keep], None, 1.0), [1.0]])
    correction = 0.0
    if fpr_limit not in x:
        j = bisect(x, fpr_limit)
        y_lim = y[j - 1] + (y[j] - y[j - 1]) * (fpr_limit - x[j - 1]) / (x[j] - x[j - 1])
        correction = 0.5 * (y_lim + y[j - 1]) * (fpr_limit - x[j - 1])
    inside = x <= fpr_limit
    x, y = x[inside], y[inside]
    return float((np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction) / fpr_limit)


def timed(fn, *args, sync: bool = False):
    t = time.perf_counter()
    out = fn(*args)
    if sync:
        torch.cuda.synchronize()
    return out, time.perf_counter() - t


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=80)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of pixel_metrics (the minimum is kept)")
    ap.add_argument("--skip-sklearn", action="store_true", help="skip the scikit-learn reference")
    ap.add_argument("--skip-mvtec", action="store_true", help="skip the numpy MVTec AUPRO reference")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"

    maps, masks = mvtec_like(args.images, args.size, args.seed, device)
    n = maps.numel()
    where = torch.cuda.get_device_name(device) if cuda else f"{torch.get_num_threads()} threads"
    print(f"data: {args.images} x {args.size}^2 = {n / 1e6:.1f} M pixels, {masks.float().mean():.4f} defect "
          f"fraction, device {device} ({where}), torch {torch.__version__}")

    times = []
    rss0 = peak_rss()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    maps_bytes = torch.cuda.memory_allocated(device) if cuda else 0  # the maps and masks themselves
    for _ in range(args.repeat + cuda):  # one warm-up run on CUDA
        ours, t = timed(pixel_metrics, maps, masks, sync=cuda)
        times.append(t)
    t_ours = min(times[cuda:])
    grown = torch.cuda.max_memory_allocated(device) - maps_bytes if cuda else peak_rss() - rss0
    extra = f"peak {'GPU memory' if cuda else 'RSS'} growth {grown / 2**30:.2f} GiB = {grown / n:.1f} B/pixel " \
        f"(documented bound: {BYTES_PER_PIXEL[device.type]} B/pixel + {BYTES_PER_DEFECT_PIXEL} B/defect pixel " \
        "+ fixed temporaries)"
    runs = ", ".join(f"{x:.3f}" for x in times)
    print(f"fsadlib pixel_metrics (all four): {t_ours:.3f} s (runs: {runs}); {extra}")
    print("  " + ", ".join(f"{k} {v:.6f}" for k, v in ours.items()))

    if cuda:
        (maps_h, masks_h), t_copy = timed(lambda: (maps.cpu().numpy(), masks.cpu().numpy()))
        print(f"device -> host copy of maps + masks: {t_copy:.3f} s")
    else:
        maps_h, masks_h = maps.numpy(), masks.numpy()
    worst = 0.0
    if not args.skip_sklearn:
        ref, t_sk = timed(sklearn_three, maps_h, masks_h)
        worst = max(worst, *(abs(ours[k] - v) for k, v in ref.items()))
        print(f"scikit-learn roc_auc_score + average_precision_score + precision_recall_curve: {t_sk:.2f} s "
              f"-> fsadlib is {t_sk / t_ours:.1f}x faster (all four metrics vs three)")
    if not args.skip_mvtec:
        ref_pro, t_mv = timed(mvtec_reference_aupro, maps_h, masks_h)
        worst = max(worst, abs(ours["aupro"] - ref_pro))
        print(f"numpy MVTec AD reference AUPRO: {t_mv:.2f} s (aupro {ref_pro:.6f}) "
              f"-> fsadlib is {t_mv / t_ours:.1f}x faster (all four metrics vs AUPRO alone)")
    if not (args.skip_sklearn and args.skip_mvtec):
        print(f"largest difference to the references: {worst:.2e} ({'OK' if worst <= 1e-6 else 'MISMATCH'})")
        if worst > 1e-6:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
