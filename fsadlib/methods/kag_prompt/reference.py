"""Slow dense reference of KAG-prompt's graph, written as the paper module (one image at a time, Python
loops over nodes and edges, explicit bmm / softmax), with the weights of a :class:`LayerGraph`.

It checks the torch-geometric layer (tests) and plays the public code's graph in the benchmark.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fsadlib.graph import ConvGRUCell, GatedCrossAttentionConv
from fsadlib.methods.kag_prompt.modules import LayerGraph


def dense_gru(gru: ConvGRUCell, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """ConvGRU from its equations (kernel 1): x, s [1, C, h, w]."""
    xs = torch.cat([x, s], 1)
    u = torch.sigmoid(F.conv2d(xs, gru.update_gate.weight, gru.update_gate.bias))
    r = torch.sigmoid(F.conv2d(xs, gru.reset_gate.weight, gru.reset_gate.bias))
    c = torch.tanh(F.conv2d(torch.cat([x, r * s], 1), gru.out_gate.weight, gru.out_gate.bias))
    return s * (1 - u) + c * u


def dense_message(conv: GatedCrossAttentionConv, xi: torch.Tensor, xj: torch.Tensor) -> torch.Tensor:
    """Gated cross-attention message j -> i for one image: xi, xj [1, C, h, w]."""
    fi, fj = xi.flatten(2), xj.flatten(2)                          # [1, C, P]
    affinity = (fi.transpose(1, 2) @ conv.query.weight.T) @ fj      # [1, P_i, P_j]
    z = (fj @ affinity.softmax(dim=2).transpose(1, 2)).view_as(xi)  # [1, C, P_i]
    return torch.sigmoid(F.conv2d(z, conv.gate.weight)) * z


def dense_round(conv: GatedCrossAttentionConv, nodes: list[torch.Tensor]) -> list[torch.Tensor]:
    """One synchronous round over one image's nodes (list of [1, C, h, w]); concat / mean / sum."""
    out = []
    for i, xi in enumerate(nodes):
        msgs = [dense_message(conv, xi, xj) for j, xj in enumerate(nodes) if j != i]
        if conv.aggregation == "concat":
            agg = torch.cat(msgs, 1)
        elif conv.aggregation == "mean":
            agg = torch.stack(msgs).mean(0)
        elif conv.aggregation == "sum":
            agg = torch.stack(msgs).sum(0)
        else:
            raise ValueError(f"no dense reference for aggregation {conv.aggregation!r}")
        out.append(dense_gru(conv.gru, F.conv2d(agg, conv.fuse.weight, conv.fuse.bias, padding=1), xi))
    return out


def dense_layer_graph(graph: LayerGraph, nodes: torch.Tensor) -> torch.Tensor:
    """``graph(nodes)`` the paper's way, image by image: [B, L, C, h, w] -> [B, L, C, h, w].

    BatchNorm is applied per image as in the public code (identical to the batched module in eval
    mode, which uses the running statistics)."""
    out = []
    for b in range(nodes.shape[0]):
        first = [nodes[b, i:i + 1] for i in range(nodes.shape[1])]
        h = first
        for _ in range(graph.rounds):
            h = dense_round(graph.conv, h)
        out.append(torch.cat([graph.readout(torch.cat([hi, ni], 1)) for hi, ni in zip(h, first)]))
    return torch.stack(out)
