"""Category folder name -> the class name written into prompts.

MVTec AD and VisA folder names are not all words ("pcb1", "pipe_fryum", "chewinggum"); the CLIP-AD
papers (Bayes-PFL, AnomalyCLIP, APRIL-GAN) map them as below. Any other name has "_" replaced by a
space and is lower-cased.
"""

from __future__ import annotations

CLASS_NAMES: dict[str, str] = {
    "pcb1": "printed circuit board",
    "pcb2": "printed circuit board",
    "pcb3": "printed circuit board",
    "pcb4": "printed circuit board",
    "macaroni1": "macaroni",
    "macaroni2": "macaroni",
    "pipe_fryum": "pipe fryum",
    "chewinggum": "chewing gum",
    "metal_nut": "metal nut",
}


def class_name(category: str, mapping: dict[str, str] | None = None) -> str:
    """Prompt class name of a category folder name (``mapping`` overrides the default table)."""
    table = CLASS_NAMES if mapping is None else mapping
    return table.get(category, category.replace("_", " ").lower())
