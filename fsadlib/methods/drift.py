"""bf16-vs-fp32 drift of a method's forward: the same weights, the same input, two precisions.

    drift = precision_drift("inctrl", model_config)
    drift = method_drift("inctrl", load_params())       # with its params.yaml model section

builds method ``name`` twice from ``model_config`` (its params ``model`` section) with
``backbone.precision`` set to ``fp32`` and to ``bf16`` (the trainable heads seeded identically, so
both copies hold the same weights), runs ``setup_category`` (few-shot methods: one support image)
and ``forward`` on the same :func:`fixed_input` at the model's input size, and compares the outputs:

- ``map_max_abs`` = max |M_bf16 - M_fp32| over all pixels, ``map_rel`` = that / (max M_fp32 - min M_fp32);
- ``score_max_abs`` = max |s_bf16 - s_fp32| over images, ``score_rel`` = that / max |s_fp32|;
- ``score_rank_equal``: whether the images' score order is the same.

:func:`method_drift` does it for a registered method with its ``params.yaml`` model section on
:func:`fixed_input`; ``benchmarks/bench_precision_drift.py`` prints it for every method (the figures
in the READMEs) and ``tests/unit/methods/test_precision_drift.py`` checks that bf16 really ran and
stays within bounds.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch

from fsadlib.methods.base import AnomalyMethod
from fsadlib.methods.registry import create, spec_of


def fixed_input(size: int, n: int = 3) -> torch.Tensor:
    """[n, 3, S, S] seeded noise (std 0.5); images 1.. carry a bright square (an "anomaly")."""
    g = torch.Generator().manual_seed(0)
    images = torch.randn(n, 3, size, size, generator=g) * 0.5
    images[1:, :, size // 4: size // 2, size // 4: size // 2] += 2.0
    return images


def fixed_captions(class_name: str):
    """Fixed MFSC captions of a two-part object, for FineGrainedAD on :func:`fixed_input`."""
    from fsadlib.captions import Captions

    return Captions(dataset="drift", category=class_name, class_name=class_name, foreground=class_name,
                    background="black", entity=("cap", "body"), number=("one", "one"), location=("top", "center"),
                    relation="the cap is above the body", color=("red", "blue"), texture=("smooth", "smooth"),
                    shape=("round", "square"), entity_caption=("a red cap at the top", "a blue body at the center"),
                    caption=f"a photo of a {class_name} on a black background.",
                    anomaly_phrases=("{} with hole", "broken {}", "{} with scratch"))


def method_drift(name: str, params: dict[str, Any], size: int | None = None, n: int = 3,
                 device: str | torch.device = "cpu") -> dict[str, Any]:
    """:func:`precision_drift` of method ``name`` with its model section of ``params`` (a loaded
    params.yaml, whose section is the method folder's); ``size`` overrides the input size
    (``backbone.image_size``)."""
    model = copy.deepcopy(params[spec_of(name).name]["model"])
    if size is not None:
        model["backbone"] = {**model["backbone"], "image_size": size}
    prepare = None
    if name == "finegrained":
        model["captions_dataset"] = "drift"
        prepare = lambda method: method.set_captions(fixed_captions("widget"))
    return precision_drift(name, model, n, "widget", prepare, device)


def with_precision(model_config: dict[str, Any], precision: str) -> dict[str, Any]:
    """A copy of a method's ``model`` params section with ``backbone.precision`` set."""
    config = copy.deepcopy(model_config)
    config["backbone"] = {**config.get("backbone", {}), "precision": precision}
    return config


def precision_drift(name: str, model_config: dict[str, Any], n: int = 3, class_name: str = "widget",
                    prepare: Callable[[AnomalyMethod], None] | None = None,
                    device: str | torch.device = "cpu") -> dict[str, Any]:
    """Outputs of ``name`` at bf16 against fp32 on ``fixed_input(S, n)`` (see the module docstring).

    ``prepare(method)`` runs before ``setup_category`` (e.g. FineGrainedAD's captions)."""
    outputs = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        method = create(name, **with_precision(model_config, precision)).to(device).eval()
        if prepare is not None:
            prepare(method)
        size = int(method.backbone.image_size)
        supports = fixed_input(size, 1).to(device) if method.few_shot else None
        with torch.inference_mode():
            method.setup_category(class_name, supports)
            outputs[precision] = method(fixed_input(size, n).to(device)).detach_cpu()
        outputs[precision + "_effective"] = method.backbone.effective_precision()
    ref, low = outputs["fp32"], outputs["bf16"]
    map_abs = float((low.anomaly_map - ref.anomaly_map).abs().max())
    score_abs = float((low.pred_score - ref.pred_score).abs().max())
    map_range = float(ref.anomaly_map.max() - ref.anomaly_map.min())
    score_scale = float(ref.pred_score.abs().max())
    return {
        "method": name, "precisions": (outputs["fp32_effective"], outputs["bf16_effective"]),
        "map_max_abs": map_abs, "map_rel": map_abs / map_range if map_range > 0 else float("nan"),
        "score_max_abs": score_abs, "score_rel": score_abs / score_scale if score_scale > 0 else float("nan"),
        "score_rank_equal": bool(torch.equal(ref.pred_score.argsort(), low.pred_score.argsort())),
    }
