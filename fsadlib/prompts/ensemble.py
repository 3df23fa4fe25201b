"""Compositional prompt ensembles (WinCLIP's CPE): state words x templates, averaged per state.

For a class name c, normal states S_n, anomalous states S_a and templates T, the prompts are
``t.format(s.format(c))`` for every (s, t). Each prompt embedding is L2-normalised, the embeddings of
one state (normal or anomalous) are averaged and the mean is normalised again:

    t_n = norm(mean_{s in S_n, t in T} norm(E(t(s(c)))))     (same for t_a)

Every prompt of a class goes through the text tower in one batched call and the result is cached
on the backbone (prompts do not depend on the image).

State words and templates of the papers (the lists differ; each method names the ones it uses):
- ``NORMAL_STATES``: WinCLIP / InCTRL / KAG-prompt, 7 words.
- ``ABNORMAL_STATES_WINCLIP``: WinCLIP / InCTRL, 4 words; ``ABNORMAL_STATES_KAG`` adds "broken {}".
- ``TEMPLATES_WINCLIP``: the 22 templates of WinCLIP's ensemble (InCTRL uses all 22).
- ``TEMPLATES_KAG``: KAG-prompt's 2 templates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

NORMAL_STATES: tuple[str, ...] = (
    "{}", "flawless {}", "perfect {}", "unblemished {}",
    "{} without flaw", "{} without defect", "{} without damage",
)
ABNORMAL_STATES_WINCLIP: tuple[str, ...] = ("damaged {}", "{} with flaw", "{} with defect", "{} with damage")
ABNORMAL_STATES_KAG: tuple[str, ...] = ("damaged {}", "broken {}", "{} with flaw", "{} with defect",
                                        "{} with damage")
TEMPLATES_WINCLIP: tuple[str, ...] = (
    "a cropped photo of the {}.", "a cropped photo of a {}.",
    "a close-up photo of a {}.", "a close-up photo of the {}.",
    "a bright photo of a {}.", "a bright photo of the {}.",
    "a dark photo of the {}.", "a dark photo of a {}.",
    "a jpeg corrupted photo of a {}.", "a jpeg corrupted photo of the {}.",
    "a blurry photo of the {}.", "a blurry photo of a {}.",
    "a photo of a {}.", "a photo of the {}.",
    "a photo of a small {}.", "a photo of the small {}.",
    "a photo of a large {}.", "a photo of the large {}.",
    "a photo of the {} for visual inspection.", "a photo of a {} for visual inspection.",
    "a photo of the {} for anomaly detection.", "a photo of a {} for anomaly detection.",
)
TEMPLATES_KAG: tuple[str, ...] = ("a photo of a {}.", "a photo of the {}.")

STATE_SETS = {"winclip": ABNORMAL_STATES_WINCLIP, "kag": ABNORMAL_STATES_KAG}
TEMPLATE_SETS = {"winclip": TEMPLATES_WINCLIP, "kag": TEMPLATES_KAG}


@dataclass(frozen=True)
class PromptSet:
    """The normal and anomalous prompt strings of one class."""

    normal: tuple[str, ...]
    abnormal: tuple[str, ...]


def build_prompts(class_name: str, normal_states: Sequence[str] = NORMAL_STATES,
                  abnormal_states: Sequence[str] = ABNORMAL_STATES_WINCLIP,
                  templates: Sequence[str] = TEMPLATES_WINCLIP) -> PromptSet:
    """All state x template prompts for ``class_name`` (state-major order)."""
    def expand(states: Sequence[str]) -> tuple[str, ...]:
        return tuple(t.format(s.format(class_name)) for s in states for t in templates)
    return PromptSet(expand(normal_states), expand(abnormal_states))


def ensemble_text_features(backbone, class_name: str, normal_states: Sequence[str] = NORMAL_STATES,
                           abnormal_states: Sequence[str] = ABNORMAL_STATES_WINCLIP,
                           templates: Sequence[str] = TEMPLATES_WINCLIP) -> torch.Tensor:
    """[2, D] unit-norm text features (row 0 normal, row 1 anomalous) of the prompt ensemble."""
    prompts = build_prompts(class_name, normal_states, abnormal_states, templates)
    with torch.no_grad():
        emb = F.normalize(backbone.encode_text_cached(prompts.normal + prompts.abnormal), dim=-1)
    n = len(prompts.normal)
    return F.normalize(torch.stack([emb[:n].mean(0), emb[n:].mean(0)]), dim=-1)
