"""Offline MFSC captioner: derive the three caption levels from normal images, with no model.

FineGrainedAD asks an MLLM (GPT-4o) to describe one normal image per category at three views; this
captioner measures the same things directly, so the pipeline runs with no network and no weights:

1. Image view (foreground / background). The background colour is the median of a border ring of
   width ``border`` (fraction of the side); a pixel is foreground when its RGB distance to it exceeds
   ``min_contrast`` (after a 3x3 median filter). The category is a *texture* (one surface, no
   background) when the border ring itself is not uniform (median distance to its median above
   ``texture_spread``), the foreground covers more than ``texture_cover`` of the image, it touches
   all four sides (more than ``texture_border`` of each side's strip), or no part of it reaches
   ``min_area``.
2. Foreground view (entities, number, location, relation). Foreground colours are clustered in
   CIELAB (k-means with ``max_colors`` centres, centres closer than ``merge_delta_e`` merged); the
   connected parts (8-connectivity, area >= ``min_area`` of the image) of each colour cluster are
   grouped into entities by (colour, shape), so two equal discs are one entity with number "two".
   The ``max_entities`` largest entities are kept (the MVTec/VisA captions have 1 to 5). Location is
   the 3x3 cell of the entity centroid; the relation compares consecutive entities (containment of
   bounding boxes of single parts, else the dominant axis of the centroid offset).
3. Component view (colour, texture, shape). Colour: nearest named prototype of ``vocab.COLORS`` in
   CIELAB. Texture from the grey image inside the eroded region: mean Sobel magnitude g and the
   structure-tensor anisotropy a = (l1 - l2) / (l1 + l2): g < ``smooth_grad`` -> smooth,
   a > ``stripe_anisotropy`` -> striped, g > ``coarse_grad`` -> coarse, else fine-grained. Shape from
   the region of the largest part: a hole (Euler number < 1) -> ring-shaped; extent >= 0.9 ->
   square / rectangular (aspect ratio); circularity 4 pi A / P^2 >= 0.8 -> round / oval
   (eccentricity); eccentricity > 0.95 -> elongated; solidity < 0.8 -> irregular; extent <= 0.6 and
   solidity >= 0.9 -> triangular; else polygonal. A texture is one "flat" entity on the whole image.

Every image of ``images`` is described; the entity count is the most frequent one over the images and
the first image with that count is the reference the captions are written from. Deterministic.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from scipy import ndimage
from skimage import color as skcolor
from skimage import measure, morphology
from sklearn.cluster import AgglomerativeClustering, KMeans

from fsadlib.captions.schema import Captions, validate
from fsadlib.captions.vocab import COLORS, number_word
from fsadlib.data.files import resolve_path

OFFLINE_VERSION = "offline-1"
_COLOR_NAMES = tuple(COLORS)
_COLOR_LAB = skcolor.rgb2lab(np.array([COLORS[c] for c in _COLOR_NAMES])[None])[0]


@dataclass(frozen=True)
class OfflineConfig:
    work_size: int = 128
    border: float = 0.04
    min_contrast: float = 0.12
    texture_spread: float = 0.08
    texture_cover: float = 0.85
    texture_border: float = 0.1
    max_colors: int = 4
    merge_delta_e: float = 25.0
    min_area: float = 0.01
    max_entities: int = 5
    smooth_grad: float = 0.02
    coarse_grad: float = 0.12
    stripe_anisotropy: float = 0.6


@dataclass
class Entity:
    """One entity of an image: a group of same-colour, same-shape connected parts."""

    color: str
    texture: str
    shape: str
    count: int
    area: float                      # fraction of the image
    centroid: tuple[float, float]    # (row, col) in [0, 1]
    bbox: tuple[float, float, float, float]  # (row0, col0, row1, col1) in [0, 1]
    name: str = ""


@dataclass
class ImageDescription:
    is_texture: bool
    background: str
    entities: list[Entity] = field(default_factory=list)


def read_rgb(path: str | Path, size: int) -> np.ndarray:
    """[size, size, 3] float RGB in [0, 1] of a portable path (``fsadlib.data.files.resolve_path``);
    ``FileNotFoundError`` / ``ValueError`` name the file."""
    path = resolve_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            im = im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"unreadable image {path}: {err}") from err


def color_name(rgb: np.ndarray) -> str:
    """Nearest ``vocab.COLORS`` name of an sRGB colour [3] in [0, 1] (CIELAB distance)."""
    lab = skcolor.rgb2lab(np.clip(rgb, 0, 1).reshape(1, 1, 3))[0, 0]
    return _COLOR_NAMES[int(np.argmin(np.linalg.norm(_COLOR_LAB - lab, axis=1)))]


def location_word(row: float, col: float) -> str:
    """3x3 cell of a point in [0, 1]^2: "top left", "top", ..., "center", ..., "bottom right"."""
    r = "top" if row < 1 / 3 else "bottom" if row > 2 / 3 else ""
    c = "left" if col < 1 / 3 else "right" if col > 2 / 3 else ""
    return f"{r} {c}".strip() or "center"


def texture_word(gray: np.ndarray, mask: np.ndarray, cfg: OfflineConfig) -> str:
    """Texture of ``gray`` [H, W] inside ``mask`` (see the module docstring)."""
    inner = ndimage.binary_erosion(mask, morphology.disk(2)) if mask.sum() > 50 else mask
    if not inner.any():
        inner = mask
    gy, gx = ndimage.sobel(gray, 0) / 8, ndimage.sobel(gray, 1) / 8
    g = float(np.hypot(gx, gy)[inner].mean())
    if g < cfg.smooth_grad:
        return "smooth"
    jxx, jyy, jxy = (gx * gx)[inner].sum(), (gy * gy)[inner].sum(), (gx * gy)[inner].sum()
    root = np.sqrt((jxx - jyy) ** 2 + 4 * jxy ** 2)
    anisotropy = float(root / (jxx + jyy + 1e-12))
    if anisotropy > cfg.stripe_anisotropy:
        return "striped"
    return "coarse" if g > cfg.coarse_grad else "fine-grained"


def shape_word(region) -> str:
    """Shape of one ``skimage.measure.regionprops`` region (see the module docstring)."""
    if region.euler_number < 1:
        return "ring-shaped"
    h, w = region.bbox[2] - region.bbox[0], region.bbox[3] - region.bbox[1]
    if region.extent >= 0.9:
        return "square" if 0.8 <= h / w <= 1.25 else "rectangular"
    perimeter = max(region.perimeter, 1e-6)
    circularity = 4 * np.pi * region.area / perimeter ** 2
    if circularity >= 0.8:
        return "round" if region.eccentricity < 0.6 else "oval"
    if region.eccentricity > 0.95:
        return "elongated"
    if region.solidity < 0.8:
        return "irregular"
    if region.extent <= 0.6 and region.solidity >= 0.9:
        return "triangular"
    return "polygonal"


def describe_image(img: np.ndarray, cfg: OfflineConfig = OfflineConfig()) -> ImageDescription:
    """Background colour and entities of one RGB image [H, W, 3] in [0, 1]."""
    h, w, _ = img.shape
    b = max(1, round(cfg.border * min(h, w)))
    ring = np.concatenate([img[:b].reshape(-1, 3), img[-b:].reshape(-1, 3),
                           img[:, :b].reshape(-1, 3), img[:, -b:].reshape(-1, 3)])
    bg = np.median(ring, axis=0)
    spread = float(np.median(np.linalg.norm(ring - bg, axis=1)))
    dist = ndimage.median_filter(np.linalg.norm(img - bg, axis=-1), size=3)
    fg = ndimage.binary_opening(dist > cfg.min_contrast, morphology.disk(1))
    gray = img.mean(axis=-1)
    sides = [fg[:b].mean(), fg[-b:].mean(), fg[:, :b].mean(), fg[:, -b:].mean()]
    all_sides = min(sides) > cfg.texture_border
    if spread > cfg.texture_spread or fg.mean() > cfg.texture_cover or all_sides or not fg.any():
        return _texture(img, gray, cfg)

    lab = skcolor.rgb2lab(img)
    groups = _color_groups(lab[fg], cfg)
    labels = np.full((h, w), -1)
    labels[fg] = groups
    found: dict[tuple[int, str], list] = {}
    for g in np.unique(groups):
        parts = measure.label(ndimage.binary_opening(labels == g, morphology.disk(1)), connectivity=2)
        for region in measure.regionprops(parts):
            if region.area >= cfg.min_area * h * w:
                found.setdefault((int(g), shape_word(region)), []).append(region)
    entities = []
    for (g, shape), regions in found.items():
        coords = np.concatenate([r.coords for r in regions])
        mask = np.zeros((h, w), bool)
        mask[coords[:, 0], coords[:, 1]] = True
        entities.append(Entity(
            color=color_name(img[mask].mean(0)), texture=texture_word(gray, mask, cfg), shape=shape,
            count=len(regions), area=len(coords) / (h * w),
            centroid=(coords[:, 0].mean() / h, coords[:, 1].mean() / w),
            bbox=(coords[:, 0].min() / h, coords[:, 1].min() / w, (coords[:, 0].max() + 1) / h,
                  (coords[:, 1].max() + 1) / w)))
    if not entities:  # only specks differ from the border colour: a texture
        return _texture(img, gray, cfg)
    entities.sort(key=lambda e: -e.area)
    return ImageDescription(is_texture=False, background=color_name(bg), entities=entities[:cfg.max_entities])


def _texture(img: np.ndarray, gray: np.ndarray, cfg: OfflineConfig) -> ImageDescription:
    """One flat entity covering the whole image, no background."""
    whole = np.ones(gray.shape, bool)
    entity = Entity(color=color_name(_dominant_color(img.reshape(-1, 3), cfg)), texture=texture_word(gray, whole, cfg),
                    shape="flat", count=1, area=1.0, centroid=(0.5, 0.5), bbox=(0.0, 0.0, 1.0, 1.0))
    return ImageDescription(is_texture=True, background="no", entities=[entity])


class OfflineCaptioner:
    """Images of one category -> :class:`Captions` (see the module docstring)."""

    name = "offline"

    def __init__(self, config: OfflineConfig = OfflineConfig()) -> None:
        self.config = config

    def __call__(self, image_paths: list[str], dataset: str, category: str, class_name: str,
                 anomaly_phrases: tuple[str, ...]) -> Captions:
        if not image_paths:
            raise ValueError(f"offline captioner: no normal images for {dataset}/{category}")
        described = [describe_image(read_rgb(p, self.config.work_size), self.config) for p in image_paths]
        counts = [len(d.entities) for d in described]
        mode = Counter(counts).most_common(1)[0][0]
        ref = counts.index(mode)
        source = {"captioner": self.name, "version": OFFLINE_VERSION, "images": [str(p) for p in image_paths],
                  "entity_counts": counts, "reference_image": str(image_paths[ref]),
                  "config": asdict(self.config)}
        return write_captions(described[ref], dataset, category, class_name, anomaly_phrases, source)


def write_captions(desc: ImageDescription, dataset: str, category: str, class_name: str,
                   anomaly_phrases: tuple[str, ...], source: dict) -> Captions:
    """Turn an :class:`ImageDescription` into the caption levels (English templates)."""
    ents = desc.entities
    _name_entities(ents, class_name)
    locs = ["whole image" if desc.is_texture else location_word(*e.centroid) for e in ents]

    def entity_caption(e: Entity, loc: str) -> str:
        head = "a" if e.count == 1 else number_word(e.count)
        color = "" if e.color in e.name else f"{e.color} "
        shape = "" if e.shape in e.name else f"{e.shape} "
        plural = "s" if e.count > 1 else ""
        where = "covering the whole image" if loc == "whole image" else f"at the {loc}"
        return f"{head} {color}{e.texture} {shape}{e.name}{plural} {where}"

    if desc.is_texture:
        relation = f"the {class_name} covers the whole image"
        caption = f"a photo of {entity_caption(ents[0], locs[0])}."
    elif len(ents) == 1:
        relation = f"the {class_name} lies at the {locs[0]} of the {desc.background} background"
        caption = f"a photo of {entity_caption(ents[0], locs[0])} on a {desc.background} background."
    else:
        relation = ", ".join(_relation(a, b) for a, b in itertools.pairwise(ents))
        caption = (f"a photo of a {class_name} on a {desc.background} background, made of "
                   f"{number_word(len(ents))} kinds of parts: "
                   + ", ".join(entity_caption(e, l) for e, l in zip(ents, locs)) + ".")
    return validate(Captions(
        dataset=dataset, category=category, class_name=class_name, foreground=class_name,
        background=desc.background, entity=tuple(e.name for e in ents),
        number=tuple(number_word(e.count) for e in ents), location=tuple(locs), relation=relation,
        color=tuple(e.color for e in ents), texture=tuple(e.texture for e in ents),
        shape=tuple(e.shape for e in ents), entity_caption=tuple(entity_caption(e, l) for e, l in zip(ents, locs)),
        caption=caption, anomaly_phrases=tuple(anomaly_phrases), source=source), f"{dataset}/{category}")


def _dominant_color(pixels: np.ndarray, cfg: OfflineConfig) -> np.ndarray:
    lab = skcolor.rgb2lab(pixels.reshape(1, -1, 3))[0]
    groups = _color_groups(lab, cfg)
    top = Counter(groups.tolist()).most_common(1)[0][0]
    return pixels[groups == top].mean(0)


def _color_groups(lab: np.ndarray, cfg: OfflineConfig) -> np.ndarray:
    """Cluster index of every CIELAB colour [P, 3]: k-means, then merge centres within delta E."""
    rng = np.random.default_rng(0)
    sample = lab[rng.choice(len(lab), size=min(len(lab), 4000), replace=False)]
    k = min(cfg.max_colors, len(np.unique(sample.round(1), axis=0)))
    if k <= 1:
        return np.zeros(len(lab), dtype=int)
    km = KMeans(n_clusters=k, n_init=4, random_state=0).fit(sample)
    merged = AgglomerativeClustering(n_clusters=None, distance_threshold=cfg.merge_delta_e,
                                     linkage="complete").fit_predict(km.cluster_centers_)
    return merged[km.predict(lab)]


def _name_entities(ents: list[Entity], class_name: str) -> None:
    """One entity takes the class name; several are "<shape> part", "<colour> <shape> part", ..."""
    if len(ents) == 1:
        ents[0].name = class_name
        return
    for attempt in (lambda e: f"{e.shape} part", lambda e: f"{e.color} {e.shape} part"):
        names = [attempt(e) for e in ents]
        if len(set(names)) == len(names):
            break
    else:
        names = [f"{e.color} {e.shape} part {i + 1}" for i, e in enumerate(ents)]
    for e, n in zip(ents, names):
        e.name = n


def _relation(a: Entity, b: Entity) -> str:
    def inside(x: Entity, y: Entity) -> bool:
        return x.bbox[0] >= y.bbox[0] and x.bbox[1] >= y.bbox[1] and x.bbox[2] <= y.bbox[2] and x.bbox[3] <= y.bbox[3]
    if a.count == b.count == 1 and inside(b, a):
        return f"the {b.name} is inside the {a.name}"
    if a.count == b.count == 1 and inside(a, b):
        return f"the {a.name} is inside the {b.name}"
    dy, dx = b.centroid[0] - a.centroid[0], b.centroid[1] - a.centroid[1]
    if abs(dx) >= abs(dy):
        return f"the {a.name} is {'left' if dx > 0 else 'right'} of the {b.name}"
    return f"the {a.name} is {'above' if dy > 0 else 'below'} the {b.name}"
