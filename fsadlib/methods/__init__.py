"""Anomaly-detection methods behind one interface (see base.py) and a registry."""

from fsadlib.methods.output import AnomalyOutput
from fsadlib.methods.registry import create, list_methods, method_class

__all__ = ["AnomalyOutput", "create", "list_methods", "method_class"]
