"""The evaluation protocol every method shares: auxiliary training data, held-out validation data,
and target data that never takes part in training or model selection.

``Protocol`` is the ``protocol`` section of params.yaml. :meth:`Protocol.check` refuses a run in
which a target category is also an auxiliary or validation category of the same data set (the
public code of Bayes-PFL, PromptAD and FineGrainedAD selects epochs on the reported test data; here
that is an error, not a convention).
"""

from __future__ import annotations

from dataclasses import dataclass


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
