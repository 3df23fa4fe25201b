"""Every DVC stage depends on exactly what it reads.

- The stage files are the generator's output (``make stages``).
- No stage depends on the whole package, a package folder, a README or a hard-coded data folder.
- The smoke run recorded, per stage, the modules it loaded and the params sections and data it read
  (``fsadlib.reads``); every one must be a declared dependency of that stage in its dvc.lock.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fsadlib.methods import registry
from fsadlib.notebooks import stage_files
from fsadlib.paths import repo_root
from fsadlib.pipeline import curve_folders, stale_files


def declared_deps() -> list[tuple[str, str]]:
    """(stage, dependency) of every stage file as written (templates unresolved)."""
    found = []
    for path in stage_files():
        for name, spec in (yaml.safe_load(path.read_text())["stages"]).items():
            found += [(f"{path.name}:{name}", dep) for dep in spec.get("do", spec).get("deps", [])]
    return found


def test_stage_files_are_the_generated_ones():
    assert stale_files() == [], "run `make stages` (python -m fsadlib.pipeline)"


def test_no_stage_depends_on_a_package_a_readme_or_a_hard_coded_data_folder():
    root = repo_root()
    for stage, dep in declared_deps():
        assert not (root / dep).is_dir() or not dep.startswith("fsadlib"), f"{stage} depends on the folder {dep}"
        assert not dep.endswith(".md"), f"{stage} depends on documentation {dep}"
        assert dep != "data/synthetic", f"{stage} hard-codes the synthetic data set"


def locked_stages(root: Path) -> dict[str, dict]:
    """DVC_STAGE address -> its dvc.lock entry, over every lock file of the tree."""
    stages = {}
    for lock in [root / "dvc.lock", *sorted((root / "pipelines").glob("*/dvc.lock"))]:
        prefix = "" if lock.parent == root else f"{lock.parent.relative_to(root).as_posix()}/dvc.yaml:"
        stages |= {prefix + name: entry for name, entry in yaml.safe_load(lock.read_text())["stages"].items()}
    return stages


def test_every_stage_declares_what_it_read(smoke_pipeline):
    dst, env = smoke_pipeline
    params = yaml.safe_load((dst / "params.yaml").read_text())
    locks = locked_stages(dst)
    traces = [json.loads(p.read_text()) for p in sorted(Path(env["FSAD_TRACE_READS"]).glob("*.json"))]
    traces = [t for t in traces if not t["stage"].startswith("pid")]   # processes outside a DVC stage
    traced = {t["stage"] for t in traces}
    assert traced == set(locks), f"stages without a record: {sorted(set(locks) - traced)}"
    for trace in traces:
        stage, lock = trace["stage"], locks[trace["stage"]]
        deps = {d["path"] for d in lock.get("deps", [])}
        missing = [m for m in trace["modules"] if m not in deps]
        assert not missing, f"{stage} imports {missing} without depending on them"
        declared = {key for file in lock.get("params", {}).values() for key in file}
        undeclared = [p for p in trace["params"]
                      if not any(p == key or p.startswith(f"{key}.") or key.startswith(f"{p}.") for key in declared)]
        assert not undeclared, f"{stage} reads params {undeclared}; it declares {sorted(declared)}"
        produced = deps | {o["path"] for o in lock.get("outs", [])}   # a stage may read what it writes
        for read in trace["data"]:
            kind, dataset = read.split(":")
            expected = {"samples": {f"data/index/{dataset}.csv", params["datasets"][dataset]["root"]},
                        "shots": {f"data/shots/{dataset}"}, "captions": {f"data/captions/{dataset}"}}[kind]
            assert expected & produced, f"{stage} reads {read} but depends on none of {sorted(expected)}"


@pytest.mark.parametrize("name", ["inctrl", "winclip"])
def test_a_method_stage_depends_on_its_own_folder_only(name):
    text = (repo_root() / "pipelines" / name / "dvc.yaml").read_text()
    others = [m for m in ("inctrl", "kag_prompt", "bayes_pfl", "finegrained", "winclip") if m != name]
    assert f"fsadlib/methods/{name}/model.py" in text
    assert not [m for m in others if f"fsadlib/methods/{m}/" in text]


def test_every_training_curve_the_run_wrote_is_declared_as_plots(smoke_pipeline):
    """``dvc plots diff`` compares experiments' curves only where a stage file declares them: every
    DVCLive curve folder of the smoke run (InCTRL's per k, Bayes-PFL's per stage) is declared, and each
    method's declared folders for the run's k exist."""
    dst, _ = smoke_pipeline
    params = yaml.safe_load((dst / "params.yaml").read_text())
    declared = set()
    for spec in registry.specs().values():
        if spec.trainable:
            stage_file = yaml.safe_load((dst / "pipelines" / spec.name / "dvc.yaml").read_text())
            plots = {next(iter(p)).removeprefix("../../") for p in stage_file["plots"]}
            assert plots == set(curve_folders(spec, params)), spec.name
            declared |= plots
    written = {str(p.parent.relative_to(dst)) for p in dst.glob("reports/train_*/**/plots/metrics/*.tsv")}
    assert written, "the smoke run wrote no training curve"
    assert written <= declared, f"curves not declared as plots: {sorted(written - declared)}"
