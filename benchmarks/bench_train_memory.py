"""Peak training memory per image of every trainable method in its paper configuration, and the
micro-batch / gradient accumulation (``train.accumulate``) that reaches each paper batch on a GPU.

Each method is built from its section's dataclass defaults (the paper configuration: backbone,
size, layers, widths; random weights, which use the same memory as real ones) and runs one training
step (loss of the method's own training code, backward, optimizer step) at two micro-batch sizes
``b1 < b2`` (``PAPER_BATCH``), each in a fresh process. The peak is CUDA's max allocated on a GPU, the peak growth
of the process RSS over the step on CPU (``benchmarks/timing.measure``). A unit is what the paper's
batch counts: KAG-prompt an item (a normal image + its synthetic anomaly: 2 images), Bayes-PFL an
image, InCTRL a query (with its k = 8 normal prompt images), FineGrainedAD a k-shot image.

    step peak(b) = fixed + b * per_unit          (per_unit from the two runs: the slope)
    need(b)      = weights + fixed + b * per_unit (weights: parameters and buffers, exact bytes)
    largest micro-batch on G GiB: b_max = floor((G - reserve - weights - fixed) / per_unit)
                                  (per_unit <= 0, no growth seen: the paper batch when fixed fits)
    accumulation for the paper batch P: the smallest n with P % n == 0 and P / n <= b_max

(``reserve``: CUDA context and allocator slack, 2 GiB by default). CPU figures are fp32 and include
the CPU allocator's behaviour; on a GPU run the script there for CUDA figures.

    python benchmarks/bench_train_memory.py                          # all methods
    python benchmarks/bench_train_memory.py --methods inctrl --sizes 1 3 --out reports/bench_train_memory.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from timing import measure

GIB = 2**30
#: units per optimizer step in the paper, the unit's name, images per unit, the two measured sizes
PAPER_BATCH = {
    "kag_prompt": (288, "item (2 images)", 2, (1, 2)),     # 18 per GPU x 8 accumulation x 2 GPUs
    "bayes_pfl": (32, "image", 1, (1, 2)),
    "inctrl": (16, "query (+8 prompts)", 9, (2, 4)),       # 8 + 8 queries, k = 8; BatchNorm needs b > 1
    "finegrained": (4, "shot", 1, (1, 2)),                 # all k shots in one batch, k = 4
}
PROMPT_SHOTS = 8


def build(name: str):
    """``(method, loss(method, b) -> scalar, trainable parameters)`` at the paper configuration."""
    torch.manual_seed(0)
    if name == "kag_prompt":
        from fsadlib.methods.kag_prompt.model import KagPrompt
        from fsadlib.methods.kag_prompt.train import KagTrainSection, kag_loss

        section = KagTrainSection()
        method = KagPrompt(random_weights(section.model))

        def loss(b: int) -> torch.Tensor:
            s = method.backbone.image_size
            mask = torch.zeros(2 * b, s, s)
            mask[b:, s // 4: s // 2, s // 4: s // 2] = 0.8
            batch = {"image": torch.randn(2 * b, 3, s, s), "mask": mask, "category": ["hazelnut"] * (2 * b)}
            return kag_loss(method, to_device(batch, method.device), section.loss)["loss"]
    elif name == "bayes_pfl":
        from fsadlib.methods.bayes_pfl.model import BayesPFL
        from fsadlib.methods.bayes_pfl.train import BayesPFLSection, stage1_loss

        section = BayesPFLSection()
        method = BayesPFL(random_weights(section.model))

        def loss(b: int) -> torch.Tensor:
            s = method.backbone.image_size
            mask = torch.zeros(b, s, s)
            mask[:, s // 4: s // 2, s // 4: s // 2] = 1
            batch = {"image": torch.randn(b, 3, s, s), "mask": mask, "label": torch.ones(b),
                     "category": ["hazelnut"] * b}
            return stage1_loss(method, to_device(batch, method.device), section.train)["loss"]
    elif name == "inctrl":
        from fsadlib.methods.inctrl.model import Inctrl
        from fsadlib.methods.inctrl.train import InctrlSection, inctrl_loss

        section = InctrlSection()
        method = Inctrl(random_weights(section.model))

        def loss(b: int) -> torch.Tensor:
            s = method.backbone.image_size
            batch = {"image": torch.randn(b, 3, s, s), "prompts": torch.randn(b, PROMPT_SHOTS, 3, s, s),
                     "label": (torch.arange(b) % 2).float(), "category": ["hazelnut"] * b}
            return inctrl_loss(method, to_device(batch, method.device), section.loss)["loss"]
    elif name == "finegrained":
        from fsadlib.methods.finegrained.model import FineGrainedAD
        from fsadlib.methods.finegrained.train import FineGrainedSection, finegrained_loss, training_batch

        section = FineGrainedSection()
        method = FineGrainedAD(random_weights(section.model))
        method.set_captions(offline_captions())

        def loss(b: int) -> torch.Tensor:
            s = method.backbone.image_size
            batch, _ = training_batch(method, torch.randn(b, 3, s, s, device=method.device), 0)
            return finegrained_loss(method, batch)["loss"]
    else:
        raise KeyError(f"unknown method {name!r}; known: {sorted(PAPER_BATCH)}")
    return method, loss, [p for p in method.parameters() if p.requires_grad]


def random_weights(model_config):
    """The paper model config with ``backbone.pretrained = None`` (no download; the same memory)."""
    return dataclasses.replace(model_config, backbone=dataclasses.replace(model_config.backbone, pretrained=None))


def offline_captions():
    """MFSC captions of a drawn disc (the offline captioner; FineGrainedAD needs some)."""
    import numpy as np
    from PIL import Image

    from fsadlib.captions import OfflineCaptioner

    yy, xx = np.mgrid[:240, :240]
    image = np.zeros((240, 240, 3), np.uint8)
    image[(yy - 120) ** 2 + (xx - 120) ** 2 < 70**2] = (200, 150, 60)
    path = Path(tempfile.mkdtemp()) / "disc.png"
    Image.fromarray(image).save(path)
    return OfflineCaptioner()([str(path)], "bench", "hazelnut", "hazelnut", ("broken {}",))


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def child(name: str, units: int) -> dict:
    """One fresh process: build, then one training step at ``units``; the step's peak memory."""
    method, loss, trainable = build(name)
    method.train()
    weights = sum(t.numel() * t.element_size() for t in [*method.parameters(), *method.buffers()])
    opt = torch.optim.AdamW(trainable, lr=1e-4)
    record = {"method": name, "units": units, "device": str(method.device), "weights_bytes": weights,
              "trainable_params": sum(p.numel() for p in trainable)}
    with measure(method.device, record):
        opt.zero_grad(set_to_none=True)
        loss(units).backward()
        opt.step()
    return record


def plan(name: str, runs: list[dict], gib: float, reserve: float) -> dict:
    """Per-unit slope, fixed part, the largest micro-batch on ``gib`` GiB and the accumulation."""
    key = "peak_mem_mib" if "peak_mem_mib" in runs[0] else "peak_rss_growth_mib"
    (b1, p1), (b2, p2) = [(r["units"], r[key] * 2**20) for r in runs[:2]]
    per_unit = max((p2 - p1) / (b2 - b1), 0.0)  # 0: no growth with the batch that the peak can show
    fixed = max(p1 - b1 * per_unit, 0.0)
    weights = runs[0]["weights_bytes"]
    paper, unit, images_per_unit, _ = PAPER_BATCH[name]
    free = (gib - reserve) * GIB - weights - fixed
    b_max = max(0, math.floor(free / per_unit)) if per_unit else (paper if free > 0 else 0)
    steps = next((n for n in range(1, paper + 1) if paper % n == 0 and paper // n <= b_max), None)
    return {"gpu_gib": gib, "largest_micro_batch": b_max,
            "micro_batch": None if steps is None else paper // steps, "accumulate": steps,
            "need_gib_at_paper_batch": (weights + fixed + paper * per_unit) / GIB,
            "per_unit_mib": per_unit / 2**20, "per_image_mib": per_unit / images_per_unit / 2**20,
            "fixed_mib": fixed / 2**20, "weights_mib": weights / 2**20, "unit": unit, "paper_batch": paper}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(PAPER_BATCH), choices=list(PAPER_BATCH))
    parser.add_argument("--sizes", nargs=2, type=int, default=None, metavar=("B1", "B2"),
                        help="micro-batches measured (default: per method, see PAPER_BATCH)")
    parser.add_argument("--gpus", nargs="+", type=float, default=[80.0, 141.0], help="GPU memory, GiB")
    parser.add_argument("--reserve", type=float, default=2.0, help="GiB kept for the CUDA context and slack")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "UNITS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        return
    if args.sizes and args.sizes[0] >= args.sizes[1]:
        parser.error("--sizes needs B1 < B2")
    results = []
    for name in args.methods:
        runs = []
        for units in args.sizes or PAPER_BATCH[name][3]:
            proc = subprocess.run([sys.executable, __file__, "--child", name, str(units)], capture_output=True,
                                  text=True, check=False)
            if proc.returncode:
                raise RuntimeError(f"{name} at {units} units failed:\n{proc.stderr[-3000:]}")
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(json.dumps(runs[-1]), flush=True)
        for gib in args.gpus:
            results.append({"method": name, "runs": runs, **plan(name, runs, gib, args.reserve)})
            print(json.dumps({k: v for k, v in results[-1].items() if k != "runs"}), flush=True)
    print("\nmethod       per image   fixed+weights  " + "  ".join(f"{g:g} GiB: micro x accumulate"
                                                             for g in args.gpus))
    for name in args.methods:
        rows = [r for r in results if r["method"] == name]
        cells = "  ".join(f"{r['largest_micro_batch'] if r['per_unit_mib'] else 'any':>5} max, "
                          f"{r['micro_batch']} x {r['accumulate']} = "
                          f"{r['paper_batch']} {r['unit']}" for r in rows)
        print(f"{name:12} {rows[0]['per_image_mib']:8.0f} MiB {(rows[0]['fixed_mib'] + rows[0]['weights_mib']) / 1024:8.2f} GiB"
              f"   {cells}")
    if args.out:
        from fsadlib.io import write_json

        write_json(args.out, results)


if __name__ == "__main__":
    main()
