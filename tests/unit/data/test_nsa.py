"""NSA synthesis: identity blends, the label's support, background skipping, the public tables, seeding."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import minimum_filter

from fsadlib.data.augment import synthesize_anomaly
from fsadlib.data.nsa import NSAParams, nsa_anomaly, nsa_params, object_mask


def smooth_texture(seed: int, size: int = 96) -> np.ndarray:
    """A natural-looking uint8 [S, S, 3] image: blurred noise plus a gradient."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(40, 220, size=(size // 8, size // 8, 3))
    image = np.kron(coarse, np.ones((8, 8, 1))) + np.linspace(0, 30, size)[None, :, None]
    return np.clip(image, 0, 255).astype(np.uint8)


def stripes(size: int = 96, period: int = 6) -> np.ndarray:
    """High-contrast vertical stripes, 0 / 255: every Poisson-blended copy differs strongly from grey."""
    row = np.where((np.arange(size) // (period // 2)) % 2 == 0, 0, 255)
    return np.repeat(np.repeat(row[None, :, None], size, 0), 3, 2).astype(np.uint8)


def region_of(result, shape) -> np.ndarray:
    region = np.zeros(shape, bool)
    for p in result.patches:
        y0, y1, x0, x1 = p.box
        region[y0:y1, x0:x1] |= p.blend_mask.astype(bool)
    return region


def test_blending_into_an_identical_image_leaves_it_unchanged():
    """Up to OpenCV's float Poisson solver, which rounds to +-1 grey level; never labelled."""
    flat = np.full((96, 96, 3), 117, np.uint8)
    for seed in range(5):  # full NSA (resize, shift): a flat patch into the same flat image
        result = nsa_anomaly(flat, flat, np.random.default_rng(seed))
        assert result.patches
        assert np.abs(result.image.astype(int) - flat).max() <= 1 and not result.label.any()
    image = smooth_texture(0)
    for seed in range(5):  # a patch blended back at its own place
        result = nsa_anomaly(image, image, np.random.default_rng(seed), NSAParams(shift=0))
        assert result.patches
        assert np.abs(result.image.astype(int) - image).max() <= 1 and not result.label.any()


def test_label_covers_the_blended_region_and_nothing_else():
    """Zero outside the blend masks; where every pixel of an 11 x 11 neighbourhood changed by more than
    60 grey levels, the logistic (1/12, 24) gives more than 1 / (1 + e^-3) = 0.95 > 0.9."""
    grey, source = np.full((96, 96, 3), 128, np.uint8), stripes(period=24)
    strong_total = 0
    for seed in range(10):
        result = nsa_anomaly(grey, source, np.random.default_rng(seed))
        region = region_of(result, grey.shape[:2])
        label = result.label
        assert label.dtype == np.float32 and label.min() >= 0 and label.max() < 1
        assert not label[~region].any(), "label outside the blended region"
        change = np.abs(result.image.astype(int) - grey).mean(-1)
        strong = minimum_filter(change, size=11) > 60
        assert (label[strong] > 0.9).all(), "a strongly changed area is not labelled"
        strong_total += strong.sum()
    assert strong_total > 50


def test_background_skipping_keeps_patches_off_the_background():
    """Dark background (10) with a textured bright object; background (20, 20) as MVTec's hazelnut."""
    size = 96
    yy, xx = np.mgrid[:size, :size]

    def object_image(cy: int, cx: int, seed: int) -> np.ndarray:
        image = np.full((size, size, 3), 10, np.uint8)
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 < 26 ** 2
        image[inside] = smooth_texture(seed, size)[inside] // 2 + 100
        return image

    params = NSAParams(background=(20, 20), width_bounds=((0.03, 0.35), (0.03, 0.35)))
    dest, source = object_image(48, 48, 1), object_image(40, 56, 2)
    dest_obj = object_mask(dest, params.background).astype(bool)
    n_patches = 0
    for seed in range(12):
        result = nsa_anomaly(dest, source, np.random.default_rng(seed), params)
        allowed = dest_obj.copy()
        for p in result.patches:
            y0, y1, x0, x1 = p.box
            src_obj = p.source_object.astype(bool)
            allowed[y0:y1, x0:x1] |= src_obj
            overlap = (dest_obj[y0:y1, x0:x1] & src_obj).sum() / src_obj.sum()
            assert overlap > params.min_overlap_pct, "the pasted object overlaps the destination object"
            n_patches += 1
        assert not result.label[~allowed].any(), "a background-on-background pixel was labelled"
    assert n_patches >= 12


def test_public_tables():
    screw = nsa_params("screw")
    assert screw.width_bounds == ((0.03, 0.12), (0.03, 0.12)) and screw.intensity_logistic == (1.0, 3)
    assert screw.background == (200, 60) and screw.resize_bounds == (0.7, 1.3)
    assert nsa_params("hazelnut").background == (20, 20) and nsa_params("cable").background is None
    assert nsa_params("wood").resize_bounds == (0.5, 2.0) and nsa_params("wood").intensity_logistic[1] == 15
    visa = nsa_params("candle")  # VisA (and any other data set): the fixed parameters
    assert visa == NSAParams(width_bounds=((0.03, 0.4), (0.03, 0.4)), intensity_logistic=(1 / 12, 24),
                             background=None, resize_bounds=(0.5, 2.0))
    assert visa.num_patches == 2 and visa.gamma_params == (2, 0.05, 0.03) and visa.min_overlap_pct == 0.25
    with pytest.raises(ValueError, match="width_bounds"):
        NSAParams(width_bounds=((0.3, 0.1), (0.03, 0.4)))


def test_seeded_and_checked():
    dest, source = smooth_texture(3), smooth_texture(4)
    a = nsa_anomaly(dest, source, np.random.default_rng(7))
    b = nsa_anomaly(dest, source, np.random.default_rng(7))
    c = nsa_anomaly(dest, source, np.random.default_rng(8))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
    assert not np.array_equal(a.image, c.image)
    with pytest.raises(ValueError, match="uint8"):
        nsa_anomaly(dest.astype(np.float32), source, np.random.default_rng(0))


def test_nsa_mode_of_synthesize_anomaly_keeps_untouched_pixels_exactly():
    rng = np.random.default_rng(0)
    image = rng.random((64, 64, 3)).astype(np.float32)  # not on the 1/255 grid
    source = stripes(64)[..., :3].astype(np.float32) / 255
    out, mask, label = synthesize_anomaly(image, np.random.default_rng(1), source=source, mode="nsa")
    assert label == 1 and mask.dtype == np.float32 and 0 < mask.max() < 1
    changed = (out != image).any(-1)
    assert changed.any() and (~changed).mean() > 0.5, "pixels outside the blend keep their exact values"
    assert np.allclose(out[changed] * 255, np.rint(out[changed] * 255), atol=1e-4)  # blended on 0-255
    assert not mask[~changed].any()
