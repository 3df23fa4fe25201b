"""One round of KAG-prompt's graph message passing (AGNN-style) as a torch-geometric layer.

Nodes are spatial feature maps x_i [C, h, w] (in KAG-prompt: one node per tapped CLIP layer of an
image); P = h*w positions, X_i [P, C] the map as a sequence. Edges j -> i come from ``edge_index``
(row 0 source j, row 1 target i); KAG-prompt uses the complete directed graph without self-loops
over the L layer nodes of each image (:func:`fsadlib.graph.complete_graph_batch`).

Message j -> i (gated spatial cross-attention; W_e = ``query``, a bias-free Linear(C, C) applied per
position, computed once per node and gathered per edge):

    A_ij  = (X_i W_e^T) X_j^T                               [P, P]  affinity, no scaling
    Z_ij  = softmax_over_j_positions(A_ij) X_j              [P, C]  (SDPA with scale 1)
    m_ij  = sigmoid(w_g * Z_ij) . Z_ij                      [C, h, w]  w_g = ``gate``, Conv1x1(C -> 1)

Aggregation at node i over its in-neighbours N(i) (``aggregation``):

    concat     a_i = [m_{j1 i}, m_{j2 i}, ...]  j1 < j2 < ... (ascending source index)   [d*C, h, w]
               the paper's fixed-order concatenation; needs every in-degree d = ``in_degree``;
               ORDER-DEPENDENT: relabelling the nodes of a graph changes which block of the fusion
               conv sees which neighbour, so outputs are not permutation-equivariant. The order of the
               columns of edge_index does not matter (messages are sorted by source).
    mean, sum  a_i = mean_j m_ji / sum_j m_ji                                          [C, h, w]
               PyG aggregations; permutation-equivariant in the nodes, invariant to edge order.
    attention  a_i = sum_j softmax_j(g(m_ji)) m_ji, g(m) = mean_positions(Conv1x1(C -> 1)(m))
               PyG ``AttentionalAggregation``; permutation-equivariant.

Update (ConvGRU, :class:`fsadlib.graph.ConvGRUCell`, kernel 1; the node's current map is the hidden
state):

    x_i' = GRU(W_f * a_i, x_i)       W_f = ``fuse``, Conv3x3(d*C or C -> C, padding 1, bias)

Input x [N, C, h, w] (N nodes of the whole batch), output [N, C, h, w]. Several synchronous rounds
with shared weights are several calls of the same layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import MessagePassing
from torch_geometric.nn.aggr import AttentionalAggregation

from fsadlib.graph.conv_gru import ConvGRUCell

AGGREGATIONS = ("concat", "mean", "sum", "attention")


class SpatialGate(nn.Module):
    """g(m) = mean over positions of Conv1x1(C -> 1)(m): [E, C, h, w] -> [E, 1, 1, 1]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, kernel_size=1)

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        return self.conv(m).mean(dim=(2, 3), keepdim=True)


class GatedCrossAttentionConv(MessagePassing):
    """See the module docstring. ``in_degree`` is needed (and checked) only by ``concat``."""

    def __init__(self, channels: int, aggregation: str = "concat", in_degree: int = 3) -> None:
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        aggr = {"concat": None, "mean": "mean", "sum": "sum",
                "attention": AttentionalAggregation(gate_nn=SpatialGate(channels))}[aggregation]
        super().__init__(aggr=aggr, node_dim=0)
        self.aggregation = aggregation
        self.in_degree = in_degree
        self.query = nn.Linear(channels, channels, bias=False)
        self.gate = nn.Conv2d(channels, 1, kernel_size=1, bias=False)
        fused = in_degree * channels if aggregation == "concat" else channels
        self.fuse = nn.Conv2d(fused, channels, kernel_size=3, padding=1)
        self.gru = ConvGRUCell(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """x [N, C, h, w], edge_index [2, E] -> [N, C, h, w]."""
        query = self.query(x.flatten(2).transpose(1, 2))  # [N, P, C]
        return self.propagate(edge_index, x=x, query=query)

    def message(self, query_i: torch.Tensor, x_j: torch.Tensor) -> torch.Tensor:
        """query_i [E, P, C], x_j [E, C, h, w] -> gated messages [E, C, h, w]."""
        value = x_j.flatten(2).transpose(1, 2)  # [E, P, C]
        z = F.scaled_dot_product_attention(query_i, value.to(query_i.dtype), value.to(query_i.dtype), scale=1.0)
        z = z.transpose(1, 2).reshape(x_j.shape)
        return torch.sigmoid(self.gate(z)) * z

    def aggregate(self, inputs: torch.Tensor, index: torch.Tensor, edge_index_j: torch.Tensor,
                  ptr: torch.Tensor | None = None, dim_size: int | None = None) -> torch.Tensor:
        if self.aggregation != "concat":
            return super().aggregate(inputs, index, ptr=ptr, dim_size=dim_size)
        n = int(dim_size) if dim_size is not None else int(index.max()) + 1
        degree = torch.bincount(index, minlength=n)
        if bool((degree != self.in_degree).any()):
            raise ValueError(f"concat aggregation needs every node to receive exactly {self.in_degree} "
                             f"messages; got in-degrees {sorted(set(degree.tolist()))}")
        order = torch.argsort(index * n + edge_index_j, stable=True)  # by target, then source
        return inputs[order].reshape(n, self.in_degree * inputs.shape[1], *inputs.shape[2:])

    def update(self, aggr_out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.gru(self.fuse(aggr_out), x)
