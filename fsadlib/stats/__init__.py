"""Statistics for comparing methods: exact bootstrap intervals, paired tests, rankings.

- :mod:`~fsadlib.stats.bootstrap`: every metric of :mod:`fsadlib.metrics` under B stratified image
  resamples at once, exact (``bootstrap_image_metrics``, ``bootstrap_pixel_metrics``)
- :mod:`~fsadlib.stats.intervals`: shared resamples, seed-mean combination, percentile intervals,
  paired bootstrap p-values, Holm's correction
- :mod:`~fsadlib.stats.delong`: DeLong's test for two correlated image AUROCs, O(n log n)
- :mod:`~fsadlib.stats.ranking`: Friedman test, Nemenyi post-hoc, critical-difference diagram
  (scikit-posthocs)
"""

from fsadlib.stats.bootstrap import bootstrap_image_metrics, bootstrap_pixel_metrics, resample_counts
from fsadlib.stats.delong import DeLongResult, PairedTest, delong, delong_test, z_test
from fsadlib.stats.intervals import (
    INTERVAL_METHOD,
    bootstrap_p_value,
    holm,
    image_list_hash,
    image_resamples,
    percentile_interval,
    seed_draws,
    seed_mean_replicates,
)
from fsadlib.stats.ranking import Ranking, critical_difference_diagram, rank_methods

__all__ = [
    "INTERVAL_METHOD",
    "DeLongResult",
    "PairedTest",
    "Ranking",
    "bootstrap_image_metrics",
    "bootstrap_p_value",
    "bootstrap_pixel_metrics",
    "critical_difference_diagram",
    "delong",
    "delong_test",
    "holm",
    "image_list_hash",
    "image_resamples",
    "percentile_interval",
    "rank_methods",
    "resample_counts",
    "seed_draws",
    "seed_mean_replicates",
    "z_test",
]
