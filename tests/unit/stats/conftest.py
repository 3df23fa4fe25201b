"""The stats tests reuse the metric tests' MVTec-like data generator (tests/unit/metrics/metrics_reference.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "metrics"))
