"""Anomaly-detection methods behind one interface (see base.py), one folder each, and a registry
that discovers the folders and the ``fsadlib.methods`` entry points (registry.py, spec.py)."""

from fsadlib.methods.output import AnomalyOutput
from fsadlib.methods.registry import create, list_methods, method_class, method_spec, spec_of, specs
from fsadlib.methods.spec import MethodEntry, MethodSpec

__all__ = ["AnomalyOutput", "MethodEntry", "MethodSpec", "create", "list_methods", "method_class", "method_spec",
           "spec_of", "specs"]
