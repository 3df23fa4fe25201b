"""Method registry: name -> class, imported lazily so ``list_methods()`` costs nothing.

To add a method: create ``fsadlib/methods/<name>/`` with a subclass of
:class:`fsadlib.methods.base.AnomalyMethod` and add one line to ``_METHODS``.
"""

from __future__ import annotations

import importlib
from typing import Any

_METHODS: dict[str, str] = {
    # name: "module:Class"
    "finegrained": "fsadlib.methods.finegrained.model:FineGrainedAD",
    "winclip": "fsadlib.methods.winclip.model:WinClip",
    "winclip_plus": "fsadlib.methods.winclip.model:WinClipPlus",
    "inctrl": "fsadlib.methods.inctrl.model:Inctrl",
    "bayes_pfl": "fsadlib.methods.bayes_pfl.model:BayesPFL",
    "kag_prompt": "fsadlib.methods.kag_prompt.model:KagPrompt",
}


def list_methods() -> list[str]:
    """Names accepted by :func:`create`, sorted."""
    return sorted(_METHODS)


def method_class(name: str) -> type:
    """The class registered under ``name`` (``KeyError`` naming the known methods otherwise)."""
    if name not in _METHODS:
        raise KeyError(f"unknown method '{name}'; known: {list_methods()}")
    module, cls = _METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def create(name: str, *, backbone_model: Any = None, **config: Any):
    """Build method ``name`` from keyword config (validated by its ``Config`` dataclass).

    ``backbone_model`` lets several methods in one process share an already-built
    :class:`fsadlib.clip.ClipBackbone` (it must match ``config['backbone']``).
    """
    from fsadlib.config import from_dict

    cls = method_class(name)
    cfg = from_dict(cls.Config, config, name)
    return cls(cfg, backbone_model=backbone_model)
