"""Convolutional GRU cell (Ballas et al. 2016), the node update of KAG-prompt's graph.

For input x [B, Cin, h, w] and hidden state s [B, C, h, w], with convolutions of kernel k (padding
k//2) on the channel concatenation [., .]:

    u  = sigmoid(W_u * [x, s])                 update gate
    r  = sigmoid(W_r * [x, s])                 reset gate
    s~ = tanh(W_o * [x, r . s])                candidate
    s' = (1 - u) . s + u . s~                  [B, C, h, w]

Weights are initialised orthogonal and biases zero (the published cell's own initialisation).
"""

from __future__ import annotations

import torch
from torch import nn


class ConvGRUCell(nn.Module):
    def __init__(self, input_channels: int, hidden_channels: int, kernel_size: int = 1) -> None:
        super().__init__()
        pad = kernel_size // 2
        cat = input_channels + hidden_channels
        self.update_gate = nn.Conv2d(cat, hidden_channels, kernel_size, padding=pad)
        self.reset_gate = nn.Conv2d(cat, hidden_channels, kernel_size, padding=pad)
        self.out_gate = nn.Conv2d(cat, hidden_channels, kernel_size, padding=pad)
        for conv in (self.update_gate, self.reset_gate, self.out_gate):
            nn.init.orthogonal_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        xs = torch.cat([x, state], dim=1)
        update = torch.sigmoid(self.update_gate(xs))
        reset = torch.sigmoid(self.reset_gate(xs))
        candidate = torch.tanh(self.out_gate(torch.cat([x, reset * state], dim=1)))
        return state * (1 - update) + candidate * update
