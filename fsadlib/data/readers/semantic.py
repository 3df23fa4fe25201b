"""Semantic one-vs-all sets of InCTRL: MNIST and CIFAR-10 in their official files.

- ``mnist`` (LeCun et al.): ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (each plain or ``.gz``). IDX format: big-endian
  magic ``0x00000803`` (images; then count, rows, cols, uint8 pixels) or ``0x00000801`` (labels).
  Categories ``digit_0`` ... ``digit_9``.
- ``cifar10`` (Krizhevsky 2009, ``cifar-10-python.tar.gz`` unpacked): ``cifar-10-batches-py/`` (or the
  root itself) with ``data_batch_1`` ... ``data_batch_5``, ``test_batch`` (pickles of ``data``
  [N, 3072] uint8, channel-major 32 x 32, and ``labels``) and ``batches.meta`` (``label_names``).
  Categories are the class names (``airplane`` ... ``truck``). The files are Python pickles: read only
  archives you trust.

One-vs-all (InCTRL's setting): in category c the training images of class c are the normal training
images; every test image is a test image of every category, normal when it is of class c and
anomalous otherwise (defect = its class). ``limit`` (0 = all) keeps the first ``limit`` images of each
class in each split (file order). Image-level only. The arrays are written once as PNG files under
``data/derived/<reader>/``.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pandas as pd

from fsadlib.data.files import ROW_COLUMNS
from fsadlib.data.readers.common import derived_dir, save_png

MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_mnist(root: Path, limit: int = 0) -> pd.DataFrame:
    parts = {}
    for split, (images, labels) in MNIST_FILES.items():
        x, y = _idx(_find(root, images), 0x803), _idx(_find(root, labels), 0x801)
        if len(x) != len(y):
            raise ValueError(f"{_find(root, images)} holds {len(x)} images but {_find(root, labels)} {len(y)} labels")
        parts[split] = (x, y)
    return _one_vs_all("mnist", root, parts, [f"digit_{d}" for d in range(10)], limit)


def read_cifar10(root: Path, limit: int = 0) -> pd.DataFrame:
    base = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
    names = [n.decode() if isinstance(n, bytes) else n for n in _unpickle(base / "batches.meta")["label_names"]]
    parts = {}
    for split, files in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("test", ["test_batch"])):
        batches = [_unpickle(base / f) for f in files]
        x = np.concatenate([b["data"] for b in batches]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        parts[split] = (x, np.concatenate([np.asarray(b["labels"]) for b in batches]))
    return _one_vs_all("cifar10", root, parts, names, limit)


def _one_vs_all(reader: str, root: Path, parts: dict[str, tuple[np.ndarray, np.ndarray]], names: list[str],
                limit: int) -> pd.DataFrame:
    out = derived_dir(reader, root)
    files: dict[str, list[tuple[int, str]]] = {}
    for split, (x, y) in parts.items():
        keep = np.concatenate([np.flatnonzero(y == c)[:limit or None] for c in range(len(names))])
        files[split] = [(int(y[i]), str(save_png(out / split / f"{i:05d}.png", x[i]))) for i in np.sort(keep)]
    rows = []
    for c, category in enumerate(names):
        rows += [(category, "train", 0, "good", path, "") for label, path in files["train"] if label == c]
        rows += [(category, "test", int(label != c), "good" if label == c else names[label], path, "")
                 for label, path in files["test"]]
    return pd.DataFrame(rows, columns=ROW_COLUMNS)


def _find(root: Path, name: str) -> Path:
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"MNIST file not found: {root / name}[.gz]")


def _idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file (``magic`` 0x803: uint8 images [N, rows, cols]; 0x801: uint8 labels [N])."""
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as fh:
        raw = fh.read()
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise ValueError(f"{path}: IDX magic {found:#x}, expected {magic:#x}")
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape} but holds {data.size} bytes of data")
    return data.reshape(shape)


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR-10 file not found: {path}")
    with open(path, "rb") as fh:
        content = pickle.load(fh, encoding="bytes")
    content = {k.decode() if isinstance(k, bytes) else k: v for k, v in content.items()}
    missing = [k for k in (("label_names",) if path.name == "batches.meta" else ("data", "labels")) if k not in content]
    if missing:
        raise KeyError(f"{path}: missing keys {missing}")
    return content
