"""Analysis of saved results: the tidy runs table, seed summary, experiments, paper comparison, efficiency.

    runs = load_runs()                     # results/<method>/<dataset>/k<k>/seed<s>/metrics.json
    write_summary(runs)                    # reports/summary.json (DVC metrics)
    paper_comparison(runs)                 # ours beside published numbers (published.csv)
    reps = load_replicates()               # bootstrap replicates -> interval_table, paired_comparisons,
                                           # tie marks (summary_table), rankings (Friedman, CD diagram)
    load_experiments(num=1)                # dvc exp show --json -> ablation table
"""

from fsadlib.analysis.compare import (
    RunReplicates,
    interval_table,
    load_replicates,
    paired_comparisons,
    rankings,
    tie_marks,
)
from fsadlib.analysis.efficiency import read_efficiency
from fsadlib.analysis.experiments import (
    experiment_records,
    experiments_table,
    load_experiments,
    varied_params,
)
from fsadlib.analysis.published import paper_comparison, published_table
from fsadlib.analysis.runs import RUN_COLUMNS, load_runs, seed_means, summarise, summary_table, write_summary

__all__ = ["RUN_COLUMNS", "RunReplicates", "experiment_records", "experiments_table", "interval_table",
           "load_experiments", "load_replicates", "load_runs", "paired_comparisons", "paper_comparison",
           "published_table", "rankings", "read_efficiency", "seed_means", "summarise", "summary_table", "tie_marks",
           "varied_params", "write_summary"]
