"""Seaborn figures of the runs table (:func:`fsadlib.analysis.load_runs`) and of the experiments
table (:func:`fsadlib.analysis.load_experiments`). Every function returns a matplotlib Figure;
:func:`save_figure` writes it atomically under ``reports/figures/``."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from fsadlib.analysis.experiments import varied_params
from fsadlib.analysis.runs import seed_means
from fsadlib.io import atomic_path
from fsadlib.paths import reports_dir

HEATMAP_METRICS = ("image_auroc", "pixel_auroc", "pixel_aupro")


def category_heatmaps(runs: pd.DataFrame, dataset: str, metrics: tuple[str, ...] = HEATMAP_METRICS
                      ) -> plt.Figure:
    """One heat map per metric: rows = categories (+ ``mean``), columns = ``method k<k>``, cells =
    the mean over seeds (in %). Metrics no run reports are skipped."""
    data = runs[(runs["dataset"] == dataset) & runs["metric"].isin(metrics)]
    if data.empty:
        raise ValueError(f"no runs of dataset '{dataset}' report any of {list(metrics)}")
    present = [m for m in metrics if m in set(data["metric"])]
    height = 2.5 + 0.45 * (data["category"].nunique() + 1)
    fig, axes = plt.subplots(1, len(present), figsize=(1.0 + 4.5 * len(present), height), squeeze=False,
                             constrained_layout=True)
    for ax, metric in zip(axes[0], present):
        rows = data[data["metric"] == metric].assign(run=lambda d: d["method"] + " k" + d["k"].astype(str))
        grid = rows.pivot_table(index="category", columns="run", values="value", aggfunc="mean")
        grid.loc["mean"] = grid.mean()
        sns.heatmap(100 * grid, ax=ax, annot=True, fmt=".1f", vmin=0, vmax=100, cmap="viridis", cbar=False)
        ax.set(title=f"{metric} (%), {dataset}", xlabel="", ylabel="")
        ax.tick_params(axis="y", rotation=0)
    return fig


def metric_vs_k(runs: pd.DataFrame, dataset: str, metric: str = "image_auroc") -> plt.Figure:
    """Category mean of ``metric`` versus shots k per method; band/bars = std over seeds (ddof 1)."""
    data = seed_means(runs)
    data = data[(data["dataset"] == dataset) & (data["metric"] == metric)]
    if data.empty:
        raise ValueError(f"no runs of dataset '{dataset}' report '{metric}'")
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    sns.lineplot(data=data.assign(value=100 * data["value"]), x="k", y="value", hue="method", style="method",
                 markers=True, dashes=False, errorbar=("sd", 1), err_style="bars", ax=ax)
    ax.set(xlabel="shots k", ylabel=f"{metric} (%)", title=f"{metric} vs k, {dataset} (mean ± std over seeds)")
    ax.set_xticks(sorted(data["k"].unique()))
    return fig


def ablation_curve(experiments: pd.DataFrame, param: str, methods: list[str] | None = None,
                   metric: str = "image_auroc", dataset: str | None = None) -> plt.Figure:
    """``metric`` (mean ± std over seeds, from each experiment's summary) versus the params.yaml key
    ``param``, one line per (method, k). Every other varied parameter is held fixed: one facet per
    combination of their values, so two ablations run together never mix their points. Integer
    parameters (0/1 flags included) get integer ticks."""
    if param not in experiments.columns:
        raise KeyError(f"'{param}' is not a parameter of the experiments table")
    data = experiments[experiments["metric"] == metric]
    if methods is not None:
        data = data[data["method"].isin(methods)]
    if dataset is not None:
        data = data[data["dataset"] == dataset]
    data = data.dropna(subset=[param, "mean"])
    if data.empty:
        raise ValueError(f"no experiment reports {metric} for {methods or 'any method'}"
                         + (f" on {dataset}" if dataset else ""))
    numeric = pd.to_numeric(data[param], errors="coerce")
    data = data.assign(x=numeric if numeric.notna().all() else data[param].astype(str))
    integral = numeric.notna().all() and bool((numeric == numeric.round()).all())
    several_datasets = data["dataset"].nunique() > 1
    fixed = [p for p in varied_params(experiments) if p != param]
    facets = list(data.groupby([data[p].astype(str) for p in fixed], sort=True)) if fixed else [((), data)]
    fig, axes = plt.subplots(1, len(facets), figsize=(5.5 * len(facets), 4), squeeze=False, sharey=True,
                             constrained_layout=True)
    for ax, (values, facet) in zip(axes[0], facets):
        values = values if isinstance(values, tuple) else (values,)
        for (method, dataset_, k), line in facet.sort_values("x").groupby(["method", "dataset", "k"]):
            ax.errorbar(line["x"], 100 * line["mean"], yerr=100 * line["std"].fillna(0.0), marker="o", capsize=3,
                        label=f"{method} k={k}" + (f" ({dataset_})" if several_datasets else ""))
        if integral:
            ax.set_xticks(sorted(set(numeric.astype(int))))
        title = ", ".join(f"{p}={v}" for p, v in zip(fixed, values))
        ax.set(xlabel=param, ylabel=f"{metric} (%, mean ± std over seeds)", title=title or None)
        ax.legend(fontsize="small")
    fig.suptitle(f"{metric} vs {param}")
    return fig


def ablation_curves(experiments: pd.DataFrame, metric: str = "image_auroc") -> dict[str, plt.Figure]:
    """:func:`ablation_curve` of every varied parameter, keyed by the parameter: a method's own key
    (``kag_prompt.model.rounds``) is drawn for that method, a shared key (``shots.seeds``) for every
    method of the table."""
    methods = sorted(set(experiments["method"]))
    return {param: ablation_curve(experiments, param,
                                  [param.split(".")[0]] if param.split(".")[0] in methods else None, metric)
            for param in varied_params(experiments)}


def efficiency_plot(table: pd.DataFrame) -> plt.Figure:
    """ms per image at batch 1 and images/s at the best batch, per method (from efficiency.csv)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), constrained_layout=True)
    sns.barplot(data=table, y="method", x="ms_per_img_b1", ax=axes[0], color="tab:blue")
    sns.barplot(data=table, y="method", x="img_per_s_best", ax=axes[1], color="tab:green")
    axes[0].set(xlabel="ms / image at batch 1", ylabel="")
    axes[1].set(xlabel="images / s at the best batch", ylabel="")
    fig.suptitle(f"device: {', '.join(np.unique(table['device'].astype(str)))}")
    return fig


def save_figure(fig: plt.Figure, name: str, folder: str | Path | None = None, dpi: int = 120) -> Path:
    """Write ``fig`` atomically to ``<folder or reports/figures>/<name>.png`` (the figure stays open,
    so a notebook still shows it)."""
    path = (Path(folder) if folder is not None else reports_dir() / "figures") / f"{name}.png"
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return path
