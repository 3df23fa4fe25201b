"""WinCLIP / WinCLIP+ (training-free zero-/few-shot CLIP anomaly detection with window embeddings)."""

from fsadlib.methods.winclip.model import WinClip, WinClipBank, WinClipConfig, WinClipPlus

__all__ = ["WinClip", "WinClipBank", "WinClipConfig", "WinClipPlus"]
