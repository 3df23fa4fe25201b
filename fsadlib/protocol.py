"""The evaluation protocol every method shares: auxiliary training data, model selection, and target
data that never takes part in training or model selection.

``Protocol`` is one evaluation of the ``protocol`` section of params.yaml, which maps each target data
set to its evaluation (:func:`load_protocols`; the key is ``target_dataset``): train on
``aux_categories`` of ``aux_dataset``, report on ``target_categories`` of ``target_dataset``. Several
evaluations (both directions of a cross-data-set protocol, a user's own set) coexist, each with its own
stages and results. Model selection (``selection``):

- ``validation`` (default): the model is chosen on ``val_categories`` of ``val_dataset`` (empty = the
  auxiliary data set, held-out categories; or another data set, so that every auxiliary category can
  train, as the papers do);
- ``fixed``: no validation data; the model of a fixed epoch is taken, ``epoch: last`` or an epoch
  number (the InCTRL authors report their last epoch). ``val_categories`` must then be empty.

:meth:`Protocol.check` refuses an inconsistent protocol and a run in which a target category is also
an auxiliary or validation category of the same data set (the public code of Bayes-PFL, PromptAD and
FineGrainedAD selects epochs on the reported test data; here that is an error, not a convention).
:meth:`Protocol.training_record` is what a checkpoint stores about its training data and selection
(and what the results record beside every number); :func:`check_trained_for` refuses, naming both
sides, a model whose training or validation categories overlap the run's target categories or that
was trained on another data set than the run says.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

SELECTIONS: tuple[str, ...] = ("validation", "fixed")
#: ``trained_on["data"]`` of a model trained on the auxiliary data set (zero-shot and generalist methods)
AUXILIARY = "auxiliary"
#: ``trained_on["data"]`` of a model trained on the k normal shots of one target category (FineGrainedAD)
TARGET_SHOTS = "target shots"


@dataclass(frozen=True)
class Protocol:
    aux_dataset: str = "synthetic"
    aux_categories: tuple[str, ...] = ()
    val_categories: tuple[str, ...] = ()
    target_dataset: str = "synthetic"
    target_categories: tuple[str, ...] = ()
    selection: str = "validation"     # validation | fixed (module docstring)
    val_dataset: str = ""             # data set of val_categories; "" = aux_dataset
    epoch: int | str = "last"         # selection fixed: "last" or the epoch number taken

    @property
    def validation_dataset(self) -> str:
        """The data set the validation categories come from."""
        return self.val_dataset or self.aux_dataset

    @property
    def fixed_epoch(self) -> int | None:
        """The epoch a ``fixed`` selection takes (None: the last epoch, or selection by validation)."""
        return self.epoch if self.selection == "fixed" and isinstance(self.epoch, int) else None

    def check(self) -> Protocol:
        """Raise ``ValueError`` naming the keys or categories of an inconsistent protocol:
        categories that leak between training, validation and target first, then an unknown selection,
        validation categories with ``selection: fixed`` or none with ``validation``, and a bad epoch."""
        both = sorted(set(self.aux_categories) & set(self.val_categories))
        if self.validation_dataset == self.aux_dataset and both:
            raise ValueError(f"protocol: categories {both} of '{self.aux_dataset}' are both auxiliary (training) "
                             "and validation categories")
        leak = sorted(set(self.target_categories) & self.trained_on(self.target_dataset))
        if leak:
            raise ValueError(f"protocol: target categories {leak} of '{self.target_dataset}' are "
                             "also used for training or model selection")
        if self.selection not in SELECTIONS:
            raise ValueError(f"protocol.selection must be one of {list(SELECTIONS)}, got {self.selection!r}")
        if self.selection == "fixed" and self.val_categories:
            raise ValueError(f"protocol.selection 'fixed' takes epoch {self.epoch!r} with no validation data, "
                             f"but protocol.val_categories is {list(self.val_categories)}")
        if self.selection == "validation" and not self.val_categories:
            raise ValueError("protocol.selection 'validation' needs protocol.val_categories (of protocol.val_dataset, "
                             "default the auxiliary data set); or set selection: fixed with epoch: last | <n>")
        if not (self.epoch == "last" or (isinstance(self.epoch, int) and self.epoch >= 1)):
            raise ValueError(f"protocol.epoch must be 'last' or an epoch number >= 1, got {self.epoch!r}")
        return self

    def named_categories(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """(key, data set, categories) of the auxiliary, validation and target categories."""
        return [("aux_categories", self.aux_dataset, self.aux_categories),
                ("val_categories", self.validation_dataset, self.val_categories),
                ("target_categories", self.target_dataset, self.target_categories)]

    def trained_on(self, dataset: str) -> set[str]:
        """Categories of ``dataset`` that take part in training or model selection."""
        used = set(self.aux_categories) if dataset == self.aux_dataset else set()
        return used | (set(self.val_categories) if dataset == self.validation_dataset else set())

    def selection_record(self) -> dict[str, Any]:
        """How the model is selected: ``{"selection", "val_dataset", "val_categories", "epoch"}``
        (data set and categories empty for ``fixed``, epoch None for ``validation``)."""
        fixed = self.selection == "fixed"
        return {"selection": self.selection, "val_dataset": "" if fixed else self.validation_dataset,
                "val_categories": list(self.val_categories), "epoch": self.epoch if fixed else None}

    def training_record(self) -> dict[str, Any]:
        """What a model trained on the auxiliary data set stores about its training data and selection
        (in the checkpoint, ``extra["trained_on"]``, and beside the results)."""
        return {"data": AUXILIARY, "aux_dataset": self.aux_dataset, "aux_categories": list(self.aux_categories),
                **self.selection_record()}


def shots_record(dataset: str, category: str, k: int, seed: int) -> dict[str, Any]:
    """What a model trained on the k-shot file of one target category stores (FineGrainedAD: its last
    epoch, no validation)."""
    return {"data": TARGET_SHOTS, "dataset": dataset, "category": category, "k": int(k), "seed": int(seed),
            "selection": "fixed", "epoch": "last"}


def check_trained_for(record: dict[str, Any] | None, protocol: Protocol, model: str,
                      category: str | None = None) -> None:
    """Refuse to evaluate ``model`` (a path, for the message) under ``protocol`` (on ``category``
    for a per-category model) unless its ``trained_on`` ``record`` fits: ``ValueError`` naming both
    sides when it was trained on another data set than ``protocol.aux_dataset`` (the other
    direction's model), when its training or validation categories overlap the target categories of
    ``protocol.target_dataset``, or when a model trained on target shots belongs to another data set
    or category; also when it records nothing (trained before models recorded their data)."""
    if not record:
        raise ValueError(f"model {model} records no training data (trained_on); retrain it for this protocol "
                         f"({protocol.aux_dataset} -> {protocol.target_dataset})")
    if record.get("data") == TARGET_SHOTS:
        if record["dataset"] != protocol.target_dataset or (category is not None and record["category"] != category):
            raise ValueError(f"model {model} was trained on the shots of '{record['category']}' of "
                             f"'{record['dataset']}', not of '{category}' of this run's target data set "
                             f"'{protocol.target_dataset}'")
        return
    if record["aux_dataset"] != protocol.aux_dataset:
        raise ValueError(f"model {model} was trained on '{record['aux_dataset']}' but this run trains on "
                         f"protocol.aux_dataset '{protocol.aux_dataset}' (target '{protocol.target_dataset}'): "
                         "the other direction's model?")
    trained = Protocol(aux_dataset=record["aux_dataset"], aux_categories=tuple(record["aux_categories"]),
                       val_categories=tuple(record["val_categories"]), val_dataset=record["val_dataset"],
                       selection=record["selection"])
    leak = sorted(set(protocol.target_categories) & trained.trained_on(protocol.target_dataset))
    if leak:
        raise ValueError(f"model {model} was trained or selected on {leak} of '{protocol.target_dataset}' "
                         f"(auxiliary {record['aux_categories']} of '{record['aux_dataset']}', validation "
                         f"{record['val_categories']} of '{record['val_dataset']}'), which are target categories "
                         f"of this run {list(protocol.target_categories)}")


def check_categories(samples: pd.DataFrame, dataset: str, categories: tuple[str, ...] | list[str],
                     key: str) -> None:
    """``KeyError`` naming ``key``, the categories absent from ``dataset`` in ``samples`` and the data set."""
    known = set(samples.loc[samples["dataset"] == dataset, "category"])
    unknown = sorted(set(categories) - known)
    if unknown:
        raise KeyError(f"{key}: categories {unknown} are not in data set '{dataset}'; it has {sorted(known)}")


def check_data(protocol: Protocol, reads: tuple[str, ...] | list[str], load: Any = None) -> Protocol:
    """:meth:`Protocol.check`, then ``KeyError`` (:func:`check_categories`) for any category absent from
    its data set, of the data a stage reads (``reads``, the vocabulary of a method spec's
    ``train_reads``): ``"aux"`` the auxiliary and validation categories, ``"target"`` the target ones.
    ``load(dataset)`` (default :func:`fsadlib.data.load_samples`) gives a data set's samples.
    Returns ``protocol``."""
    if load is None:
        from fsadlib.data import load_samples as load
    protocol.check()
    aux, val, target = protocol.named_categories()
    named = {"aux": [aux, val], "target": [target]}
    for key, dataset, categories in (item for source in reads for item in named[source]):
        if categories:
            check_categories(load(dataset), dataset, categories, f"protocol.{key}")
    return protocol


#: keys every evaluation of params.yaml ``protocol`` names: its stages depend on these data sets
REQUIRED_KEYS = ("aux_dataset", "val_dataset")


def load_protocols(params_path: str | Path | None = None) -> dict[str, Protocol]:
    """``params.yaml: protocol``: target data set -> its checked :class:`Protocol`, in params order
    (``KeyError`` / ``TypeError`` / ``ValueError`` naming ``protocol.<target>`` and the key at fault)."""
    from fsadlib import reads

    reads.record("params", "protocol")
    return {target: _protocol(target, values) for target, values in _evaluations(params_path).items()}


def load_protocol(target: str = "", params_path: str | Path | None = None) -> Protocol:
    """The checked evaluation of ``target`` (a key of ``params.yaml: protocol``; empty: the first one);
    ``KeyError`` naming the known targets otherwise."""
    from fsadlib import reads

    evaluations = _evaluations(params_path)
    target = target or next(iter(evaluations))
    if target not in evaluations:
        raise KeyError(f"params.yaml protocol has no evaluation of target data set '{target}'; "
                       f"it lists {list(evaluations)}")
    reads.record("params", f"protocol.{target}")
    return _protocol(target, evaluations[target])


def _evaluations(params_path: str | Path | None) -> dict[str, dict[str, Any]]:
    from fsadlib.config import load_params

    section = load_params(params_path).get("protocol")
    if not isinstance(section, dict) or not section or not all(isinstance(v, dict) for v in section.values()):
        raise TypeError("params.yaml protocol: a mapping of target data set -> its evaluation (aux_dataset, "
                        f"aux_categories, selection, val_dataset, val_categories, epoch, target_categories), got {section!r}")
    return section


def _protocol(target: str, values: dict[str, Any]) -> Protocol:
    from fsadlib.config import from_dict

    missing = [key for key in REQUIRED_KEYS if not values.get(key)]
    if missing:
        raise KeyError(f"params.yaml protocol.{target} lacks {missing}: its stages depend on these data sets "
                       "(val_dataset: the auxiliary data set to validate on held-out auxiliary categories)")
    if "target_dataset" in values:
        raise KeyError(f"params.yaml protocol.{target}: the key names the target data set; drop target_dataset")
    return from_dict(Protocol, {**values, "target_dataset": target}, f"protocol.{target}").check()


def training_samples(protocol: Protocol) -> pd.DataFrame:
    """The samples of the data sets training and model selection read: ``protocol.aux_dataset`` and, when
    it differs, ``protocol.validation_dataset`` (:func:`fsadlib.data.load_samples`, concatenated)."""
    from fsadlib.data import load_samples

    names = dict.fromkeys([protocol.aux_dataset, protocol.validation_dataset])
    return pd.concat([load_samples(name) for name in names], ignore_index=True)


def training_files(protocol: Protocol, samples: pd.DataFrame | None = None) -> list[str]:
    """Image and mask paths (sorted) of the auxiliary categories of ``protocol.aux_dataset`` and the
    validation categories of ``protocol.validation_dataset``, every split: what training and model
    selection may read. ``samples`` defaults to :func:`training_samples`."""
    samples = training_samples(protocol) if samples is None else samples
    aux = samples["category"].isin(protocol.aux_categories)
    val = samples["category"].isin(protocol.val_categories)
    if "dataset" in samples:
        aux &= samples["dataset"] == protocol.aux_dataset
        val &= samples["dataset"] == protocol.validation_dataset
    rows = samples[aux | val]
    return sorted(p for p in (*rows["image_path"], *rows["mask_path"]) if p)


@dataclass(frozen=True)
class ValidationSet:
    """One held-out validation category: k normal supports (train split) and its test rows."""

    category: str
    supports: list[str]
    test: pd.DataFrame


def validation_sets(samples: pd.DataFrame, protocol: Protocol, max_images: int = 0, n_supports: int = 0,
                    seed: int = 0) -> list[ValidationSet]:
    """The protocol's validation categories of ``protocol.validation_dataset``, fixed once per run.

    Test rows: all of the category's test split, or ``max_images`` of them drawn with ``seed``, half
    normal and half anomalous (at least one of each, so AUROC is defined). Supports: ``n_supports``
    normal training images drawn with the same generator (the same draw every epoch). Raises
    ``KeyError`` for categories absent from the data set and ``ValueError`` naming the category when
    it lacks supports or one of the two classes.
    """
    rng = np.random.default_rng(seed)
    sets = []
    dataset = protocol.validation_dataset
    rows = samples[samples["dataset"] == dataset]
    unknown = sorted(set(protocol.val_categories) - set(rows["category"]))
    if unknown:
        raise KeyError(f"protocol.val_categories: unknown categories {unknown} in dataset "
                       f"'{dataset}'; known: {sorted(set(rows['category']))}")
    for cat in protocol.val_categories:
        cat_rows = rows[rows["category"] == cat]
        normals = cat_rows[(cat_rows["split"] == "train") & (cat_rows["label"] == 0)]
        test = cat_rows[cat_rows["split"] == "test"]
        if len(normals) < n_supports or test["label"].nunique() < 2:
            raise ValueError(f"protocol.val_categories '{cat}': needs {n_supports} normal training images and "
                             f"normal + anomalous test images in dataset '{dataset}'")
        if 0 < max_images < len(test):
            labels = test["label"].to_numpy()
            keep = [rng.permutation(np.flatnonzero(labels == y))[:max(1, max_images // 2)] for y in (0, 1)]
            test = test.iloc[np.sort(np.concatenate(keep))]
        picks = np.sort(rng.choice(len(normals), n_supports, replace=False)) if n_supports else []
        sets.append(ValidationSet(cat, list(normals["image_path"].to_numpy()[picks]), test.reset_index(drop=True)))
    return sets
