"""KAG-prompt: kernel-aware hierarchical graph prompts over CLIP layers (AAAI 2025). See README.md."""

from fsadlib.methods.kag_prompt.model import KagPrompt, KagPromptConfig

__all__ = ["KagPrompt", "KagPromptConfig"]
