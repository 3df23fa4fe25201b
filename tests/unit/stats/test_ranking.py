"""Friedman / Nemenyi through scikit-posthocs and scipy against hand-computed values."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pandas as pd
import pytest
from scipy.stats import studentized_range

from fsadlib.stats.ranking import critical_difference_diagram, rank_methods

matplotlib.use("Agg")


def test_consistent_order_gives_the_hand_computed_statistics():
    """4 blocks, A > B > C in each: ranks 1, 2, 3; chi2_F = 12 * 4 / (3 * 4) * (1 + 4 + 9 - 3 * 16 / 4) = 8,
    p = exp(-8 / 2) (chi2 with 2 df). Nemenyi A vs C: q = 2 / sqrt(3 * 4 / 24) = 2 sqrt 2, p from the
    studentized range with k = 3 and infinite df at q sqrt 2 = 4."""
    table = pd.DataFrame({"A": [0.9, 0.8, 0.95, 0.7], "B": [0.8, 0.7, 0.9, 0.6], "C": [0.7, 0.6, 0.5, 0.5]})
    ranking = rank_methods(table)
    assert ranking.mean_ranks.to_dict() == {"A": 1.0, "B": 2.0, "C": 3.0}
    assert ranking.friedman_statistic == pytest.approx(8.0) and ranking.friedman_p == pytest.approx(math.exp(-4))
    assert ranking.nemenyi_p.loc["A", "C"] == pytest.approx(studentized_range.sf(4.0, 3, np.inf), abs=1e-6)
    assert ranking.nemenyi_p.loc["A", "B"] > 0.05 and ranking.n_blocks == 4
    fig = critical_difference_diagram(ranking)
    assert "Friedman p" in fig.axes[0].get_title()


def test_incomplete_blocks_are_dropped_and_small_tables_refused():
    table = pd.DataFrame({"A": [0.9, np.nan, 0.8], "B": [0.8, 0.7, 0.7], "C": [0.7, 0.6, 0.6]})
    assert rank_methods(table).n_blocks == 2
    with pytest.raises(ValueError, match=">= 3 methods"):
        rank_methods(table[["A", "B"]])
