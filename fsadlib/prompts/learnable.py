"""Learnable prompt tokens injected into tokenised text (CoOp-style context, prompt banks).

``LearnableTokens(n_sets, n_tokens, width)`` holds a ``[n_sets, n_tokens, width]`` parameter,
initialised N(mean, std^2) truncated at +-2 std (Bayes-PFL: context N(0, 0.02), normal states
N(+0.5, 0.02), abnormal states N(-0.5, 0.02); PromptAD/FineGrainedAD: N(0, 0.02)).
:meth:`embed` places set ``i`` (or one shared set) into tokenised prompts at a position through
:meth:`fsadlib.clip.ClipBackbone.inject`, so gradients reach the tokens through the frozen tower.
"""

from __future__ import annotations

import torch
from torch import nn


class LearnableTokens(nn.Module):
    def __init__(self, n_sets: int, n_tokens: int, width: int, mean: float = 0.0, std: float = 0.02) -> None:
        super().__init__()
        data = torch.empty(n_sets, n_tokens, width)
        nn.init.trunc_normal_(data, mean=mean, std=std, a=mean - 2 * std, b=mean + 2 * std)
        self.tokens = nn.Parameter(data)

    def forward(self) -> torch.Tensor:
        """[n_sets, n_tokens, width]."""
        return self.tokens

    def embed(self, backbone, token_ids: torch.Tensor, set_index: torch.Tensor | None = None,
              position: int = 1, replace: int = 0, offset: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings [N, L, W] and EOT index [N] of ``token_ids`` [N, L] with the tokens inserted.

        ``set_index`` [N] picks the token set of each prompt (default: set 0 for all);
        ``offset`` [N, W] or [N, n_tokens, W] is added to the inserted tokens (Bayes-PFL adds a flow
        sample to every context token).
        """
        n = token_ids.shape[0]
        idx = torch.zeros(n, dtype=torch.long, device=self.tokens.device) if set_index is None else set_index
        tok = self.tokens[idx]
        if offset is not None:
            tok = tok + (offset.unsqueeze(1) if offset.ndim == 2 else offset)
        return backbone.inject(token_ids, tok, position=position, replace=replace)
