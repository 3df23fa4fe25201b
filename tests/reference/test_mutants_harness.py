"""``make mutants``' executor (fork_exec.py) on a toy module whose every mutant's fate is known by hand.

``double(x) = x * 2`` with the test ``double(2) == 4``: cosmic-ray makes 13 mutants, 11 binary-operator
replacements of ``*`` and the constant 2 -> 3 and 2 -> 1. At x = 2 only ``x + 2`` and ``x ** 2`` still
give 4; the test also spins while ``double(3) == 9``, which only ``x ** 2`` gives, so that mutant must
end by the timeout (counted as killed, output ``timeout``), ``x + 2`` survives and the 11 others die.
The test module also registers a module named ``toy.generated`` whose file lies elsewhere: preloading
it would import the unmutated ``toy`` into the parent, and every mutant would survive.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cosmic_ray.work_db import WorkDB, use_db
from cosmic_ray.work_item import TestOutcome as Outcome

HERE = Path(__file__).resolve().parent
CONFIG = """[cosmic-ray]
module-path = "toy.py"
timeout = 10
excluded-modules = []
test-command = "pytest"

[cosmic-ray.distributor]
name = "local"
"""
TEST = """import sys
import types

from toy import double

generated = types.ModuleType("toy.generated")  # as torch-geometric's generated fsadlib.graph.<...>_propagate
generated.__file__ = "/elsewhere/generated.py"
sys.modules["toy.generated"] = generated


def test_double():
    assert double(2) == {want}
    while double(3) == 9:
        pass
"""


def toy_session(folder: Path, want: int) -> Path:
    folder.mkdir()
    (folder / "toy.py").write_text("def double(x):\n    return x * 2\n")
    (folder / "test_toy.py").write_text(TEST.format(want=want))
    (folder / "config.toml").write_text(CONFIG)
    bin_dir = Path(sys.executable).parent
    subprocess.run([bin_dir / "cosmic-ray", "init", "config.toml", "session.sqlite"], cwd=folder, check=True)
    return folder / "session.sqlite"


def execute(session: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, HERE / "fork_exec.py", session.name, "test_toy.py", "--timeout", "8"],
                          cwd=session.parent, capture_output=True, text=True, check=False,
                          env={"PYTHONPATH": str(session.parent), "PATH": "/usr/bin:/bin"})


def test_every_mutant_gets_its_known_outcome(tmp_path):
    session = toy_session(tmp_path / "toy", want=4)
    run = execute(session)
    assert run.returncode == 0, run.stderr
    with use_db(str(session), WorkDB.Mode.open) as db:
        assert not db.pending_work_items
        outcomes = {(w.mutations[0].operator_name.split("/")[1], w.mutations[0].occurrence):
                    (r.test_outcome, r.output == "timeout") for w, r in db.completed_work_items}
    assert len(outcomes) == 13
    assert outcomes.pop(("ReplaceBinaryOperator_Mul_Add", 0)) == (Outcome.SURVIVED, False)
    assert outcomes.pop(("ReplaceBinaryOperator_Mul_Pow", 0)) == (Outcome.KILLED, True)
    assert set(outcomes.values()) == {(Outcome.KILLED, False)}


def test_tests_failing_before_any_mutation_stop_the_run(tmp_path):
    session = toy_session(tmp_path / "toy", want=5)
    run = execute(session)
    assert run.returncode != 0 and "the unmutated tests do not pass" in run.stderr
    with use_db(str(session), WorkDB.Mode.open) as db:
        assert len(list(db.pending_work_items)) == 13  # no mutant was judged
