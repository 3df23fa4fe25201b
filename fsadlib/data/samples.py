"""The samples table every method and notebook reads, and the data sets configured in ``params.yaml``.

One row per image, columns ``SAMPLE_COLUMNS``: ``dataset, category, split ("train" | "test"),
label (0 normal, 1 anomalous), defect ("good" for normal images), image_path, mask_path`` (``""`` for
normal images and for anomalous images of image-level-only data sets). Paths are stored relative to
the repository root when they lie inside it (so tables and k-shot files move with a clone) and
absolute otherwise; :func:`resolve_path` turns either form into a readable path.

``params.yaml: datasets`` maps a data-set name to a :class:`DatasetSpec` (reader + root + reader
options). Readers live in :mod:`fsadlib.data.readers`; :func:`read_samples` refuses a root under
``data/real`` that holds symbolic links (:mod:`fsadlib.data.links`), runs the reader and validates the
result with :func:`check_samples`, which opens every image header: an unreadable image, or a mask whose
size differs from its image, raises an error naming the file.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fsadlib import reads
from fsadlib.config import from_dict, load_params
from fsadlib.data.files import check_name, outside_root, portable_path, resolve_path
from fsadlib.data.geometry import DEFAULT_GEOMETRY, check_geometry
from fsadlib.data.images import image_size
from fsadlib.data.links import refuse_links
from fsadlib.data.readers import READERS
from fsadlib.data.readers.common import derived_dir

SAMPLE_COLUMNS: tuple[str, ...] = ("dataset", "category", "split", "label", "defect", "image_path", "mask_path")
SPLITS: tuple[str, ...] = ("train", "test")


@dataclass(frozen=True)
class DatasetSpec:
    """One entry of ``params.yaml: datasets``.

    ``reader``: a key of ``READERS`` (``fsadlib/data/readers``: mvtec, visa, elpv, ...); ``root``: the
    data-set folder, relative to the repo root or absolute; ``options``: keyword arguments of that
    reader; ``geometry``: the image transform of this data set (:mod:`fsadlib.data.geometry`;
    ``None``: ``evaluate.geometry``); ``allow_outside_root``: 1 lets the reader's image and mask paths
    leave ``root`` (default 0: an error names the first such path; the pieces a reader derives under
    ``data/derived/<reader>/`` count as inside); ``card``: data-card fields that override the reader's
    (``title``, ``source``, ``licence``, ``citation``, ``split``; see :mod:`fsadlib.data.card`).
    """

    reader: str
    root: str
    options: dict[str, Any] = field(default_factory=dict)
    geometry: str | None = None
    allow_outside_root: int = 0
    card: dict[str, str] = field(default_factory=dict)


def dataset_specs(params_path: str | Path | None = None) -> dict[str, DatasetSpec]:
    """All data sets of ``params.yaml: datasets`` by name."""
    section = load_params(params_path).get("datasets") or {}
    specs = {check_name(name, "dataset", "params.yaml datasets"): from_dict(DatasetSpec, spec, f"datasets.{name}")
             for name, spec in section.items()}
    for name, spec in specs.items():
        if spec.geometry is not None:
            check_geometry(spec.geometry, f"datasets.{name}.geometry")
    return specs


def dataset_spec(dataset: str) -> DatasetSpec:
    """The spec of ``dataset``; ``KeyError`` naming it and the configured ones when absent."""
    specs = dataset_specs()
    if dataset not in specs:
        raise KeyError(f"unknown dataset '{dataset}'; configured in params.yaml 'datasets': {sorted(specs)}")
    reads.record("params", f"datasets.{dataset}")
    return specs[dataset]


def resolve_geometry(dataset: str, method_geometry: str | None = None, key: str = "backbone.geometry") -> str:
    """The image transform (:mod:`fsadlib.data.geometry`) of a method's inputs from ``dataset``: the
    method's own (``method_geometry``, params key ``key``), else ``datasets.<dataset>.geometry``, else
    ``DEFAULT_GEOMETRY`` (``resize_crop``, the papers'); an unknown name raises ``KeyError`` naming the
    key and the choices. A data set absent from ``params.yaml`` has no setting of its own."""
    if method_geometry is not None:
        return check_geometry(method_geometry, key)
    spec = dataset_specs().get(dataset)
    if spec is not None and spec.geometry is not None:
        reads.record("params", f"datasets.{dataset}")
        return spec.geometry
    return DEFAULT_GEOMETRY


def samples_geometry(samples: pd.DataFrame, method_geometry: str | None = None) -> str:
    """:func:`resolve_geometry` for the rows of ``samples`` (one data set: ``ValueError`` naming them
    otherwise): what a training loop reads its images with, as the evaluation does."""
    datasets = list(dict.fromkeys(samples["dataset"]))
    if len(datasets) != 1:
        raise ValueError(f"samples of one data set expected to choose their image transform, got {datasets}")
    return resolve_geometry(str(datasets[0]), method_geometry)


def dataset_root(dataset: str) -> Path:
    """The resolved root folder of a configured data set."""
    return resolve_path(dataset_spec(dataset).root)


def load_samples(dataset: str, root: str | Path | None = None,
                 categories: list[str] | tuple[str, ...] | None = None) -> pd.DataFrame:
    """The samples table of a data set configured in ``params.yaml`` (``root`` overrides its root).

    ``categories`` keeps only those (``KeyError`` naming an unknown one and the known ones).
    """
    spec = dataset_spec(dataset)
    reads.record("data", f"samples:{dataset}")
    samples = read_samples(spec.reader, resolve_path(root or spec.root), dataset,
                           allow_outside_root=bool(spec.allow_outside_root), **spec.options)
    return samples if categories is None else select_categories(samples, categories)


def read_samples(reader: str, root: str | Path, dataset: str, allow_outside_root: bool = False,
                 **options: Any) -> pd.DataFrame:
    """Run reader ``reader`` on ``root``, label the rows with ``dataset``, validate, sort.

    Every image and mask path must lie under ``root`` or the reader's ``data/derived`` folder of it
    unless ``allow_outside_root`` (``ValueError`` naming the data set, the reader and the first path
    outside). Rows are sorted by
    ``category, split, label, defect, image_path``.
    """
    if reader not in READERS:
        raise KeyError(f"unknown reader '{reader}' for dataset '{dataset}'; known: {sorted(READERS)}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset '{dataset}': root folder not found: {root}")
    refuse_links(root)
    allowed = [p for p in inspect.signature(READERS[reader]).parameters if p != "root"]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise KeyError(f"dataset '{dataset}': unknown options {unknown} for reader '{reader}'; allowed: {allowed}")
    table = READERS[reader](root, **options)
    derived = derived_dir(reader, root)  # pieces the reader cut or decoded from files under root
    outside = [] if allow_outside_root else [p for p in outside_root([*table["image_path"], *table["mask_path"]], root)
                                             if outside_root([p], derived)]
    if outside:
        raise ValueError(f"dataset '{dataset}' (reader '{reader}'): {len(outside)} image/mask path(s) lie outside "
                         f"its root {root}, e.g. {outside[0]}; set datasets.{dataset}.allow_outside_root: 1 "
                         "in params.yaml if that is intended")
    table.insert(0, "dataset", dataset)
    table["image_path"] = [portable_path(p) for p in table["image_path"]]
    table["mask_path"] = [portable_path(p) if p else "" for p in table["mask_path"]]
    table["label"] = table["label"].astype(int)
    table = table[list(SAMPLE_COLUMNS)].sort_values(["category", "split", "label", "defect", "image_path"])
    return check_samples(table.reset_index(drop=True))


def select_categories(samples: pd.DataFrame, categories: list[str] | tuple[str, ...]) -> pd.DataFrame:
    """Rows of ``categories`` (in the table's order); ``KeyError`` naming unknown ones."""
    known = sorted(samples["category"].unique())
    unknown = [c for c in categories if c not in known]
    if unknown:
        dataset = ", ".join(sorted(samples["dataset"].unique()))
        raise KeyError(f"unknown categories {unknown} in dataset '{dataset}'; known: {known}")
    return samples[samples["category"].isin(categories)].reset_index(drop=True)


def check_samples(samples: pd.DataFrame) -> pd.DataFrame:
    """Validate a samples table and return it.

    Checks: the columns, plain category and data-set names (:func:`check_name`), split and label
    values, no image twice in one category (one-vs-all sets such as MNIST list each test image once per
    category), normal rows without mask, every image and mask readable (header, read once per file),
    and each mask the size of its image. Errors name the file.
    """
    missing = [c for c in SAMPLE_COLUMNS if c not in samples.columns]
    if missing:
        raise KeyError(f"samples table lacks columns {missing}; required: {list(SAMPLE_COLUMNS)}")
    for what in ("dataset", "category"):
        for name in samples[what].unique():
            check_name(name, what, "samples table")
    bad_split = sorted(set(samples["split"]) - set(SPLITS))
    if bad_split:
        raise ValueError(f"samples table: unknown split values {bad_split}; allowed: {list(SPLITS)}")
    if not samples["label"].isin([0, 1]).all():
        raise ValueError(f"samples table: labels must be 0/1, got {sorted(set(samples['label']))}")
    duplicated = samples[samples[["category", "image_path"]].duplicated()]
    if len(duplicated):
        raise ValueError(f"samples table: image listed twice in category '{duplicated['category'].iloc[0]}': "
                         f"{duplicated['image_path'].iloc[0]}")
    sizes = {path: image_size(path) for path in dict.fromkeys(samples["image_path"])}
    for row in samples.itertuples(index=False):
        size = sizes[row.image_path]
        if row.mask_path:
            if row.label == 0:
                raise ValueError(f"normal image {row.image_path} has a mask {row.mask_path}; "
                                 "normal images take mask_path ''")
            if image_size(row.mask_path) != size:
                raise ValueError(f"mask {row.mask_path} is {image_size(row.mask_path)} but its image "
                                 f"{row.image_path} is {size} (width, height)")
    return samples
