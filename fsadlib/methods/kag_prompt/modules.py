"""KAG-prompt's trainable pieces on the tapped CLIP tokens (AAAI 2025, "KAHG"; spec B1.3-B1.5).

Shapes: B images, L tapped layers (graph nodes), N = h*w patch tokens, Cv vision width, C the
projection width (= the joint embedding width D, so projected patches compare with text).

- :class:`LayerProjection`: one Linear(Cv -> C) + ReLU per tapped layer; tokens [B, N, Cv] x L ->
  maps [B, L, C, h, w].
- :class:`KernelAwareConvs` (the paper's MMCI, shared by all layers): four unpadded convolutions with
  kernels 1x4, 4x1, 2x2, 3x3, each resized back to h x w (bilinear, align_corners=True), averaged:
  n = 1/4 sum_k resize(W_k * x). No activation.
- :class:`LayerGraph`: ``rounds`` synchronous rounds of :class:`fsadlib.graph.GatedCrossAttentionConv`
  (shared weights) over the complete graph of each image's L nodes, h^0 = n, h^{t+1} = conv(h^t), then
  the readout o_i = ReLU(BN(Conv3x3([h^T_i, n_i]))) [B, L, C, h, w]. In training, BN's statistics
  are those of all B*L maps of the batch; ``per_node_norm`` (the public code, ``preset: paper``)
  normalises each (image, node) map with its own statistics, one call after the other, so the running
  statistics also get the public code's B*L successive updates. Identical in eval mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fsadlib.graph import GatedCrossAttentionConv, complete_graph_batch

KERNELS: tuple[tuple[int, int], ...] = ((1, 4), (4, 1), (2, 2), (3, 3))


class LayerProjection(nn.Module):
    def __init__(self, num_layers: int, in_width: int, out_width: int) -> None:
        super().__init__()
        self.linears = nn.ModuleList(nn.Linear(in_width, out_width) for _ in range(num_layers))

    def forward(self, tokens: list[torch.Tensor], grid: tuple[int, int]) -> torch.Tensor:
        """L x [B, N, Cv] -> [B, L, C, h, w]."""
        maps = [F.relu(lin(t)) for lin, t in zip(self.linears, tokens, strict=True)]
        x = torch.stack(maps, dim=1)  # [B, L, N, C]
        return x.transpose(2, 3).reshape(*x.shape[:2], x.shape[-1], *grid)


class KernelAwareConvs(nn.Module):
    def __init__(self, channels: int, kernels: tuple[tuple[int, int], ...] = KERNELS) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, k) for k in kernels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L, C, h, w] -> [B, L, C, h, w]."""
        flat = x.flatten(0, 1)
        size = flat.shape[-2:]
        out = sum(F.interpolate(conv(flat), size=size, mode="bilinear", align_corners=True)
                  for conv in self.convs) / len(self.convs)
        return out.view_as(x)


class LayerGraph(nn.Module):
    def __init__(self, channels: int, num_nodes: int, rounds: int = 5, aggregation: str = "concat",
                 per_node_norm: bool = False) -> None:
        super().__init__()
        self.rounds = rounds
        self.per_node_norm = per_node_norm
        self.conv = GatedCrossAttentionConv(channels, aggregation, in_degree=num_nodes - 1)
        self.readout = nn.Sequential(nn.Conv2d(2 * channels, channels, 3, padding=1),
                                     nn.BatchNorm2d(channels), nn.ReLU())
        # as the public code: every Conv2d weight of the graph module ~ N(0, 0.01) (this overrides the
        # ConvGRU's orthogonal init there too); biases keep their init, BatchNorm weight 1, bias 0
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.01)

    def forward(self, nodes: torch.Tensor) -> torch.Tensor:
        """[B, L, C, h, w] -> readout [B, L, C, h, w]."""
        graph = complete_graph_batch(nodes)
        h = graph.x
        for _ in range(self.rounds):
            h = self.conv(h, graph.edge_index)
        return self.read(torch.cat([h, graph.x], dim=1)).view_as(nodes)

    def read(self, x: torch.Tensor) -> torch.Tensor:
        """ReLU(BN(Conv3x3(x))): [B*L, 2C, h, w] -> [B*L, C, h, w] (BN statistics: class docstring)."""
        conv, norm, relu = self.readout
        y = conv(x)
        if self.per_node_norm and self.training:
            return relu(torch.cat([norm(y[i:i + 1]) for i in range(y.shape[0])]))
        return relu(norm(y))
