"""DVC experiments (``dvc exp run --queue -S ...``) as one table for ablation curves.

Every experiment runs the pipeline and commits its ``reports/summary.json`` (a DVC metric tracked by
git), which holds ``<method>.<dataset>.k<k>.<metric>.{mean,std,ci_low,ci_high}``. ``dvc exp show --json`` returns a
tree: one node per commit of the branch (the *baseline*, newest first) with the experiments run on it,
each with its ``params`` (per params file) and ``metrics`` (per metrics file) kept apart.
:func:`experiment_records` flattens that tree to one record per commit or experiment;
:func:`experiments_table` turns the records into one row per (experiment, method, dataset, k, metric)
with ``mean``, ``std``, the seed-mean interval ``ci_low``, ``ci_high`` (NaN without one) and every params.yaml key (dotted, e.g. ``kag_prompt.model.rounds``) as a column.
Only params count as parameters: dependency hashes and metrics never do.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd

SUMMARY_FILE = "reports/summary.json"
PARAMS_FILE = "params.yaml"
EXPERIMENT_COLUMNS = ["experiment", "rev", "baseline", "method", "dataset", "k", "metric", "mean", "std", "ci_low",
                      "ci_high"]
_STATS = ("mean", "std")


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> ``{"a.b.c": leaf}``; lists are leaves, kept as a string (``"[1, 2]"``) so that
    they compare and sort like the scalar values of other experiments."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= flatten(value, f"{name}.")
        else:
            flat[name] = json.dumps(value) if isinstance(value, list) else value
    return flat


def experiment_records(tree: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``dvc exp show --json`` -> ``[{name, rev, baseline, params: {key: value}, summary: {...}}]``,
    one per baseline commit and per experiment, the workspace left out (it repeats a committed or a
    running state). ``summary`` is the experiment's ``reports/summary.json`` (``{}`` when DVC could not
    read it); ``params`` are the flattened keys of ``params.yaml``."""
    records = []
    for commit in tree:
        if commit.get("rev") == "workspace":
            continue
        baseline = commit.get("name") or commit["rev"][:7]
        records.append(_record(commit, baseline))
        for experiment in commit.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                records.append(_record(rev, baseline))
    return records


def _record(node: dict[str, Any], baseline: str) -> dict[str, Any]:
    data = node.get("data") or {}
    params = ((data.get("params") or {}).get(PARAMS_FILE) or {}).get("data") or {}
    summary = ((data.get("metrics") or {}).get(SUMMARY_FILE) or {}).get("data") or {}
    return {"name": node.get("name") or node["rev"][:7], "rev": node["rev"], "baseline": baseline,
            "params": flatten(params), "summary": summary}


def experiments_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Records of :func:`experiment_records` -> long table (see the module docstring), one column per
    params key of any record (``None`` where a record lacks it). Records without a summary give no
    rows; a summary entry without a ``mean`` is left out."""
    rows, values = [], []
    for record in records:
        for method, datasets in record["summary"].items():
            for dataset, shots in datasets.items():
                for k, entry in shots.items():
                    for metric, stat in entry.items():
                        if not (k.startswith("k") and isinstance(stat, dict) and stat.get("mean") is not None):
                            continue
                        rows.append({"experiment": record["name"], "rev": record["rev"],
                                     "baseline": record["baseline"], "method": method, "dataset": dataset,
                                     "k": int(k[1:]), "metric": metric, "mean": float(stat["mean"]),
                                     **{s: float(stat[s]) if stat.get(s) is not None else float("nan")
                                        for s in ("std", "ci_low", "ci_high")}})
                        values.append(record["params"])
    names = sorted({p for record in records for p in record["params"]})
    table = pd.DataFrame(rows, columns=EXPERIMENT_COLUMNS)
    params = pd.DataFrame([{p: v.get(p) for p in names} for v in values], columns=names, index=table.index,
                          dtype=object)
    return pd.concat([table, params], axis=1)


def exp_show(repo: str | Path | None = None, num: int = 1) -> list[dict[str, Any]]:
    """``dvc exp show --json --num <num>`` run in ``repo`` (default: this checkout's root): the
    experiments of the last ``num`` commits of the current branch."""
    from fsadlib.paths import repo_root

    if num < 1:
        raise ValueError(f"num (commits whose experiments are read) must be >= 1, got {num}")
    done = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json", "--num", str(num)],
                          cwd=repo or repo_root(), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"dvc exp show failed in {repo or repo_root()}:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout or "[]")


def load_experiments(repo: str | Path | None = None, num: int = 1) -> pd.DataFrame:
    """:func:`experiments_table` of the experiments of the last ``num`` commits (:func:`exp_show`)."""
    return experiments_table(experiment_records(exp_show(repo, num)))


def varied_params(table: pd.DataFrame) -> list[str]:
    """The params.yaml keys that take more than one value across the table's experiments (the ablations)."""
    params = [c for c in table.columns if c not in EXPERIMENT_COLUMNS]
    per_experiment = table.drop_duplicates("rev")
    return [p for p in params if per_experiment[p].astype(str).nunique() > 1]
