"""Train or evaluate a method on several processes from a shell, a script or a SLURM job (README
"More than one GPU or machine")::

    python -m fsadlib.scale train <method folder> [--smoke] [--nproc-per-node N] [--nnodes M
        --rdzv-endpoint host:port --rdzv-id ID] [--output-root DIR]
    python -m fsadlib.scale evaluate <method> [--folder F] [--smoke] [...]
    torchrun --standalone --nproc-per-node N -m fsadlib.scale train <method folder> [--smoke]

run what the training notebook and the evaluation notebook run (``train_method``, ``run_plan``), with
the ``distributed`` section of params.yaml overridden by the options given (:mod:`fsadlib.distributed`
launches the ranks, or joins the world torchrun made); like a notebook outside DVC they write under
``scratch/`` (or ``--output-root``; inside a DVC stage, the repository). A module of its own, so that
the stages that import :mod:`fsadlib.distributed` do not depend on the evaluation and training code.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Sequence

from fsadlib.distributed import DistributedConfig, load_config
from fsadlib.paths import use_output_root


def main(argv: Sequence[str] | None = None) -> None:
    """The command line of the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m fsadlib.scale",
                                     description="train or evaluate a method on several processes")
    parser.add_argument("task", choices=("train", "evaluate"))
    parser.add_argument("method", help="train: a method folder (kag_prompt); evaluate: a method (winclip_plus)")
    parser.add_argument("--folder", default=None, help="evaluate: the method's folder (default: found)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, as params.yaml smoke: 1")
    parser.add_argument("--output-root", default="", help="where models/ results/ reports/ go (default scratch/)")
    for field in dataclasses.fields(DistributedConfig):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(field.default), default=None,
                            help=f"distributed.{field.name} (default: params.yaml)")
    args = parser.parse_args(argv)

    print(f"writing under {use_output_root(args.output_root)}")
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(DistributedConfig)
                 if getattr(args, f.name) is not None}
    config = dataclasses.replace(load_config(), **overrides)
    if args.task == "train":
        from fsadlib.methods.training import train_method

        result = train_method(args.method, smoke=args.smoke, world=config)
    else:
        from fsadlib.evaluate import run_plan

        result = run_plan(args.method, smoke=args.smoke, folder=args.folder, world=config)
    if result is not None and os.environ.get("RANK", "0") == "0":  # under torchrun every rank returns
        print(result.summary() if args.task == "train" else result.to_string())


if __name__ == "__main__":
    main()
