"""Ablation sweeps end to end with real DVC experiments (README: Ablations).

``test_queued_grid_reaches_the_ablation_figures``: a throw-away DVC repository whose one stage writes a
``reports/summary.json`` in the workbench's layout from two params; a 2 x 2 grid is queued and run
with ``dvc exp run --queue`` / ``--run-all`` exactly as the README says, then ``dvc exp show --json``
must carry the summary of all four experiments (the summary is a git-tracked DVC metric) and the
analysis (:func:`fsadlib.analysis.load_experiments`, :func:`fsadlib.viz.ablation_curves`) must draw one
figure per parameter whose points are those metrics, the other parameter held fixed per facet.

``test_queued_workbench_grid_reaches_the_ablation_figures``: the same on a copy of the finished smoke
pipeline itself: a 2 x 2 grid of WinCLIP params queued and run (only the WinCLIP evaluations and the
analysis rerun), every experiment's ``reports/summary.json`` in ``dvc exp show --json``, and the
analysis stage writing one figure per parameter whose points are those metrics. It takes minutes, so it
is marked slow: ``pytest -m slow tests/pipeline/test_experiments.py``.

``test_papermill_alone_leaves_the_pipeline_untouched``: notebook 40 run with papermill alone in a copy
of the finished smoke pipeline writes under ``scratch/`` and ``dvc status`` stays clean.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import matplotlib
import matplotlib.figure
import pytest
from pipeline_support import BIN, copy_finished, run

matplotlib.use("Agg")

STAGE = """stages:
  toy:
    cmd: python make_summary.py
    deps: [make_summary.py]
    params: [toy.rounds, toy.flag]
    metrics:
      - reports/summary.json:
          cache: false
"""
SCRIPT = """import json, pathlib, yaml
p = yaml.safe_load(open("params.yaml"))["toy"]
mean = 0.5 + p["rounds"] / 10 + p["flag"] / 100
pathlib.Path("reports").mkdir(exist_ok=True)
json.dump({"toy": {"synthetic": {"k1": {"image_auroc": {"mean": mean, "std": 0.01}, "eval_size": 64}}}},
          open("reports/summary.json", "w"))
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FSAD_ROOT", "FSAD_OUTPUT_ROOT", "DVC_STAGE")}
    return env | {"PATH": f"{BIN}{os.pathsep}{env['PATH']}", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@localhost",
                  "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@localhost"}


def test_queued_grid_reaches_the_ablation_figures(tmp_path):
    from fsadlib.analysis import load_experiments, varied_params
    from fsadlib.analysis.experiments import exp_show
    from fsadlib.viz import ablation_curves

    env, repo = _env(), tmp_path / "repo"
    repo.mkdir()
    (repo / "params.yaml").write_text("toy:\n  rounds: 1\n  flag: 0\n")
    (repo / "dvc.yaml").write_text(STAGE)
    (repo / "make_summary.py").write_text(SCRIPT)

    def sh(*cmd: str) -> str:
        done = subprocess.run(list(cmd), cwd=repo, env=env, capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"{' '.join(cmd)}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        return done.stdout

    sh("git", "init", "-q")
    sh(str(BIN / "dvc"), "init", "-q")
    sh(str(BIN / "dvc"), "repro", "-q")
    sh("git", "add", "-A")
    sh("git", "commit", "-qm", "baseline")
    sh(str(BIN / "dvc"), "exp", "run", "--queue", "-S", "toy.rounds=1,2", "-S", "toy.flag=0,1")
    sh(str(BIN / "dvc"), "exp", "run", "--run-all", "-j", "1")

    shown = {(r["data"]["params"]["params.yaml"]["data"]["toy"]["rounds"],
              r["data"]["params"]["params.yaml"]["data"]["toy"]["flag"]):
             r["data"]["metrics"]["reports/summary.json"]["data"]["toy"]["synthetic"]["k1"]["image_auroc"]["mean"]
             for commit in exp_show(repo) for e in commit.get("experiments") or [] for r in e["revs"]}
    assert shown == pytest.approx({(r, f): 0.5 + r / 10 + f / 100 for r in (1, 2) for f in (0, 1)})

    table = load_experiments(repo)
    assert table["experiment"].nunique() == 5                        # the baseline and the four experiments
    assert varied_params(table) == ["toy.flag", "toy.rounds"]
    figures = ablation_curves(table)
    assert sorted(figures) == ["toy.flag", "toy.rounds"]
    for param, other in (("toy.rounds", "toy.flag"), ("toy.flag", "toy.rounds")):
        axes = figures[param].axes
        values = (0, 1) if other == "toy.flag" else (1, 2)
        assert [ax.get_title() for ax in axes] == [f"{other}={v}" for v in values]
        for ax in axes:
            fixed = int(ax.get_title().split("=")[1])
            line = ax.containers[0].lines[0]
            for x, y in zip(line.get_xdata(), line.get_ydata()):
                key = (x, fixed) if param == "toy.rounds" else (fixed, x)
                assert y == pytest.approx(100 * shown[key])


def _points(figure: matplotlib.figure.Figure, other: str) -> dict[tuple[str, float, float], float]:
    """(line label, x, the other parameter's value of the facet) -> plotted value, over every facet."""
    points = {}
    for ax in figure.axes:
        name, _, fixed = ax.get_title().partition("=")
        assert name == other, ax.get_title()
        for container in ax.containers:
            line = container.lines[0]
            points |= {(container.get_label(), float(x), float(fixed)): float(y)
                       for x, y in zip(line.get_xdata(), line.get_ydata())}
    return points


@pytest.mark.slow   # 4 experiments of the smoke pipeline (minutes); the toy grid above covers the same path
def test_queued_workbench_grid_reaches_the_ablation_figures(smoke_pipeline, tmp_path):
    from fsadlib.analysis import load_experiments
    from fsadlib.analysis.experiments import exp_show
    from fsadlib.viz import ablation_curves

    src, _ = smoke_pipeline
    repo = copy_finished(src, tmp_path / "workbench")
    env = _env()   # no FSAD_ROOT / PYTHONPATH: an experiment runs in its own temporary checkout
    env.pop("PYTHONPATH", None)
    env.pop("FSAD_TRACE_READS", None)

    def sh(*cmd: str) -> str:
        done = subprocess.run(list(cmd), cwd=repo, env=env, capture_output=True, text=True, check=False,
                              timeout=1500)
        assert done.returncode == 0, f"{' '.join(cmd)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    sh("git", "add", "-A")
    sh("git", "commit", "-qm", "finished smoke run")   # the baseline: dvc.lock and the tracked metrics
    # WinCLIP's section holds two methods: the temperature changes both, the patch layer WinCLIP+ only
    temperature, layer = "winclip.model.temperature", "winclip.model.patch_layer"
    sh(str(BIN / "dvc"), "exp", "run", "--queue", "-S", f"{temperature}=0.07,0.1", "-S", f"{layer}=11,12")
    sh(str(BIN / "dvc"), "exp", "run", "--run-all", "-j", "1")

    def value(data: dict, dotted: str):
        for key in dotted.split("."):
            data = data[key]
        return data

    lines = {"winclip": "winclip k=0", "winclip_plus": "winclip_plus k=1"}   # smoke: the first k only
    shown = {}
    for commit in exp_show(repo):
        for exp in commit.get("experiments") or []:
            for rev in exp["revs"]:
                params, metrics = rev["data"]["params"]["params.yaml"]["data"], rev["data"]["metrics"]
                summary = metrics["reports/summary.json"]["data"]
                for method, label in lines.items():
                    k = label.rpartition("=")[2]
                    shown[(label, value(params, temperature), value(params, layer))] = \
                        100 * summary[method]["synthetic"][f"k{k}"]["image_auroc"]["mean"]
    assert sorted({(t, p) for _, t, p in shown}) == [(t, p) for t in (0.07, 0.1) for p in (11, 12)]
    plus = lines["winclip_plus"]   # WinCLIP's image AUROC cannot change: a temperature keeps its ranking
    assert shown[(plus, 0.07, 11)] != shown[(plus, 0.1, 11)] and shown[(plus, 0.07, 11)] != shown[(plus, 0.07, 12)]

    sh(str(BIN / "dvc"), "repro", "-f", "-s", "ablation_analysis")
    for param in (temperature, layer):
        assert (repo / "reports" / "figures" / f"ablation_{param}.png").is_file(), param

    figures = ablation_curves(load_experiments(repo))   # the baseline is the (0.07, 12) experiment again
    assert sorted(figures) == [layer, temperature]
    assert _points(figures[temperature], layer) == pytest.approx(shown)
    assert _points(figures[layer], temperature) == pytest.approx({(m, p, t): v for (m, t, p), v in shown.items()})


def test_papermill_alone_leaves_the_pipeline_untouched(smoke_pipeline, tmp_path):
    src, env = smoke_pipeline
    dst = tmp_path / "workbench"
    shutil.copytree(src, dst, symlinks=True)
    env = {k: v for k, v in env.items() if k != "DVC_STAGE"} | {"PYTHONPATH": str(dst), "FSAD_ROOT": str(dst)}
    env.pop("FSAD_OUTPUT_ROOT", None)
    log = tmp_path / "papermill.log"
    result = run([str(BIN / "papermill"), "notebooks/40_evaluate.ipynb", str(tmp_path / "out.ipynb"),
                  "-p", "method", "winclip", "-p", "folder", "winclip", "-p", "smoke", "1",
                  "--engine", "fsadlib"], dst, env, log)
    assert result.returncode == 0, log.read_text()[-4000:]
    assert "scratch" in (tmp_path / "out.ipynb").read_text()            # the printed output root
    assert list((dst / "scratch" / "results" / "winclip").glob("*/k0/seed0/metrics.json"))
    status = subprocess.run([str(BIN / "dvc"), "status"], cwd=dst, env=env, capture_output=True, text=True,
                            check=False)
    assert status.returncode == 0 and status.stdout.strip() == "Data and pipelines are up to date.", status.stdout
