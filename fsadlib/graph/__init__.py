"""torch-geometric message-passing layers (one per file, math and shapes in each docstring) and the
helpers that batch per-image graphs into one PyG ``Batch``."""

from fsadlib.graph.batching import complete_graph, complete_graph_batch
from fsadlib.graph.conv_gru import ConvGRUCell
from fsadlib.graph.gated_cross_attention_conv import AGGREGATIONS, GatedCrossAttentionConv

__all__ = ["AGGREGATIONS", "ConvGRUCell", "GatedCrossAttentionConv", "complete_graph", "complete_graph_batch"]
