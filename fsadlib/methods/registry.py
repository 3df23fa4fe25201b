"""Method registry: every method folder's :class:`~fsadlib.methods.spec.MethodSpec`, discovered.

Two sources, nothing to edit when a method is added:

- every sub-package of ``fsadlib/methods/`` whose ``__init__.py`` defines ``SPEC``;
- every entry point of the group ``fsadlib.methods`` (an outside package declares, e.g. in its
  ``pyproject.toml``: ``[project.entry-points."fsadlib.methods"] toy = "toy_method:SPEC"``).

Folder names, and method names across folders, must be unique (``ValueError`` naming both otherwise).
Discovery imports only the ``__init__`` modules, which hold the spec and no model code, and a lookup
by folder name (:func:`method_spec`) imports only that folder's ``__init__``: a stage that trains or
evaluates one method reads no other method's folder.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import pkgutil
from importlib.metadata import entry_points
from typing import Any

from fsadlib.methods.spec import MethodEntry, MethodSpec, load_object

ENTRY_POINT_GROUP = "fsadlib.methods"


@functools.cache
def specs() -> dict[str, MethodSpec]:
    """Folder name -> spec, built-in folders first, then entry points; sorted by name."""
    import fsadlib.methods as package

    found: dict[str, tuple[MethodSpec, str]] = {}
    sources = [(f"fsadlib.methods.{info.name}", f"fsadlib.methods.{info.name}:SPEC")
               for info in pkgutil.iter_modules(package.__path__) if info.ispkg]
    sources += [(f"entry point '{ep.name}' ({ep.value})", ep.value.replace(" ", ""))
                for ep in entry_points(group=ENTRY_POINT_GROUP)]
    for where, target in sources:
        module = importlib.import_module(target.partition(":")[0])
        if target.startswith("fsadlib.methods.") and not hasattr(module, "SPEC"):
            continue  # a helper package without a spec
        spec = _checked(load_object(target), where)
        if spec.name in found:
            raise ValueError(f"method folder '{spec.name}' is declared twice: by {found[spec.name][1]} and {where}")
        found[spec.name] = (spec, where)
    owners: dict[str, str] = {}
    for spec, where in found.values():
        for entry in spec.methods:
            if entry.name in owners:
                raise ValueError(f"method '{entry.name}' is registered by both '{owners[entry.name]}' and "
                                 f"'{spec.name}' ({where})")
            owners[entry.name] = spec.name
    return {name: found[name][0] for name in sorted(found)}


def method_spec(folder: str) -> MethodSpec:
    """The spec of method folder ``folder``: ``fsadlib.methods.<folder>``, else the entry point named
    ``folder``, importing nothing else (``KeyError`` naming the known folders otherwise)."""
    package = f"fsadlib.methods.{folder}"
    if folder.isidentifier() and importlib.util.find_spec(package) is not None:
        module = importlib.import_module(package)
        if hasattr(module, "SPEC"):
            return _checked(module.SPEC, package)
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=folder):
        return _checked(ep.load(), f"entry point '{ep.name}' ({ep.value})")
    raise KeyError(f"unknown method folder '{folder}'; known: {sorted(specs())}")


def spec_of(method: str) -> MethodSpec:
    """The spec of the folder that registers method ``method`` (the folder of the same name first)."""
    try:
        spec = method_spec(method)
        if any(m.name == method for m in spec.methods):
            return spec
    except KeyError:
        pass
    for spec in specs().values():
        if any(m.name == method for m in spec.methods):
            return spec
    raise KeyError(f"unknown method '{method}'; known: {list_methods()}")


def method_entry(method: str) -> MethodEntry:
    return next(m for m in spec_of(method).methods if m.name == method)


def _checked(spec: object, where: str) -> MethodSpec:
    if not isinstance(spec, MethodSpec):
        raise TypeError(f"{where}: SPEC is a {type(spec).__name__}, not a fsadlib MethodSpec")
    return spec


def list_methods() -> list[str]:
    """Names accepted by :func:`create`, sorted."""
    return sorted(m.name for spec in specs().values() for m in spec.methods)


def method_class(name: str) -> type:
    """The class registered under ``name``; its ``name``, ``few_shot`` and ``per_category`` must
    equal the spec's (``TypeError`` naming the difference otherwise)."""
    return entry_class(method_entry(name))


def entry_class(entry: MethodEntry) -> type:
    """The class of a spec entry, checked against it (see :func:`method_class`)."""
    cls = load_object(entry.cls)
    declared = {"name": entry.name, "few_shot": entry.few_shot, "per_category": entry.per_category}
    actual = {key: getattr(cls, key, None) for key in declared}
    if actual != declared:
        raise TypeError(f"{entry.cls} disagrees with its spec: class {actual}, spec {declared}")
    return cls


def create(name: str, *, backbone_model: Any = None, **config: Any):
    """Build method ``name`` from keyword config (validated by its ``Config`` dataclass).

    ``backbone_model`` lets several methods in one process share an already-built
    :class:`fsadlib.clip.ClipBackbone` (it must match ``config['backbone']``).
    """
    from fsadlib.config import from_dict

    cls = method_class(name)
    cfg = from_dict(cls.Config, config, name)
    return cls(cfg, backbone_model=backbone_model)
