"""What a method folder declares about itself: ``SPEC = MethodSpec(...)`` in its ``__init__.py``.

A method folder ``fsadlib/methods/<name>/`` (or an outside package registered under the
``fsadlib.methods`` entry-point group, see :mod:`fsadlib.methods.registry`) exports one spec:

- ``name``: the folder's name, which is also its ``params.yaml`` section and its training stage
  (``train_<name>``, notebook ``notebooks/3x_train_<name>.ipynb``);
- ``methods``: its registered method classes (``evaluate_<method>`` stages), each few-shot or zero-shot
  and with one model per category or not, named ``<name>`` or ``<name>_<suffix>`` (``winclip_plus``);
- ``section``: the dataclass of its params section (a ``ks`` field when a method of the folder is few-shot);
- ``train``: its training entry point ``train(section, protocol, *, smoke, out_dir, live_dir) -> TrainReport``,
  or ``None`` for a training-free method (no training stage, no models folder);
- ``smoke``: dotted overrides of its section for a smoke run (:func:`fsadlib.smoke.smoke_section`);
- what its training reads, for its DVC stage (:mod:`fsadlib.pipeline`, one per evaluation):
  ``train_reads``, the evaluation's data sets (``"aux"``: its ``aux_dataset`` and ``val_dataset``;
  ``"target"``: the target data set and its k-shot files), ``train_deps``, further DVC paths
  (``{target}`` and ``{aux}`` name the evaluation's data sets, ``${...}`` is interpolated from
  params.yaml), and ``params``, params sections besides its own, the evaluation and (few-shot) ``shots``;
- ``curves``: where its training's DVCLive curves are, as folders under ``reports/train_<name>/<target>/``
  of each evaluation (``""``: that folder itself; ``{k}`` is expanded over the ``ks`` of its params
  section, as InCTRL's ``"k{k}"``), so that its stage file declares them as plots for ``dvc plots diff``.

A training-free method's section has a ``model`` field (its ``Config``): the evaluation builds it from that.

Classes are named by ``"module:attribute"`` strings so that listing methods imports no model code.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def load_object(target: str) -> Any:
    """The object named by ``"package.module:attribute"``."""
    module, _, attribute = target.partition(":")
    if not attribute:
        raise ValueError(f"'{target}' is not 'module:attribute'")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class MethodEntry:
    """One registered method class of a folder."""

    name: str
    cls: str                     # "module:Class", a subclass of fsadlib.methods.base.AnomalyMethod
    few_shot: bool               # needs k normal supports per category at test time (k >= 1)
    per_category: bool = False   # one trained model per (dataset, category, k, shot seed)


@dataclass(frozen=True)
class MethodSpec:
    """A method folder's declaration (module docstring)."""

    name: str
    package: str                         # the folder's Python package, e.g. "fsadlib.methods.inctrl"
    methods: tuple[MethodEntry, ...]
    section: str                         # "module:Class" of the params section dataclass
    train: str | None = None             # "module:function" with the one train signature; None: training-free
    notebook: str | None = None          # the training notebook (repo-relative), None when training-free
    smoke: Mapping[str, Any] = field(default_factory=dict)
    train_reads: tuple[str, ...] = ("aux",)   # protocol data sets read by training: "aux", "target"
    train_deps: tuple[str, ...] = ()          # further DVC dependencies of training
    params: tuple[str, ...] = ()              # params sections read by training besides the implied ones
    curves: tuple[str, ...] = ("",)           # DVCLive folders under reports/train_<name>/ ("{k}" per k)

    def __post_init__(self) -> None:
        if (self.train is None) != (self.notebook is None):
            raise ValueError(f"method spec '{self.name}': a train entry point and a training notebook go together")
        if not self.methods:
            raise ValueError(f"method spec '{self.name}' registers no method class")
        strangers = [m.name for m in self.methods if m.name != self.name and not m.name.startswith(f"{self.name}_")]
        if strangers:   # the analysis finds a section's methods by their names (fsadlib.viz.ablation_curves)
            raise ValueError(f"method spec '{self.name}': method names {strangers} are neither '{self.name}' "
                             f"nor '{self.name}_<suffix>'")
        unknown = sorted(set(self.train_reads) - {"aux", "target"})
        if unknown:
            raise ValueError(f"method spec '{self.name}': train_reads {unknown} not in ['aux', 'target']")

    @property
    def trainable(self) -> bool:
        """Whether the folder has a training stage (``train_<name>``)."""
        return self.train is not None

    @property
    def few_shot(self) -> bool:
        """Whether one of its methods is few-shot (its section then declares ``ks``)."""
        return any(m.few_shot for m in self.methods)

    def section_class(self) -> type:
        return load_object(self.section)

    def train_function(self):
        if self.train is None:
            raise ValueError(f"method '{self.name}' is training-free: it has no train entry point")
        return load_object(self.train)

    def folder(self) -> Path:
        """The folder of its package (outside packages included)."""
        return Path(importlib.import_module(self.package).__file__).parent
