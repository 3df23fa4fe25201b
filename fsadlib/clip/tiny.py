"""The tiny random-init CLIP used by the tests and the embedded default pipeline.

``fsad-tiny`` is a real open_clip ``CLIP`` (same code path as ViT-B-16-plus-240 or ViT-L-14-336),
only small: vision ViT with 12 blocks of width 48 (3 heads), patch 8, native 64 px (8 x 8 grid);
text tower of 4 blocks of width 32 with the real 49408-token BPE vocabulary (the vocabulary must stay
49408 so the bundled tokenizer works); joint embedding 24. Vision width, text width and embedding
width all differ on purpose, so a dimension mix-up fails loudly in tests. Twelve vision blocks let the
paper tap lists that stay within 12 blocks (InCTRL 7/9/11, FineGrainedAD 3/8) run unchanged.
"""

from __future__ import annotations

from pathlib import Path

import open_clip

TINY_ARCH = "fsad-tiny"
ALIASES = {"tiny": TINY_ARCH}
_CONFIG_DIR = Path(__file__).parent / "model_configs"


def register_model_configs() -> None:
    """Make ``fsad-tiny`` (and any JSON in model_configs/) known to open_clip. Idempotent."""
    if TINY_ARCH not in open_clip.list_models():
        open_clip.add_model_config(_CONFIG_DIR)


def resolve_arch(arch: str) -> str:
    """Map the workbench aliases (``tiny``) to open_clip model names."""
    return ALIASES.get(arch, arch)
