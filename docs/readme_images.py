"""The README's screenshots from what the browser tests saved (``make screenshots``).

    python docs/readme_images.py reports/ui docs/img

Each listed screenshot is scaled to at most ``MAX_WIDTH`` px and stored as the smaller of an optimised
RGB PNG and a 256-colour PNG, so the committed images stay small (``MAX_BYTES`` each, checked).
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

IMAGES = ("explorer.png", "explorer_lab.png", "analysis_heatmaps.png", "analysis_metric_vs_k.png",
          "training_lab.png")
MAX_WIDTH = 1300
MAX_BYTES = 300_000


def shrink(src: Path, dst: Path) -> int:
    """Write ``src`` as a small PNG at ``dst``; returns its size in bytes."""
    image = Image.open(src).convert("RGB")
    if image.width > MAX_WIDTH:
        image = image.resize((MAX_WIDTH, round(image.height * MAX_WIDTH / image.width)), Image.LANCZOS)
    candidates = []
    for i, version in enumerate((image, image.quantize(256, method=Image.Quantize.MEDIANCUT,
                                                        dither=Image.Dither.NONE))):
        path = dst.with_suffix(f".{i}.png")
        version.save(path, optimize=True)
        candidates.append(path)
    best = min(candidates, key=lambda p: p.stat().st_size)
    best.replace(dst)
    for path in candidates:
        path.unlink(missing_ok=True)
    size = dst.stat().st_size
    if size > MAX_BYTES:
        raise ValueError(f"{dst}: {size} bytes, over {MAX_BYTES}")
    return size


def main(source: str, target: str) -> None:
    missing = [name for name in IMAGES if not (Path(source) / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{missing} not in {source} (run the browser tests: make screenshots)")
    Path(target).mkdir(parents=True, exist_ok=True)
    for name in IMAGES:
        print(f"{Path(target) / name}: {shrink(Path(source) / name, Path(target) / name)} bytes")


if __name__ == "__main__":
    main(*sys.argv[1:])
