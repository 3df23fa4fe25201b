"""Few-shot PatchCore: memory bank, nearest-neighbour distance (slow reference), map and score, errors."""

from __future__ import annotations

import pytest
import torch

from fsadlib.clip import CnnBackbone
from fsadlib.maps import nearest_euclidean
from fsadlib.methods import create, list_methods, method_spec
from fsadlib.methods.patchcore.model import PatchCoreConfig, PatchCoreSection


def test_nearest_euclidean_equals_a_loop():
    torch.manual_seed(0)
    query, bank = torch.randn(2, 7, 5), torch.randn(11, 5)
    expected = torch.tensor([[min(float((q - b).norm()) for b in bank) for q in image] for image in query])
    assert torch.allclose(nearest_euclidean(query, bank, chunk=3), expected, atol=1e-5)
    far = 1000 + torch.randn(1, 4, 64)  # large norms: the matmul form alone would leave ~1e-3 here
    assert torch.equal(nearest_euclidean(far, torch.cat([torch.randn(5, 64), far[0]])), torch.zeros(1, 4))


@pytest.fixture(scope="module")
def method():
    return create("patchcore", backbone={"image_size": 64, "layers": [5, 11]}, sigma=1.0)


def test_patchcore_is_a_registered_method_on_a_cnn(method):
    assert "patchcore" in list_methods() and method.few_shot and not method_spec("patchcore").trainable
    assert isinstance(method.backbone, CnnBackbone)  # the base class built no CLIP model
    assert method.trainable_state_dict() == {}


def test_paper_defaults():
    assert (PatchCoreConfig().neighbourhood, PatchCoreConfig().sigma) == (3, 4.0)  # PatchCore's p = 3, sigma = 4
    assert PatchCoreSection().ks == (1, 2, 4)
    for even in (2, 4):
        with pytest.raises(ValueError, match=f"odd number >= 1, got {even}"):
            PatchCoreConfig(neighbourhood=even)


def test_local_average_counts_only_the_neighbours_inside_the_map(method, monkeypatch):
    """p = 3 on a 3 x 3 tap holding 1..9: the centre averages all nine (5), a corner its four
    neighbours (1 2 4 5 -> 3), an edge its six (1 2 3 4 5 6 -> 3.5); a 2 x 2 tap is resized to 3 x 3."""
    tap = torch.arange(1.0, 10.0).view(1, 1, 3, 3)
    monkeypatch.setattr(method.backbone, "encode", lambda images: [tap, torch.ones(1, 1, 2, 2)])
    features, grid = method.patch_features(torch.zeros(1, 3, 64, 64))
    assert grid == (3, 3)
    want = torch.tensor([3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0])
    torch.testing.assert_close(features[0, :, 0], want)
    torch.testing.assert_close(features[0, :, 1], torch.ones(9))


def test_bank_map_and_score(method):
    torch.manual_seed(0)
    supports = torch.randn(2, 3, 64, 64)
    with pytest.raises(RuntimeError, match="setup_category"):
        create("patchcore", backbone={"image_size": 64})(supports)
    method.setup_category("hazelnut", supports)
    features, grid = method.patch_features(supports)
    assert grid == (8, 8) and features.shape == (2, 64, 40 + 112) and method.bank.shape == (128, 152)
    out = method(torch.cat([supports[:1], torch.randn(1, 3, 64, 64)]))
    assert out.anomaly_map.shape == (2, 64, 64) and out.pred_score.shape == (2,)
    assert out.pred_score[0] < 1e-4 and out.pred_score[1] > 1e-2  # a support image is its own nearest neighbour
    distances = nearest_euclidean(method.patch_features(supports[1:])[0], method.bank)
    assert float(method(supports[1:]).pred_score) == pytest.approx(float(distances.max()))
    with pytest.raises(ValueError, match="few-shot"):
        method.setup_category("hazelnut", None)
    with pytest.raises(ValueError, match="neighbourhood"):
        create("patchcore", neighbourhood=2)
