"""Few-shot PatchCore (real EfficientNet-Lite0 weights) on the real MVTec AD excerpt, through the normal
evaluation: image AUROC, pixel AUROC, AUPRO as mean +- std over shot seeds, as a markdown table.

    python benchmarks/bench_patchcore_real.py [--ks 1 2 4 8] [--seeds 0 1 2] [--device cpu]

Runs in a throw-away workbench root (FSAD_ROOT) whose params.yaml declares
``mvtec: {reader: mvtec, root: ../shared/data/mvtec_ad_reduced}``; the k-shot files are drawn there.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    from fsadlib.paths import shared_data_dir

    data_root = shared_data_dir() / "mvtec_ad_reduced"
    if not data_root.is_dir():
        raise SystemExit(f"real MVTec AD excerpt not found at {data_root}")
    bench = Path(tempfile.mkdtemp(prefix="patchcore_real_"))
    (bench / "dvc.yaml").write_text("stages: {}\n")
    (bench / "params.yaml").write_text(f"datasets:\n  mvtec: {{reader: mvtec, root: {data_root}}}\n")
    os.environ["FSAD_ROOT"] = str(bench)

    from fsadlib.data import load_samples, make_shots
    from fsadlib.evaluate import EvalConfig, aggregate_seeds, evaluate
    from fsadlib.methods import create

    make_shots(load_samples("mvtec"), ks=tuple(args.ks), seeds=tuple(args.seeds))
    method = create("patchcore").to(args.device)
    print("| category | k | image AUROC | pixel AUROC | AUPRO (0.3) |")
    print("|---|---|---|---|---|")
    for k in args.ks:
        for seed in args.seeds:
            evaluate(method, "mvtec", k=k, seed=seed, config=EvalConfig(save_maps=0, bootstrap=0))
        summary = aggregate_seeds("patchcore", "mvtec", k, args.seeds)
        for category, m in [*summary["categories"].items(), ("mean", summary["mean"])]:
            cells = " | ".join(f"{m[n]['mean']:.3f} ± {m[n]['std']:.3f}"
                               for n in ("image_auroc", "pixel_auroc", "pixel_aupro"))
            print(f"| {category} | {k} | {cells} |")


if __name__ == "__main__":
    main()
