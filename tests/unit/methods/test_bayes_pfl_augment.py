"""Bayes-PFL augmentations: masks follow their images' geometry exactly, seeding, the mask resize rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from fsadlib.data.dataset import resize_binary_mask
from fsadlib.methods.bayes_pfl.augment import (
    AugmentedDataset,
    BayesPFLAugmentConfig,
    RandomRotate90,
    ReflectRotate,
    augment_pair,
    bayes_pfl_transform,
    mosaic,
)

H, W = 36, 52


def coordinate_image(height: int = H, width: int = W, scale: float = 1000.0) -> torch.Tensor:
    """float [3, H, W]: channel 0 = x / scale, channel 1 = y / scale. Bilinear interpolation of a linear
    function is exact, so a pixel of the transformed image tells where in the source it came from."""
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return torch.stack([xx / scale, yy / scale, torch.zeros(height, width)]).float()


MARKS = [(0, 0), (3, 5), (17, 26), (30, 47), (H - 1, W - 1)]


@pytest.mark.parametrize("transform", [ReflectRotate(30), RandomRotate90(),
                                       v2.Compose([ReflectRotate(30), RandomRotate90()])],
                         ids=["rotate", "rot90", "rotate+rot90"])
def test_a_marked_mask_pixel_lands_where_its_image_pixel_lands(transform):
    """Under nearest resampling a mask pixel lands at the output pixel whose source point is within
    half a pixel of it: the image there must decode to the marked coordinates within 0.5."""
    image = coordinate_image()
    landed = 0
    for seed in range(6):
        for y, x in MARKS:
            mask = torch.zeros(H, W, dtype=torch.uint8)
            mask[y, x] = 1
            out, out_mask = augment_pair(image, mask, transform, seed)
            assert out.shape[-2:] == out_mask.shape and out_mask.dtype == torch.uint8
            for py, px in out_mask.nonzero().tolist():
                assert abs(float(out[0, py, px]) * 1000 - x) <= 0.5 + 1e-3
                assert abs(float(out[1, py, px]) * 1000 - y) <= 0.5 + 1e-3
                landed += 1
    assert landed >= 6 * len(MARKS) // 2


def test_rot90_is_exact():
    image = coordinate_image()
    mask = (torch.rand(H, W) > 0.7).to(torch.uint8)
    for seed in range(8):
        out, out_mask = augment_pair(image, mask, RandomRotate90(), seed)
        k = [torch.equal(out, torch.rot90(image, j, dims=(-2, -1))) for j in range(4)].index(True)
        assert torch.equal(out_mask, torch.rot90(mask, k, dims=(-2, -1)))


def test_mosaic_places_each_tile_and_its_mask_together():
    tiles, masks = [], []
    for i in range(4):
        img = np.zeros((H, W, 3), np.uint8)
        img[..., 0], img[..., 1] = np.arange(W)[None, :], np.arange(H)[:, None]
        img[..., 2] = 10 * (i + 1)
        mask = np.zeros((H, W), np.uint8)
        mask[MARKS[i + 1]] = 1
        tiles.append(img)
        masks.append(mask)
    image, mask = mosaic(tiles, masks)
    assert image.shape == (2 * H, 2 * W, 3) and mask.shape == (2 * H, 2 * W)
    marked = np.argwhere(mask)
    assert len(marked) == 4
    for py, px in marked:
        i = int(image[py, px, 2]) // 10 - 1
        assert (py // H, px // W) == (i // 2, i % 2)                      # tile i at row i // 2, col i % 2
        assert (image[py, px, 1], image[py, px, 0]) == MARKS[i + 1]       # the same pixel of that tile
    # the composite: the mosaic, then the geometric augmentations, still aligned
    big = coordinate_image(2 * H, 2 * W)
    for seed in range(4):
        out, out_mask = augment_pair(big, torch.from_numpy(mask), v2.Compose([ReflectRotate(30), RandomRotate90()]),
                                     seed)
        for py, px in out_mask.nonzero().tolist():
            source = float(out[1, py, px]) * 1000, float(out[0, py, px]) * 1000
            assert min(abs(source[0] - y) + abs(source[1] - x) for y, x in marked) <= 1 + 2e-3


def test_photometric_transforms_leave_masks_alone_and_stay_in_range():
    cfg = BayesPFLAugmentConfig(enabled=1, rotate_prob=0, rot90_prob=0, brightness_contrast_prob=1,
                                noise_prob=1, blur_prob=1)
    image, mask = torch.rand(3, H, W), (torch.rand(H, W) > 0.5).to(torch.uint8)
    for seed in range(6):
        out, out_mask = augment_pair(image, mask, bayes_pfl_transform(cfg), seed)
        assert torch.equal(out_mask, mask) and 0 <= float(out.min()) and float(out.max()) <= 1
        assert not torch.allclose(out, image, atol=1e-3)
    with pytest.raises(ValueError, match="bayes_pfl.augment.mask_resize"):
        BayesPFLAugmentConfig(mask_resize="bicubic")


def test_mask_resize_rules_by_hand():
    """One set pixel of a 4 x 4 mask shrunk to 2 x 2: PIL nearest samples source pixels 1 and 3 of
    each axis and keeps it; the antialiased bilinear average is at most 1/4 < 0.5 and drops it."""
    binary = np.zeros((4, 4), np.uint8)
    binary[1, 1] = 1
    assert resize_binary_mask(binary, 2, "nearest").tolist() == [[1.0, 0.0], [0.0, 0.0]]
    assert resize_binary_mask(binary, 2, "bilinear").tolist() == [[0.0, 0.0], [0.0, 0.0]]
    block = np.zeros((4, 4), np.uint8)
    block[:2, :2] = 1
    assert resize_binary_mask(block, 2, "bilinear").tolist() == [[1.0, 0.0], [0.0, 0.0]]


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    from fsadlib import data
    from fsadlib.data import synthetic

    root = synthetic.generate(tmp_path_factory.mktemp("syn") / "synthetic", image_size=48, n_train=1,
                              n_test_good=1, n_test_bad=3, categories=("brick", "disc"))
    table = data.read_samples("mvtec", root, "synthetic")
    return table[table.split == "test"].reset_index(drop=True)


def test_same_seed_same_items_different_seeds_differ(rows):
    cfg = BayesPFLAugmentConfig(enabled=1, mask_resize="bilinear")

    def items(seed):
        ds = AugmentedDataset(rows, 32, (0.5,) * 3, (0.5,) * 3, cfg, mosaic_prob=0.5, seed=seed)
        first = [ds[i] for i in range(len(ds))]
        return first + [ds[i] for i in range(len(ds))]  # a second visit draws anew

    a, b, c = items(0), items(0), items(1)
    n = len(rows)
    for x, y in zip(a, b):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["mask"], y["mask"])
        assert x["label"] == y["label"] and x["defect"] == y["defect"]
    assert any(not torch.equal(x["image"], y["image"]) for x, y in zip(a, c))
    assert any(not torch.equal(a[i]["image"], a[i + n]["image"]) for i in range(n))
    mosaics = [x for x in a + c if x["defect"] == "mosaic"]
    assert mosaics and all(x["label"] == 1 for x in mosaics)
    assert all(x["image"].shape == (3, 32, 32) and x["mask"].shape == (32, 32) for x in a)
    assert all(set(x["mask"].unique().tolist()) <= {0.0, 1.0} for x in a)
    torch.manual_seed(5)
    before = torch.rand(1)
    torch.manual_seed(5)
    AugmentedDataset(rows, 32, (0.5,) * 3, (0.5,) * 3, cfg, 0.5, 0)[0]
    assert torch.equal(torch.rand(1), before), "the global torch RNG is left alone"


def test_training_items_are_plain_unless_asked(rows):
    from fsadlib.clip import BackboneConfig
    from fsadlib.data import AnomalyDataset
    from fsadlib.methods.bayes_pfl.model import BayesPFL, BayesPFLConfig
    from fsadlib.methods.bayes_pfl.train import BayesPFLTrainConfig, training_dataset

    method = BayesPFL(BayesPFLConfig(backbone=BackboneConfig(arch="tiny"), layers=(3, 6, 9, 12)))
    plain = BayesPFLTrainConfig()
    assert isinstance(training_dataset(method, rows, plain, BayesPFLAugmentConfig()), AnomalyDataset)
    for cfg, aug in ((plain, BayesPFLAugmentConfig(enabled=1)), (BayesPFLTrainConfig(mosaic_prob=0.4),
                     BayesPFLAugmentConfig()), (plain, BayesPFLAugmentConfig(mask_resize="bilinear"))):
        assert isinstance(training_dataset(method, rows, cfg, aug), AugmentedDataset)


def test_training_preview_shows_the_items_training_makes(rows, monkeypatch):
    from fsadlib import data
    from fsadlib.clip import BackboneConfig
    from fsadlib.methods.bayes_pfl.model import BayesPFLConfig
    from fsadlib.methods.bayes_pfl.train import BayesPFLSection, BayesPFLTrainConfig, training_preview
    from fsadlib.protocol import Protocol

    monkeypatch.setattr(data, "load_samples", lambda dataset, categories=None: data.select_categories(rows, categories))
    section = BayesPFLSection(model=BayesPFLConfig(backbone=BackboneConfig(arch="tiny")),
                              train=BayesPFLTrainConfig(mosaic_prob=1.0), augment=BayesPFLAugmentConfig(enabled=1))
    preview = training_preview(section, Protocol(aux_categories=("brick",), target_categories=("disc",)), n=3)
    assert preview["image"].shape == (3, 3, 64, 64) and preview["mask"].shape == (3, 64, 64)
    assert 0 <= float(preview["image"].min()) and float(preview["image"].max()) <= 1
    assert preview["title"] == ["brick mosaic"] * 3 and preview["mask"].amax() == 1
