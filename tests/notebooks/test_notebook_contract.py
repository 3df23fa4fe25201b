"""Static contract of every notebook in notebooks/ and of the dvc.yaml stages that run them."""

from __future__ import annotations

import runpy
from pathlib import Path

import nbformat
import pytest

from fsadlib.notebooks import (
    NOTEBOOK_NAME,
    build_notebook,
    contract_problems,
    is_pipeline_notebook,
    md,
    notebook_parameters,
    notebook_stages,
    notebooks,
)
from fsadlib.paths import repo_root

NOTEBOOKS = notebooks()
STAGES = notebook_stages()


def ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_notebook_contract(path):
    assert NOTEBOOK_NAME.fullmatch(path.name), f"{path.name}: name must be NN_verb[_object].ipynb"
    assert contract_problems(path) == []


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if is_pipeline_notebook(p)],
                         ids=ids([p for p in NOTEBOOKS if is_pipeline_notebook(p)]))
def test_pipeline_notebook_has_its_stage(path):
    name = NOTEBOOK_NAME.fullmatch(path.name)["name"]
    runs = [s for s in STAGES if Path(s.notebook) == Path("notebooks") / path.name]
    assert runs, f"no dvc.yaml stage runs {path.name}"
    assert {s.name for s in runs} == {name}, f"{path.name} must be run by stages (of one family) named '{name}'"


@pytest.mark.parametrize("stage", STAGES, ids=[s.name for s in STAGES])
def test_stage_runs_its_notebook_by_the_rules(stage):
    notebook = repo_root() / stage.notebook
    assert notebook.is_file(), f"stage {stage.name}: {stage.notebook} not found"
    assert stage.notebook in stage.deps, f"stage {stage.name}: the notebook must be a dependency"
    output = Path(stage.output)
    assert output.parent == Path("reports/notebooks") and output.name.startswith(notebook.stem)
    assert stage.output in stage.outs, f"stage {stage.name}: the executed notebook must be an output"
    assert f"mkdir -p {output.parent}" in stage.cmd, "papermill does not create its output folder"
    declared = notebook_parameters(notebook)
    undeclared = [p for p in stage.parameters if p not in declared]
    assert not undeclared, f"stage {stage.name} passes -p {undeclared}, not in {notebook.name}'s parameters cell"


def test_contract_checker_finds_each_problem():
    good = build_notebook("smoke = 0\nname = 'x'", [md("# t"), "x = 1"])
    assert contract_problems(good) == [] and notebook_parameters(good) == {"smoke": 0, "name": "x"}
    bad = build_notebook("sizes = [1, 2]\nmissed = 1  # k = 1 here", ["def f():\n    return 1", "class A:\n    pass",
                                            "assert 1 == 1, 'says what failed'\nassert 1 == 1"])
    bad.cells[1].outputs = [nbformat.v4.new_output("stream", text="hi")]
    bad.metadata.kernelspec.name = "julia"
    problems = " | ".join(contract_problems(bad))
    for expected in ("kernel is 'julia'", "only 'name = <scalar literal>'", "has outputs", "defines 'f'",
                     "defines 'A'", "code cell 3 line 2: assert without a message",
                     "line 2: papermill cannot read 'missed' (no '=' in its comment)"):
        assert expected in problems
    assert "line 1: assert" not in problems
    untagged = build_notebook("x = 1", [])
    untagged.cells[0].metadata = {}
    assert "0 cells tagged 'parameters'" in contract_problems(untagged)[0]


def test_committed_notebooks_are_what_the_build_script_writes(tmp_path):
    """Notebooks are generated (``make notebooks``): none may be edited by hand or left stale."""
    build = runpy.run_path(str(repo_root() / "scripts" / "build_notebooks.py"))["build"]
    written = {path.name: path.read_bytes() for path in build(tmp_path)}
    committed = {path.name: path.read_bytes() for path in NOTEBOOKS}
    assert sorted(written) == sorted(committed), "notebooks/ holds exactly the generated notebooks"
    stale = [name for name in written if written[name] != committed[name]]
    assert not stale, f"{stale} differ from what scripts/build_notebooks.py writes (run `make notebooks`)"
