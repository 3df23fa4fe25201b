"""Few-shot PatchCore with the real pretrained EfficientNet-Lite0 on real MVTec AD images, through the
normal evaluation (readers, k-shot files, geometry, map resizing, exact metrics): a real-signal check."""

from __future__ import annotations

import numpy as np
import pytest

from fsadlib.data import load_samples, make_shots
from fsadlib.evaluate import EvalConfig, aggregate_seeds, evaluate
from fsadlib.methods import create
from fsadlib.paths import shared_data_dir

ROOT = shared_data_dir() / "mvtec_ad_reduced"
pytestmark = [pytest.mark.realdata,
              pytest.mark.skipif(not ROOT.is_dir(), reason=f"real MVTec AD excerpt not found at {ROOT}")]
KS, SEEDS = (1, 2, 4), (0, 1, 2)


@pytest.fixture(scope="module")
def real_bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / "params.yaml").write_text(f"datasets:\n  mvtec: {{reader: mvtec, root: {ROOT}}}\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FSAD_ROOT", str(root))
        make_shots(load_samples("mvtec", categories=["hazelnut"]), ks=KS, seeds=SEEDS)
        yield root


def test_patchcore_detects_real_hazelnut_defects(real_bench):
    method = create("patchcore")
    assert method.backbone.effective_precision() == "fp32"  # CPU
    config = EvalConfig(save_maps=0, bootstrap=0)
    for k in KS:
        for seed in SEEDS:
            evaluate(method, "mvtec", k=k, seed=seed, config=config, categories=["hazelnut"])
        summary = aggregate_seeds("patchcore", "mvtec", k, SEEDS)
        hazelnut = summary["categories"]["hazelnut"]
        assert summary["run"]["geometry"] == "resize_crop" and summary["run"]["precision"] == "fp32"
        assert hazelnut["pixel_auroc"]["mean"] > 0.93, (k, hazelnut["pixel_auroc"])
        assert min(hazelnut["pixel_auroc"]["mean"] - hazelnut["pixel_auroc"]["std"], 1) > 0.9
        assert hazelnut["image_auroc"]["mean"] > 0.7 and np.isfinite(hazelnut["pixel_aupro"]["mean"])
