"""One way to train every method: the train signature, its report, its params section and k.

Every method folder's train entry point has one signature::

    train(section, protocol, *, smoke: bool, out_dir: Path, live_dir: Path) -> TrainReport

``section`` is the folder's params section (already shrunk by the smoke policy in a smoke run,
:mod:`fsadlib.smoke`), ``protocol`` the shared :class:`~fsadlib.protocol.Protocol`, ``out_dir`` the
models folder it owns (``models/<name>/``, :func:`fsadlib.layout.model_dir`), ``live_dir`` its
DVCLive folder (``reports/train_<name>/``). :func:`train_method` is what the training notebooks call.

k is declared once per method folder: ``<name>.ks`` (few-shot folders only), a subset of
``shots.ks`` (:func:`check_ks`), read by training and evaluation alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fsadlib.methods.spec import MethodEntry, MethodSpec


@dataclass
class TrainReport:
    """What a training run did: ``history`` has one row per (model, epoch) with the columns that
    identify the model (``k``, ``category``, ``seed``, ``stage`` where they apply), ``epoch`` and every
    logged value (``train_*``, ``val_*``, ``lr``); ``models`` are the model files the evaluation loads."""

    history: pd.DataFrame
    models: list[Path] = field(default_factory=list)

    #: history columns that identify a model (the first one present colours the curves)
    MODEL_COLUMNS = ("k", "stage", "category", "seed")

    def summary(self) -> dict[str, Any]:
        """``{"models": n, "runs": {<model>: {"epochs", "train_loss", "val_*" of its last epoch}}}`` with
        <model> named by its model columns (``k2``, ``stage1``, ``categorydisc/k1/seed0``; ``model`` when
        there is one model): the DVC metrics of a training stage (``reports/train_<name>/summary.json``)."""
        keys = [c for c in self.MODEL_COLUMNS if c in self.history]
        values = [c for c in self.history.columns if c == "train_loss" or c.startswith("val_")]
        runs = {}
        for _, row in (self.history.groupby(keys, sort=False).tail(1) if keys else self.history.tail(1)).iterrows():
            name = "/".join(f"{key}{row[key]}" for key in keys) or "model"
            runs[name] = {"epochs": int(row["epoch"]), **{v: float(row[v]) for v in values}}
        return {"models": len(self.models), "runs": runs}

    def curves(self):
        """Training curves (a matplotlib Figure): one panel per logged value (``train_loss`` and every
        ``val_*``) against ``epoch``, one line per value of the first model column present; the other
        model columns are averaged, with seaborn's 95 % interval as the band."""
        import seaborn as sns

        values = [c for c in self.history.columns if c == "train_loss" or c.startswith("val_")]
        if self.history.empty or "epoch" not in self.history or not values:
            raise ValueError(f"a training history needs 'epoch' and 'train_loss' / 'val_*' columns, "
                             f"got {list(self.history)}")
        keys = [c for c in self.MODEL_COLUMNS if c in self.history]
        long = self.history.melt(id_vars=["epoch", *keys], value_vars=values, var_name="value_of")
        grid = sns.relplot(data=long, x="epoch", y="value", hue=keys[0] if keys else None, col="value_of",
                           col_wrap=min(4, len(values)), kind="line", marker="o", height=2.6,
                           facet_kws={"sharey": False}, palette="viridis" if keys else None)
        return grid.figure


def check_ks(name: str, ks: tuple[int, ...], shots_ks: tuple[int, ...]) -> tuple[int, ...]:
    """``<name>.ks`` must be non-empty, positive and a subset of ``shots.ks`` (the k-shot files that
    exist); ``ValueError`` naming both keys otherwise. Returns ``ks``."""
    ks = tuple(int(k) for k in ks)
    missing = sorted(set(ks) - {int(k) for k in shots_ks})
    if not ks or min(ks) < 1:
        raise ValueError(f"{name}.ks {list(ks)}: a few-shot method needs at least one k >= 1")
    if missing:
        raise ValueError(f"{name}.ks {list(ks)}: k = {missing} not in shots.ks {list(shots_ks)} "
                         "(no k-shot files are drawn for them)")
    return ks


def load_method_section(spec: MethodSpec, params_path: str | Path | None = None) -> Any:
    """``params.yaml[<spec.name>]`` as the spec's section dataclass; a few-shot folder's ``ks`` is
    checked against ``shots.ks``."""
    from fsadlib.config import load_section
    from fsadlib.data.shots import ShotsConfig

    section = load_section(spec.name, spec.section_class(), params_path)
    if spec.few_shot:
        if not hasattr(section, "ks"):
            raise TypeError(f"{spec.section}: the section of a few-shot method declares ks")
        check_ks(spec.name, section.ks, load_section("shots", ShotsConfig, params_path).ks)
    return section


def entry_ks(entry: MethodEntry, section: Any, smoke: bool = False) -> tuple[int, ...]:
    """The k values a method is evaluated at: its folder section's ``ks`` when few-shot, ``(0,)`` when
    zero-shot (smoke: the first only, :func:`fsadlib.smoke.first_only`)."""
    from fsadlib.smoke import first_only

    return first_only(section.ks, smoke) if entry.few_shot else (0,)


def method_ks(method: str, smoke: bool = False, params_path: str | Path | None = None) -> tuple[int, ...]:
    """:func:`entry_ks` of registered method ``method``, from params.yaml."""
    from fsadlib.methods.registry import method_entry, spec_of

    return entry_ks(method_entry(method), load_method_section(spec_of(method), params_path), smoke)


def train_method(name: str, *, target: str = "", smoke: bool = False, params_path: str | Path | None = None,
                 out_dir: str | Path | None = None, live_dir: str | Path | None = None,
                 world: Any = None) -> TrainReport:
    """Train method folder ``name`` for the evaluation of ``target`` (a target data set of params.yaml
    ``protocol``; empty: the first) from params.yaml (its section and that evaluation), with the smoke
    policy applied in a smoke run; writes ``<live_dir>/summary.json`` (:meth:`TrainReport.summary`).
    Defaults: ``models/<name>/<target>/trained_on_<aux>/`` (:func:`fsadlib.layout.training_dir`) and
    ``reports/train_<name>/<target>/``. Runs on the ranks that the ``distributed`` section names (or
    ``world``, a :class:`fsadlib.distributed.DistributedConfig`; :func:`fsadlib.distributed.launch`;
    default one process, this one) and returns rank 0's report."""
    from fsadlib import distributed

    return distributed.launch(_train_rank, name, target, bool(smoke), params_path, out_dir, live_dir,
                              config=world if world is not None else distributed.load_config(params_path))


def _train_rank(name: str, target: str, smoke: bool, params_path: str | Path | None, out_dir: str | Path | None,
                live_dir: str | Path | None) -> TrainReport:
    """:func:`train_method` on one rank (rank 0 writes the summary)."""
    from fsadlib import distributed
    from fsadlib.io import write_json
    from fsadlib.layout import training_dir
    from fsadlib.methods.registry import method_spec
    from fsadlib.paths import reports_dir
    from fsadlib.protocol import load_protocol
    from fsadlib.smoke import smoke_section

    spec = method_spec(name)
    train = spec.train_function()
    section = load_method_section(spec, params_path)
    if smoke:
        section = smoke_section(section, spec.smoke, name)
    protocol = load_protocol(target, params_path)
    live_dir = Path(live_dir) if live_dir is not None else reports_dir() / f"train_{name}" / protocol.target_dataset
    report = train(section, protocol, smoke=bool(smoke),
                   out_dir=Path(out_dir) if out_dir is not None else
                   training_dir(name, protocol.aux_dataset, protocol.target_dataset), live_dir=live_dir)
    if not isinstance(report, TrainReport):
        raise TypeError(f"{spec.train} returned a {type(report).__name__}, not a TrainReport")
    if distributed.is_main():
        write_json(live_dir / "summary.json", report.summary())
    return report


def preview_training_data(name: str, *, target: str = "", smoke: bool = False,
                          params_path: str | Path | None = None) -> dict[str, Any] | None:
    """What method folder ``name`` trains on for the evaluation of ``target``, as its train module's
    ``training_preview(section, protocol)`` draws it (``image`` ``[N, 3, S, S]`` in [0, 1], ``mask`` ``[N, S, S]``, ``title``; shown by
    :func:`fsadlib.data.figures.training_grid`) from params.yaml with the smoke policy of
    :func:`train_method`; ``None`` when the module defines no preview."""
    import importlib

    from fsadlib.methods.registry import method_spec
    from fsadlib.protocol import load_protocol
    from fsadlib.smoke import smoke_section

    spec = method_spec(name)
    preview = getattr(importlib.import_module(spec.train.split(":")[0]), "training_preview", None)
    if preview is None:
        return None
    section = load_method_section(spec, params_path)
    section = smoke_section(section, spec.smoke, name) if smoke else section
    return preview(section, load_protocol(target, params_path))

