"""The defect phrases MLLP writes into its handcrafted abnormal texts.

``workbench``: the captions' own ``anomaly_phrases`` (templates with one ``{}`` for the noun, see
:mod:`fsadlib.captions.vocab`). ``paper``: FineGrainedAD's public per-class vocabulary
(``paper_phrases.json``, 15 MVTec AD + 12 VisA categories, quirks kept), looked up by category name as
the public code does; a category it does not list, and every category of the synthetic data set, keeps
the captions' phrases (the public code has no phrases for them).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from fsadlib.captions import Captions

PAPER_PHRASES_FILE = Path(__file__).with_name("paper_phrases.json")


@cache
def paper_phrase_table() -> dict[str, tuple[str, ...]]:
    """category -> the public code's defect templates (MVTec AD and VisA merged; no name is in both)."""
    data = json.loads(PAPER_PHRASES_FILE.read_text())
    return {category: tuple(phrases) for dataset in ("mvtec", "visa") for category, phrases in data[dataset].items()}


def defect_phrases(captions: Captions, paper: bool) -> tuple[str, ...]:
    """The templates of ``captions``' category: the public vocabulary under ``paper`` where it has the
    category (not for the synthetic data set), else the captions' ``anomaly_phrases``."""
    if paper and captions.dataset != "synthetic":
        return paper_phrase_table().get(captions.category, captions.anomaly_phrases)
    return captions.anomaly_phrases
