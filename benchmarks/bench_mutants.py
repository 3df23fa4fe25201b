"""Seconds per mutant of ``make mutants``: cosmic-ray's own executor against ``fork_exec.py``.

Reference: ``cosmic-ray exec``, which starts a fresh ``pytest`` per mutant (interpreter, torch,
open_clip, ... imports each time) and runs the module's tests in file order. Ours: ``fork_exec.py``
(one preloaded process, a forked pytest per mutant, tests that killed before first). Both run the same
seeded sample of the module's mutants (two copies of one ``cosmic-ray init`` session, in one scratch
tree), one after the other; before the timings are reported, the two verdicts (killed / survived) are
checked equal mutant by mutant. Ours includes its baseline run. Two figures: wall seconds, and CPU
seconds (user + system of the executor and everything it started), which a shared, loaded machine
changes far less than the wall time; the ratio is taken on CPU seconds.

    python benchmarks/bench_mutants.py --module losses --mutants 6

Prints one JSON line per executor and the ratio ours / reference; ``--out`` writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "reference"))

from cosmic_ray.work_db import WorkDB, use_db
from listed_mutations import scratch_copy
from mutants import CONFIG, MODULES, keep_sample

from fsadlib.io import write_json


def children_cpu_seconds() -> float:
    """User + system CPU seconds of every finished descendant of this process (waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def verdicts(session: Path) -> dict[str, str]:
    """job id -> test outcome of every mutant run."""
    with use_db(str(session), WorkDB.Mode.open) as db:
        return {w.job_id: str(r.test_outcome) for w, r in db.completed_work_items if r.test_outcome is not None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", default="losses", choices=sorted(MODULES))
    parser.add_argument("--mutants", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    module, tests, _ = MODULES[args.module]
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch) / "tree"
        tree.mkdir()
        scratch_copy(tree)
        config = tree / "config.toml"
        config.write_text(CONFIG.format(module=module, timeout=900.0, python=sys.executable, tests=" ".join(tests)))
        env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
        reference, ours = Path(scratch) / "reference.sqlite", Path(scratch) / "ours.sqlite"
        subprocess.run([bin_dir / "cosmic-ray", "init", config, reference], cwd=tree, env=env, check=True,
                       capture_output=True)
        keep_sample(reference, args.mutants, args.seed)
        shutil.copy(reference, ours)
        commands = {"reference": [bin_dir / "cosmic-ray", "exec", config, reference],
                    "ours": [sys.executable, ROOT / "tests" / "reference" / "fork_exec.py", ours, *tests]}
        seconds, cpu = {}, {}
        for name, command in commands.items():
            start, start_cpu = time.perf_counter(), children_cpu_seconds()
            subprocess.run(command, cwd=tree, env=env, check=True, capture_output=True)
            seconds[name], cpu[name] = time.perf_counter() - start, children_cpu_seconds() - start_cpu
        want, got = verdicts(reference), verdicts(ours)
    if want != got or len(want) != args.mutants:
        raise SystemExit(f"the executors disagree: reference {want}, ours {got}")
    rows = [{"executor": name, "module": module, "mutants": args.mutants, "wall_seconds": round(s, 1),
             "cpu_seconds": round(cpu[name], 1), "cpu_seconds_per_mutant": round(cpu[name] / args.mutants, 2)}
            for name, s in seconds.items()]
    for row in rows:
        print(json.dumps(row))
    ratio = {"ours / reference (cpu)": round(cpu["ours"] / cpu["reference"], 3),
             "ours / reference (wall)": round(seconds["ours"] / seconds["reference"], 3),
             "killed": sum(v == "TestOutcome.KILLED" for v in got.values())}
    print(json.dumps(ratio))
    if args.out:
        write_json(args.out, {"rows": rows, **ratio})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
