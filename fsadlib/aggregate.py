"""The one seed aggregation of the workbench (evaluation's seed aggregate and the analysis summary).

For the values m_1 .. m_S of one metric over S seeds (each already a category mean):

    mean = (1/S) sum_s m_s,    std = sqrt( sum_s (m_s - mean)^2 / (S - 1) )   (sample std, ddof = 1; 0 for S = 1)

NaN propagates (a seed without the metric makes mean and std NaN: nothing is dropped silently).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

STD_DDOF = 1


def mean_std(values: Iterable[float]) -> dict[str, float]:
    """``{"mean", "std"}`` over seeds (module docstring); ``ValueError`` for no value at all."""
    array = np.asarray(list(values), dtype=float)
    if array.size == 0:
        raise ValueError("mean_std: no seed values to aggregate")
    std = float(np.std(array, ddof=STD_DDOF)) if array.size > 1 else 0.0
    return {"mean": float(np.mean(array)), "std": std}
