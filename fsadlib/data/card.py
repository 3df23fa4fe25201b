"""Data cards: what a configured data set is, how it was split and which metrics apply to it.

A card (:func:`data_card`) holds the reader's :class:`~fsadlib.data.readers.ReaderCard` (title, source,
licence, citation, split rule; ``params.yaml: datasets.<name>.card`` overrides any of them, e.g. for a
user's own folder set), the reader options (so a ratio/seed split is recorded), and, measured from the
samples table: the categories, image sizes (``W x H`` -> count, from the file headers), counts by split
and label, defect types, and per category which metric families apply (:func:`not_applicable`, the rule
:mod:`fsadlib.evaluate` applies). :func:`write_data_card` writes one as ``reports/data_cards/<name>.json``
(atomic; the ``prepare_data`` stage writes one per configured data set, notebook 10 shows them).
"""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import pandas as pd

from fsadlib.data.images import image_size
from fsadlib.data.readers import CARDS
from fsadlib.data.samples import dataset_spec, load_samples
from fsadlib.io import write_json
from fsadlib.paths import reports_dir

CARD_KEYS = tuple(f.name for f in fields(next(iter(CARDS.values()))))


def not_applicable(n_images: int, n_anomalous: int, has_masks: bool) -> dict[str, str]:
    """Metric families that do not apply to a test set, with why: ``image`` when the test images are all
    anomalous or all normal (AUROC / AP undefined), ``pixel`` when the anomalous images have no masks."""
    families = {}
    if n_anomalous in (0, n_images):
        families["image"] = f"all {n_images} test images are {'anomalous' if n_anomalous else 'normal'}"
    if not has_masks:
        families["pixel"] = "no masks (image-level labels only)"
    return families


def data_card(dataset: str, samples: pd.DataFrame | None = None) -> dict[str, Any]:
    """The card of configured data set ``dataset`` (``samples`` defaults to ``load_samples(dataset)``)."""
    spec = dataset_spec(dataset)
    unknown = sorted(set(spec.card) - set(CARD_KEYS))
    if unknown:
        raise KeyError(f"datasets.{dataset}.card: unknown keys {unknown}; allowed: {list(CARD_KEYS)}")
    samples = load_samples(dataset) if samples is None else samples
    card: dict[str, Any] = {"dataset": dataset, "reader": spec.reader, "root": spec.root, "options": spec.options}
    card |= asdict(CARDS[spec.reader]) | dict(spec.card)
    sizes = pd.Series([f"{w}x{h}" for w, h in map(image_size, samples["image_path"])], index=samples.index)
    card["categories"] = {}
    for category, rows in samples.groupby("category", sort=True):
        test = rows[rows["split"] == "test"]
        anomalous = test[test["label"] == 1]
        has_masks = bool(len(anomalous)) and bool((anomalous["mask_path"] != "").all())
        card["categories"][category] = {
            "train_normal": int(((rows["split"] == "train") & (rows["label"] == 0)).sum()),
            "test_normal": int((test["label"] == 0).sum()),
            "test_anomalous": len(anomalous),
            "with_masks": int((anomalous["mask_path"] != "").sum()),
            "defects": anomalous["defect"].value_counts().sort_index().to_dict(),
            "image_sizes": sizes[rows.index].value_counts().sort_index().to_dict(),
            "not_applicable": not_applicable(len(test), len(anomalous), has_masks),
        }
    return card


def card_table(card: dict[str, Any]) -> pd.DataFrame:
    """One row per category of a card: counts, sizes and the metric families that apply."""
    rows = []
    for category, entry in card["categories"].items():
        applies = [f for f in ("image", "pixel") if f not in entry["not_applicable"]]
        rows.append({"dataset": card["dataset"], "category": category,
                     **{k: entry[k] for k in ("train_normal", "test_normal", "test_anomalous", "with_masks")},
                     "image sizes": ", ".join(f"{s} ({n})" for s, n in entry["image_sizes"].items()),
                     "metrics": " + ".join(applies) or "none"})
    return pd.DataFrame(rows)


def write_data_card(card: dict[str, Any], out_dir: str | Path | None = None) -> Path:
    """Write a :func:`data_card` to ``<out_dir>/<dataset>.json`` (default ``reports/data_cards``)."""
    folder = Path(out_dir) if out_dir is not None else reports_dir() / "data_cards"
    return write_json(folder / f"{card['dataset']}.json", card)
