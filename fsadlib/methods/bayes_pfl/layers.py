"""Bayes-PFL's image-side modules: residual cross-modal attention (RCA) and the token fuse.

Shapes: N images, T text embeddings per image, n patch tokens, Cv vision width, D joint width.

RCA for tapped layer l (public code's ``Zero_Parameter``):

    P_l = norm(tokens_l A_l)                       A_l: Linear(Cv -> D, no bias), P_l [N, n, D]
    Q   = T W_q + c                                1x1 conv (= Linear D -> D with bias) on T [N, T, D]
    T'  = norm(T + MHA(Q, K=P_l, V=P_l))           h heads of width D/h, scale D^-1/2 (not (D/h)^-1/2),
                                                   softmax over the n patches, no key/value/out projection
    logits_l = exp(tau_px) P_l T'^T                [N, n, T]

Each text query attends independently, so RCA may be run on any subset of the T embeddings (training
uses only the selected bank pair) with identical results.

Fuse (public ``Global_Feature``): the raw tokens of all tapped layers concatenated [N, n, L*Cv] ->
Linear -> [N, n, H] -> attention pooling (Linear H -> 1, softmax over tokens, weighted sum) -> Linear
H -> D. Stage 2's image side is norm(M_i(g + Fuse(tokens))).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResidualCrossModalAttention(nn.Module):
    def __init__(self, vision_width: int, embed_dim: int, n_layers: int, heads: int = 4) -> None:
        super().__init__()
        if embed_dim % heads:
            raise ValueError(f"rca_heads={heads} must divide the embedding width {embed_dim}")
        self.heads = heads
        self.patch_proj = nn.ModuleList(nn.Linear(vision_width, embed_dim, bias=False) for _ in range(n_layers))
        self.query = nn.Linear(embed_dim, embed_dim)

    def patches(self, tokens: torch.Tensor, layer: int) -> torch.Tensor:
        """P_l = norm(tokens A_l): [N, n, Cv] -> [N, n, D]."""
        return F.normalize(self.patch_proj[layer](tokens), dim=-1)

    def forward(self, text: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """T' = norm(T + MHA(T W_q, P, P)): text [N, T, D], patches P [N, n, D] -> [N, T, D]."""
        n, t, d = text.shape
        h = self.heads
        q = self.query(text).view(n, t, h, d // h).transpose(1, 2)           # [N, h, T, D/h]
        kv = patches.view(n, patches.shape[1], h, d // h).transpose(1, 2)    # [N, h, n, D/h]
        att = F.scaled_dot_product_attention(q, kv, kv, scale=d ** -0.5)     # [N, h, T, D/h]
        return F.normalize(text + att.transpose(1, 2).reshape(n, t, d), dim=-1)


class TokenFuse(nn.Module):
    def __init__(self, in_width: int, hidden: int, embed_dim: int) -> None:
        super().__init__()
        self.reduce = nn.Linear(in_width, hidden)
        self.score = nn.Linear(hidden, 1)
        self.out = nn.Linear(hidden, embed_dim)

    def forward(self, tokens: list[torch.Tensor]) -> torch.Tensor:
        """Attention-pooled fusion of the tapped layers: list of [N, n, Cv] -> [N, D]."""
        x = self.reduce(torch.cat(tokens, dim=-1))                           # [N, n, H]
        weights = self.score(x).softmax(dim=1)                               # [N, n, 1]
        return self.out((weights * x).sum(dim=1))
