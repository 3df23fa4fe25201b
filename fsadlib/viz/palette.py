"""One colour per method, the same in every figure (curves, bars, facet and panel titles).

The methods of this repository have fixed colours from the colour-blind-safe palette of seaborn
("colorblind"); any other method name (a method added as an outside package) gets a colour picked by
a stable hash of its name (CRC-32, not Python's per-process ``hash``) from the colours left over, so
it too keeps its colour across figures, processes and machines.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

import seaborn as sns

_COLOURS = sns.color_palette("colorblind", 10).as_hex()
METHOD_COLOURS: dict[str, str] = {
    "winclip": _COLOURS[7],       # grey and sky blue: the training-free baselines
    "winclip_plus": _COLOURS[9],
    "inctrl": _COLOURS[1],        # orange
    "kag_prompt": _COLOURS[2],    # green
    "bayes_pfl": _COLOURS[0],     # blue
    "finegrained": _COLOURS[4],   # purple
}
_SPARE = [c for c in _COLOURS if c not in METHOD_COLOURS.values()]


def method_colour(method: str) -> str:
    """The colour (``#rrggbb``) of ``method`` (module docstring)."""
    if method in METHOD_COLOURS:
        return METHOD_COLOURS[method]
    return _SPARE[zlib.crc32(method.encode()) % len(_SPARE)]


def method_palette(methods: Iterable[str]) -> dict[str, str]:
    """``{method: colour}`` for seaborn's ``palette=`` argument."""
    return {m: method_colour(m) for m in dict.fromkeys(methods)}
