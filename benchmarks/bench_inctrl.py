"""InCTRL inference speed and memory at the paper configuration (ViT-B-16-plus-240, 240 px, k = 8,
random weights: weights do not change speed).

Reference: the public code's test path (:func:`fsadlib.methods.inctrl.reference.public_forward`), as
it runs there: TEST.BATCH_SIZE = 1, fp32, the k prompt images re-encoded for every query, the
7 x 22 + 4 x 22 = 242 text prompts tokenised and encoded for every query, the patch residuals by a
Python loop over layers x patches that re-normalises the whole prompt bank in the innermost loop.
Ours: text ensemble and prompt features cached per category (``setup_category``), queries batched,
residuals as one normalised matmul + min per layer, bf16 autocast on CUDA (``--precision auto``).

Before timing, the final scores of the first ``--ref-images`` queries are checked equal: ours in
fp32 vs the reference (same weights; atol 1e-4). Reported: per-image time and img/s of both paths,
ours with and without the per-category setup (setup + all ``--images`` queries = one category's
test set), the ratios, and peak memory (CUDA: max allocated in the block; CPU: peak RSS growth
sampled during the block).

    python benchmarks/bench_inctrl.py                          # CUDA when present, else CPU
    python benchmarks/bench_inctrl.py --images 4 --ref-images 1  # the small CPU run
    python benchmarks/bench_inctrl.py --arch tiny --image-size 64  # a seconds-long sanity run

Prints one JSON line per measurement and the ratios; ``--out`` writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from timing import measure

from fsadlib.clip import BackboneConfig, default_device
from fsadlib.io import write_json
from fsadlib.methods.inctrl.model import Inctrl, InctrlConfig
from fsadlib.methods.inctrl.reference import public_forward


def build(args: argparse.Namespace, precision: str, device: torch.device) -> Inctrl:
    backbone = BackboneConfig(arch=args.arch, pretrained=None, image_size=args.image_size, precision=precision)
    return Inctrl(InctrlConfig(backbone=backbone, layers=tuple(args.layers))).to(device).eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="ViT-B-16-plus-240")
    ap.add_argument("--image-size", type=int, default=240)
    ap.add_argument("--layers", type=int, nargs="+", default=[7, 9, 11])
    ap.add_argument("--shots", type=int, default=8)
    ap.add_argument("--images", type=int, default=None, help="queries of ours (default 512 on CUDA, 4 on CPU)")
    ap.add_argument("--ref-images", type=int, default=None, help="queries of the reference (default 16 / 1)")
    ap.add_argument("--batch", type=int, default=None, help="our inference batch (default 64 / 4)")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--category", default="candle")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    device = default_device()
    cuda = device.type == "cuda"
    n_images = args.images or (512 if cuda else 4)
    n_ref = min(n_images, args.ref_images or (16 if cuda else 1))
    batch = args.batch or (64 if cuda else 4)
    torch.manual_seed(0)

    reference = build(args, "fp32", device)   # the public code runs fp32
    ours = build(args, args.precision, device)
    ours.load_trainable_state(reference.trainable_state_dict())
    s = reference.backbone.image_size
    images = torch.randn(n_images, 3, s, s, device=device)
    supports = torch.randn(args.shots, 3, s, s, device=device)
    setting = {"device": torch.cuda.get_device_name() if cuda else f"cpu x{torch.get_num_threads()}",
               "arch": args.arch, "image_size": s, "shots": args.shots, "layers": args.layers,
               "precision": args.precision, "batch": batch, "images": n_images, "ref_images": n_ref}
    print(json.dumps({"setting": setting}))

    with torch.no_grad():
        # equal outputs (ours in fp32) before timing; also warms both paths up
        reference.setup_category(args.category, supports)
        want = torch.cat([public_forward(reference, images[i:i + 1], supports, args.category)[0]
                          for i in range(n_ref)])
        got = reference(images[:n_ref]).pred_score
        max_diff = float((got - want).abs().max())
        assert max_diff < 1e-4, f"ours (fp32) differs from the public path by {max_diff}"
        ours.setup_category(args.category, supports)
        ours(images[:batch])

        rec_ref: dict = {"path": "public (batch 1, 242 prompts + k prompt images per query, patch loop)"}
        with measure(device, rec_ref):
            for i in range(n_ref):
                public_forward(reference, images[i:i + 1], supports, args.category)
        ours.backbone.text_cache.clear()
        rec_setup: dict = {"path": "ours setup_category (text ensemble + k prompt images, once per category)"}
        with measure(device, rec_setup):
            ours.setup_category(args.category, supports)
        rec_ours: dict = {"path": f"ours queries (batch {batch}, cached)"}
        with measure(device, rec_ours):
            for i in range(0, n_images, batch):
                ours(images[i:i + batch])
        bf16_diff = float((ours(images[:n_ref]).pred_score.float() - want).abs().max())

    ref_per_img = rec_ref["seconds"] / n_ref
    ours_per_img = rec_ours["seconds"] / n_images
    ours_total = rec_setup["seconds"] + rec_ours["seconds"]
    rec_ref.update(images=n_ref, img_per_s=1 / ref_per_img, ms_per_img=1e3 * ref_per_img)
    rec_setup.update(ms=1e3 * rec_setup["seconds"])
    rec_ours.update(images=n_images, img_per_s=1 / ours_per_img, ms_per_img=1e3 * ours_per_img)
    summary = {
        "max_abs_diff_fp32": max_diff,
        f"max_abs_diff_{args.precision}": bf16_diff,
        "speedup_queries": ref_per_img / ours_per_img,
        "speedup_with_setup": ref_per_img * n_images / ours_total,
        "ours_img_per_s_with_setup": n_images / ours_total,
        "goal": ">= 10x the public path's img/s at equal outputs",
    }
    for rec in (rec_ref, rec_setup, rec_ours, summary):
        print(json.dumps(rec))
    if args.out is not None:
        write_json(args.out, {"setting": setting, "reference": rec_ref, "setup": rec_setup, "ours": rec_ours,
                              "summary": summary})


if __name__ == "__main__":
    main()
