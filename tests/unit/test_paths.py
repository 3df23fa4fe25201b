"""fsadlib.paths: the output root of pipeline notebooks inside and outside DVC."""

from __future__ import annotations

import pytest

from fsadlib import paths


@pytest.fixture
def repo(tmp_path, monkeypatch):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.setenv("FSAD_ROOT", str(tmp_path))
    for name in ("DVC_STAGE", paths.OUTPUT_ROOT_ENV):   # set first so that teardown restores what
        monkeypatch.setenv(name, "")                     # use_output_root exports
        monkeypatch.delenv(name)
    return tmp_path


def test_outside_dvc_writes_under_scratch_and_reads_pipeline_models(repo):
    (repo / "models" / "inctrl").mkdir(parents=True)
    assert paths.use_output_root() == repo / "scratch"
    assert paths.results_dir() == repo / "scratch" / "results" and paths.reports_dir() == repo / "scratch" / "reports"
    assert paths.models_dir() == repo / "scratch" / "models"
    assert paths.trained_models_dir() == repo / "models"             # nothing trained here: the pipeline's
    (repo / "scratch" / "models").mkdir(parents=True)
    assert paths.trained_models_dir() == repo / "scratch" / "models"  # ... until this run trained its own
    assert paths.data_dir() == repo / "data"                          # data always from the repo
    (repo / "results").mkdir()
    assert paths.evaluated_results_dir() == repo / "results"         # the analysis reads the pipeline's
    (repo / "scratch" / "results").mkdir()
    assert paths.evaluated_results_dir() == repo / "scratch" / "results"


def test_parameter_then_environment(repo, tmp_path_factory, monkeypatch):
    mine = tmp_path_factory.mktemp("mine")
    assert paths.use_output_root(str(mine)) == mine and paths.results_dir() == mine / "results"
    other = tmp_path_factory.mktemp("other")
    monkeypatch.setenv(paths.OUTPUT_ROOT_ENV, str(other))
    assert paths.use_output_root() == other


def test_inside_dvc_always_the_repo_root(repo, monkeypatch):
    monkeypatch.setenv("DVC_STAGE", "evaluate@inctrl")
    assert paths.use_output_root() == repo and paths.results_dir() == repo / "results"
    with pytest.raises(ValueError, match="inside the DVC stage evaluate@inctrl"):
        paths.use_output_root(str(repo / "elsewhere"))
