"""Few-shot PatchCore with the real pretrained EfficientNet-Lite0 on real MVTec AD images, through the
normal evaluation (reader, k-shot files, geometry, map resizing, exact metrics): a real-signal check of
all of them together. One shot seed per k keeps it cheap; ``benchmarks/bench_patchcore_real.py`` gives
the mean +- std over seeds (method README)."""

from __future__ import annotations

import numpy as np
import pytest

from fsadlib.data import load_samples, make_shots
from fsadlib.evaluate import EvalConfig, evaluate
from fsadlib.methods import create
from fsadlib.paths import shared_data_dir

ROOT = shared_data_dir() / "mvtec_ad_reduced"
pytestmark = [pytest.mark.realdata,
              pytest.mark.skipif(not ROOT.is_dir(), reason=f"real MVTec AD excerpt not found at {ROOT}")]
KS = (1, 2, 4)


@pytest.fixture(scope="module")
def real_bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / "params.yaml").write_text(f"datasets:\n  mvtec: {{reader: mvtec, root: {ROOT}}}\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FSAD_ROOT", str(root))
        make_shots(load_samples("mvtec", categories=["hazelnut"]), ks=KS, seeds=(0,))
        yield root


def test_patchcore_detects_real_hazelnut_defects(real_bench):
    method = create("patchcore")  # the PatchCoreConfig default: 224 px, the package's ImageNet weights
    assert not method.backbone.random_weights and method.backbone.effective_precision() == "fp32"  # CPU
    config = EvalConfig(save_maps=0, bootstrap=0)
    for k in KS:
        result = evaluate(method, "mvtec", k=k, seed=0, config=config, categories=["hazelnut"])
        hazelnut = result["categories"]["hazelnut"]
        assert result["run"]["geometry"] == "resize_crop" and result["run"]["precision"] == "fp32"
        assert hazelnut["pixel_auroc"] > 0.93, (k, hazelnut)
        assert hazelnut["image_auroc"] > 0.7 and 0.7 < hazelnut["pixel_aupro"] <= 1, (k, hazelnut)
        assert np.isfinite(hazelnut["pixel_ap"])
