"""Prompt pieces shared by the methods: state words x templates, class names, learnable tokens."""

from fsadlib.prompts.class_names import class_name
from fsadlib.prompts.ensemble import PromptSet, build_prompts, ensemble_text_features
from fsadlib.prompts.learnable import LearnableTokens

__all__ = ["LearnableTokens", "PromptSet", "build_prompts", "class_name", "ensemble_text_features"]
