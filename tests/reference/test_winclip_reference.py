"""WinCLIP / WinCLIP+ equal the anomalib port (``preset: paper``) and the workbench formulas, on the
tiny random CLIP (8 x 8 grid), to 1e-5; the presets differ where the README says."""

from __future__ import annotations

import port_winclip
import pytest
import torch

from fsadlib.methods import create
from fsadlib.methods.winclip.model import TEMPLATES_ANOMALIB


def images(n, seed):
    return torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def backbone():
    return create("winclip", backbone={"arch": "tiny"}).backbone


@pytest.mark.parametrize(("name", "preset"), [("winclip_plus", "paper"), ("winclip_plus", "workbench"),
                                            ("winclip", "paper")])
def test_equals_the_port(backbone, name, preset):
    m = create(name, backbone_model=backbone, backbone={"arch": "tiny"}, preset=preset)
    sup = images(1, seed=1) if m.few_shot else None
    m.setup_category("metal_nut", sup)
    x = images(2, seed=3)
    out = m(x)
    score, amap = port_winclip.winclip(backbone, x, "metal_nut", sup, paper=preset == "paper")
    torch.testing.assert_close(out.pred_score, score, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.anomaly_map, amap, rtol=0, atol=1e-5)


def test_presets_differ_and_templates_are_anomalib_s(backbone):
    assert list(TEMPLATES_ANOMALIB) == port_winclip.ANOMALIB_TEMPLATES and len(TEMPLATES_ANOMALIB) == 21
    x, sup = images(1, seed=3), images(1, seed=1)
    out = {}
    for preset in ("paper", "workbench"):
        m = create("winclip_plus", backbone_model=backbone, backbone={"arch": "tiny"}, preset=preset)
        m.setup_category("metal_nut", sup)
        out[preset] = m(x)
    assert (out["paper"].anomaly_map - out["workbench"].anomaly_map).abs().max() > 1e-3
    with pytest.raises(ValueError, match="winclip.preset"):
        create("winclip", backbone={"arch": "tiny"}, preset="public")
