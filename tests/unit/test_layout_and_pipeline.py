"""The path owner (fsadlib.layout), the seed aggregation (fsadlib.aggregate), the reads recorder and
the stage generator's import closure, each against hand-made cases."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fsadlib import reads
from fsadlib.aggregate import mean_std
from fsadlib.layout import (
    RunKey,
    aggregate_dir,
    category_model_file,
    parse_run,
    per_k_dir,
    run_dir,
    run_files,
)
from fsadlib.methods.spec import MethodEntry, MethodSpec
from fsadlib.pipeline import curve_folders, import_closure, imported_names, package_data


def test_run_paths_are_built_and_parsed_back(tmp_path):
    folder = run_dir("inctrl", "visa", 4, 2, tmp_path)
    assert folder == tmp_path / "inctrl" / "visa" / "k4" / "seed2" and folder.parent == aggregate_dir("inctrl", "visa", 4, tmp_path)
    assert parse_run(folder, tmp_path) == RunKey("inctrl", "visa", 4, 2) == parse_run(folder)
    (folder / "metrics.json").parent.mkdir(parents=True)
    (folder / "metrics.json").write_text("{}")
    assert run_files(tmp_path, "metrics.json") == [(RunKey("inctrl", "visa", 4, 2), folder / "metrics.json")]
    with pytest.raises(ValueError, match="'kx' is not k<int>"):
        parse_run(tmp_path / "inctrl" / "visa" / "kx" / "seed2", tmp_path)
    with pytest.raises(ValueError, match="'seed' is not seed<int>"):
        parse_run(tmp_path / "inctrl" / "visa" / "k1" / "seed", tmp_path)
    assert per_k_dir(tmp_path, 8) == tmp_path / "k8"
    assert category_model_file(tmp_path, "visa", "pcb1", 2, 0) == tmp_path / "visa" / "k2" / "seed0" / "pcb1.pt"


def test_mean_std_is_the_sample_std_over_seeds():
    assert mean_std([0.7, 0.8, 0.9]) == pytest.approx({"mean": 0.8, "std": 0.1})
    assert mean_std([0.5]) == {"mean": 0.5, "std": 0.0}
    assert math.isnan(mean_std([0.5, float("nan")])["mean"])
    with pytest.raises(ValueError, match="no seed values"):
        mean_std([])


def test_reads_are_recorded_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.delenv(reads.TRACE_ENV, raising=False)
    reads.record("params", "ignored")
    assert reads.write() is None
    monkeypatch.setenv(reads.TRACE_ENV, str(tmp_path))
    monkeypatch.setenv("DVC_STAGE", "pipelines/x/dvc.yaml:train_x")
    monkeypatch.setattr(reads, "_READS", {"params": set(), "data": set()})
    reads.record("params", "protocol")
    reads.record("data", "shots:synthetic")
    content = json.loads(reads.write().read_text())
    assert (tmp_path / "pipelines~x~dvc.yaml~train_x.json").is_file()
    assert content["stage"] == "pipelines/x/dvc.yaml:train_x" and content["params"] == ["protocol"]
    assert content["data"] == ["shots:synthetic"] and "fsadlib/reads.py" in content["modules"]


def write(path: Path, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_import_closure_follows_every_import_of_the_package_only(tmp_path):
    pkg = tmp_path / "pkg"
    write(pkg / "__init__.py")
    write(pkg / "a.py", "import os\nfrom . import b\n\ndef f():\n    from pkg.sub import c  # function-level\n")
    write(pkg / "b.py", "from .sub.c import VALUE\n")
    write(pkg / "sub" / "__init__.py", "from pkg.sub.d import *\n")
    write(pkg / "sub" / "c.py", "VALUE = 1\n")
    write(pkg / "sub" / "d.py")
    write(pkg / "unused.py")
    write(pkg / "README.md")
    write(pkg / "sub" / "table.csv", "x\n")
    assert imported_names(pkg / "b.py", "pkg.b") == {"pkg", "pkg.sub", "pkg.sub.c", "pkg.sub.c.VALUE"}
    files = import_closure(["pkg.a"], {"pkg": pkg})
    assert [f.relative_to(tmp_path).as_posix() for f in files] == [
        "pkg/__init__.py", "pkg/a.py", "pkg/b.py", "pkg/sub/__init__.py", "pkg/sub/c.py", "pkg/sub/d.py"]
    assert package_data(files) == [pkg / "sub" / "table.csv"]   # data, never the README


def test_every_evaluation_gets_its_own_training_and_evaluation_stages():
    from fsadlib.methods import method_spec
    from fsadlib.pipeline import method_pipeline

    stages = method_pipeline(method_spec("inctrl"))["stages"]
    train, evaluate = stages["train_inctrl"], stages["evaluate"]
    assert train["foreach"] == "${protocol}" and evaluate["matrix"] == {"method": ["inctrl"], "target": "${protocol}"}
    do = train["do"]
    assert do["outs"][0] == {"models/inctrl/${key}/trained_on_${item.aux_dataset}": {"persist": True}}
    assert {"data/index/${item.aux_dataset}.csv", "data/index/${item.val_dataset}.csv"} <= set(do["deps"])
    assert "protocol.${key}" in do["params"] and "-p target ${key}" in do["cmd"]
    assert do["outs"][1] == "reports/notebooks/31_train_inctrl_${key}.ipynb"
    assert do["metrics"] == [{"reports/train_inctrl/${key}/summary.json": {"cache": False}}]
    # the evaluation of a target depends on that target's models folder, the parent of its training output
    assert "models/inctrl/${item.target}" in evaluate["deps"] and "protocol.${item.target}" in evaluate["params"]
    assert evaluate["outs"] == ["results/${item.method}/${item.target}",
                                "reports/notebooks/40_evaluate_${item.method}_${item.target}.ipynb"]
    winclip = method_pipeline(method_spec("winclip"))["stages"]
    assert set(winclip) == {"evaluate"} and winclip["evaluate"]["matrix"]["method"] == ["winclip", "winclip_plus"]
    assert not any(d.startswith("models/") for d in winclip["evaluate"]["deps"])


def test_curve_folders_expand_k_over_the_sections_ks():
    spec = MethodSpec(name="m", package="m", methods=(MethodEntry("m", "m:M", few_shot=True),), section="m:S",
                      train="m:train", notebook="nb.ipynb", curves=("k{k}", "stage2", ""))
    assert curve_folders(spec, {"m": {"ks": [1, 4]}, "protocol": {"visa": {}, "mvtec": {}}}) == [
        "reports/train_m/visa/k1/plots/metrics", "reports/train_m/visa/k4/plots/metrics",
        "reports/train_m/visa/stage2/plots/metrics", "reports/train_m/visa/plots/metrics",
        "reports/train_m/mvtec/k1/plots/metrics", "reports/train_m/mvtec/k4/plots/metrics",
        "reports/train_m/mvtec/stage2/plots/metrics", "reports/train_m/mvtec/plots/metrics"]
    with pytest.raises(KeyError, match="m.ks"):
        curve_folders(spec, {"m": {}})


def test_params_methods_choose_the_folders_and_evaluations_that_get_stages(tmp_path):
    import yaml

    from fsadlib.config import load_params
    from fsadlib.pipeline import HEADER, generated_files, selected_methods, stale_files, write_stages

    params = {**load_params(), "methods": ["winclip_plus", "inctrl"]}
    files = generated_files(params=params)
    assert sorted(p.as_posix() for p in files) == ["dvc.yaml", "pipelines/inctrl/dvc.yaml", "pipelines/winclip/dvc.yaml"]
    winclip = yaml.safe_load(files[Path("pipelines/winclip/dvc.yaml")])["stages"]
    assert winclip["evaluate"]["matrix"]["method"] == ["winclip_plus"]             # the listed one only
    assert set(yaml.safe_load(files[Path("pipelines/inctrl/dvc.yaml")])["stages"]) == {"train_inctrl", "evaluate"}
    everything = generated_files(params={**params, "methods": "all"})
    assert Path("pipelines/kag_prompt/dvc.yaml") in everything
    assert selected_methods({}, {}) == {}                                          # absent key = all (of none)
    # make stages removes the stage files of folders that no longer run; a hand-written one stays, reported
    left_out = tmp_path / "pipelines" / "kag_prompt" / "dvc.yaml"
    own = tmp_path / "pipelines" / "own" / "dvc.yaml"
    for path, text in ((left_out, HEADER.format(source="x") + "stages: {}\n"), (own, "stages: {}\n")):
        path.parent.mkdir(parents=True)
        path.write_text(text)
    write_stages(tmp_path, params)
    assert not left_out.exists() and own.exists() and (tmp_path / "pipelines" / "inctrl" / "dvc.yaml").is_file()
    assert stale_files(tmp_path, params) == [Path("pipelines/own/dvc.yaml")]


@pytest.mark.parametrize("value, message", [
    (["inctrl", "incrtl"], r"params.yaml methods: unknown method\(s\) \['incrtl'\]; known: \[.*'winclip_plus'\]"),
    ([], r"params.yaml methods: 'all' or a non-empty list of method names"),
    ("inctrl", r"params.yaml methods: 'all' or a non-empty list .* got 'inctrl'"),
])
def test_a_wrong_methods_key_is_refused_naming_it(value, message):
    from fsadlib.methods import registry
    from fsadlib.pipeline import selected_methods

    with pytest.raises(ValueError, match=message):
        selected_methods(registry.specs(), {"methods": value})


def test_a_notebook_runner_records_nothing(tmp_path, monkeypatch):
    """papermill's runner imports fsadlib for its engine; its record would replace its kernel's."""
    monkeypatch.setenv(reads.TRACE_ENV, str(tmp_path))
    monkeypatch.setenv("DVC_STAGE", "dvc.yaml:ablation_analysis")
    monkeypatch.setattr(reads, "_disabled", False)
    reads.disable()
    assert reads.write() is None and not list(tmp_path.iterdir())
