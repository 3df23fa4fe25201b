"""fsadlib.analysis on fake result folders with known numbers (tests/unit/conftest.py)."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
from torch import nn

from fsadlib.analysis import (
    experiment_records,
    experiments_table,
    load_runs,
    paper_comparison,
    published_table,
    seed_means,
    summarise,
    summary_table,
    varied_params,
    write_summary,
)
from fsadlib.analysis.efficiency import flops_per_image, parameter_counts, tower_passes
from fsadlib.evaluate import aggregate_seeds


def test_load_runs_is_tidy_with_settings(fake_runs):
    runs = load_runs(fake_runs)
    assert len(runs) == 3 * (3 + 2 * 2)                      # winclip: 3 values per seed; inctrl: 2 per (k, seed)
    row = runs[(runs.method == "winclip") & (runs.seed == 1) & (runs.category == "b")].iloc[0]
    assert row["metric"] == "image_auroc" and row["value"] == pytest.approx(0.9)
    assert (row["eval_size"], row["random_weights"], row["fpr_limit"]) == (8, 1, 0.3)
    assert not {"n_images", "inputs"} & set(runs["metric"])


def test_summary_has_known_values_and_matches_aggregate_seeds(fake_runs, tmp_path):
    runs = load_runs(fake_runs)
    summary = write_summary(runs, tmp_path / "summary.json")
    assert json.loads((tmp_path / "summary.json").read_text()) == json.loads(json.dumps(summary))
    w = summary["winclip"]["synthetic"]["k0"]
    assert w["image_auroc"]["mean"] == pytest.approx(0.8) and w["image_auroc"]["std"] == pytest.approx(0.1)
    assert math.isnan(w["pixel_aupro"]["mean"])             # missing in category b: not silently dropped
    assert (w["eval_size"], w["n_seeds"], w["random_weights"]) == (8, 3, 1)
    i = summary["inctrl"]["synthetic"]
    assert i["k2"]["image_auroc"]["mean"] == pytest.approx(0.62) and i["k4"]["image_auroc"]["mean"] == pytest.approx(0.72)
    assert i["k4"]["image_auroc"]["std"] == pytest.approx(0.02)
    for method, k in (("winclip", 0), ("inctrl", 2), ("inctrl", 4)):
        reference = aggregate_seeds(method, "synthetic", k, (0, 1, 2), out_dir=fake_runs / method / "synthetic" / f"k{k}")
        ours = summary[method]["synthetic"][f"k{k}"]
        for metric, stats in reference["mean"].items():
            assert ours[metric]["mean"] == pytest.approx(stats["mean"], nan_ok=True)
            assert ours[metric]["std"] == pytest.approx(stats["std"], nan_ok=True)


def test_single_seed_std_is_zero_and_table_formats(tmp_path, write_run):
    write_run(tmp_path, "winclip", "synthetic", 0, 0, {"a": {"image_auroc": 0.75}})
    runs = load_runs(tmp_path)
    assert summarise(runs)["winclip"]["synthetic"]["k0"]["image_auroc"] == {"mean": 0.75, "std": 0.0}
    table = summary_table(runs, metrics=("image_auroc",))
    assert table.loc[0, "image_auroc"] == "75.0 ± 0.0" and table.loc[0, "seeds"] == 1


def test_folder_mismatch_and_mixed_settings_raise(tmp_path, write_run):
    out = write_run(tmp_path, "winclip", "synthetic", 0, 0, {"a": {"image_auroc": 0.5}})
    out.rename(out.parent / "seed3")
    with pytest.raises(ValueError, match=r"seed3/metrics.json.*differs from its folder"):
        load_runs(tmp_path)
    (out.parent / "seed3").rename(out)
    write_run(tmp_path, "winclip", "synthetic", 0, 1, {"a": {"image_auroc": 0.5}}, eval_size=16)
    with pytest.raises(ValueError, match="winclip/synthetic/k0: seeds evaluated with different settings"):
        summarise(load_runs(tmp_path))


def test_seed_means_propagates_nan_per_run(fake_runs):
    means = seed_means(load_runs(fake_runs))
    aupro = means[(means.method == "winclip") & (means.metric == "pixel_aupro")]
    assert len(aupro) == 3 and aupro["value"].isna().all()


def _node(rev, name, params, summary, experiments=None):
    """One node of ``dvc exp show --json`` (the layout DVC 3 writes)."""
    data = {"rev": rev, "params": {"params.yaml": {"data": params}},
            "metrics": {"reports/summary.json": {"data": summary}} if summary is not None else {},
            "deps": {"fsadlib": {"hash": "0" * 32 + ".dir"}}}
    return {"rev": rev, "name": name, "data": data, "error": None,
            "experiments": [{"revs": [e], "name": e["name"]} for e in experiments or []] or None}


def _summary(mean, std=0.05, k=1, metric="image_auroc"):
    return {"kag_prompt": {"synthetic": {f"k{k}": {"eval_size": 64, metric: {"mean": mean, "std": std}}}}}


def test_experiments_table_from_exp_show_json():
    tree = [
        _node("workspace", None, {"kag_prompt": {"model": {"rounds": 5}}}, _summary(0.9)),
        _node("a" * 40, "main", {"kag_prompt": {"model": {"rounds": 5}}, "shots": {"ks": [1, 2]}}, _summary(0.8), [
            _node("b" * 40, "exp-a", {"kag_prompt": {"model": {"rounds": 1}}, "shots": {"ks": [1, 2]}},
                  {**_summary(0.6, None), "kag_prompt": {"synthetic": {"k1": {"image_auroc": {"mean": 0.6}},
                                                                         "k2": {"pixel_auroc": {"mean": 0.7}}}}}),
            _node("c" * 40, "exp-broken", {"kag_prompt": {"model": {"rounds": 2}}}, None)]),
    ]
    records = experiment_records(tree)
    assert [r["name"] for r in records] == ["main", "exp-a", "exp-broken"]       # no workspace
    assert {r["baseline"] for r in records} == {"main"}
    table = experiments_table(records)
    assert list(table["experiment"]) == ["main", "exp-a", "exp-a"]               # exp-broken has no summary
    row = table[(table.experiment == "exp-a") & (table.metric == "image_auroc")].iloc[0]
    assert (row["mean"], row["kag_prompt.model.rounds"], row["k"]) == (0.6, 1, 1) and pd.isna(row["std"])
    assert table[table.metric == "pixel_auroc"].iloc[0]["mean"] == 0.7
    assert row["shots.ks"] == "[1, 2]"                                           # lists compare as text
    assert not any(c.startswith(("fsadlib", "eval_size")) for c in table.columns)   # deps and entries are no params
    assert varied_params(table) == ["kag_prompt.model.rounds"]
    assert pd.isna(row["ci_low"]) and pd.isna(row["ci_high"])                    # no interval recorded
    with_ci = {"m": {"d": {"k1": {"image_auroc": {"mean": 0.8, "std": 0.1, "ci_low": 0.7, "ci_high": 0.85},
                                  "ci_level": 0.95}}}}
    ci_row = experiments_table([{"name": "x", "rev": "r", "baseline": "b", "params": {}, "summary": with_ci}]).iloc[0]
    assert (ci_row["ci_low"], ci_row["ci_high"], ci_row["std"]) == (0.7, 0.85, 0.1)


def test_exp_show_reads_a_real_repository(tmp_path):
    import subprocess
    import sys

    from fsadlib.analysis.experiments import exp_show

    with pytest.raises(RuntimeError, match="dvc exp show failed"):
        exp_show(tmp_path)                                                       # not a DVC repository
    with pytest.raises(ValueError, match="num"):
        exp_show(tmp_path, num=0)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost"]
    subprocess.run(git + ["init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "params.yaml").write_text("a: 1\n")
    (tmp_path / "dvc.yaml").write_text("metrics:\n  - reports/summary.json\n")
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "summary.json").write_text(json.dumps(_summary(0.75)))
    subprocess.run(git + ["add", "-A"], cwd=tmp_path, check=True)
    subprocess.run(git + ["commit", "-qm", "c"], cwd=tmp_path, check=True)
    records = experiment_records(exp_show(tmp_path))
    assert len(records) == 1 and records[0]["params"] == {"a": 1}
    assert experiments_table(records)["mean"].tolist() == [0.75]


def test_published_numbers_are_labelled():
    table = published_table()
    assert set(table["status"]) <= {"paper abstract", "project page", "2nd: unverified"}
    assert table["value"].between(0, 100).all() and not table.duplicated(["method", "dataset", "k", "metric"]).any()
    bayes = table[table.method == "bayes_pfl"]
    assert (bayes["status"] == "2nd: unverified").all()   # the spec: original tables not read


def test_paper_comparison_puts_ours_beside_theirs_of_the_same_data_set_only(fake_runs, write_run):
    assert paper_comparison(load_runs(fake_runs)).empty          # synthetic runs: no published number joins
    for s in range(3):                                            # the fake winclip numbers, on a set named mvtec
        write_run(fake_runs, "winclip", "mvtec", 0, s, {"a": {"image_auroc": 0.6 + 0.1 * s, "pixel_aupro": 0.5},
                                                        "b": {"image_auroc": 0.8 + 0.1 * s}})
    table = paper_comparison(load_runs(fake_runs))
    assert not table.empty and (table["paper_dataset"] == table["our_dataset"]).all()
    winclip = table[(table.method == "winclip") & (table.metric == "image_auroc")]
    assert winclip["paper_dataset"].tolist() == ["mvtec"]         # not its published VisA number
    assert winclip["ours_mean"].tolist() == pytest.approx([80.0]) and winclip["ours_std"].tolist() == pytest.approx([10.0])
    assert winclip["weights"].str.startswith("RANDOM").all()
    assert (table["scores"] == "inductive").all() and (table["precision"] == "fp32").all()
    assert (table["geometry"] == "resize_crop").all()
    assert set(table.method) == {"winclip"} and table["ours_ci_low"].isna().all()   # inctrl ran on synthetic only
    intervals = pd.DataFrame([{"method": "winclip", "dataset": "mvtec", "k": 0, "category": "mean",
                               "metric": "image_auroc", "ci_low": 0.7, "ci_high": 0.9, "confidence": 0.95},
                              {"method": "winclip", "dataset": "mvtec", "k": 0, "category": "a",
                               "metric": "image_auroc", "ci_low": 0.1, "ci_high": 0.2, "confidence": 0.95}])
    with_ci = paper_comparison(load_runs(fake_runs), intervals=intervals)
    winclip = with_ci[(with_ci.method == "winclip") & (with_ci.metric == "image_auroc")]
    assert winclip["ours_ci_low"].tolist() == pytest.approx([70.0])          # the category mean's, in %
    assert winclip["ours_ci_high"].tolist() == pytest.approx([90.0])


class _Tower(nn.Module):
    def forward(self, x):
        return x


class _FakeMethod(nn.Module):
    """Re-encodes 3 supports per query and runs 5 prompts per query: nothing cached."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.model = nn.Module()
        self.backbone.model.visual = nn.Module()
        self.backbone.model.visual.conv1 = nn.Conv2d(3, 4, 2, 2)
        self.backbone.model.transformer = _Tower()
        self.head = nn.Linear(4, 1)

    def trainable_parameters(self):
        return list(self.head.parameters())

    def forward(self, images):
        b = len(images)
        self.backbone.model.visual.conv1(torch.cat([images, images.new_zeros(3 * b, *images.shape[1:])]))
        self.backbone.model.transformer(torch.zeros(5 * b, 7, 4))
        return images


def test_efficiency_helpers_count_exactly():
    method = _FakeMethod()
    assert parameter_counts(method) == {"frozen_params": 4 * 3 * 2 * 2 + 4, "learnable_params": 5}
    assert tower_passes(method, torch.zeros(2, 3, 4, 4)) == {"image_passes": 4.0, "text_rows": 5.0}
    linear = nn.Linear(6, 3, bias=False)
    assert flops_per_image(linear, torch.zeros(4, 6)) == 2 * 6 * 3


class _ParameterInput(nn.Module):
    """Feeds its own parameter [2, 6] to a submodule (as Bayes-PFL's flows do) under inference_mode."""

    def __init__(self):
        super().__init__()
        self.state = nn.Parameter(torch.zeros(2, 6))
        self.proj = nn.Linear(6, 3, bias=False)

    @torch.inference_mode()
    def forward(self, images):
        return self.proj(self.state)


def test_flops_of_a_parameter_fed_submodule_and_flags_restored():
    model = _ParameterInput()
    assert flops_per_image(model, torch.zeros(2, 1)) == 2 * 6 * 3 * 2 / 2
    assert all(p.requires_grad for p in model.parameters())


def test_transductive_scores_are_labelled_in_the_summary_and_the_paper_table(tmp_path, write_run):
    """A run whose scores use target-set statistics (Bayes-PFL score_rule: public) says so everywhere."""
    label = "score_rule public: ... (uses target-set statistics; for comparison with the paper only)"
    for s in range(2):
        path = write_run(tmp_path, "bayes_pfl", "mvtec", 0, s, {"a": {"image_auroc": 0.7 + 0.1 * s}}) / "metrics.json"
        content = json.loads(path.read_text())
        content["run"] |= {"target_statistics": label, "precision": "bf16"}
        path.write_text(json.dumps(content))
    runs = load_runs(tmp_path)
    entry = summarise(runs)["bayes_pfl"]["mvtec"]["k0"]   # a data set named as a published one: joined below
    assert entry["target_statistics"] == label and entry["precision"] == "bf16" and entry["geometry"] == "resize_crop"
    table = paper_comparison(runs)
    assert len(table) and (table["scores"] == "uses target-set statistics").all() and (table["precision"] == "bf16").all()
