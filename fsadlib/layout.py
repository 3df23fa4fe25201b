"""The one owner of the run, model and shot folder names, and of their parsing.

Every path that carries a shot count k or a seed s is built and read here (nowhere else writes
``f"k{k}"``)::

    results/<method>/<dataset>/k<k>/seed<s>/          one evaluation run          (run_dir)
    results/<method>/<dataset>/k<k>/metrics.json       its mean +- std over seeds  (aggregate_dir)
    models/<method>/                                   what a method's training writes (model_dir)
    models/<method>/<target>/trained_on_<aux>/         the models of one evaluation, keyed by the data
                                                       set they were trained on     (training_dir)
    <training_dir>/k<k>/                               one model per k              (per_k_dir)
    <training_dir>/<dataset>/k<k>/seed<s>/<category>.pt    one model per category   (category_model_file)
    data/shots/<dataset>/<category>/k<k>_seed<s>.json  a frozen k-shot file         (shot_file)

:func:`parse_run` reads ``k<k>/seed<s>`` back into integers (``ValueError`` naming the path otherwise).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fsadlib.paths import models_dir, results_dir, shots_dir, trained_models_dir

_K = re.compile(r"k(?P<k>\d+)")
_SEED = re.compile(r"seed(?P<seed>\d+)")


def k_name(k: int) -> str:
    """``k<k>`` (k = 0: zero-shot)."""
    return f"k{int(k)}"


def seed_name(seed: int) -> str:
    return f"seed{int(seed)}"


def parse_k(name: str, where: str | Path = "") -> int:
    """``"k4"`` -> 4; ``ValueError`` naming ``where`` for anything else."""
    match = _K.fullmatch(name)
    if match is None:
        raise ValueError(f"{where or name}: folder '{name}' is not k<int>")
    return int(match["k"])


def parse_seed(name: str, where: str | Path = "") -> int:
    """``"seed2"`` -> 2; ``ValueError`` naming ``where`` for anything else."""
    match = _SEED.fullmatch(name)
    if match is None:
        raise ValueError(f"{where or name}: folder '{name}' is not seed<int>")
    return int(match["seed"])


@dataclass(frozen=True)
class RunKey:
    """Identity of one evaluation run: ``results/<method>/<dataset>/k<k>/seed<s>/``."""

    method: str
    dataset: str
    k: int
    seed: int


def run_dir(method: str, dataset: str, k: int, seed: int, root: str | Path | None = None) -> Path:
    """Folder of one evaluation run (``root`` defaults to ``results/``)."""
    return aggregate_dir(method, dataset, k, root) / seed_name(seed)


def aggregate_dir(method: str, dataset: str, k: int, root: str | Path | None = None) -> Path:
    """Folder holding the ``seed<s>/`` runs of (method, dataset, k) and their seed aggregate."""
    return (Path(root) if root is not None else results_dir()) / method / dataset / k_name(k)


def run_files(root: str | Path, name: str) -> list[tuple[RunKey, Path]]:
    """Every ``<root>/<method>/<dataset>/k<k>/seed<s>/<name>`` as (its :class:`RunKey`, path), sorted."""
    return [(parse_run(path.parent, root), path) for path in sorted(Path(root).glob(f"*/*/k*/seed*/{name}"))]


def parse_run(folder: str | Path, root: str | Path | None = None) -> RunKey:
    """The :class:`RunKey` of a run folder ``[<root>/]<method>/<dataset>/k<k>/seed<s>``."""
    folder = Path(folder)
    parts = folder.relative_to(root).parts if root is not None else folder.parts[-4:]
    if len(parts) != 4:
        raise ValueError(f"{folder}: a run folder is <method>/<dataset>/k<k>/seed<s>")
    return RunKey(parts[0], parts[1], parse_k(parts[2], folder), parse_seed(parts[3], folder))


def model_dir(method: str, root: str | Path | None = None, *, trained: bool = False) -> Path:
    """``models/<method>/``: everything the method's training stage writes (under the output root,
    :func:`fsadlib.paths.models_dir`); ``trained=True``: where its trained models are read from
    (:func:`fsadlib.paths.trained_models_dir`)."""
    base = trained_models_dir() if trained else models_dir()
    return (Path(root) if root is not None else base) / method


def training_name(aux_dataset: str, target_dataset: str) -> str:
    """``<target>/trained_on_<aux>``: the folder (under the method's) of the models trained on
    ``aux_dataset`` for the evaluation on ``target_dataset``."""
    return f"{target_dataset}/trained_on_{aux_dataset}"


def training_dir(method: str, aux_dataset: str, target_dataset: str, root: str | Path | None = None, *,
                 trained: bool = False) -> Path:
    """``models/<method>/<target>/trained_on_<aux>/`` (:func:`model_dir` with ``root`` and ``trained``): what the
    training of method folder ``method`` for one evaluation (auxiliary -> target data set) writes, so the
    two directions of a cross-data-set protocol never share a model file."""
    return model_dir(method, root, trained=trained) / training_name(aux_dataset, target_dataset)


def per_k_dir(out_dir: str | Path, k: int) -> Path:
    """``<out_dir>/k<k>/``: the model of one k (methods that train one model per k)."""
    return Path(out_dir) / k_name(k)


def category_model_file(out_dir: str | Path, dataset: str, category: str, k: int, seed: int) -> Path:
    """``<out_dir>/<dataset>/k<k>/seed<s>/<category>.pt`` (methods with one model per category)."""
    return Path(out_dir) / dataset / k_name(k) / seed_name(seed) / f"{category}.pt"


def shot_file(dataset: str, category: str, k: int, seed: int) -> Path:
    """``data/shots/<dataset>/<category>/k<k>_seed<s>.json``."""
    return shots_dir() / dataset / category / f"{k_name(k)}_{seed_name(seed)}.json"
