"""KAG-prompt graph layer (PyG) against a dense hand-written reference of the paper module, and its
documented permutation behaviour (concat order-dependent; mean/sum/attention equivariant)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fsadlib.graph import ConvGRUCell, GatedCrossAttentionConv, complete_graph, complete_graph_batch
from fsadlib.methods.kag_prompt.modules import LayerGraph
from fsadlib.methods.kag_prompt.reference import dense_layer_graph, dense_round

C, H, W, L, B = 6, 3, 4, 4, 2


def make(aggregation, seed=0):
    torch.manual_seed(seed)
    conv = GatedCrossAttentionConv(C, aggregation, in_degree=L - 1)
    for p in conv.parameters():  # well-spread weights so every term matters
        torch.nn.init.normal_(p, 0.0, 0.3)
    return conv, torch.randn(B, L, C, H, W)


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_conv_gru_keeps_the_map_size(kernel_size):
    cell = ConvGRUCell(3, 4, kernel_size)
    assert cell(torch.randn(2, 3, 6, 5), torch.randn(2, 4, 6, 5)).shape == (2, 4, 6, 5)


def test_complete_graph_edges():
    ei = complete_graph(3)
    assert ei.tolist() == [[1, 2, 0, 2, 0, 1], [0, 0, 1, 1, 2, 2]]
    batch = complete_graph_batch(torch.zeros(2, 3, 5))
    assert batch.num_graphs == 2 and batch.x.shape == (6, 5)
    assert batch.edge_index[:, 6:].tolist() == (ei + 3).tolist()
    with pytest.raises(ValueError, match="at least 2"):
        complete_graph(1)


@pytest.mark.parametrize("aggregation", ["concat", "mean", "sum"])
def test_layer_equals_dense_reference(aggregation):
    conv, x = make(aggregation)
    graph = complete_graph_batch(x)
    got = conv(graph.x, graph.edge_index).view_as(x)
    for b in range(B):
        want = torch.cat(dense_round(conv, [x[b, i:i + 1] for i in range(L)]))
        torch.testing.assert_close(got[b], want, rtol=1e-5, atol=1e-5)


def test_layer_graph_rounds_and_readout_equal_dense_reference():
    torch.manual_seed(1)
    graph = LayerGraph(C, L, rounds=3, aggregation="concat").eval()
    for p in graph.parameters():
        torch.nn.init.normal_(p, 0.0, 0.3)
    bn = graph.readout[1]
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(B, L, C, H, W)
    got = graph(x)
    torch.testing.assert_close(got, dense_layer_graph(graph, x), rtol=1e-4, atol=1e-4)
    # the readout by hand for one node: ReLU(BN_eval(Conv3x3([h, n]))) with h after 3 dense rounds
    nodes = [x[0, i:i + 1] for i in range(L)]
    h = dense_round(graph.conv, dense_round(graph.conv, dense_round(graph.conv, nodes)))
    conv_r = graph.readout[0]
    y = F.conv2d(torch.cat([h[2], nodes[2]], 1), conv_r.weight, conv_r.bias, padding=1)
    y = (y - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
    y = F.relu(y * bn.weight[:, None, None] + bn.bias[:, None, None])
    torch.testing.assert_close(got[0, 2], y[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("aggregation", ["concat", "mean", "sum", "attention"])
def test_edge_order_does_not_matter(aggregation):
    conv, x = make(aggregation)
    graph = complete_graph_batch(x)
    shuffled = graph.edge_index[:, torch.randperm(graph.edge_index.shape[1], generator=torch.Generator().manual_seed(3))]
    torch.testing.assert_close(conv(graph.x, shuffled), conv(graph.x, graph.edge_index))


@pytest.mark.parametrize("aggregation", ["mean", "sum", "attention"])
def test_symmetric_aggregations_are_permutation_equivariant(aggregation):
    conv, x = make(aggregation)
    perm = torch.tensor([2, 0, 3, 1])
    out = conv(*_graph(x))
    out_perm = conv(*_graph(x[:, perm]))
    torch.testing.assert_close(out_perm.view_as(x), out.view_as(x)[:, perm], rtol=1e-5, atol=1e-5)


def test_concat_is_order_dependent():
    """Relabelling the nodes changes which fusion-conv block sees which neighbour (documented)."""
    conv, x = make("concat")
    perm = torch.tensor([2, 0, 3, 1])
    out = conv(*_graph(x)).view_as(x)[:, perm]
    out_perm = conv(*_graph(x[:, perm])).view_as(x)
    assert (out_perm - out).abs().max() > 1e-2
    # ... and with a fusion conv whose 3 input blocks are all equal it becomes equivariant again
    with torch.no_grad():
        conv.fuse.weight[:, C:2 * C] = conv.fuse.weight[:, :C]
        conv.fuse.weight[:, 2 * C:] = conv.fuse.weight[:, :C]
    out = conv(*_graph(x)).view_as(x)[:, perm]
    torch.testing.assert_close(conv(*_graph(x[:, perm])).view_as(x), out, rtol=1e-5, atol=1e-5)


def test_concat_needs_the_declared_in_degree():
    conv, x = make("concat")
    graph = complete_graph_batch(x)
    with pytest.raises(ValueError, match="exactly 3 messages"):
        conv(graph.x, graph.edge_index[:, 1:])
    with pytest.raises(ValueError, match="aggregation must be one of"):
        GatedCrossAttentionConv(C, "max")


def _graph(x):
    g = complete_graph_batch(x)
    return g.x, g.edge_index
