"""The one image loader: every Pillow mode by its documented rule, errors naming the file."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fsadlib.data import load_images, load_mask, read_image
from fsadlib.data.images import image_size


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 1000], [32768, 65280, 65535]], np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(values).save(path)  # a real 16-bit grey PNG
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")  # Pillow opens it as I;16 (or I): not an 8-bit mode
    rgb = np.asarray(read_image(path))
    expected = np.rint(values.astype(float) * 255 / 65535).astype(np.uint8)  # 0 1 4 128 254 255
    assert rgb.shape == (2, 3, 3) and np.array_equal(rgb[..., 0], expected)
    assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])
    # Pillow's own convert("RGB") clips (everything above 255 white): the bug this rule replaces
    with Image.open(path) as raw:
        assert np.asarray(raw.convert("RGB"))[1, 0, 0] == 255 != expected[1, 0]


def test_32_bit_integer_grey_in_16_bit_range_and_out_of_it(tmp_path):
    ok = tmp_path / "i32.tif"
    Image.fromarray(np.array([[0, 65535]], np.int32), "I").save(ok)
    assert np.asarray(read_image(ok))[0, :, 0].tolist() == [0, 255]
    bad = tmp_path / "i32_big.tif"
    Image.fromarray(np.array([[0, 70000]], np.int32), "I").save(bad)
    with pytest.raises(ValueError, match=r"i32_big\.tif.*outside the 16-bit range"):
        read_image(bad)


def test_float_grey_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "f.tif"
    Image.fromarray(np.array([[0.5, 2.0]], np.float32), "F").save(path)
    with pytest.raises(ValueError, match=r"f\.tif.*mode F"):
        read_image(path)


def test_palette_rgba_cmyk_grey_and_bilevel(tmp_path):
    colour = (200, 30, 90)
    palette = Image.new("P", (4, 4))
    palette.putpalette([0, 0, 0, *colour] + [0] * (3 * 254))
    palette.putdata([1] * 16)
    palette.info["transparency"] = 0
    palette.save(tmp_path / "p.png")
    Image.new("RGBA", (4, 4), (*colour, 10)).save(tmp_path / "rgba.png")  # alpha dropped, colour kept
    Image.new("CMYK", (4, 4), (0, 255, 0, 55)).save(tmp_path / "cmyk.jpg", quality=100)
    Image.new("L", (4, 4), 77).save(tmp_path / "l.png")
    Image.new("1", (4, 4), 1).save(tmp_path / "one.png")
    assert np.asarray(read_image(tmp_path / "p.png"))[0, 0].tolist() == list(colour)
    assert np.asarray(read_image(tmp_path / "rgba.png"))[0, 0].tolist() == list(colour)
    cmyk = np.asarray(read_image(tmp_path / "cmyk.jpg"))[0, 0].astype(int)  # R = 255 - (C + K) ...
    assert np.abs(cmyk - [200, 0, 200]).max() <= 3
    assert np.asarray(read_image(tmp_path / "l.png"))[0, 0].tolist() == [77, 77, 77]
    assert np.asarray(read_image(tmp_path / "one.png"))[0, 0].tolist() == [255, 255, 255]
    for name in ("p.png", "rgba.png", "cmyk.jpg", "l.png", "one.png"):
        assert read_image(tmp_path / name).mode == "RGB"


def test_decompression_bomb_is_an_error_naming_the_file(tmp_path, monkeypatch):
    path = tmp_path / "huge.png"
    Image.new("RGB", (40, 30)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1200 px: Pillow only warns (< 2x the limit)
    for read in (read_image, image_size, lambda p: load_images([p], 8), lambda p: load_mask(p, 8)):
        with pytest.raises(ValueError, match=r"huge\.png is larger than Pillow's decompression-bomb limit"):
            read(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # > 2x: Pillow raises its own error
    with pytest.raises(ValueError, match=r"huge\.png is larger"):
        read_image(path)


def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.png"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"junk\.png"):
        read_image(tmp_path / "junk.png")
    good = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(good)
    good.write_bytes(good.read_bytes()[:200])  # truncated pixel data
    with pytest.raises(ValueError, match=r"cut\.png"):
        load_images([good], 8)
