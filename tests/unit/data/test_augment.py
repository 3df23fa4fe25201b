"""Anomaly synthesis: exact masks, labels, blend range, CutPaste rectangles, determinism, layouts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fsadlib.data.augment import CUT_AREA, MAX_BETA, perlin_mask, synthesize_anomaly
from fsadlib.data.noise import perlin_noise


def test_perlin_noise_vanishes_on_the_lattice():
    noise = perlin_noise((64, 48), (4, 3), np.random.default_rng(0))
    assert noise.shape == (64, 48) and np.abs(noise).max() > 0.1
    assert np.allclose(noise[::16, ::16], 0.0, atol=1e-6)  # gradient noise is 0 at lattice points


def test_perlin_mode_blends_inside_the_mask_only():
    image = np.full((32, 32, 3), 0.2, np.float32)
    source = np.full((32, 32, 3), 0.9, np.float32)
    for seed in range(5):
        out, mask, label = synthesize_anomaly(image, np.random.default_rng(seed), source=source)
        assert label == 1 and mask.dtype == np.float32 and set(np.unique(mask)) <= {0.0, 1.0} and mask.any()
        inside = mask.astype(bool)
        assert np.array_equal(out[~inside], image[~inside])
        values = np.unique(out[inside])
        assert len(values) == 1  # one opacity beta per image
        beta = (values[0] - 0.9) / (0.2 - 0.9)  # out = (1 - beta) s + beta x
        assert -1e-6 <= beta <= MAX_BETA + 1e-6


def test_deterministic_per_generator_state():
    image = np.random.default_rng(1).random((24, 24, 3)).astype(np.float32)
    a = synthesize_anomaly(image, np.random.default_rng(9))
    b = synthesize_anomaly(image, np.random.default_rng(9))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert perlin_mask((24, 24), np.random.default_rng(2)).any()


def test_cutpaste_pastes_a_source_rectangle():
    h, w = 40, 50
    source = np.arange(h * w * 3, dtype=np.float32).reshape(h, w, 3) / (h * w * 3)  # every pixel unique
    image = np.zeros((h, w, 3), np.float32)
    for seed in range(5):
        out, mask, label = synthesize_anomaly(image, np.random.default_rng(seed), source=source, mode="cutpaste")
        ys, xs = np.nonzero(mask)
        box = mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        assert label == 1 and box.all(), "mask is one filled rectangle"
        assert CUT_AREA[0] * 0.8 <= mask.mean() <= CUT_AREA[1] * 1.2
        patch = out[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        sy, sx = np.argwhere(np.isclose(source[..., 0], patch[0, 0, 0]))[0]
        assert np.array_equal(patch, source[sy:sy + box.shape[0], sx:sx + box.shape[1]])
        assert np.array_equal(out[mask == 0], image[mask == 0])


def test_no_anomaly_and_torch_layout():
    image = torch.rand(3, 16, 20)
    out, mask, label = synthesize_anomaly(image, np.random.default_rng(0), anomaly_prob=0.0)
    assert label == 0 and torch.equal(out, image) and mask.shape == (16, 20) and mask.sum() == 0
    out, mask, label = synthesize_anomaly(image, np.random.default_rng(0), mode="cutpaste")
    assert isinstance(out, torch.Tensor) and out.shape == (3, 16, 20) and label == 1
    assert torch.equal(out[:, mask == 0], image[:, mask == 0])
    with pytest.raises(KeyError, match="unknown anomaly synthesis mode 'blur'"):
        synthesize_anomaly(image, np.random.default_rng(0), mode="blur")
