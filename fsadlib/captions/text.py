"""Fit captions into the text encoder's context: split, warn, never cut silently.

CLIP's text tower reads 77 tokens (SOS + text + EOT); MLLP also inserts learnable context tokens,
so a caption has a smaller budget. Long LLM captions (PCB classes) exceed it, and open_clip's
tokenizer would silently truncate them. :func:`split_to_fit` instead splits a text at sentence
boundaries (then clause boundaries, then words) into pieces that each fit, and warns whenever it
had to split; MLLP encodes every piece and averages them like the other prompts of the level.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable

_SEPARATORS = (r"(?<=[.;!?])\s+", r"(?<=,)\s+", r"\s+")


def split_to_fit(text: str, n_tokens: Callable[[str], int], budget: int) -> list[str]:
    """Pieces of ``text`` with ``n_tokens(piece) <= budget`` each; the text itself when it fits.

    Pieces are greedy unions of consecutive sentences (or clauses, or words when a sentence alone
    is too long). Emits a ``UserWarning`` naming the text when it splits; raises ``ValueError`` when
    a single word does not fit.
    """
    if n_tokens(text) <= budget:
        return [text]
    pieces = _split(text.strip(), n_tokens, budget, 0)
    warnings.warn(f"caption of {n_tokens(text)} tokens exceeds the {budget}-token budget; split into "
                  f"{len(pieces)} pieces (not truncated): {text[:80]!r}...", UserWarning, stacklevel=2)
    return pieces


def _split(text: str, n_tokens: Callable[[str], int], budget: int, level: int) -> list[str]:
    if n_tokens(text) <= budget:
        return [text]
    if level == len(_SEPARATORS):
        raise ValueError(f"cannot fit {text!r} into {budget} tokens even alone")
    parts = [p for p in re.split(_SEPARATORS[level], text) if p]
    out: list[str] = []
    current = ""
    for part in parts:
        joined = f"{current} {part}" if current else part
        if n_tokens(joined) <= budget:
            current = joined
            continue
        if current:
            out.append(current)
        if n_tokens(part) <= budget:
            current = part
        else:
            out.extend(_split(part, n_tokens, budget, level + 1))
            current = ""
    if current:
        out.append(current)
    return out
