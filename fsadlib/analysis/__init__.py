"""Analysis of saved results: the tidy runs table, seed summary, experiments, paper comparison, efficiency.

    runs = load_runs()                     # results/<method>/<dataset>/k<k>/seed<s>/metrics.json
    write_summary(runs)                    # reports/summary.json (DVC metrics)
    paper_comparison(runs)                 # ours beside published numbers (published.csv)
    load_experiments(num=1)                # dvc exp show --json -> ablation table
"""

from fsadlib.analysis.efficiency import read_efficiency
from fsadlib.analysis.experiments import experiment_records, experiments_table, load_experiments, varied_params
from fsadlib.analysis.published import paper_comparison, published_table
from fsadlib.analysis.runs import RUN_COLUMNS, load_runs, seed_means, summarise, summary_table, write_summary

__all__ = ["RUN_COLUMNS", "experiment_records", "experiments_table", "load_experiments", "load_runs", "paper_comparison",
           "published_table", "read_efficiency", "seed_means", "summarise", "summary_table", "varied_params",
           "write_summary"]
