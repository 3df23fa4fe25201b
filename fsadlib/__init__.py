"""fsadlib: the library behind fsad-workbench (few-/zero-shot visual anomaly detection with CLIP).

Notebooks call it in one-liners; every default and every loop lives here. See README.md for a tour.
"""

from fsadlib import reads

__version__ = "0.1.0"
reads.start()  # records what this process reads when FSAD_TRACE_READS is set (the dependency test)
