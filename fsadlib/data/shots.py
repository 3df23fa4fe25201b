"""Frozen k-shot support files: ``data/shots/<dataset>/<category>/k<k>_seed<s>.json``.

Every few-shot method reads its normal support images from these files, so all methods of a
comparison see the same shots. Shots are drawn from the ``train`` split's normal images only. For a
(dataset, category, seed), the candidates (sorted by portable path) are shuffled once by
``np.random.default_rng([seed, crc32("<dataset>/<category>")])`` and the k-shot set is the first k of
that order: the sets are nested (the 1-shot image is in the 2-shot set ...), and they do not depend on
the other categories or on which k are asked for.

File content: ``{"dataset", "category", "k", "seed", "images": [portable paths]}``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fsadlib.io import read_json, write_json
from fsadlib.paths import shots_dir

KS: tuple[int, ...] = (1, 2, 4, 8)
SEEDS: tuple[int, ...] = (0, 1, 2)


@dataclass(frozen=True)
class ShotsConfig:
    """``params.yaml: shots``: the k values and seeds written for every category."""

    ks: tuple[int, ...] = KS
    seeds: tuple[int, ...] = SEEDS


def shot_file(dataset: str, category: str, k: int, seed: int) -> Path:
    return shots_dir() / dataset / category / f"k{k}_seed{seed}.json"


def draw_shots(candidates: list[str], k: int, seed: int, dataset: str, category: str) -> list[str]:
    """The first ``k`` of the seeded shuffle of ``sorted(candidates)`` (see the module docstring)."""
    pool = sorted(candidates)
    if not 1 <= k <= len(pool):
        raise ValueError(f"cannot draw {k} shots for '{dataset}/{category}': {len(pool)} normal training images")
    order = np.random.default_rng([seed, zlib.crc32(f"{dataset}/{category}".encode())]).permutation(len(pool))
    return [pool[i] for i in order[:k]]


def make_shots(samples: pd.DataFrame, ks: tuple[int, ...] = KS, seeds: tuple[int, ...] = SEEDS) -> list[Path]:
    """Write the k-shot files of every (category, k, seed) of ``samples`` (one data set); return the paths."""
    datasets = samples["dataset"].unique()
    if len(datasets) != 1:
        raise ValueError(f"make_shots takes the samples of one dataset, got {list(datasets)}")
    dataset = str(datasets[0])
    normal_train = samples[(samples["split"] == "train") & (samples["label"] == 0)]
    written = []
    for category in sorted(samples["category"].unique()):
        candidates = normal_train.loc[normal_train["category"] == category, "image_path"].tolist()
        for seed in seeds:
            for k in ks:
                images = draw_shots(candidates, k, seed, dataset, category)
                content = {"dataset": dataset, "category": category, "k": k, "seed": seed, "images": images}
                written.append(write_json(shot_file(dataset, category, k, seed), content))
    return written


def shot_table(dataset: str, categories: list[str] | tuple[str, ...], ks: tuple[int, ...] = KS,
               seeds: tuple[int, ...] = SEEDS) -> pd.DataFrame:
    """All shots of the given files as rows ``category, k, seed, image_path`` (one row per image)."""
    rows = [(category, k, seed, path) for category in categories for k in ks for seed in seeds
            for path in load_shots(dataset, category, k, seed)]
    return pd.DataFrame(rows, columns=["category", "k", "seed", "image_path"])


def _missing_shots_hint(dataset: str, k: int, seed: int) -> str:
    """What makes a missing k-shot file: make_shots, once k and seed are in ``params.yaml: shots``."""
    from fsadlib.config import load_section

    made_by = f"written by the make_shots stage: dvc repro make_shots@{dataset}"
    try:
        config = load_section("shots", ShotsConfig)
    except FileNotFoundError:  # no params.yaml: nothing to compare with
        return made_by
    absent = [f"{key} {value} is not in params.yaml shots.{key}s {list(values)}"
              for key, value, values in (("k", k, config.ks), ("seed", seed, config.seeds)) if value not in values]
    return "; ".join(absent) + f": add it there, then run dvc repro make_shots@{dataset}" if absent else made_by


def load_shots(dataset: str, category: str, k: int, seed: int) -> list[str]:
    """The k support image paths (portable; read them with :func:`fsadlib.data.load_images`)."""
    path = shot_file(dataset, category, k, seed)
    if not path.is_file():
        raise FileNotFoundError(f"k-shot file not found: {path}; {_missing_shots_hint(dataset, k, seed)}")
    content = read_json(path)
    if len(content["images"]) != k or content["category"] != category:
        raise ValueError(f"{path}: holds {len(content['images'])} images of '{content['category']}', "
                         f"expected {k} of '{category}'")
    return list(content["images"])
