"""Precision: bf16 against fp32 for every method's forward on a fixed input (the embedded configs of
params.yaml, CPU autocast): bf16 really runs and the drift stays small (the measured figures are in each
method README, from ``benchmarks/bench_precision_drift.py``); paper presets take the public code's precision."""

from __future__ import annotations

import pytest
import torch

from fsadlib.clip import effective_precision
from fsadlib.config import load_params
from fsadlib.methods import create, list_methods
from fsadlib.methods.drift import method_drift, with_precision

#: cheap in the default run; the other methods' forwards (same mechanism, a few times slower on CPU bf16) run with -m slow
FAST = ("patchcore", "winclip")


@pytest.mark.parametrize("name", [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in list_methods()])
def test_bf16_runs_and_drifts_little(name):
    drift = method_drift(name, load_params(), size=64 if name == "patchcore" else None)  # PatchCore at 64 px: cheap
    assert drift["precisions"] == ("fp32", "bf16")
    assert drift["map_max_abs"] > 0  # bf16 autocast really changed the computation
    assert drift["map_rel"] < 0.1, drift
    assert drift["score_rel"] < 0.05, drift


def test_with_precision_keeps_the_rest_of_the_section():
    section = {"backbone": {"arch": "tiny"}, "layers": [1]}
    assert with_precision(section, "bf16") == {"backbone": {"arch": "tiny", "precision": "bf16"}, "layers": [1]}
    assert section == {"backbone": {"arch": "tiny"}, "layers": [1]}


def test_auto_means_bf16_on_cuda_only_and_bad_names_are_refused():
    assert effective_precision("auto", torch.device("cuda")) == "bf16"
    assert effective_precision("auto", torch.device("cpu")) == "fp32"
    assert effective_precision("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(ValueError, match=r"backbone.precision must be one of \('auto', 'fp32', 'bf16'\), got 'fp16'"):
        effective_precision("fp16", torch.device("cpu"))


@pytest.mark.parametrize(("name", "paper"), [("inctrl", "fp32"), ("finegrained", "fp32")])
def test_paper_preset_takes_the_public_code_precision(name, paper):
    tiny = {"arch": "tiny", "precision": "auto"}
    assert create(name, backbone=tiny, preset="paper").config.backbone.precision == paper
    assert create(name, backbone=tiny).config.backbone.precision == "auto"  # workbench: bf16 on CUDA
    explicit = create(name, backbone={**tiny, "precision": "bf16"}, preset="paper")
    assert explicit.config.backbone.precision == "bf16"  # an explicit choice stays


def test_one_cpu_backbone_serves_both_presets_but_not_another_precision():
    """The reference tests share one backbone (the same weights) between the presets: ``auto`` is fp32 on
    CPU, as the paper preset's precision; a bf16 backbone is refused for an fp32 method, naming both."""
    from fsadlib.clip import BackboneConfig, ClipBackbone

    shared = ClipBackbone(BackboneConfig(arch="tiny"))
    paper = create("inctrl", backbone_model=shared, backbone={"arch": "tiny"}, preset="paper")
    assert paper.backbone is shared and paper.config.backbone.precision == "fp32"
    with pytest.raises(ValueError, match=r"shared backbone .*'precision': 'bf16'.* does not match .*'precision': 'fp32'"):
        create("inctrl", backbone_model=ClipBackbone(BackboneConfig(arch="tiny", precision="bf16")),
               backbone={"arch": "tiny"}, preset="paper")
    with pytest.raises(ValueError, match="does not match"):
        create("inctrl", backbone_model=shared, backbone={"arch": "tiny", "image_size": 96})
