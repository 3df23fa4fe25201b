"""``make mutants``: cosmic-ray over the formula modules, each with its matching tests (not in CI).

    python tests/reference/mutants.py [--only NAME] [--out reports/mutants] [--sample N] [--timeout S]

cosmic-ray edits the module in place, so everything runs in a scratch copy of the repository,
``<out>/<name>/tree`` (made when the module's session is new; never the working tree). For every
module of :data:`MODULES` it writes ``<out>/<name>/config.toml`` (the module, the test command),
enumerates the mutants with ``cosmic-ray init`` into ``<out>/<name>/session.sqlite`` and runs them
with ``fork_exec.py`` (one preloaded process, a forked pytest per mutant, tests that killed before
first; an interrupted run resumes where it stopped) and prints the kill rate. Mutants inside
annotations are not run (equivalent by construction, counted apart). Survivors:
``cr-report <out>/<name>/session.sqlite --show-diff --surviving-only``.

``--recheck`` reruns an existing session's survivors against the current tests (after adding tests).
``--sample N``: a uniform random sample of N of the module's mutants (seeded by ``--seed``) is run,
the others are marked skipped; on an existing session the sample grows to N (rounds over all modules). Kill rate = killed / (killed + survived), a
timeout counting as killed; the figures per module and the survivors judged equivalent are in
``tests/reference/MUTANTS.md``.
"""

from __future__ import annotations

import argparse
import ast
import os
import random
import shutil
import sqlite3
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
    "maps": Target("fsadlib/maps.py", (U + "test_maps_losses.py",
                                       U + "methods/test_patchcore.py::test_nearest_euclidean_equals_a_loop")),
    "losses": Target("fsadlib/losses.py", (U + "test_maps_losses.py", U + "test_losses.py")),
    "metrics": Target("fsadlib/metrics", (U + "metrics",)),
    "winclip_model": Target("fsadlib/methods/winclip/model.py",
                            (R + "test_winclip_reference.py", U + "methods/test_winclip.py")),
    "winclip_windows": Target("fsadlib/methods/winclip/windows.py",
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
    "kag_prompt_graph": Target("fsadlib/graph",
                               (U + "graph", R + "test_kag_prompt_reference.py", U + "methods/test_kag_prompt.py")),
    "kag_prompt_loss": Target("fsadlib/methods/kag_prompt/train.py",
                              (R + "test_kag_prompt_reference.py", U + "methods/test_kag_prompt_train.py"),
                              ("kag_loss", "KagLossConfig")),
    "bayes_pfl_model": Target("fsadlib/methods/bayes_pfl/model.py",
                              (R + "test_bayes_pfl_reference.py", U + "methods/test_bayes_pfl.py")),
    "bayes_pfl_layers": Target("fsadlib/methods/bayes_pfl/layers.py",
                               (R + "test_bayes_pfl_reference.py", U + "methods/test_bayes_pfl.py")),
    "bayes_pfl_flows": Target("fsadlib/methods/bayes_pfl/flows.py",
                              (R + "test_bayes_pfl_reference.py", U + "methods/test_bayes_pfl.py")),
    "bayes_pfl_loss": Target("fsadlib/methods/bayes_pfl/train.py",
                             (R + "test_bayes_pfl_reference.py", U + "methods/test_bayes_pfl.py"),
                             ("stage1_loss", "orthogonality_loss")),
    "finegrained_model": Target("fsadlib/methods/finegrained/model.py",
                                (R + "test_finegrained_reference.py", U + "methods/test_finegrained.py")),
    "finegrained_regions": Target("fsadlib/methods/finegrained/regions.py",
                                  (R + "test_finegrained_reference.py", U + "methods/test_finegrained.py")),
    "finegrained_losses": Target("fsadlib/methods/finegrained/losses.py",
                                 (R + "test_finegrained_reference.py", U + "methods/test_finegrained.py")),
    "patchcore_model": Target("fsadlib/methods/patchcore/model.py", (U + "methods/test_patchcore.py",)),
}

CONFIG = """[cosmic-ray]
module-path = "{module}"
timeout = {timeout}
excluded-modules = []
test-command = "{python} -m pytest -x -q -p no:randomly -p no:cacheprovider {tests}"

[cosmic-ray.distributor]
name = "local"
"""


def run_module(name: str, out: Path, timeout: float = 0.0, sample: int = 0, seed: int = 0, recheck: bool = False) -> str:
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
    elif recheck:
        recheck_survivors(session, tree)
    skip_annotations(session, tree)
    if sample:
        keep_sample(session, sample, seed)
    subprocess.run([sys.executable, Path(__file__).with_name("fork_exec.py"), session, *tests,
                    "--timeout", str(timeout)], cwd=tree, env=env, check=True)
    return f"{name} ({module}): " + summary(tally(session))


def keep_definitions(session: Path, definitions: tuple[str, ...]) -> None:
    """Mark the mutants outside ``definitions`` (the formula functions of the file) as skipped."""
    with use_db(str(session)) as db:
        db.set_multiple_results([w.job_id for w in db.pending_work_items
                                 if any(m.definition_name not in definitions for m in w.mutations)],
                                WorkResult(worker_outcome=WorkerOutcome.SKIPPED, output="definitions"))


def annotation_spans(source: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(start, end) (line, column) of every annotation of a module that has ``from __future__ import
    annotations`` (there they are strings, never evaluated); none for any other module."""
    tree = ast.parse(source)
    if not any(isinstance(node, ast.ImportFrom) and node.module == "__future__"
               and any(alias.name == "annotations" for alias in node.names) for node in tree.body):
        return []
    annotations = [node.annotation for node in ast.walk(tree) if isinstance(node, (ast.arg, ast.AnnAssign))]
    annotations += [node.returns for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    return [((a.lineno, a.col_offset), (a.end_lineno, a.end_col_offset)) for a in annotations if a is not None]


def skip_annotations(session: Path, tree: Path) -> None:
    """Mark the mutants not yet run that lie inside an annotation as skipped with the output
    ``annotation``: equivalent by construction (the annotation is a string that nothing evaluates)."""
    with use_db(str(session), WorkDB.Mode.open) as db:
        results = dict(db.results)
        items = [w for w in db.work_items if w.job_id not in results
                 or results[w.job_id].worker_outcome == WorkerOutcome.SKIPPED and results[w.job_id].output is None]
        spans: dict[Path, list] = {}
        inside = []
        for w in items:
            (m,) = w.mutations
            if m.module_path not in spans:
                spans[m.module_path] = annotation_spans((tree / m.module_path).read_text())
            if any(start <= tuple(m.start_pos) and tuple(m.end_pos) <= end for start, end in spans[m.module_path]):
                inside.append(w.job_id)
        db.set_multiple_results(inside, WorkResult(worker_outcome=WorkerOutcome.SKIPPED, output="annotation"))


def keep_sample(session: Path, n: int, seed: int) -> None:
    """Make ``n`` of the session's mutants the ones to run (all the others skipped): a new session
    keeps a seeded uniform sample of its pending mutants; an existing one grows by a uniform sample of
    its sample-skipped mutants (or drops pending ones), so a sample can be extended round by round.
    Mutants skipped as outside the module's definitions or inside an annotation carry the output
    ``definitions`` or ``annotation`` and never join the sample."""
    with use_db(str(session)) as db:
        results = {w.job_id: r for w, r in db.completed_work_items}
        pending = sorted(w.job_id for w in db.pending_work_items)
    sampled_out = sorted(j for j, r in results.items()
                         if r.worker_outcome == WorkerOutcome.SKIPPED and r.output is None)
    chosen = len(pending) + sum(1 for r in results.values() if r.worker_outcome != WorkerOutcome.SKIPPED)
    rng = random.Random(f"{seed}:{chosen}")
    if chosen > n:
        drop = rng.sample(pending, min(chosen - n, len(pending)))
        with use_db(str(session)) as db:
            db.set_multiple_results(drop, WorkResult(worker_outcome=WorkerOutcome.SKIPPED))
    elif chosen < n:
        add = rng.sample(sampled_out, min(n - chosen, len(sampled_out)))
        with sqlite3.connect(session) as con:
            con.executemany("DELETE FROM work_results WHERE job_id = ?", [(j,) for j in add])


def recheck_survivors(session: Path, tree: Path) -> None:
    """Copy the current tests into the session's tree and make its survivors pending again (the
    module itself stays as the session saw it, so every mutant's position still holds)."""
    shutil.copytree(ROOT / "tests", tree / "tests", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    with use_db(str(session), WorkDB.Mode.open) as db:
        survivors = [w.job_id for w, r in db.completed_work_items if r.test_outcome == TestOutcome.SURVIVED]
    with sqlite3.connect(session) as con:
        con.executemany("DELETE FROM work_results WHERE job_id = ?", [(j,) for j in survivors])


def tally(session: Path) -> dict[str, int]:
    """Counts of a session: killed, timeout (counted as killed), survived, incompetent, skipped, pending."""
    counts = dict.fromkeys(("killed", "timeout", "survived", "incompetent", "annotation", "skipped", "pending"), 0)
    with use_db(str(session), WorkDB.Mode.open) as db:
        counts["pending"] = len(db.pending_work_items)
        for _, result in db.completed_work_items:
            if result.worker_outcome == WorkerOutcome.SKIPPED:
                counts["annotation" if result.output == "annotation" else "skipped"] += 1
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
    parser.add_argument("--only", default="", help="the module of this name, else those whose name contains it")
    parser.add_argument("--out", default=str(ROOT / "reports" / "mutants"))
    parser.add_argument("--timeout", type=float, default=0.0,
                        help="seconds per mutant's test run (0: 3 x the baseline run + 30)")
    parser.add_argument("--sample", type=int, default=0, help="run a random sample of this many mutants (0: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample")
    parser.add_argument("--recheck", action="store_true",
                        help="rerun the survivors of existing sessions against the current tests")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in [args.only] if args.only in MODULES else MODULES:
        if args.only in name:
            print(run_module(name, out, args.timeout, args.sample, args.seed, args.recheck), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
