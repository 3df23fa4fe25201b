"""Throughput of 1 vs W worker processes (fsadlib.distributed) on evaluation and on training, as a
ratio measured in one run (the reference, one process, runs right before the W-process run).

- evaluation: :func:`fsadlib.evaluate.evaluate_sharded` of WinCLIP (zero-shot, the ``winclip`` section
  of params.yaml: the tiny CLIP on CPU) over a generated synthetic data set of ``--categories``
  categories, bootstrap intervals included; throughput = test images / s.
- training: :func:`fsadlib.train.fit` of KAG-prompt (the ``kag_prompt`` section of params.yaml) on the
  generated auxiliary images with their synthetic anomalies, DDP over the ranks; throughput = training
  images / s over all ranks (each rank runs its own micro-batches of ``2 x data.batch_size`` images).

Times start after every rank built its model and passed a barrier, and end at a barrier after the
work (process start-up, imports and model construction are reported apart, as ``launch_s``). One
process uses all the machine's threads; W processes use cores / W each (``distributed.threads_per_rank``
0). On N GPUs the same script measures N processes, one GPU each (bf16 autocast on CUDA)::

    python benchmarks/bench_distributed.py                       # 1 vs 2 processes, CPU here
    python benchmarks/bench_distributed.py --world 8             # 1 vs 8 GPUs of one machine
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from fsadlib import distributed
from fsadlib.distributed import DistributedConfig, launch

SYNTHETIC = ("noise", "stripes", "grid", "brick", "grass", "gravel", "disc", "polygon", "cross")


def make_data(root: Path, categories: int, n_test: int) -> Path:
    """A synthetic MVTec-shaped tree at 64 px with ``n_test`` test images per category (half anomalous)."""
    from fsadlib.data import synthetic

    return synthetic.generate(root, image_size=64, n_train=8, n_test_good=n_test // 2,
                              n_test_bad=n_test - n_test // 2, categories=SYNTHETIC[:categories])


def _timed(work) -> float:
    """Seconds of ``work()`` between two barriers (every rank)."""
    distributed.barrier()
    start = time.perf_counter()
    work()
    distributed.barrier()
    return time.perf_counter() - start


def evaluation_rank(root: str, out: str) -> dict[str, float]:
    """One rank of the evaluation measurement: ``{"seconds", "images"}``."""
    from fsadlib.data import read_samples
    from fsadlib.evaluate import EvalConfig, PlannedRun, evaluate_sharded
    from fsadlib.methods.registry import method_class, method_spec
    from fsadlib.methods.training import load_method_section

    table = read_samples("mvtec", root, "synthetic")
    method = method_class("winclip")(load_method_section(method_spec("winclip")).model)  # training-free
    seconds = _timed(lambda: evaluate_sharded([PlannedRun(method, out=Path(out))], "synthetic",
                                              config=EvalConfig(bootstrap=200), samples=table))
    return {"seconds": seconds, "images": float((table.split == "test").sum())}


def training_rank(root: str, out: str, steps: int) -> dict[str, float]:
    """One rank of the training measurement: ``{"seconds", "images"}`` (images over all ranks)."""
    from fsadlib.config import load_section
    from fsadlib.data import read_samples
    from fsadlib.methods.kag_prompt.model import KagPrompt
    from fsadlib.methods.kag_prompt.train import KagTrainSection, SyntheticAnomalyBatches, kag_loss
    from fsadlib.train import TrainConfig, fit

    section = load_section("kag_prompt", KagTrainSection)
    rows = read_samples("mvtec", root, "synthetic")
    rows = rows[(rows.split == "train") & (rows.label == 0)].reset_index(drop=True)
    torch.manual_seed(0)
    method = KagPrompt(section.model)
    bb = method.backbone
    batches = SyntheticAnomalyBatches(rows, bb.image_size, section.data.batch_size, section.data.synthesis,
                                      bb.mean, bb.std)
    config = TrainConfig(epochs=1, steps_per_epoch=steps, lr=1e-3, amp=1, seed=0)
    seconds = _timed(lambda: fit(method, batches, lambda m, b: kag_loss(m, b, section.loss), config, out,
                                 resume=False))
    images = distributed.world_size() * steps * config.accumulate * 2 * section.data.batch_size
    return {"seconds": seconds, "images": float(images)}


def measure(world: int, fn, *args) -> dict[str, float]:
    """``fn`` on ``world`` processes (1: this process): images/s, work seconds and launch overhead."""
    start = time.perf_counter()
    result = launch(fn, *args, config=DistributedConfig(nproc_per_node=world))
    wall = time.perf_counter() - start
    return {"world": world, "images_per_s": result["images"] / result["seconds"], "work_s": result["seconds"],
            "launch_s": wall - result["seconds"]}


def best_of(repeat: int, world: int, fn, root: Path, out: str, *extra) -> dict[str, float]:
    """The fastest of ``repeat`` measurements (a shared machine only ever slows a run down)."""
    runs = [measure(world, fn, str(root), f"{out}_{i}", *extra) for i in range(repeat)]
    return max(runs, key=lambda r: r["images_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", type=int, default=2, help="processes to compare with one (default 2)")
    parser.add_argument("--categories", type=int, default=4)
    parser.add_argument("--test-images", type=int, default=16, help="test images per category")
    parser.add_argument("--steps", type=int, default=6, help="training optimizer steps")
    parser.add_argument("--repeat", type=int, default=2, help="measurements per setting; the best counts")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as tmp:
        root = make_data(Path(tmp) / "data", args.categories, args.test_images)
        rows = {}
        for task, fn, extra in (("evaluation", evaluation_rank, ()), ("training", training_rank, (args.steps,))):
            one = best_of(args.repeat, 1, fn, root, f"{tmp}/{task}1", *extra)
            many = best_of(args.repeat, args.world, fn, root, f"{tmp}/{task}{args.world}", *extra)
            rows[task] = {"one": one, "many": many, "speedup": many["images_per_s"] / one["images_per_s"]}
            print(f"{task}: 1 process ({torch.get_num_threads()} threads) {one['images_per_s']:.2f} img/s, "
                  f"{args.world} processes {many['images_per_s']:.2f} img/s -> {rows[task]['speedup']:.2f}x "
                  f"(start-up of the {args.world} processes {many['launch_s']:.1f} s, not counted)", flush=True)
        print(json.dumps({"device": "cuda" if torch.cuda.is_available() else "cpu",
                          "threads_of_one_process": torch.get_num_threads(), **rows}, indent=1))


if __name__ == "__main__":
    main()
