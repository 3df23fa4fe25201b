"""InCTRL: in-context residual learning with few-shot normal prompts (see model.py, README.md)."""

from fsadlib.methods.inctrl.model import Inctrl, InctrlConfig

__all__ = ["Inctrl", "InctrlConfig"]
