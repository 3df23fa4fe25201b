"""MFSC (multi-level fine-grained semantic caption) schema of one category, validated on load.

JSON layout (``data/captions/<dataset>/<category>.json``), FineGrainedAD's three levels plus a
global caption (the public code keeps ``Level_1`` as a one-element list; here it is a dict)::

    {"dataset": "mvtec", "category": "hazelnut", "class_name": "hazelnut",
     "Level_1": {"foreground": "hazelnut", "background": "black"},
     "Level_2": {"entity": [E names], "number": [E words], "location": [E words], "relation": str},
     "Level_3": {"color": [E], "texture": [E], "shape": [E], "entity_caption": [E]},
     "caption": str,
     "anomaly_phrases": ["cracked {}", "{} with hole", ...],
     "source": {"captioner": "offline" | "http" | "transformers", ...provenance...}}

Invariants checked by :func:`validate` (MLLP's replacement mechanism relies on them): E >= 1 and all
per-entity lists have E items; every string is non-empty; ``caption`` contains the foreground noun;
``entity_caption[i]`` contains ``entity[i]`` and ``location[i]``; every anomaly phrase has exactly one
``{}``. A violation raises ``ValueError`` naming the file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fsadlib.io import read_json, write_json

LEVEL2_LISTS = ("entity", "number", "location")
LEVEL3_LISTS = ("color", "texture", "shape", "entity_caption")


@dataclass(frozen=True)
class Captions:
    """The MFSC captions of one category (see the module docstring for the meaning of each field)."""

    dataset: str
    category: str
    class_name: str
    foreground: str
    background: str
    entity: tuple[str, ...]
    number: tuple[str, ...]
    location: tuple[str, ...]
    relation: str
    color: tuple[str, ...]
    texture: tuple[str, ...]
    shape: tuple[str, ...]
    entity_caption: tuple[str, ...]
    caption: str
    anomaly_phrases: tuple[str, ...]
    source: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def n_entities(self) -> int:
        return len(self.entity)

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset, "category": self.category, "class_name": self.class_name,
            "Level_1": {"foreground": self.foreground, "background": self.background},
            "Level_2": {**{k: list(getattr(self, k)) for k in LEVEL2_LISTS}, "relation": self.relation},
            "Level_3": {k: list(getattr(self, k)) for k in LEVEL3_LISTS},
            "caption": self.caption,
            "anomaly_phrases": list(self.anomaly_phrases),
            "source": dict(self.source),
        }

    @classmethod
    def from_json(cls, data: Any, where: str = "captions") -> Captions:
        """Parse and :func:`validate` a JSON dict; ``where`` (a file name) prefixes every error."""
        def get(obj: Any, key: str, path: str) -> Any:
            if not isinstance(obj, dict) or key not in obj:
                raise ValueError(f"{where}: missing key '{path}'")
            return obj[key]

        l1 = get(data, "Level_1", "Level_1")
        l2 = get(data, "Level_2", "Level_2")
        l3 = get(data, "Level_3", "Level_3")
        captions = cls(
            dataset=get(data, "dataset", "dataset"), category=get(data, "category", "category"),
            class_name=get(data, "class_name", "class_name"),
            foreground=get(l1, "foreground", "Level_1.foreground"),
            background=get(l1, "background", "Level_1.background"),
            **{k: _tuple(get(l2, k, f"Level_2.{k}"), where, f"Level_2.{k}") for k in LEVEL2_LISTS},
            relation=get(l2, "relation", "Level_2.relation"),
            **{k: _tuple(get(l3, k, f"Level_3.{k}"), where, f"Level_3.{k}") for k in LEVEL3_LISTS},
            caption=get(data, "caption", "caption"),
            anomaly_phrases=_tuple(get(data, "anomaly_phrases", "anomaly_phrases"), where, "anomaly_phrases"),
            source=dict(data.get("source") or {}),
        )
        validate(captions, where)
        return captions


def validate(c: Captions, where: str = "captions") -> Captions:
    """Check the invariants of the module docstring; ``ValueError`` names ``where`` and the key."""
    for key in ("dataset", "category", "class_name", "foreground", "background", "relation", "caption"):
        value = getattr(c, key)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{where}: '{key}' must be a non-empty string, got {value!r}")
    n = len(c.entity)
    if n < 1:
        raise ValueError(f"{where}: 'Level_2.entity' must list at least one entity")
    for key in (*LEVEL2_LISTS, *LEVEL3_LISTS):
        values = getattr(c, key)
        level = "Level_2" if key in LEVEL2_LISTS else "Level_3"
        if len(values) != n:
            raise ValueError(f"{where}: '{level}.{key}' has {len(values)} items, 'Level_2.entity' has {n}")
        bad = [v for v in values if not isinstance(v, str) or not v.strip()]
        if bad:
            raise ValueError(f"{where}: '{level}.{key}' holds empty or non-string items {bad}")
    if c.foreground not in c.caption:
        raise ValueError(f"{where}: 'caption' must contain the foreground noun {c.foreground!r} "
                         "(MLLP replaces it by its defect phrases)")
    for i, (name, loc, text) in enumerate(zip(c.entity, c.location, c.entity_caption)):
        for what, word in (("entity", name), ("location", loc)):
            if word not in text:
                raise ValueError(f"{where}: 'Level_3.entity_caption[{i}]' = {text!r} must contain its "
                                 f"{what} {word!r} (MLLP replaces it)")
    if not c.anomaly_phrases:
        raise ValueError(f"{where}: 'anomaly_phrases' is empty")
    bad = [p for p in c.anomaly_phrases if not isinstance(p, str) or p.count("{}") != 1]
    if bad:
        raise ValueError(f"{where}: 'anomaly_phrases' items need exactly one '{{}}' placeholder: {bad}")
    return c


def save_captions(path: str | Path, captions: Captions) -> Path:
    """Validate, then atomically write ``captions`` as JSON."""
    validate(captions, str(path))
    return write_json(path, captions.to_json())


def read_captions(path: str | Path) -> Captions:
    """Read and validate one caption file (errors name the file and the key)."""
    return Captions.from_json(read_json(path), where=str(path))


def _tuple(value: Any, where: str, key: str) -> tuple:
    if not isinstance(value, list):
        raise ValueError(f"{where}: '{key}' must be a list, got {type(value).__name__}")  # noqa: TRY004 - one error type for bad files
    return tuple(value)
