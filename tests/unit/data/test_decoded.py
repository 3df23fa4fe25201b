"""Decoded-image cache: exact pixels of the decoder, hits on reuse, one entry invalidated per touched
source, stale or corrupt entries rebuilt, errors naming the file; the data set and load_images read
through it with the PIL path's pixels (the evaluation and every training that uses them)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fsadlib.data import GEOMETRIES, AnomalyDataset, load_images, normalise
from fsadlib.data.decoded import CACHE_ENV, HEADER_BYTES, DecodedCache, default_cache, transform_key


def decode_half(path) -> np.ndarray:
    """A stand-in transform: PIL bicubic to half size."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB").resize((img.width // 2, img.height // 2), Image.BICUBIC))


@pytest.fixture
def sources(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        path = tmp_path / "src" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_returns_the_decoders_pixels_and_hits_afterwards(sources, tmp_path):
    cache, key = DecodedCache(tmp_path / "cache"), transform_key("half", "bicubic")
    first = [cache.get(p, key, decode_half) for p in sources]
    assert (cache.hits, cache.misses) == (0, 3)
    again = [cache.get(p, key, decode_half) for p in sources]
    assert (cache.hits, cache.misses) == (3, 3)
    for path, a, b in zip(sources, first, again):
        want = decode_half(path)
        assert a.dtype == b.dtype == np.uint8 and np.array_equal(a, want) and np.array_equal(b, want)
    assert transform_key("half", "bicubic") != transform_key("half", "nearest")
    other = DecodedCache(tmp_path / "cache")  # another process: the files, not memory, are the cache
    assert np.array_equal(other.get(sources[0], key, decode_half), first[0]) and other.hits == 1


def test_touching_one_source_invalidates_its_entry_only(sources, tmp_path):
    cache, key = DecodedCache(tmp_path / "cache"), transform_key("half")
    for p in sources:
        cache.get(p, key, decode_half)
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(sources[1])   # new content
    stat = sources[1].stat()
    os.utime(sources[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    calls = []

    def spy(path):
        calls.append(path)
        return decode_half(path)

    got = [cache.get(p, key, spy) for p in sources]
    assert calls == [sources[1].resolve()]
    assert not got[1].any() and np.array_equal(got[0], decode_half(sources[0]))


@pytest.mark.parametrize("damage", ["flip_pixel", "truncate", "header", "empty"])
def test_a_corrupt_entry_is_rebuilt_not_trusted(sources, tmp_path, damage):
    cache, key = DecodedCache(tmp_path / "cache"), transform_key("half")
    want = cache.get(sources[0], key, decode_half)
    entry = cache.entry_path(sources[0].resolve(), key)
    raw = bytearray(entry.read_bytes())
    if damage == "flip_pixel":
        raw[HEADER_BYTES + 7] ^= 0xFF
    elif damage == "truncate":
        raw = raw[:-5]
    elif damage == "header":
        raw[:8] = b"NOTMAGIC"
    else:
        raw = bytearray()
    entry.write_bytes(bytes(raw))
    got = cache.get(sources[0], key, decode_half)
    assert cache.misses == 2 and np.array_equal(got, want)
    assert np.array_equal(DecodedCache(tmp_path / "cache").get(sources[0], key, decode_half), want)


def test_missing_source_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        DecodedCache(tmp_path / "cache").get(tmp_path / "nope.png", transform_key("half"), decode_half)


def test_dataset_and_load_images_read_through_the_cache_with_the_pil_pixels(sources, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    mask = tmp_path / "src" / "0_mask.png"
    Image.fromarray((np.arange(600).reshape(20, 30) % 7 == 0).astype(np.uint8) * 255).save(mask)
    rows = pd.DataFrame({"image_path": [str(p) for p in sources], "mask_path": [str(mask), "", ""],
                         "label": [1, 0, 0], "category": "c", "defect": ["bad", "good", "good"]})
    for geometry in GEOMETRIES:  # 30 x 20 sources: resize_crop cuts, squash does not
        cached = AnomalyDataset(rows, 16, mask_size=12, geometry=geometry)
        direct = AnomalyDataset(rows, 16, mask_size=12, geometry=geometry, use_cache=False)
        raw = AnomalyDataset(rows, 16, mask_size=12, geometry=geometry, normalised=False)
        for i in range(len(rows)):
            want = direct[i]
            assert torch.equal(cached[i]["image"], want["image"]) and torch.equal(cached[i]["mask"], want["mask"])
            assert raw[i]["image"].dtype == torch.uint8 and torch.equal(normalise(raw[i]["image"]), want["image"])
        assert torch.equal(load_images(sources, 16, geometry=geometry),
                           load_images(sources, 16, geometry=geometry, use_cache=False))
    cache = default_cache()
    assert cache is not None and cache.root == tmp_path / "cache"
    assert len(list(cache.root.rglob("*.u8"))) == 2 * (3 + 1)  # per geometry: 3 images, 1 mask
    monkeypatch.setenv(CACHE_ENV, "off")
    assert default_cache() is None and AnomalyDataset(rows, 16).cache is None
