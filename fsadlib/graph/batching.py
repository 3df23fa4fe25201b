"""Per-image graphs over feature maps, batched as one torch-geometric ``Batch``.

``complete_graph(n)`` is the complete directed graph without self-loops on n nodes: edge_index
[2, n(n-1)], row 0 the source j, row 1 the target i (PyG's ``source_to_target`` flow), ordered by
target, then source. ``complete_graph_batch(x)`` turns node features x [B, n, ...] (n nodes per image,
e.g. the L tapped CLIP layers of KAG-prompt, each a [C, h, w] map) into one ``Batch`` with
``x`` [B*n, ...], ``edge_index`` [2, B*n(n-1)] offset per image and ``batch`` [B*n].
"""

from __future__ import annotations

import torch
from torch_geometric.data import Batch, Data


def complete_graph(num_nodes: int, device: torch.device | str | None = None) -> torch.Tensor:
    """edge_index [2, n(n-1)] of the complete directed graph on ``num_nodes`` nodes, no self-loops."""
    if num_nodes < 2:
        raise ValueError(f"a complete graph needs at least 2 nodes, got {num_nodes}")
    target, source = torch.meshgrid(torch.arange(num_nodes), torch.arange(num_nodes), indexing="ij")
    keep = target != source
    return torch.stack([source[keep], target[keep]]).to(device)


def complete_graph_batch(x: torch.Tensor) -> Batch:
    """x [B, n, ...] -> ``Batch`` of B complete graphs of n nodes (node features x[b, i])."""
    edge_index = complete_graph(x.shape[1], x.device)
    return Batch.from_data_list([Data(x=xb, edge_index=edge_index) for xb in x])
