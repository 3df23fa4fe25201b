"""Run a cosmic-ray session's pending mutants from a preloaded process: ``make mutants``' executor.

    python tests/reference/fork_exec.py SESSION MODULE_DIR TEST [TEST ...] [--timeout S]
    (cwd and PYTHONPATH: the scratch tree holding the mutated module)

``cosmic-ray exec`` starts a fresh ``pytest`` per mutant: interpreter start, torch, open_clip,
torch-geometric, scikit-learn and pandas imports (about 10 s on the shared cores) before one test
runs. Here one process imports those third-party modules once and forks a child per mutant; only the
child imports ``fsadlib`` (after the mutation is on disk), so every mutant still runs against a fresh
copy of the package, as with cosmic-ray's own executor. Outcomes follow cosmic-ray's: pytest exit 1
(a test failed) or 2 (collection or import error) is ``killed``, 0 is ``survived``, a timeout is
``killed`` with the output ``timeout``; a child that dies by a signal or exits 3-5 (pytest's internal,
usage or no-tests errors) is ``incompetent`` (a fault of the harness, never counted as a kill).

**Baseline first.** The unmutated tests run once in a child; they must pass (else every mutant would
look killed: the run stops with an error pointing at the baseline's log). The baseline gives each
test's time (setup + call) and the third-party modules to preload (every module in ``sys.modules``
whose file lies outside the scratch tree). Mutant runs use ``-x`` and order the tests: first those
that killed an earlier mutant of the session (``killers.json``), then the others, each group fastest
first by baseline time, so a mutant usually dies at the first test it meets. The per-mutant timeout is
``--timeout`` or 3 x the baseline time + 30 s. One executor per session at a time (a lock file); SIGTERM
or Ctrl-C restores the mutated module before exiting.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import fcntl
import importlib
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

import cosmic_ray.plugins
from cosmic_ray.mutating import use_mutation
from cosmic_ray.work_db import WorkDB, use_db
from cosmic_ray.work_item import TestOutcome, WorkerOutcome, WorkItem, WorkResult

PYTEST_ARGS = ("-x", "-q", "-p", "no:randomly", "-p", "no:cacheprovider")
KILLING_EXITS = {1, 2}   # tests failed; interrupted (collection or import error)
SURVIVING_EXIT = 0


class TestOrder:
    """pytest plugin: records each test's time (setup + call) and the first failing test. With
    ``durations`` it orders the collected tests: those in ``killers`` (tests that killed an earlier
    mutant of the session) first, then the others, each group fastest first by baseline time (tests
    absent from the baseline last)."""

    def __init__(self, durations: dict[str, float] | None = None, killers: frozenset[str] = frozenset()) -> None:
        self.durations, self.killers = durations, killers
        self.measured: dict[str, float] = {}
        self.first_failure = ""

    def pytest_collection_modifyitems(self, items: list) -> None:
        if self.durations is not None:
            items.sort(key=lambda item: (item.nodeid not in self.killers,
                                         self.durations.get(item.nodeid, float("inf"))))

    def pytest_runtest_logreport(self, report) -> None:
        if report.when in ("setup", "call"):
            self.measured[report.nodeid] = self.measured.get(report.nodeid, 0.0) + report.duration
        if report.failed and not self.first_failure:
            self.first_failure = report.nodeid


def own_names(tree: Path) -> set[str]:
    """Top-level names of the scratch tree's packages and modules (``fsadlib``, ``tests``, ...)."""
    return {p.stem for p in tree.iterdir() if p.is_dir() or p.suffix == ".py"}


def third_party_modules(tree: Path) -> list[str]:
    """Names of the imported modules that are neither in ``tree`` (by file or by top-level name: a
    module generated elsewhere under a tree package's name, such as torch-geometric's
    ``fsadlib.graph.<...>_propagate``, would import that package when preloaded) nor next to this script."""
    own_files, own = (str(tree.resolve()), str(Path(__file__).resolve().parent)), own_names(tree)
    names = []
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None) or ""
        if (name != "__main__" and name.split(".")[0] not in own
                and not os.path.realpath(path).startswith(own_files)):
            names.append(name)
    return names


def preload(names: list[str], tree: Path) -> None:
    """Import ``names`` (a module that does not import on its own, e.g. an alias, is left out), then
    check that no module of ``tree`` came with them: a child would reuse it instead of the mutant."""
    for name in names:
        with contextlib.suppress(Exception):  # an alias module; the child imports what it needs
            importlib.import_module(name)
    own = own_names(tree)
    leaked = sorted(name for name in sys.modules if name.split(".")[0] in own)
    if leaked:
        raise RuntimeError(f"preloading imported modules of the scratch tree: {leaked[:5]}")


def in_child(tests: list[str], log: Path, plugin: TestOrder, report: Path, modules: bool = False) -> int:
    """Run pytest in a forked child (stdout/stderr to ``log``) and write ``report`` (JSON: test times,
    first failing test, and with ``modules`` the third-party modules). Returns the child's pid."""
    pid = os.fork()
    if pid:
        return pid
    code = 3
    try:
        os.setpgid(0, 0)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.dont_write_bytecode = True
        code = int(__import__("pytest").main([*PYTEST_ARGS, *tests], plugins=[plugin]))
        report.write_text(json.dumps({"durations": plugin.measured, "first_failure": plugin.first_failure,
                                      "modules": third_party_modules(Path.cwd()) if modules else []}))
    except BaseException:  # noqa: BLE001 - the child must never return into the parent's loop
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def wait(pid: int, timeout: float) -> int | None:
    """The child's exit status (negative: killed by that signal), or None after ``timeout`` s. The
    child's process group is killed on a timeout and when the wait is interrupted."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.05)
    except BaseException:
        os.killpg(pid, signal.SIGKILL)
        raise
    os.killpg(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def baseline(tests: list[str], work: Path) -> dict:
    """Run the unmutated tests once; raise naming the failing test when they do not pass."""
    log, report = work / "baseline.log", work / "baseline.json"
    start = time.monotonic()
    report.unlink(missing_ok=True)
    status = wait(in_child(tests, log, TestOrder(), report, modules=True), 3600.0)
    if status != SURVIVING_EXIT or not report.exists():
        raise RuntimeError(f"the unmutated tests do not pass (exit {status}); see {log}")
    result = json.loads(report.read_text())
    result["seconds"] = time.monotonic() - start
    return result


def drop_bytecode(module: Path) -> None:
    """Remove the module's cached bytecode (a mutant of equal size within the same second would
    otherwise load the previous, stale ``.pyc``)."""
    for cached in (module.parent / "__pycache__").glob(f"{module.stem}.*.pyc"):
        cached.unlink()


def run_mutant(item: WorkItem, tests: list[str], order: TestOrder, timeout: float, work: Path) -> WorkResult:
    """Apply the item's mutation on disk, run the tests in ``order`` in a child, restore the module.
    A test that kills the mutant joins ``order.killers`` (saved in ``work/killers.json``)."""
    log, report = work / "mutant.log", work / "mutant.json"
    report.unlink(missing_ok=True)
    (mutation,) = item.mutations
    operator = cosmic_ray.plugins.get_operator(mutation.operator_name)(**mutation.operator_args)
    module = Path(mutation.module_path)
    with use_mutation(module, operator, mutation.occurrence) as (original, mutated):
        if mutated is None:
            return WorkResult(worker_outcome=WorkerOutcome.NO_TEST)
        drop_bytecode(module)
        status = wait(in_child(tests, log, order, report), timeout)
    drop_bytecode(module)
    diff = "\n".join(difflib.unified_diff(original.splitlines(), mutated.splitlines(),
                                          str(module), str(module), lineterm=""))
    output = log.read_text(errors="replace")[-4000:]
    if status is None:
        outcome, output = TestOutcome.KILLED, "timeout"
    elif status in KILLING_EXITS:
        outcome = TestOutcome.KILLED
        killer = json.loads(report.read_text())["first_failure"] if report.exists() else ""
        if killer:
            order.killers = order.killers | {killer}
            (work / "killers.json").write_text(json.dumps(sorted(order.killers)))
    elif status == SURVIVING_EXIT:
        outcome = TestOutcome.SURVIVED
    else:
        outcome, output = TestOutcome.INCOMPETENT, f"exit {status}\n{output}"
    return WorkResult(worker_outcome=WorkerOutcome.NORMAL, test_outcome=outcome, output=output, diff=diff)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("session", type=Path)
    parser.add_argument("tests", nargs="+")
    parser.add_argument("--timeout", type=float, default=0.0, help="seconds per mutant (0: 3 x baseline + 30)")
    args = parser.parse_args()
    work = args.session.resolve().parent
    lock = (work / "exec.lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"{args.session} is being run by another process; skipped", flush=True)
        return 0
    with use_db(str(args.session), WorkDB.Mode.open) as db:
        pending = list(db.pending_work_items)
    if not pending:
        return 0
    base = baseline(args.tests, work)
    timeout = args.timeout or 3 * base["seconds"] + 30
    print(f"baseline {base['seconds']:.1f} s, {len(base['durations'])} tests; timeout {timeout:.0f} s; "
          f"{len(pending)} mutants", flush=True)
    preload(base["modules"], Path.cwd())
    # SIGTERM and SIGINT (ignored by default in a background job) end the run with an exception, so the
    # mutated module is restored on the way out; set after the preload, which may install handlers
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    known = work / "killers.json"
    order = TestOrder(base["durations"], frozenset(json.loads(known.read_text())) if known.exists() else frozenset())
    for n, item in enumerate(pending, 1):
        start = time.monotonic()
        result = run_mutant(item, args.tests, order, timeout, work)
        with use_db(str(args.session), WorkDB.Mode.open) as db:
            db.set_result(item.job_id, result)
        print(f"[{n}/{len(pending)}] {item.job_id} {result.test_outcome or result.worker_outcome} "
              f"{time.monotonic() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
