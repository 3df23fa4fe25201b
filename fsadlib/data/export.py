"""``meta.json`` export of any configured data set, for the AnomalyCLIP / APRIL-GAN / Bayes-PFL tooling.

:func:`export_meta_json` writes the samples table of ``params.yaml: datasets.<name>`` (the split the
reader made, derived tiles and binarised masks included) as ``<out_dir>/meta.json`` in the schema of
:mod:`fsadlib.data.readers.meta_json`, with Bayes-PFL's ``dataset_name``. Paths are relative to
``out_dir`` (default: the data set's root), with ``..`` parts for files outside it, so handing
``out_dir`` to those tools as the data root loads exactly our images, masks and split (read back with
the ``meta_json`` reader, such a file needs ``allow_outside_root: 1``).
"""

from __future__ import annotations

from pathlib import Path

from fsadlib.data.readers import write_meta_json
from fsadlib.data.samples import dataset_root, load_samples


def export_meta_json(dataset: str, out_dir: str | Path | None = None) -> Path:
    """Write ``<out_dir>/meta.json`` for configured data set ``dataset``; returns its path."""
    folder = Path(out_dir) if out_dir is not None else dataset_root(dataset)
    folder.mkdir(parents=True, exist_ok=True)
    return write_meta_json(load_samples(dataset), folder, outside=True, dataset_name=dataset)
