"""Method specs, the registry (folders + the ``fsadlib.methods`` entry point), k declared once, the
smoke policy and the one train signature."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from fsadlib.methods import list_methods, method_class, method_spec, registry, spec_of, specs
from fsadlib.methods.spec import MethodEntry, MethodSpec
from fsadlib.methods.training import TrainReport, check_ks, load_method_section, method_ks, train_method
from fsadlib.smoke import first_only, smoke_section

TOY_SOURCE = Path(__file__).resolve().parents[2] / "toy_method"


def install_entry_point(site: Path, name: str, value: str) -> Path:
    """A distribution in folder ``site`` (on sys.path) declaring ``fsadlib.methods: name = value``."""
    info = site / f"{name}_fsad-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}-fsad\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[fsadlib.methods]\n{name} = {value}\n")
    return site


@pytest.fixture
def outside(tmp_path, monkeypatch):
    """The toy method package installed as an outside package through its entry point only."""
    site = install_entry_point(tmp_path / "site", "toy", "toy_fsad:SPEC")
    monkeypatch.syspath_prepend(str(TOY_SOURCE))
    monkeypatch.syspath_prepend(str(site))
    registry.specs.cache_clear()
    yield site
    registry.specs.cache_clear()
    for module in [m for m in sys.modules if m.startswith("toy_fsad")]:
        del sys.modules[module]


def test_every_method_folder_declares_itself():
    assert set(specs()) == {"bayes_pfl", "finegrained", "inctrl", "kag_prompt", "patchcore", "winclip"}
    assert list_methods() == ["bayes_pfl", "finegrained", "inctrl", "kag_prompt", "patchcore", "winclip",
                              "winclip_plus"]
    assert spec_of("winclip_plus") is method_spec("winclip") and not method_spec("winclip").trainable
    for name in list_methods():
        cls = method_class(name)           # the class agrees with its spec entry (checked on import)
        entry = registry.method_entry(name)
        assert (cls.name, cls.few_shot, cls.per_category) == (entry.name, entry.few_shot, entry.per_category)
    for spec in specs().values():
        assert spec.folder() == Path(__file__).resolve().parents[3] / "fsadlib" / "methods" / spec.name
        assert spec.few_shot == hasattr(spec.section_class()(), "ks")
        assert (spec.notebook is None) or Path(spec.notebook).name.endswith(f"_train_{spec.name}.ipynb")


def test_unknown_names_and_a_spec_that_disagrees_with_its_class():
    with pytest.raises(KeyError, match="unknown method 'nope'.*inctrl"):
        spec_of("nope")
    with pytest.raises(KeyError, match="unknown method folder 'nope'"):
        method_spec("nope")
    with pytest.raises(ValueError, match="train entry point and a training notebook"):
        MethodSpec("x", "x", (MethodEntry("x", "x:X", few_shot=False),), "x:S", train="x:train")
    with pytest.raises(ValueError, match=r"method names \['y'\] are neither 'x' nor 'x_<suffix>'"):
        MethodSpec("x", "x", (MethodEntry("x", "x:X", few_shot=False), MethodEntry("y", "x:Y", few_shot=False)), "x:S")
    MethodSpec("x", "x", (MethodEntry("x_plus", "x:X", few_shot=False),), "x:S")   # a suffixed name is fine


def test_an_outside_package_registers_through_its_entry_point(outside):
    assert "toy" in specs() and "toy" in list_methods()
    assert method_spec("toy").folder() == TOY_SOURCE / "toy_fsad"
    assert method_class("toy").__module__ == "toy_fsad.model"


def test_a_duplicate_folder_name_is_an_error_naming_both(tmp_path, monkeypatch):
    site = install_entry_point(tmp_path / "site", "dup", "fsadlib.methods.inctrl:SPEC")
    monkeypatch.syspath_prepend(str(site))
    registry.specs.cache_clear()
    try:
        with pytest.raises(ValueError, match="'inctrl' is declared twice.*fsadlib.methods.inctrl.*entry point 'dup'"):
            specs()
    finally:
        registry.specs.cache_clear()


def test_ks_must_be_a_subset_of_shots_ks_and_the_error_names_both_keys(tmp_path):
    assert check_ks("inctrl", (2, 4), (1, 2, 4, 8)) == (2, 4)
    with pytest.raises(ValueError, match=r"inctrl.ks \[2, 16\]: k = \[16\] not in shots.ks \[1, 2, 4, 8\]"):
        check_ks("inctrl", (2, 16), (1, 2, 4, 8))
    with pytest.raises(ValueError, match="at least one k >= 1"):
        check_ks("kag_prompt", (), (1,))
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"shots": {"ks": [1, 2], "seeds": [0, 1, 2]}, "kag_prompt": {"ks": [1, 4]}}))
    with pytest.raises(ValueError, match=r"kag_prompt.ks \[1, 4\].*shots.ks \[1, 2\]"):
        load_method_section(method_spec("kag_prompt"), params)
    params.write_text(yaml.safe_dump({"shots": {"ks": [1, 2, 4]}, "kag_prompt": {"ks": [2, 4]}}))
    assert method_ks("kag_prompt", params_path=params) == (2, 4)
    assert method_ks("kag_prompt", smoke=True, params_path=params) == (2,)
    assert method_ks("bayes_pfl", params_path=params) == (0,) and method_ks("winclip", params_path=params) == (0,)
    assert method_ks("winclip_plus", params_path=params) == (1, 2, 4)   # the dataclass default


def test_smoke_policy_keeps_the_first_k_and_seed_and_applies_the_spec_overrides():
    from fsadlib.methods.inctrl.train import InctrlSection

    assert first_only((0, 1, 2), True) == (0,) and first_only((0, 1, 2), False) == (0, 1, 2)
    small = smoke_section(InctrlSection(), method_spec("inctrl").smoke, "inctrl")
    assert small.ks == (2,) and small.train.epochs == 1 and small.train.steps_per_epoch == 2
    assert small.data.normals_per_batch == 2 and small.data.val_max_images == 4
    assert small.model == InctrlSection().model
    with pytest.raises(KeyError, match="smoke override 'inctrl.train.epoch': no field 'epoch'"):
        smoke_section(InctrlSection(), {"train.epoch": 1}, "inctrl")
    for spec in specs().values():   # every declared override names a real field
        smoke_section(spec.section_class()(), spec.smoke, spec.name)


def test_train_method_reads_the_section_applies_the_smoke_policy_and_returns_a_report(outside, tmp_path):
    root = tmp_path / "bench"
    root.mkdir()
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump({"protocol": {"synthetic": {"aux_dataset": "synthetic", "aux_categories": ["a"], "target_categories": ["b"],
                                                                    "selection": "fixed", "val_dataset": "synthetic"}},
                                      "shots": {"ks": [1, 2]},
                                      "toy": {"ks": [1, 2], "train": {"epochs": 3, "steps_per_epoch": 1, "optimizer": "sgd", "momentum": 0,
                                                                      "lr": 0.1, "amp": 0}}}))
    report = train_method("toy", smoke=True, params_path=params, out_dir=root / "models", live_dir=root / "live")
    assert isinstance(report, TrainReport) and report.models == [root / "models" / "final.pt"]
    assert list(report.history.epoch) == [1]                       # the toy spec's smoke: 1 epoch
    summary = json.loads((root / "live" / "summary.json").read_text())
    assert summary == {"models": 1, "runs": {"model": {"epochs": 1, "train_loss": 0.25}}}
    full = train_method("toy", smoke=False, params_path=params, out_dir=root / "full", live_dir=root / "live2")
    assert list(full.history.epoch) == [1, 2, 3]
    assert full.history.train_loss.is_monotonic_decreasing         # (scale - 1)^2 from 0.25 down


def test_a_training_free_method_is_built_from_its_section_without_a_models_folder(tmp_path, monkeypatch):
    from fsadlib.evaluate import load_method
    from fsadlib.protocol import Protocol

    root = tmp_path / "bench"
    root.mkdir()
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / "params.yaml").write_text(yaml.safe_dump({"winclip": {
        "ks": [1], "model": {"backbone": {"arch": "tiny"}, "window_sizes": [3], "temperature": 0.5}}}))
    monkeypatch.setenv("FSAD_ROOT", str(root))
    protocol = Protocol(aux_categories=("a",), val_categories=("b",), target_categories=("c",))
    method = load_method("winclip_plus", protocol, k=1, seed=0)
    assert method.name == "winclip_plus" and method.config.window_sizes == (3,) and method.config.temperature == 0.5
    assert not (root / "models").exists()
    with pytest.raises(FileNotFoundError, match="run its train_inctrl@synthetic stage"):
        load_method("inctrl", protocol, k=2, seed=0)


def test_a_fixed_epoch_is_the_model_of_that_epoch_of_the_scheduled_run(outside, tmp_path):
    from toy_fsad.model import ToyConfig, ToyMethod

    from fsadlib.io import load_torch
    from fsadlib.train import TrainConfig, fit

    config = TrainConfig(epochs=3, steps_per_epoch=1, lr=0.1, optimizer="sgd", momentum=0.0, amp=0, schedule="linear")
    result = fit(ToyMethod(ToyConfig()), [{}], lambda m, _: {"loss": (m.scale - 1) ** 2}, config, tmp_path / "m",
                 take_epoch=2, trained_on={"data": "auxiliary"})
    # scale 0.5, gradient 2 (s - 1), lr 0.1 x (1, 2/3, 1/3) over the 3 scheduled steps: 0.6, then 0.6 + 0.16/3
    ckpt = load_torch(result.best_path)
    assert len(result.history) == 2 and ckpt["extra"]["epochs_run"] == 2
    assert float(ckpt["state_dict"]["scale"]) == pytest.approx(0.6 + 0.16 / 3, abs=1e-6)
    assert ckpt["extra"]["trained_on"] == {"data": "auxiliary"}
    with pytest.raises(ValueError, match="fixed epoch 4 must lie in 1..train.epochs = 3"):
        fit(ToyMethod(ToyConfig()), [{}], lambda m, _: {"loss": m.scale ** 2}, config, tmp_path / "n", take_epoch=4)


def test_evaluation_refuses_a_model_of_the_other_direction_or_overlapping_categories(outside, tmp_path, monkeypatch):
    import shutil

    from fsadlib.evaluate import load_method
    from fsadlib.io import load_torch
    from fsadlib.protocol import Protocol

    root = tmp_path / "bench"
    root.mkdir()
    (root / "dvc.yaml").write_text("stages: {}\n")
    protocol = {"aux_dataset": "mvtec", "aux_categories": ["bottle", "cable"], "selection": "fixed", "epoch": 2,
                "val_dataset": "mvtec", "target_categories": ["pcb1"]}
    (root / "params.yaml").write_text(yaml.safe_dump({"protocol": {"visa": protocol}, "shots": {"ks": [1]},
                                                      "toy": {"ks": [1]}}))
    monkeypatch.setenv("FSAD_ROOT", str(root))
    monkeypatch.setenv("FSAD_OUTPUT_ROOT", str(root))
    report = train_method("toy", target="visa", params_path=root / "params.yaml")
    assert report.models == [root / "models" / "toy" / "visa" / "trained_on_mvtec" / "final.pt"]
    assert load_torch(report.models[0])["extra"]["trained_on"] == {
        "data": "auxiliary", "aux_dataset": "mvtec", "aux_categories": ["bottle", "cable"], "selection": "fixed",
        "val_dataset": "", "val_categories": [], "epoch": 2}
    assert (root / "reports" / "train_toy" / "visa" / "summary.json").is_file()
    run = Protocol(**{**protocol, "aux_categories": ("bottle", "cable"), "target_dataset": "visa",
                      "target_categories": ("pcb1",)})
    assert load_method("toy", run, k=1, seed=0).trained_on["aux_dataset"] == "mvtec"

    other = Protocol(aux_dataset="visa", aux_categories=("pcb1",), selection="fixed", target_dataset="mvtec",
                     target_categories=("bottle",))
    with pytest.raises(FileNotFoundError, match="mvtec/trained_on_visa"):   # each direction has its own folder
        load_method("toy", other, k=1, seed=0)
    shutil.copytree(root / "models" / "toy" / "visa" / "trained_on_mvtec", root / "models" / "toy" / "mvtec" / "trained_on_visa")
    with pytest.raises(ValueError, match="was trained on 'mvtec' but this run trains on protocol.aux_dataset 'visa'"):
        load_method("toy", other, k=1, seed=0)
    shutil.copytree(root / "models" / "toy" / "visa" / "trained_on_mvtec", root / "models" / "toy" / "mvtec" / "trained_on_mvtec")
    overlap = Protocol(aux_dataset="mvtec", aux_categories=("grid",), selection="fixed", target_dataset="mvtec",
                       target_categories=("cable", "screw"))
    with pytest.raises(ValueError, match=r"trained or selected on \['cable'\] of 'mvtec'"):
        load_method("toy", overlap, k=1, seed=0)
