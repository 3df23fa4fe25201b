"""Readers: ``reader(root: Path, **options) -> DataFrame[category, split, label, defect, image_path, mask_path]``.

Paths are absolute strings; ``mask_path`` is ``""`` where there is no mask. Masks pair with images
by file name, never by sorted position. :func:`fsadlib.data.samples.read_samples` adds the ``dataset``
column, makes the paths portable and validates the table.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from fsadlib.data.files import ROW_COLUMNS
from fsadlib.data.readers.folder import read_folder
from fsadlib.data.readers.meta_json import read_meta_json, write_meta_json
from fsadlib.data.readers.mvtec import read_mvtec
from fsadlib.data.readers.visa import read_visa

READERS: dict[str, Callable[..., pd.DataFrame]] = {
    "mvtec": read_mvtec,
    "visa": read_visa,
    "meta_json": read_meta_json,
    "folder": read_folder,
}

__all__ = ["READERS", "ROW_COLUMNS", "read_folder", "read_meta_json", "read_mvtec", "read_visa", "write_meta_json"]
