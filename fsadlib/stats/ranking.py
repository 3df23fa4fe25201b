"""Ranking many methods over many categories: Friedman test, Nemenyi post-hoc, critical-difference
diagram (Demsar 2006), through scikit-posthocs and scipy rather than our own code.

Input: a table ``blocks x methods`` of one metric (higher is better), a block being one (data set,
category). Methods are ranked within each block (1 = best, ties share the mean rank); R_j is the mean
rank of method j over the N blocks. Friedman's statistic for k methods,

    chi2_F = 12 N / (k (k + 1)) * (sum_j R_j^2 - k (k + 1)^2 / 4),   chi2 with k - 1 degrees of freedom,

tests whether all methods rank alike. The Nemenyi post-hoc compares every pair by
q = |R_i - R_j| / sqrt(k (k + 1) / (6 N)) against the studentized range (p-values from
``scikit_posthocs.posthoc_nemenyi_friedman``); the diagram joins methods whose difference is not
significant at ``alpha`` (``scikit_posthocs.critical_difference_diagram``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import friedmanchisquare, rankdata


@dataclass(frozen=True)
class Ranking:
    """mean_ranks: method -> mean rank (1 = best); nemenyi_p: methods x methods p-values;
    friedman_p: the Friedman test's p-value; n_blocks: blocks used (those without NaN)."""

    mean_ranks: pd.Series
    nemenyi_p: pd.DataFrame
    friedman_statistic: float
    friedman_p: float
    n_blocks: int


def rank_methods(table: pd.DataFrame) -> Ranking:
    """Friedman + Nemenyi of ``table`` (rows: blocks, columns: methods, higher is better); blocks with a
    NaN are dropped. ``ValueError`` with fewer than 3 methods or 2 complete blocks."""
    import scikit_posthocs as sp

    complete = table.dropna(axis=0, how="any")
    if table.shape[1] < 3 or len(complete) < 2:
        raise ValueError(f"the Friedman test needs >= 3 methods and >= 2 complete blocks, got {table.shape[1]} "
                         f"methods ({list(table.columns)}) and {len(complete)} complete blocks")
    values = complete.to_numpy(dtype=np.float64)
    ranks = rankdata(-values, axis=1)
    statistic, p = friedmanchisquare(*values.T)
    nemenyi = sp.posthoc_nemenyi_friedman(values)
    nemenyi.index = nemenyi.columns = list(complete.columns)
    return Ranking(mean_ranks=pd.Series(ranks.mean(axis=0), index=list(complete.columns)).sort_values(),
                   nemenyi_p=nemenyi, friedman_statistic=float(statistic), friedman_p=float(p),
                   n_blocks=len(complete))


def critical_difference_diagram(ranking: Ranking, alpha: float = 0.05, title: str | None = None):
    """The critical-difference diagram of ``ranking`` (matplotlib Figure): mean ranks on an axis,
    bars joining the methods whose Nemenyi p-value is >= ``alpha``."""
    import matplotlib.pyplot as plt
    import scikit_posthocs as sp

    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.35 * len(ranking.mean_ranks)))
    sp.critical_difference_diagram(ranking.mean_ranks, ranking.nemenyi_p, alpha=alpha, ax=ax)
    ax.set_title(title or f"mean rank over {ranking.n_blocks} blocks (Friedman p = {ranking.friedman_p:.3g})")
    fig.tight_layout()
    return fig
