"""Seaborn figures of the runs table (:func:`fsadlib.analysis.load_runs`) and of the experiments
table (:func:`fsadlib.analysis.load_experiments`), one figure per data set, each method in its own
colour (:mod:`fsadlib.viz.palette`). Every function returns a matplotlib Figure; :func:`save_figure`
writes it atomically under ``reports/figures/``."""

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
from fsadlib.viz.palette import method_colour, method_palette

HEATMAP_METRICS = ("image_auroc", "pixel_auroc", "pixel_aupro")
CELL_IN = (0.6, 0.3)      # width, height of one heat-map cell in inches: room for "100.0" at ANNOT_PT
ANNOT_PT = 8              # font size of the cell annotations (points)
HEATMAP_CMAP = "viridis"


def category_heatmaps(runs: pd.DataFrame, dataset: str, metrics: tuple[str, ...] = HEATMAP_METRICS
                      ) -> plt.Figure:
    """One figure for ``dataset``: a grid of heat maps with one row per metric and one column (facet)
    per method. In a facet, rows = categories (+ ``mean``, the mean over the categories shown),
    columns = the method's shots k, cells = the mean over seeds in % (annotated, one decimal).
    Facets are as wide as their method has k values, so every cell is ``CELL_IN`` inches and no
    annotation touches its neighbour. Metrics no run reports are skipped; a method that does not
    report a metric gets an empty facet saying so. Facet titles are in the method's colour
    (:mod:`fsadlib.viz.palette`)."""
    data = runs[(runs["dataset"] == dataset) & runs["metric"].isin(metrics)]
    if data.empty:
        raise ValueError(f"no runs of dataset '{dataset}' report any of {list(metrics)}")
    present = [m for m in metrics if m in set(data["metric"])]
    methods = sorted(data["method"].unique())
    ks = {m: sorted(data.loc[data["method"] == m, "k"].unique()) for m in methods}
    categories = sorted(data["category"].unique())
    widths = [len(ks[m]) for m in methods]
    width, height = CELL_IN[0] * sum(widths), CELL_IN[1] * (len(categories) + 1) * len(present)
    fig = plt.figure(figsize=(1.6 + 0.35 * len(methods) + width, 0.6 + 0.75 * len(present) + height),
                     constrained_layout=True)
    axes = fig.subplots(len(present), len(methods), squeeze=False, gridspec_kw={"width_ratios": widths})
    for row, metric in enumerate(present):
        for col, method in enumerate(methods):
            ax = axes[row, col]
            rows = data[(data["metric"] == metric) & (data["method"] == method)]
            ax.set_title(f"{method}\n{metric}", fontsize=9, color=method_colour(method))
            if rows.empty:
                ax.text(0.5, 0.5, "not\nreported", ha="center", va="center", fontsize=ANNOT_PT, color="0.4")
                ax.set_axis_off()
                continue
            grid = rows.pivot_table(index="category", columns="k", values="value", aggfunc="mean")
            grid = grid.reindex(index=categories, columns=ks[method])
            grid.loc["mean"] = grid.mean()
            _annotated_heatmap(ax, 100 * grid, [f"k{k}" for k in grid.columns], show_rows=col == 0)
    fig.suptitle(f"{dataset}: per-category metrics, mean over seeds (%)", fontsize=10)
    return fig


def _annotated_heatmap(ax: plt.Axes, values: pd.DataFrame, columns: list[str], show_rows: bool) -> None:
    """Cells of ``values`` [rows, cols] (0..100) in ``HEATMAP_CMAP`` with one-decimal annotations
    (black on light cells, white on dark: relative luminance of the cell colour above / below 0.4;
    NaN cells light grey and blank). Drawn with ``imshow`` and ``text`` (seaborn's heatmap redraws
    the whole figure once per panel, which grows quadratically with the number of facets)."""
    cmap = plt.get_cmap(HEATMAP_CMAP).with_extremes(bad="0.9")
    grid = values.to_numpy(float)
    ax.imshow(grid, cmap=cmap, vmin=0, vmax=100, aspect="auto", interpolation="nearest")
    for (i, j), value in np.ndenumerate(grid):
        if np.isfinite(value):
            red, green, blue, _ = cmap(value / 100)
            dark = 0.2126 * red + 0.7152 * green + 0.0722 * blue < 0.4
            ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=ANNOT_PT,
                    color="white" if dark else "black")
    ax.set_xticks(range(len(columns)), columns)
    if show_rows:
        ax.set_yticks(range(len(values.index)), list(values.index))
    else:
        ax.set_yticks([])
    ax.tick_params(axis="both", labelsize=ANNOT_PT, length=0)
    ax.spines[:].set_visible(False)


def metric_vs_k(runs: pd.DataFrame, dataset: str, metric: str = "image_auroc") -> plt.Figure:
    """Category mean of ``metric`` versus shots k per method; band/bars = std over seeds (ddof 1)."""
    data = seed_means(runs)
    data = data[(data["dataset"] == dataset) & (data["metric"] == metric)]
    if data.empty:
        raise ValueError(f"no runs of dataset '{dataset}' report '{metric}'")
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    sns.lineplot(data=data.assign(value=100 * data["value"]), x="k", y="value", hue="method", style="method",
                 palette=method_palette(data["method"]), markers=True, dashes=False, errorbar=("sd", 1),
                 err_style="bars", ax=ax)
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
    """:func:`ablation_curve` of every varied parameter, keyed by the parameter: a key of a method
    folder's section (``kag_prompt.model.rounds``) is drawn for the methods of that folder, named
    after it (:class:`~fsadlib.methods.spec.MethodSpec`: ``winclip.*`` covers ``winclip`` and
    ``winclip_plus``), a shared key (``shots.seeds``) for every method of the table."""
    methods = sorted(set(experiments["method"]))

    def methods_of(param: str) -> list[str] | None:
        section = param.split(".")[0]
        own = [m for m in methods if m == section or m.startswith(f"{section}_")]
        return own or None

    return {param: ablation_curve(experiments, param, methods_of(param), metric) for param in varied_params(experiments)}


def efficiency_plot(table: pd.DataFrame) -> plt.Figure:
    """ms per image at batch 1 and images/s at the best batch, per method (from efficiency.csv), each
    bar in its method's colour."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), constrained_layout=True)
    palette = method_palette(table["method"])
    for ax, column in zip(axes, ("ms_per_img_b1", "img_per_s_best")):
        sns.barplot(data=table, y="method", x=column, hue="method", palette=palette, saturation=1, legend=False,
                    ax=ax)
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
