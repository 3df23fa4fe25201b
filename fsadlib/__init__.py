"""fsadlib: the library behind fsad-workbench (few-/zero-shot visual anomaly detection with CLIP).

Notebooks call it in one-liners; every default and every loop lives here. See README.md for a tour.
"""

__version__ = "0.1.0"
