"""Rebuild every notebook of notebooks/ from its source (``make notebooks``).

The pipeline notebooks that belong to no method are written from the cell sources below; every
trainable method folder's training notebook (``MethodSpec.notebook``, built-in folders and outside
packages alike) from the one template :func:`fsadlib.notebooks.training_notebook`. Edit the sources
here (or the template), never the .ipynb files: ``tests/notebooks`` fails when a committed notebook
differs from what this script writes.

    python scripts/build_notebooks.py               # rewrite notebooks/
    python scripts/build_notebooks.py --out DIR     # write to DIR instead (the test compares)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fsadlib.methods import specs
from fsadlib.notebooks import (
    TARGET_PARAMETER,
    is_pipeline_notebook,
    md,
    pipeline_notebook,
    save_notebook,
    training_notebook,
    write_notebook,
)
from fsadlib.paths import repo_root

#: notebook name -> (title, parameters cell, cells)
NOTEBOOKS = {
    "10_prepare_data": (
        '# 10 Prepare data',
        'smoke = 0  # 1: tiny synthetic data set (64 px, 8/2/6 images per category)',
        [
            md("""Generates the embedded synthetic data set (`params.yaml: synthetic`, written to its `datasets` root)
and indexes every data set configured in `params.yaml: datasets`: images per category and sample
grids with the masks outlined, and writes a data card per data set
(`reports/data_cards/<name>.json`: licence, citation, split rule, counts, image sizes, which
metrics apply). Library: `fsadlib/data/` (`synthetic.py`, `samples.py`, `readers/`, `card.py`)."""),
            """import pandas as pd

from fsadlib import config, data
from fsadlib.data import figures
from fsadlib.protocol import check_categories, load_protocols""",
            """synthetic_config = config.load_section("synthetic", data.SyntheticConfig)
synthetic_config = synthetic_config.for_smoke() if config.as_flag(smoke) else synthetic_config
protocols = load_protocols()
shots_config = config.load_section("shots", data.ShotsConfig)
synthetic_config""",
            md('## Generate the synthetic data set'),
            """root = data.synthetic.generate(data.dataset_root("synthetic"), **config.to_dict(synthetic_config))
root""",
            md('## Index every configured data set'),
            """samples = pd.concat([data.load_samples(name) for name in data.dataset_specs()], ignore_index=True)
counts = figures.count_table(samples)
counts""",
            'figures.count_plot(samples);',
            'figures.sample_grid(samples, per_category=5);',
            md("""## Data cards
One per configured data set, written to `reports/data_cards/`. `metrics` says which metric
families apply: image-level-only sets report pixel metrics as not applicable, all-anomalous sets
(ISIC, the polyp sets) image metrics."""),
            """cards = [data.data_card(name, samples[samples.dataset == name]) for name in data.dataset_specs()]
card_files = [data.write_data_card(card) for card in cards]
pd.DataFrame([{key: card[key] for key in ('dataset', 'title', 'licence', 'citation', 'split')} for card in cards])""",
            'pd.concat([data.card_table(card) for card in cards], ignore_index=True)',
            md('## Invariants'),
            """normal, anomalous = samples[samples.label == 0], samples[samples.label == 1]
assert (normal.mask_path == "").all(), "normal images carry no mask"
synthetic_anomalous = anomalous[anomalous.dataset == "synthetic"]
assert (synthetic_anomalous.mask_path != "").all(), "every synthetic defect has a mask"
empty = [p for p in synthetic_anomalous.mask_path if data.load_mask(p, synthetic_config.image_size).sum() < 1]
assert not empty, f"{len(empty)} synthetic defect masks are empty, e.g. {empty[:3]}"
assert (counts["train good"] >= max(shots_config.ks)).all(), "enough normal training images for the largest k"
for target, protocol in protocols.items():   # KeyError naming the category and its data set
    for key, dataset, wanted in protocol.named_categories():
        check_categories(samples, dataset, wanted, f"params.yaml protocol.{target}.{key}")
assert all(path.is_file() for path in card_files), f'data cards not written: {card_files}'
synthetic_card = next(card for card in cards if card['dataset'] == 'synthetic')
assert not any(c['not_applicable'] for c in synthetic_card['categories'].values()), 'image and pixel metrics apply'""",
        ],
    ),
    "15_make_shots": (
        "# 15 Make k-shot files",
        'dataset = "synthetic"  # a name of params.yaml: datasets',
        [
            md("""Indexes the data set (`data/index/<dataset>.csv`: its samples with the content hash of every image and
mask; a stage that reads the data set depends on this index) and writes the frozen k-shot support files
`data/shots/<dataset>/<category>/k<k>_seed<s>.json` for every category, k and seed of `params.yaml: shots`,
drawn from the normal training images only (`fsadlib/data/shots.py`: one seeded shuffle per category and
seed, k-shot = its first k, so the sets are nested)."""),
            """from fsadlib import config, data
from fsadlib.data import figures
from fsadlib.protocol import check_categories, load_protocols""",
            """shots_config = config.load_section("shots", data.ShotsConfig)
protocols = load_protocols()
samples = data.load_samples(dataset)
index = data.index.write_index(samples)
counts = figures.count_table(samples)
counts""",
            "figures.count_plot(samples);",
            "figures.sample_grid(samples, per_category=5);",
            md("## k-shot files"),
            """written = data.make_shots(samples, shots_config.ks, shots_config.seeds)
table = data.shots.shot_table(dataset, sorted(samples.category.unique()), shots_config.ks, shots_config.seeds)
table[table.k == 1].pivot(index="category", columns="seed", values="image_path")""",
            md("## Invariants"),
            """assert len(shots_config.seeds) >= 3, "the protocol reports mean +- std over at least 3 seeds"
assert (counts["train good"] >= max(shots_config.ks)).all(), "enough normal training images for the largest k"
train_good = samples[(samples.split == "train") & (samples.label == 0)].image_path
assert table.image_path.isin(train_good).all(), "shots come from train/good only"
per_file = table.groupby(["category", "k", "seed"]).image_path.nunique()
assert (per_file.index.get_level_values("k") == per_file.to_numpy()).all(), "k distinct images per file"
expected = samples.category.nunique() * len(shots_config.ks) * len(shots_config.seeds)
assert len(written) == expected, f"{len(written)} k-shot files written, expected {expected} (categories x shots.ks x shots.seeds)"
assert index.is_file(), f"the data set index {index} is not written"
for target, protocol in protocols.items():   # KeyError naming the category and this data set
    for key, named, wanted in protocol.named_categories():
        if named == dataset:
            check_categories(samples, dataset, wanted, f"params.yaml protocol.{target}.{key}")
""",
        ],
    ),
    "20_build_captions": (
        '# 20 Build captions',
        "dataset = 'synthetic'",
        [
            md("""Multi-level fine-grained semantic captions (MFSC, FineGrainedAD) of every category of one data set:
level 1 foreground / background, level 2 entities with number, location and relation, level 3 colour,
texture and shape per entity, plus a global caption. The captioner (`captions` section of `params.yaml`)
is `offline` by default (measured from one normal training image, no model), or a VLM over an
OpenAI-compatible endpoint or a local transformers model. Writes `data/captions/<dataset>/<category>.json`
(schema: `fsadlib/captions/schema.py`), validated on write and on load."""),
            """import seaborn as sns

from fsadlib.captions import CaptionsConfig, build_captions, caption_figure, caption_table, load_captions, token_table
from fsadlib.config import load_section""",
            """config = load_section("captions", CaptionsConfig)
config""",
            """written = build_captions(dataset, config=config)
captions = [load_captions(dataset, category) for category in written]
caption_table(captions)""",
            md('Per category, the reference image beside its captions at each level.'),
            'caption_figure(captions);',
            md("""Token lengths of every caption text in CLIP's BPE (77-token context; MLLP inserts 5 learnable
tokens, so a text longer than 70 tokens is split into pieces, never cut)."""),
            """tokens = token_table(captions)
sns.catplot(data=tokens, x="tokens", y="category", hue="field", kind="strip", height=3.5, aspect=2);""",
            """assert captions and sorted(written) == sorted(c.category for c in captions), f"captions written for {sorted(written)}"
wrong = [str(written[c.category]) for c in captions if c.dataset != dataset or c.source["captioner"] != config.captioner]
assert not wrong, f"captions of another dataset or captioner than {dataset!r} / {config.captioner!r}: {wrong}"
uneven = [str(written[c.category]) for c in captions if not len(c.entity) == len(c.entity_caption) >= 1]
assert not uneven, f"captions without entities or with one caption per entity missing: {uneven}"
print(f"{len(captions)} categories captioned, {sum(c.n_entities for c in captions)} entities, "
      f"{(tokens.tokens > 70).sum()} texts over the 70-token budget")""",
        ],
    ),
    "40_evaluate": (
        "# 40 Evaluate a method on the target categories",
        """method = "winclip"  # a registered method (fsadlib.methods.list_methods())
folder = "winclip"  # its method folder (fsadlib.methods.spec_of(method).name)
smoke = 0
""" + TARGET_PARAMETER,
        [
            md("""Evaluates `method` (its trained model(s), or, for a training-free method, a model built from its params
section) on the **target** categories of the evaluation of `target` (`params.yaml: protocol`), for every k of its folder section's `ks` (k = 0 for a
zero-shot method) and every k-shot seed of `shots`, with the exact metrics of `fsadlib.metrics`, and
aggregates mean ± std over seeds. Outputs: `results/<method>/<dataset>/k<k>/seed<s>/` (metrics.json with
resolution and mask rule, scores.csv, float16 maps) and `results/<method>/<dataset>/k<k>/metrics.json`
(over seeds). Resumable per category."""),
            """import seaborn as sns

from fsadlib.config import as_flag
from fsadlib.evaluate import run_plan
from fsadlib.methods import method_spec
from fsadlib.methods.training import entry_ks, load_method_section""",
            """table = run_plan(method, smoke=as_flag(smoke), folder=folder, target=target)
table[table.category == "mean"].pivot(index="metric", columns="k", values=["mean", "std"])""",
            md("Per-category image and pixel AUROC (mean over seeds; error bars are not drawn for a single seed)."),
            """auroc = table[table.metric.isin(["image_auroc", "pixel_auroc"]) & (table.category != "mean")]
sns.catplot(data=auroc, x="category", y="mean", hue="k", col="metric", kind="bar", height=3, aspect=1.4);""",
            md("## Invariants"),
            """spec = method_spec(folder)
entry = next(m for m in spec.methods if m.name == method)
scores = table[table.metric.str.startswith("image_") & table["mean"].notna()]
assert ((scores["mean"] >= 0) & (scores["mean"] <= 1)).all(), "metrics out of [0, 1]"
planned = entry_ks(entry, load_method_section(spec), as_flag(smoke))
assert set(table.k) == set(planned), f"evaluated k {sorted(set(table.k))}, planned {list(planned)} ({folder}.ks)"
""",
        ],
    ),
    "50_ablation_analysis": (
        '# 50 Ablation analysis: every run in one table, summary with intervals and ties, paired comparisons, rankings, figures, paper comparison',
        """metric = "image_auroc"  # metric of the k and ablation curves
num_commits = 1  # experiments (dvc exp) of the last N commits""",
        [
            md("""Every saved run (`results/<method>/<dataset>/k<k>/seed<s>/metrics.json`) as one tidy table; the seed
summary `reports/summary.json` (DVC metrics: method -> dataset -> k -> metric mean/std over seeds, with
the evaluation resolution); per-category heat maps and metric-vs-k curves (`reports/figures/`, DVC
plots); ablation curves over DVC experiments (`dvc exp run --queue -S ...`, see the README); our
numbers beside the published ones; the efficiency table of `benchmarks/bench_methods.py`."""),
            """from IPython.display import display

from fsadlib import analysis, stats, viz
from fsadlib.paths import reports_dir
from fsadlib.protocol import load_protocols

targets = list(load_protocols())  # the evaluations' target data sets, in params order""",
            """runs = analysis.load_runs()
assert not runs.empty, "no saved results: run `dvc repro evaluate` first"
assert runs["value"].dropna().between(0, 1).all(), "metrics out of [0, 1]"
datasets = sorted(set(runs["dataset"]), key=lambda d: (targets.index(d) if d in targets else len(targets), d))
runs.groupby(["method", "dataset", "k"]).agg(seeds=("seed", "nunique"), categories=("category", "nunique"),
                                             eval_size=("eval_size", "first"), random_weights=("random_weights", "first"))""",
            md("""## Summary: mean ± std over seeds (%), category mean, with intervals and ties
`[low, high]`: percentile bootstrap interval of the seed mean (test images resampled within label strata,
pixel metrics by whole image, support seeds drawn with replacement; level and method in each run's
`metrics.json`). `*` marks the best method of its (dataset, k); `≈` a method that a paired bootstrap of
the category-mean difference (common seeds, Holm-corrected over the methods compared with the best)
cannot tell from the best: a tie."""),
            """replicates = analysis.load_replicates()
intervals = analysis.interval_table(replicates)
summary = analysis.write_summary(runs, intervals=intervals)
empty = [(m, d, k) for m, ds in summary.items() for d, ks in ds.items() for k, e in ks.items() if e["n_seeds"] < 1]
assert not empty, f"summary entries (method, dataset, k) without a seed: {empty}"
assert (intervals["ci_low"] <= intervals["ci_high"]).all(), "interval bounds out of order"
analysis.summary_table(runs, replicates=replicates)""",
            md("""## Paired comparisons (same images, same support seeds)
Every pair of methods evaluated at the same (dataset, k): the seed-mean difference A - B of `metric` per
category and for the category mean, its bootstrap interval and p-value (Holm-corrected over the
categories), and DeLong's test for image AUROC. `significant`: corrected p < 0.05."""),
            """comparisons = analysis.paired_comparisons(replicates)
assert comparisons.empty or comparisons["p_bootstrap"].dropna().between(0, 1).all(), "bootstrap p-values out of [0, 1]"
comparisons[comparisons["metric"] == metric]""",
            md("""## Ranking over categories and data sets: Friedman test, Nemenyi post-hoc, critical-difference diagram
One diagram per k with at least three methods (scikit-posthocs): mean rank of `metric` over every
(dataset, category) block, bars join methods whose Nemenyi p-value is at least 0.05."""),
            """ranks = analysis.rankings(runs, metric)
for k, ranking in ranks.items():
    viz.save_figure(stats.critical_difference_diagram(ranking, title=f"{metric}, k = {k}: mean rank over "
                                                      f"{ranking.n_blocks} blocks, Friedman p = {ranking.friedman_p:.3g}"),
                    f"cd_{metric}_k{k}")
{k: ranking.friedman_p for k, ranking in ranks.items()}""",
            md("""## Per-category heat maps (mean over seeds, %)
One figure per data set: a facet per method (columns: its shots k), a row per metric."""),
            """for dataset in datasets:
    viz.save_figure(viz.category_heatmaps(runs, dataset), f"heatmaps_{dataset}")""",
            md("""## Metric versus shots k (error bars: std over seeds)
One figure per data set; each method keeps its colour in every figure."""),
            """for dataset in datasets:
    viz.save_figure(viz.metric_vs_k(runs, dataset, metric), f"{metric}_vs_k_{dataset}")""",
            md("""## Ablations (DVC experiments)
One curve per varied parameter of a method section (e.g. `kag_prompt.model.rounds`); empty until
experiments have run (README: *Ablations*)."""),
            """experiments = analysis.load_experiments(num=num_commits)
curves = viz.ablation_curves(experiments, metric)
for param, fig in curves.items():
    viz.save_figure(fig, f"ablation_{param}")
experiments[["experiment", *analysis.varied_params(experiments)]].drop_duplicates("experiment")""",
            md("""## Paper comparison
Published numbers (`fsadlib/analysis/published.csv`; `status` says which are unverified second-hand
quotes) beside ours (seed mean ± std and its interval `ours_ci_low`,
`ours_ci_high`) for the same method, data set, k and metric (only our data sets named `mvtec` or `visa`
are joined: the synthetic default and a user's own set have no published numbers). Our weights are in the row:
with random backbone weights the numbers are **not comparable** (they only show that the code runs)."""),
            """comparison = analysis.paper_comparison(runs, intervals=intervals)
assert comparison.empty or comparison["paper"].between(0, 100).all(), "published numbers out of [0, 100]: check fsadlib/analysis/published.csv"
comparison""",
            md('## Efficiency (`python benchmarks/bench_methods.py`; not a pipeline dependency)'),
            """efficiency = analysis.read_efficiency() if (reports_dir() / "efficiency.csv").is_file() else None
display(efficiency)
fig = viz.efficiency_plot(efficiency) if efficiency is not None else None""",
        ],
    ),
    "60_explore_anomaly_maps": (
        '# 60 Explore anomaly maps',
        """results = ""  # results folder; empty: results/ of this checkout""",
        [
            md("""Interactive explorer over **saved** results (it never runs a model): pick the data set, category,
two methods, k and seed. Each image is shown with its ground-truth outline (lime), the two methods'
maps (each normalised per (method, category)) and their difference (red: method A higher, blue:
method B higher); methods evaluated at different resolutions are resampled to one display size.
Sort the images by the difference of the two methods' (per-category min-max normalised) image
scores to find where they disagree. Needs `results/` from `dvc repro evaluate`; `make lab` opens
this notebook in JupyterLab."""),
            """from fsadlib.viz.explorer import Explorer

explorer = Explorer(results or None)
explorer.widget""",
        ],
    ),
}


def build(out: Path) -> list[Path]:
    """Write every notebook into ``out``; returns the paths written."""
    written = [save_notebook(out / f"{name}.ipynb", pipeline_notebook(parameters, cells, title))
               if is_pipeline_notebook(Path(f"{name}.ipynb")) else write_notebook(out / f"{name}.ipynb", parameters, cells, title)
               for name, (title, parameters, cells) in NOTEBOOKS.items()]
    for spec in specs().values():
        if spec.trainable:
            written.append(save_notebook(out / Path(spec.notebook).name, training_notebook(spec)))
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="folder to write (default: notebooks/)")
    args = parser.parse_args()
    for path in build(args.out if args.out is not None else repo_root() / "notebooks"):
        print(path)


if __name__ == "__main__":
    main()
