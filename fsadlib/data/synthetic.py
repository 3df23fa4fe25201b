"""The embedded default data set: an MVTec-AD-shaped tree drawn procedurally, with exact masks.

Categories (names fixed; ``params.yaml`` protocol splits them into auxiliary / validation / target):

- textures ``TEXTURES``: ``noise`` (fractal Perlin noise), ``stripes`` (sinusoid, jittered angle,
  period and phase), ``grid`` (lines, jittered offset and pitch), and random crops (jittered scale,
  flips) of the CC0 textures scikit-image ships, ``brick``, ``grass``, ``gravel``, tinted;
- objects ``OBJECTS``: ``disc``, ``polygon`` (hexagon), ``cross``: a shaded polygon on a noisy
  background with pose jitter (rotation +-15 deg, scale +-7 %, shift +-5 % of the side).

Defects (``defect_kinds``): textures get ``scratch, hole, stain, color_spot``; objects get
``scratch, hole, color_spot, missing_part, extra_part, deformation``. A defect is drawn as a pixel
region R that is known exactly: paint-type defects change only the pixels of R (R clipped to the
object for objects); shape-type defects change the object's support S to S' and R = S xor S'. The mask
is R, so a pixel outside the mask is bit-identical to the defect-free image. Defect areas are drawn
log-uniformly between ``MIN_DEFECT_AREA`` pixels and ``MAX_DEFECT_FRACTION`` of the image; a draw
whose region is empty or larger than that fraction is redrawn.

Determinism: image ``i`` of a (category, part) pair uses ``np.random.default_rng([seed, crc32(category),
part, i])``, so an image does not depend on the other categories or on the counts asked for.
Layout written by :func:`generate` (``<root>/<category>/``): ``train/good/NNN.png``,
``test/good/NNN.png``, ``test/<defect>/NNN.png``, ``ground_truth/<defect>/NNN_mask.png`` (0/255).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage
from skimage import draw

from fsadlib.data.noise import fractal_noise
from fsadlib.io import write_json
from fsadlib.progress import progress

TEXTURES: tuple[str, ...] = ("noise", "stripes", "grid", "brick", "grass", "gravel")
OBJECTS: tuple[str, ...] = ("disc", "polygon", "cross")
CATEGORIES: tuple[str, ...] = TEXTURES + OBJECTS
TEXTURE_DEFECTS: tuple[str, ...] = ("scratch", "hole", "stain", "color_spot")
OBJECT_DEFECTS: tuple[str, ...] = ("scratch", "hole", "color_spot", "missing_part", "extra_part", "deformation")
MIN_DEFECT_AREA = 4
MAX_DEFECT_FRACTION = 0.10
_MAX_DRAWS = 100
_PARTS = {"train": 0, "test_good": 1, "test_bad": 2}


@dataclass(frozen=True)
class SyntheticConfig:
    """``params.yaml: synthetic``. ``n_train`` must cover the largest k-shot size (8)."""

    seed: int = 0
    image_size: int = 128
    n_train: int = 20
    n_test_good: int = 6
    n_test_bad: int = 8
    categories: tuple[str, ...] = CATEGORIES

    def for_smoke(self) -> SyntheticConfig:
        """The tiny sizes of a smoke run (``smoke=1``): 64 px, 8 train / 2 good / 6 defective per category."""
        return dataclasses.replace(self, image_size=64, n_train=8, n_test_good=2, n_test_bad=6)


def defect_kinds(category: str) -> tuple[str, ...]:
    """The defect types drawn for ``category`` (cycled over its defective test images)."""
    _check_categories([category])
    return OBJECT_DEFECTS if category in OBJECTS else TEXTURE_DEFECTS


def generate(root: str | Path, seed: int = 0, image_size: int = 128, n_train: int = 20, n_test_good: int = 6,
             n_test_bad: int = 8, categories: tuple[str, ...] | list[str] = CATEGORIES) -> Path:
    """Write the data set to ``root`` (replacing it) and return ``root``.

    The tree is written to ``<root>.partial`` first and moved into place at the end, so an
    interrupted run never leaves a half-written data set. ``root/synthetic.json`` records the call.
    """
    _check_categories(categories)
    root = Path(root)
    partial = root.with_name(f".{root.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    for category in progress(categories, desc="synthetic categories"):
        out = partial / category
        for i in range(n_train):
            _save(normal_image(category, _rng(seed, category, "train", i), image_size),
                  out / "train" / "good" / f"{i:03d}.png")
        for i in range(n_test_good):
            _save(normal_image(category, _rng(seed, category, "test_good", i), image_size),
                  out / "test" / "good" / f"{i:03d}.png")
        kinds = defect_kinds(category)
        for i in range(n_test_bad):
            defect, number = kinds[i % len(kinds)], i // len(kinds)
            _, image, mask = defect_image(category, defect, _rng(seed, category, "test_bad", i), image_size)
            _save(image, out / "test" / defect / f"{number:03d}.png")
            _save(mask.astype(np.uint8) * 255, out / "ground_truth" / defect / f"{number:03d}_mask.png")
    write_json(partial / "synthetic.json", {"seed": seed, "image_size": image_size, "n_train": n_train,
                                                "n_test_good": n_test_good, "n_test_bad": n_test_bad,
                                                "categories": list(categories)})
    if root.exists():
        shutil.rmtree(root)
    os.replace(partial, root)
    return root


def normal_image(category: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """A defect-free image of ``category``, uint8 ``[size, size, 3]``."""
    _check_categories([category])
    if category in OBJECTS:
        return _quantise(_ObjectScene(category, rng, size).render())
    return _quantise(_texture(category, rng, size))


def defect_image(category: str, defect: str, rng: np.random.Generator, size: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(clean, defective, mask)``: uint8 ``[S, S, 3]`` twice and bool ``[S, S]``.

    ``clean`` is the same draw without the defect; ``defective == clean`` outside ``mask``.
    """
    if defect not in defect_kinds(category):
        raise KeyError(f"defect '{defect}' is not drawn for category '{category}'; "
                       f"known: {list(defect_kinds(category))}")
    is_object = category in OBJECTS
    scene = _ObjectScene(category, rng, size) if is_object else None
    clean = scene.render() if is_object else _texture(category, rng, size)
    for _ in range(_MAX_DRAWS):
        area = float(np.exp(rng.uniform(np.log(MIN_DEFECT_AREA), np.log(MAX_DEFECT_FRACTION * size * size))))
        if is_object:
            image, mask = scene.with_defect(defect, area, rng)
        else:
            image, mask = _texture_defect(clean, defect, area, rng)
        if 1 <= mask.sum() <= MAX_DEFECT_FRACTION * size * size:
            return _quantise(clean), _quantise(image), mask
    raise RuntimeError(f"could not draw a '{defect}' defect on '{category}' in {_MAX_DRAWS} tries")


# -- textures ----------------------------------------------------------------------------------------
_TINTS = {"brick": (0.80, 0.40, 0.28), "grass": (0.40, 0.72, 0.28), "gravel": (0.70, 0.68, 0.64)}


@functools.cache
def _skimage_texture(name: str) -> np.ndarray:
    import skimage.data

    return getattr(skimage.data, name)().astype(np.float32) / 255.0


def _texture(category: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """Float ``[S, S, 3]`` in [0, 1]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if category == "noise":
        t = np.clip(0.5 + 0.9 * fractal_noise((size, size), 4, 3, rng), 0, 1)[..., None]
        image = _mix((0.55, 0.45, 0.35), (0.88, 0.82, 0.70), t)
    elif category == "stripes":
        angle = 0.5 + rng.uniform(-0.05, 0.05)
        period = size / 8 * rng.uniform(0.95, 1.05)
        phase = rng.uniform(0, 2 * np.pi)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period + phase)
        image = _mix((0.15, 0.20, 0.45), (0.85, 0.85, 0.80), t[..., None])
    elif category == "grid":
        pitch = size / 6 * rng.uniform(0.97, 1.03)
        width = max(1, size // 64)
        oy, ox = rng.uniform(0, pitch, size=2)
        lines = ((yy + oy) % pitch < width) | ((xx + ox) % pitch < width)
        image = _mix((0.80, 0.78, 0.70), (0.25, 0.25, 0.30), lines[..., None].astype(np.float32))
    else:
        source = _skimage_texture(category)
        side = int(source.shape[0] * rng.uniform(0.45, 0.55))
        y0, x0 = rng.integers(0, source.shape[0] - side + 1, size=2)
        crop = source[y0:y0 + side, x0:x0 + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        if category != "brick" and rng.random() < 0.5:
            crop = crop[::-1]
        gray = np.asarray(Image.fromarray(crop).resize((size, size), Image.BICUBIC), np.float32)
        image = np.clip(gray[..., None] * np.array(_TINTS[category], np.float32) * 1.3, 0, 1)
    image = image * rng.uniform(0.95, 1.05) + rng.normal(0, 0.01, size=image.shape)
    return np.clip(image, 0, 1).astype(np.float32)


def _texture_defect(clean: np.ndarray, defect: str, area: float, rng: np.random.Generator
                    ) -> tuple[np.ndarray, np.ndarray]:
    size = clean.shape[0]
    image = clean.copy()
    if defect == "scratch":
        region = _curve(size, area, rng, center=rng.uniform(0, size, 2))
        image[region] = 0.2 * clean[region] + 0.8 * (0.95 if rng.random() < 0.5 else 0.05)
    elif defect == "hole":
        region = _ellipse(size, area, rng, center=rng.uniform(0, size, 2))
        image[region] = 0.03
    elif defect == "stain":
        blob = _ellipse(size, 2 * area, rng, center=rng.uniform(0, size, 2))
        region = blob & (fractal_noise((size, size), 8, 2, rng) > 0)
        image[region] = 0.35 * clean[region] + 0.65 * np.array((0.35, 0.22, 0.10), np.float32)
    else:  # color_spot
        region = _ellipse(size, area, rng, center=rng.uniform(0, size, 2))
        image[region] = 0.2 * clean[region] + 0.8 * _saturated_colour(rng)
    return image, region


# -- objects -----------------------------------------------------------------------------------------
_OBJECT_COLOURS = {"disc": (0.85, 0.55, 0.20), "polygon": (0.35, 0.55, 0.85), "cross": (0.78, 0.78, 0.74)}


class _ObjectScene:
    """A shaded object polygon on a noisy background; ``render(support)`` composes the two layers.

    The background and fill layers are drawn once, so re-rendering with another support changes only
    the pixels whose support membership changed.
    """

    def __init__(self, category: str, rng: np.random.Generator, size: int) -> None:
        self.size = size
        angle = rng.uniform(-np.pi / 12, np.pi / 12)
        scale = size * rng.uniform(0.93, 1.07)
        self.center = size / 2 + rng.uniform(-0.05, 0.05, size=2) * size
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        self.boundary = self.center + (_resample(_unit_outline(category), 256) @ rot.T) * scale  # [N, 2] (y, x)
        self.support = self._polygon(self.boundary)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        noise = 0.04 * fractal_noise((size, size), 4, 2, rng)[..., None]
        self.background = np.clip(np.array((0.16, 0.16, 0.18), np.float32) + noise, 0, 1)
        shade = 0.8 + 0.2 * ((xx + yy) / (2 * size))[..., None]
        colour = np.array(_OBJECT_COLOURS[category], np.float32) * rng.uniform(0.95, 1.05)
        self.fill = np.clip(colour * shade + 0.5 * noise, 0, 1)
        self.grain = rng.normal(0, 0.01, size=(size, size, 3)).astype(np.float32)

    def render(self, support: np.ndarray | None = None) -> np.ndarray:
        support = self.support if support is None else support
        return np.clip(np.where(support[..., None], self.fill, self.background) + self.grain, 0, 1)

    def with_defect(self, defect: str, area: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        inside = np.argwhere(self.support)
        if defect in ("scratch", "hole", "color_spot"):
            center = inside[rng.integers(len(inside))] + 0.5
            shape = _curve if defect == "scratch" else _ellipse
            region = shape(self.size, area, rng, center=center) & self.support
            image = self.render()
            if defect == "scratch":
                image[region] = 0.45 * image[region]
            elif defect == "hole":
                image[region] = self.render(np.zeros_like(self.support))[region]
            else:
                image[region] = 0.2 * image[region] + 0.8 * _saturated_colour(rng)
            return image, region
        j = rng.integers(len(self.boundary))
        point = self.boundary[j]
        outward = (point - self.center) / np.linalg.norm(point - self.center)
        if defect == "missing_part":
            radius = min(np.sqrt(2 * area / np.pi), 0.25 * self.size)
            new = self.support & ~_disc(self.size, point, radius)
        elif defect == "extra_part":
            radius = min(np.sqrt(area / np.pi), 0.2 * self.size)
            new = self.support | _disc(self.size, point + 0.6 * radius * outward, radius)
        else:  # deformation: a Gaussian bump or dent of the outline, measured along the arc
            arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(self.boundary, axis=0), axis=1))])
            dist = np.abs(arc - arc[j])
            dist = np.minimum(dist, arc[-1] - dist)
            sigma = rng.uniform(0.04, 0.1) * arc[-1]
            amplitude = np.clip(area / (2.5 * sigma), 1.5, 0.2 * self.size) * rng.choice([-1.0, 1.0])
            radial = (self.boundary - self.center) / np.linalg.norm(self.boundary - self.center, axis=1, keepdims=True)
            moved = self.boundary + amplitude * np.exp(-0.5 * (dist / sigma) ** 2)[:, None] * radial
            new = self._polygon(moved)
        return self.render(new), new ^ self.support

    def _polygon(self, vertices: np.ndarray) -> np.ndarray:
        """Filled polygon (PIL rasteriser) from ``(y, x)`` vertices, bool ``[S, S]``."""
        canvas = Image.new("1", (self.size, self.size))
        ImageDraw.Draw(canvas).polygon([(float(x), float(y)) for y, x in vertices], fill=1)
        return np.asarray(canvas, bool)


def _unit_outline(category: str) -> np.ndarray:
    """Closed outline ``[V, 2]`` (y, x) in units of the image side, centred on 0."""
    if category == "disc":
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        return 0.30 * np.stack([np.sin(t), np.cos(t)], axis=1)
    if category == "polygon":
        t = np.linspace(0, 2 * np.pi, 6, endpoint=False) + np.pi / 6
        return 0.32 * np.stack([np.sin(t), np.cos(t)], axis=1)
    a, b = 0.10, 0.32  # cross: arm half-width, arm half-length
    return np.array([(-b, -a), (-b, a), (-a, a), (-a, b), (a, b), (a, a), (b, a), (b, -a), (a, -a),
                     (a, -b), (-a, -b), (-a, -a)])


def _resample(outline: np.ndarray, n: int) -> np.ndarray:
    """``n`` points evenly spaced along the closed polyline ``outline``."""
    closed = np.vstack([outline, outline[:1]])
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(closed, axis=0), axis=1))])
    t = np.linspace(0, arc[-1], n, endpoint=False)
    return np.stack([np.interp(t, arc, closed[:, 0]), np.interp(t, arc, closed[:, 1])], axis=1)


# -- regions -----------------------------------------------------------------------------------------
def _ellipse(size: int, area: float, rng: np.random.Generator, center: np.ndarray) -> np.ndarray:
    """Boolean ``[S, S]`` ellipse of about ``area`` pixels, random aspect (1:2 .. 2:1) and rotation."""
    aspect = rng.uniform(0.5, 2.0)
    ry = np.sqrt(area / (np.pi * aspect))
    region = np.zeros((size, size), bool)
    rr, cc = draw.ellipse(center[0], center[1], ry, aspect * ry, shape=(size, size),
                          rotation=rng.uniform(0, np.pi))
    region[rr, cc] = True
    return region


def _disc(size: int, center: np.ndarray, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return (yy + 0.5 - center[0]) ** 2 + (xx + 0.5 - center[1]) ** 2 <= radius**2


def _curve(size: int, area: float, rng: np.random.Generator, center: np.ndarray) -> np.ndarray:
    """A quadratic Bezier stroke through ``center``, width 1-3 px, length ``~area / width``."""
    width = 1 if area < 60 else int(rng.integers(1, 4))
    length = float(np.clip(area / width, 3, 0.8 * size))
    direction = rng.uniform(0, 2 * np.pi)
    step = 0.5 * length * np.array([np.sin(direction), np.cos(direction)])
    bend = rng.uniform(-0.3, 0.3) * length * np.array([np.cos(direction), -np.sin(direction)])
    t = np.linspace(0, 1, int(2 * length) + 2)[:, None]
    p0, p1, p2 = center - step, center + bend, center + step
    points = np.rint((1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2).astype(int)
    points = points[((points >= 0) & (points < size)).all(axis=1)]
    region = np.zeros((size, size), bool)
    region[points[:, 0], points[:, 1]] = True
    return ndimage.binary_dilation(region, np.ones((width, width), bool)) if width > 1 else region


# -- helpers -----------------------------------------------------------------------------------------
def _mix(c0: tuple[float, ...], c1: tuple[float, ...], t: np.ndarray) -> np.ndarray:
    return (np.array(c0, np.float32) * (1 - t) + np.array(c1, np.float32) * t).astype(np.float32)


def _saturated_colour(rng: np.random.Generator) -> np.ndarray:
    colour = np.array([1.0, rng.uniform(0, 1), 0.0], np.float32)
    return rng.permutation(colour)


def _quantise(image: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)


def _rng(seed: int, category: str, part: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(category.encode()), _PARTS[part], index])


def _save(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, compress_level=1)


def _check_categories(categories: tuple[str, ...] | list[str]) -> None:
    unknown = [c for c in categories if c not in CATEGORIES]
    if unknown:
        raise KeyError(f"unknown synthetic categories {unknown}; known: {list(CATEGORIES)}")
