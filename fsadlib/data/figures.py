"""Figures of the data notebooks: per-category counts (seaborn), a sample grid with mask overlays, and
the grid of training samples (augmented or synthesised) every training notebook shows."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from fsadlib.data.dataset import load_mask, read_image

PARTS = ("train good", "test good", "test anomalous")


def count_table(samples: pd.DataFrame) -> pd.DataFrame:
    """Images per (dataset, category) in each of ``PARTS``, plus the number of defect types."""
    part = np.where(samples["split"] == "train", PARTS[0], np.where(samples["label"] == 1, PARTS[2], PARTS[1]))
    keys = [samples["dataset"], samples["category"]]
    table = pd.crosstab(keys, pd.Series(part, index=samples.index, name="part"))
    table = table.reindex(columns=list(PARTS), fill_value=0)
    anomalous = samples[samples["label"] == 1]
    table["defect types"] = anomalous.groupby(["dataset", "category"])["defect"].nunique()
    return table.fillna(0).astype(int)


def count_plot(samples: pd.DataFrame) -> plt.Figure:
    """Bar chart of :func:`count_table`: one panel per data set, one bar group per category."""
    counts = count_table(samples).drop(columns="defect types").reset_index()
    long = counts.melt(id_vars=["dataset", "category"], var_name="part", value_name="images")
    grid = sns.catplot(long, x="category", y="images", hue="part", col="dataset", kind="bar", height=3.5,
                       aspect=2.0, sharex=False)
    grid.tick_params(axis="x", rotation=30)
    return grid.figure


def sample_grid(samples: pd.DataFrame, per_category: int = 4, size: int = 128, seed: int = 0) -> plt.Figure:
    """One row per (dataset, category): a normal test image, then ``per_category - 1`` anomalous ones
    with the mask outlined in red (drawn with a fixed ``seed``; missing kinds leave blank cells)."""
    groups = sorted(samples.groupby(["dataset", "category"]).groups)
    fig, axes = plt.subplots(len(groups), per_category, figsize=(1.6 * per_category, 1.6 * len(groups)),
                             squeeze=False)
    for row, (dataset, category) in zip(axes, groups):
        in_group = (samples["dataset"] == dataset) & (samples["category"] == category)
        rows = samples[in_group & (samples["split"] == "test")]
        normal = rows[rows["label"] == 0].sample(frac=1, random_state=seed).head(1)
        anomalous = rows[rows["label"] == 1].sample(frac=1, random_state=seed).head(per_category - 1)
        for ax, (_, sample) in zip(row, pd.concat([normal, anomalous]).iterrows()):
            ax.imshow(read_image(sample["image_path"]).resize((size, size)))
            if sample["mask_path"]:
                ax.contour(load_mask(sample["mask_path"], size).numpy(), levels=[0.5], colors="red", linewidths=0.8)
            ax.set_title(sample["defect"], fontsize=7)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(f"{dataset}\n{category}", fontsize=8)
    fig.tight_layout()
    return fig


def training_grid(preview: dict, columns: int = 6, threshold: float = 0.5) -> plt.Figure:
    """The training samples of a method's ``training_preview``: ``image`` float ``[N, 3, S, S]`` in
    [0, 1], ``mask`` ``[N, S, S]`` in [0, 1] (soft or binary), ``title`` (N strings). Each panel: the
    image, the mask as a translucent heat map, and its ``threshold`` contour (the training label) in red."""
    images, masks, titles = preview["image"], preview["mask"], preview["title"]
    if not len(images) == len(masks) == len(titles):
        raise ValueError(f"training_grid: {len(images)} images, {len(masks)} masks, {len(titles)} titles")
    rows = max(1, -(-len(images) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.9 * columns, 2.0 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, image, mask, title in zip(axes.flat, images, masks, titles):
        ax.imshow(torch.as_tensor(image).permute(1, 2, 0).clamp(0, 1).numpy())
        m = torch.as_tensor(mask).float().numpy()
        if m.max() > 0:
            ax.imshow(np.ma.masked_equal(m, 0), cmap="autumn_r", alpha=0.45, vmin=0, vmax=1)
            if m.max() > threshold:
                ax.contour(m, levels=[threshold], colors="red", linewidths=0.8)
        ax.set_title(title, fontsize=7)
    fig.tight_layout()
    return fig
