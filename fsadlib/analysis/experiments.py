"""DVC experiments (``dvc exp run --queue -S ...``) as one table for ablation curves.

Every experiment runs the whole pipeline, so its ``reports/summary.json`` (declared as DVC metrics)
holds ``<method>.<dataset>.k<k>.<metric>.{mean,std[,ci_low,ci_high]}``; ``dvc.api.exp_show`` returns one flat record per
experiment with those keys, every params.yaml key (``kag_prompt.model.rounds`` ...) and bookkeeping
fields. :func:`experiments_table` turns the records into one row per
(experiment, method, dataset, k, metric) with ``mean``, ``std``, the interval ``ci_low``, ``ci_high``
(NaN without one) and every parameter as a column.
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

#: bookkeeping fields of a dvc.api.exp_show record
META_FIELDS = ("Experiment", "rev", "typ", "Created", "parent", "State", "Executor")
SUMMARY_KEY = re.compile(r"(?:[^:]+:)?(?P<method>[^.]+)\.(?P<dataset>[^.]+)\.k(?P<k>\d+)\."
                         r"(?P<metric>[A-Za-z0-9_]+)\.(?P<stat>mean|std|ci_low|ci_high)")
EXPERIMENT_COLUMNS = ["experiment", "rev", "method", "dataset", "k", "metric", "mean", "std", "ci_low", "ci_high"]


def experiments_table(records: list[dict[str, Any]], params: list[str] | None = None) -> pd.DataFrame:
    """Records of ``dvc.api.exp_show`` -> long table (see the module docstring).

    The workspace record is dropped (it repeats a committed or running state); a record's name is its
    experiment name, else its revision. Values DVC could not read (``'!'``, ``None``) are left out.
    ``params`` (default: every key of the records that is neither a summary metric, nor a
    bookkeeping field, nor a dependency hash) become columns."""
    rows, param_values = [], {}
    for record in records:
        if record.get("rev") == "workspace":
            continue
        name = record.get("Experiment") or record.get("rev")
        stats: dict[tuple, dict[str, float]] = {}
        others = {}
        for key, value in record.items():
            match = SUMMARY_KEY.fullmatch(key)
            if match and isinstance(value, (int, float)):
                cell = (match["method"], match["dataset"], int(match["k"]), match["metric"])
                stats.setdefault(cell, {})[match["stat"]] = float(value)
            elif not match and key not in META_FIELDS and value not in (None, "!") and not _is_hash(value):
                others[key] = value
        param_values[name] = others
        for (method, dataset, k, metric), stat in stats.items():
            rows.append({"experiment": name, "rev": record.get("rev"), "method": method, "dataset": dataset,
                         "k": k, "metric": metric, **{s: stat.get(s) for s in ("mean", "std", "ci_low", "ci_high")}})
    table = pd.DataFrame(rows, columns=EXPERIMENT_COLUMNS)
    names = params if params is not None else sorted({p for v in param_values.values() for p in v})
    values = pd.DataFrame([{p: param_values[e].get(p) for p in names} for e in table["experiment"]],
                          columns=names, index=table.index, dtype=object)
    return pd.concat([table, values], axis=1)


def load_experiments(repo: str | None = None, num: int = 1) -> pd.DataFrame:
    """:func:`experiments_table` of ``dvc.api.exp_show(repo, num=num)`` (experiments of the last
    ``num`` commits; default repo: this checkout's root)."""
    import dvc.api

    from fsadlib.paths import repo_root

    return experiments_table(dvc.api.exp_show(repo=repo or str(repo_root()), num=num))


def varied_params(table: pd.DataFrame) -> list[str]:
    """The parameter columns that take more than one value across the experiments (the ablations)."""
    params = [c for c in table.columns if c not in EXPERIMENT_COLUMNS]
    return [p for p in params if table[p].astype(str).nunique() > 1]


def _is_hash(value: Any) -> bool:
    """dvc.api.exp_show reports each dependency as its md5 (32 hex digits)."""
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{32}", value) is not None
