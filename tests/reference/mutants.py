"""``make mutants``: cosmic-ray over the formula modules, each with its matching tests (not in CI).

    python tests/reference/mutants.py [--only SUBSTRING] [--out reports/mutants] [--sample N] [--timeout S]

cosmic-ray edits the module in place, so everything runs in a scratch copy of the repository,
``<out>/<name>/tree`` (made when the module's session is new; never the working tree). For every
module of :data:`MODULES` it writes ``<out>/<name>/config.toml`` (the module, the test command, a
per-mutant timeout), runs ``cosmic-ray init`` + ``exec`` into ``<out>/<name>/session.sqlite`` (an
interrupted run resumes where it stopped: ``exec`` skips mutants already done) and prints the kill
rate. Survivors: ``cr-report <out>/<name>/session.sqlite --show-diff --surviving-only``.
Slow by nature: every mutant reruns the module's tests (run one module at a time in the background).

``--sample N`` (for a new session): a uniform random sample of N of the module's mutants (seeded by
``--seed``) is run, the others are marked skipped. Kill rate = killed / (killed + survived), a
timeout counting as killed; the figures per module and the survivors judged equivalent are in
``tests/reference/MUTANTS.md``.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

from cosmic_ray.work_db import WorkDB, use_db
from cosmic_ray.work_item import TestOutcome, WorkerOutcome, WorkResult
from listed_mutations import scratch_copy

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
U, R = "tests/unit/", "tests/reference/"

class Target(NamedTuple):
    """A module, the tests that must kill its mutants, and (for a training module) the definitions
    that hold its formulas: mutants elsewhere in the file (data loading, loops) are skipped."""

    module: str
    tests: tuple[str, ...]
    definitions: tuple[str, ...] = ()


MODULES: dict[str, Target] = {
    "maps": Target("fsadlib/maps.py", (U + "test_maps_losses.py",)),
    "losses": Target("fsadlib/losses.py", (U + "test_maps_losses.py", U + "test_losses.py")),
    "metrics": Target("fsadlib/metrics", (U + "metrics",)),
    "winclip_model": Target("fsadlib/methods/winclip/model.py",
                            (R + "test_winclip_reference.py", U + "methods/test_winclip.py")),
    "inctrl_model": Target("fsadlib/methods/inctrl/model.py",
                           (R + "test_inctrl_reference.py", U + "methods/test_inctrl.py")),
    "inctrl_loss": Target("fsadlib/methods/inctrl/train.py",
                          (R + "test_inctrl_reference.py", U + "methods/test_inctrl.py"),
                          ("inctrl_loss", "InctrlLossConfig")),
    "kag_prompt_model": Target("fsadlib/methods/kag_prompt/model.py",
                               (R + "test_kag_prompt_reference.py", U + "methods/test_kag_prompt.py")),
    "kag_prompt_modules": Target("fsadlib/methods/kag_prompt/modules.py",
                                 (R + "test_kag_prompt_reference.py", U + "methods/test_kag_prompt.py")),
    "kag_prompt_loss": Target("fsadlib/methods/kag_prompt/train.py",
                              (R + "test_kag_prompt_reference.py", U + "methods/test_kag_prompt_train.py"),
                              ("kag_loss", "KagLossConfig")),
    "bayes_pfl_model": Target("fsadlib/methods/bayes_pfl/model.py",
                              (R + "test_bayes_pfl_reference.py", U + "methods/test_bayes_pfl.py")),
    "bayes_pfl_flows": Target("fsadlib/methods/bayes_pfl/flows.py",
                              (R + "test_bayes_pfl_reference.py", U + "methods/test_bayes_pfl.py")),
    "bayes_pfl_loss": Target("fsadlib/methods/bayes_pfl/train.py",
                             (R + "test_bayes_pfl_reference.py", U + "methods/test_bayes_pfl.py"),
                             ("stage1_loss", "orthogonality_loss")),
    "finegrained_model": Target("fsadlib/methods/finegrained/model.py",
                                (R + "test_finegrained_reference.py", U + "methods/test_finegrained.py")),
    "finegrained_losses": Target("fsadlib/methods/finegrained/losses.py",
                                 (R + "test_finegrained_reference.py", U + "methods/test_finegrained.py")),
}

CONFIG = """[cosmic-ray]
module-path = "{module}"
timeout = {timeout}
excluded-modules = []
test-command = "{python} -m pytest -x -q -p no:randomly -p no:cacheprovider {tests}"

[cosmic-ray.distributor]
name = "local"
"""


def run_module(name: str, out: Path, timeout: float, sample: int = 0, seed: int = 0) -> str:
    module, tests, definitions = MODULES[name]
    work = out / name
    tree, config, session = work / "tree", work / "config.toml", work / "session.sqlite"
    if not session.exists():
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir(parents=True)
        scratch_copy(tree)
    config.write_text(CONFIG.format(module=module, timeout=timeout, python=sys.executable, tests=" ".join(tests)))
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
    if not session.exists():
        subprocess.run([BIN / "cosmic-ray", "init", config, session], cwd=tree, env=env, check=True)
        if definitions:
            keep_definitions(session, definitions)
        if sample:
            keep_sample(session, sample, seed)
    subprocess.run([BIN / "cosmic-ray", "exec", config, session], cwd=tree, env=env, check=True)
    return f"{name} ({module}): " + summary(tally(session))


def keep_definitions(session: Path, definitions: tuple[str, ...]) -> None:
    """Mark the mutants outside ``definitions`` (the formula functions of the file) as skipped."""
    with use_db(str(session)) as db:
        db.set_multiple_results([w.job_id for w in db.pending_work_items
                                 if any(m.definition_name not in definitions for m in w.mutations)],
                                WorkResult(worker_outcome=WorkerOutcome.SKIPPED))


def keep_sample(session: Path, n: int, seed: int) -> None:
    """Mark all but a seeded uniform sample of ``n`` mutants as skipped (ordered by position and
    operator first, so the sample depends on the module's mutants and the seed only)."""
    with use_db(str(session)) as db:
        items = sorted(db.pending_work_items, key=lambda w: [(str(m.module_path), m.start_pos, m.operator_name,
                                                              m.occurrence) for m in w.mutations])
        kept = set(random.Random(seed).sample(range(len(items)), min(n, len(items))))
        db.set_multiple_results([w.job_id for i, w in enumerate(items) if i not in kept],
                                WorkResult(worker_outcome=WorkerOutcome.SKIPPED))


def tally(session: Path) -> dict[str, int]:
    """Counts of a session: killed, timeout (counted as killed), survived, incompetent, skipped, pending."""
    counts = dict.fromkeys(("killed", "timeout", "survived", "incompetent", "skipped", "pending"), 0)
    with use_db(str(session), WorkDB.Mode.open) as db:
        counts["pending"] = len(db.pending_work_items)
        for _, result in db.completed_work_items:
            if result.worker_outcome == WorkerOutcome.SKIPPED:
                counts["skipped"] += 1
            elif result.test_outcome == TestOutcome.KILLED:
                counts["timeout" if result.output == "timeout" else "killed"] += 1
            elif result.test_outcome == TestOutcome.SURVIVED:
                counts["survived"] += 1
            else:
                counts["incompetent"] += 1
    return counts


def summary(counts: dict[str, int]) -> str:
    """``killed k/n (r %)`` over the mutants run, then every count."""
    killed, run = counts["killed"] + counts["timeout"], counts["killed"] + counts["timeout"] + counts["survived"]
    rate = f"{100 * killed / run:.1f} %" if run else "n/a"
    return f"killed {killed}/{run} ({rate}); " + ", ".join(f"{k} {v}" for k, v in counts.items())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="modules whose name contains this text")
    parser.add_argument("--out", default=str(ROOT / "reports" / "mutants"))
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per mutant's test run")
    parser.add_argument("--sample", type=int, default=0, help="run a random sample of this many mutants (0: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in MODULES:
        if args.only in name:
            print(run_module(name, out, args.timeout, args.sample, args.seed), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
