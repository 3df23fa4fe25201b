"""Figure: per category, the reference image beside its captions at each level."""

from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
from PIL import Image

from fsadlib.captions.schema import Captions
from fsadlib.data.files import resolve_path


def caption_figure(captions: list[Captions], width: int = 90):
    """One row per category: reference image (left), the three levels and the caption (right)."""
    fig, axes = plt.subplots(len(captions), 2, figsize=(14, 3.2 * len(captions)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 4]})
    for (ax_img, ax_txt), c in zip(axes, captions):
        ref = c.source.get("reference_image")
        if ref:
            with Image.open(resolve_path(ref)) as im:
                ax_img.imshow(im.convert("RGB"))
        ax_img.set_title(c.category)
        ax_img.axis("off")
        lines = [f"L1  foreground: {c.foreground} | background: {c.background}",
                 f"L2  relation: {c.relation}"]
        lines += [f"L2  {n} ({c.number[i]}) @ {c.location[i]}  |  L3  {c.color[i]}, {c.texture[i]}, {c.shape[i]}: "
                  f"{c.entity_caption[i]}" for i, n in enumerate(c.entity)]
        lines += [f"caption: {c.caption}"]
        text = "\n".join(textwrap.fill(line, width, subsequent_indent="      ") for line in lines)
        ax_txt.text(0, 1, text, va="top", ha="left", family="monospace", fontsize=8)
        ax_txt.axis("off")
    fig.tight_layout()
    return fig
