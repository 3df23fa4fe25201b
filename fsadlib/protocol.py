"""The evaluation protocol every method shares: auxiliary training data, held-out validation data,
and target data that never takes part in training or model selection.

``Protocol`` is the ``protocol`` section of params.yaml. :meth:`Protocol.check` refuses a run in
which a target category is also an auxiliary or validation category of the same data set (the
public code of Bayes-PFL, PromptAD and FineGrainedAD selects epochs on the reported test data; here
that is an error, not a convention).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Protocol:
    aux_dataset: str = "synthetic"
    aux_categories: tuple[str, ...] = ()
    val_categories: tuple[str, ...] = ()
    target_dataset: str = "synthetic"
    target_categories: tuple[str, ...] = ()

    def check(self) -> Protocol:
        """Raise ``ValueError`` naming the categories that leak between training/validation and target."""
        if set(self.aux_categories) & set(self.val_categories):
            raise ValueError(f"protocol: categories {sorted(set(self.aux_categories) & set(self.val_categories))} "
                             "are both auxiliary (training) and validation categories")
        if self.aux_dataset == self.target_dataset:
            leak = (set(self.aux_categories) | set(self.val_categories)) & set(self.target_categories)
            if leak:
                raise ValueError(f"protocol: target categories {sorted(leak)} of '{self.target_dataset}' are "
                                 "also used for training or model selection")
        return self


def training_files(protocol: Protocol, samples: pd.DataFrame | None = None) -> list[str]:
    """Image and mask paths (sorted) of the auxiliary and validation categories of
    ``protocol.aux_dataset``, every split: what training and model selection may read.
    ``samples`` defaults to ``fsadlib.data.load_samples(protocol.aux_dataset)``."""
    if samples is None:
        from fsadlib.data import load_samples

        samples = load_samples(protocol.aux_dataset)
    rows = samples[samples["category"].isin([*protocol.aux_categories, *protocol.val_categories])]
    return sorted(p for p in (*rows["image_path"], *rows["mask_path"]) if p)


@dataclass(frozen=True)
class ValidationSet:
    """One held-out validation category: k normal supports (train split) and its test rows."""

    category: str
    supports: list[str]
    test: pd.DataFrame


def validation_sets(samples: pd.DataFrame, protocol: Protocol, max_images: int = 0, n_supports: int = 0,
                    seed: int = 0) -> list[ValidationSet]:
    """The protocol's validation categories of ``protocol.aux_dataset``, fixed once per run.

    Test rows: all of the category's test split, or ``max_images`` of them drawn with ``seed``, half
    normal and half anomalous (at least one of each, so AUROC is defined). Supports: ``n_supports``
    normal training images drawn with the same generator (the same draw every epoch). Raises
    ``KeyError`` for categories absent from the data set and ``ValueError`` naming the category when
    it lacks supports or one of the two classes.
    """
    rng = np.random.default_rng(seed)
    sets = []
    rows = samples[samples["dataset"] == protocol.aux_dataset]
    unknown = sorted(set(protocol.val_categories) - set(rows["category"]))
    if unknown:
        raise KeyError(f"protocol.val_categories: unknown categories {unknown} in dataset "
                       f"'{protocol.aux_dataset}'; known: {sorted(set(rows['category']))}")
    for cat in protocol.val_categories:
        cat_rows = rows[rows["category"] == cat]
        normals = cat_rows[(cat_rows["split"] == "train") & (cat_rows["label"] == 0)]
        test = cat_rows[cat_rows["split"] == "test"]
        if len(normals) < n_supports or test["label"].nunique() < 2:
            raise ValueError(f"protocol.val_categories '{cat}': needs {n_supports} normal training images and "
                             f"normal + anomalous test images in dataset '{protocol.aux_dataset}'")
        if 0 < max_images < len(test):
            labels = test["label"].to_numpy()
            keep = [rng.permutation(np.flatnonzero(labels == y))[:max(1, max_images // 2)] for y in (0, 1)]
            test = test.iloc[np.sort(np.concatenate(keep))]
        picks = np.sort(rng.choice(len(normals), n_supports, replace=False)) if n_supports else []
        sets.append(ValidationSet(cat, list(normals["image_path"].to_numpy()[picks]), test.reset_index(drop=True)))
    return sets
