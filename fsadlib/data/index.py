"""The index of a data set: ``data/index/<dataset>.csv``, its samples table with the content hash of
every image and mask (written by the ``make_shots@<dataset>`` stage).

A stage that reads a data set depends on its index rather than on its root folder, whose location the
stage cannot name (the root is a value of ``params.yaml: datasets``): a changed, added or removed image
or mask changes the index, and with it every stage that reads the data set.

Columns: the samples table (:data:`fsadlib.data.samples.SAMPLE_COLUMNS`) + ``image_sha1``, ``mask_sha1``
(``""`` without a mask).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fsadlib.data.files import resolve_path
from fsadlib.io import atomic_path, file_sha1
from fsadlib.paths import data_dir


def index_file(dataset: str) -> Path:
    return data_dir() / "index" / f"{dataset}.csv"


def write_index(samples: pd.DataFrame) -> Path:
    """Write the index of the one data set of ``samples`` atomically; returns its path."""
    datasets = samples["dataset"].unique()
    if len(datasets) != 1:
        raise ValueError(f"write_index takes the samples of one dataset, got {list(datasets)}")
    table = samples.assign(image_sha1=[file_sha1(resolve_path(p)) for p in samples["image_path"]],
                           mask_sha1=[file_sha1(resolve_path(p)) if p else "" for p in samples["mask_path"]])
    with atomic_path(index_file(str(datasets[0])), suffix=".csv") as tmp:
        table.to_csv(tmp, index=False)
    return index_file(str(datasets[0]))
