"""bf16-vs-fp32 drift of every method's forward (fsadlib.methods.drift), as a markdown table.

    python benchmarks/bench_precision_drift.py [--device cuda] [--size 224]

Each method is built twice from its params.yaml model section (the tiny random-init CLIP of the
embedded default; PatchCore with its real EfficientNet-Lite0 weights) with backbone.precision fp32 and
bf16, and scores the same fixed input. The figures in the method READMEs come from this script.
"""

from __future__ import annotations

import argparse

from fsadlib.config import load_params
from fsadlib.methods import list_methods
from fsadlib.methods.drift import method_drift


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=None, help="input size of every method (default: params.yaml)")
    args = parser.parse_args()
    params = load_params()
    print("| method | device | map max abs | map rel (of fp32 range) | score max abs | score rel | same order |")
    print("|---|---|---|---|---|---|---|")
    for name in list_methods():
        d = method_drift(name, params, size=args.size, device=args.device)
        print(f"| {name} | {args.device} | {d['map_max_abs']:.2e} | {d['map_rel']:.2e} | {d['score_max_abs']:.2e} "
              f"| {d['score_rel']:.2e} | {d['score_rank_equal']} |")


if __name__ == "__main__":
    main()
