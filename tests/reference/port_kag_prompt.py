"""KAG-prompt's public forward and training loss (``CVL-hub/KAG-prompt``: the AnomalyGPT fork's
``LinearLayer``, MMCI, ``KAHG`` graph, test-time fusion and the ``FocalLoss`` + ``BinaryDiceLoss`` +
BCE objective), written from its equations with plain tensor operations on a dict of weights (the
state of a :class:`~fsadlib.methods.kag_prompt.KagPrompt`); the frozen CLIP is the shared backbone's.
The public code runs one image at a time and one graph node at a time, so in training the readout
BatchNorm sees one (image, node) map per call.

Per image, tapped raw tokens F_l [N, Cv] (N = h*w), text T = [t_n; t_a] [2, D]:
    n_l  = 1/4 sum_k resize_ac(conv_k(ReLU(W_l F_l + b_l)^T viewed [C, h, w]))   (unpadded kernels,
           bilinear resize back to h x w with align_corners=True)
    graph: h^0 = n; 5 rounds; message j -> i: z = softmax_j((W_q f_i)^T f_j) f_j over positions,
           m = sigmoid(conv1x1_gate(z)) z; concat over j in ascending order, Conv3x3 (bias);
           ConvGRU: u = sig(U[x, s]), r = sig(R[x, s]), c = tanh(O[x, r s]), s' = s (1 - u) + c u
    o_l  = ReLU(BN(Conv3x3([h^5_l, n_l])))
    P_f  = softmax_states(up_ac(100 <f / |f|, T>))[1] for f in (o_1..o_L, n_1..n_L),  Mp = mean_f P_f
    Mv   = softmax([s, 1 - s])[1],  s = up_ac(mean_l max_j cos(F_l, bank_l[j]))
    M    = 0.1 Mp + 0.9 Mv,  score = 0.1 <norm(A norm(e) + a), t_a> + 0.9 mean(top-k(M))
Loss: sum_f [ FL(P_f, gt) + 0.3 (Dice(P_f, gt) + Dice(1 - P_f, 1 - gt)) ] + BCE(sigmoid(c), onehot(y)),
gt = [mask > 0.3], FL with gamma 2 on probabilities clamped to [1e-5, 1 - 1e-5], Dice per map (smooth 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fsadlib.prompts import class_name
from fsadlib.prompts.ensemble import ABNORMAL_STATES_KAG, NORMAL_STATES, TEMPLATES_KAG

Weights = dict[str, torch.Tensor]


@torch.no_grad()
def text_features(backbone, category: str) -> torch.Tensor:
    rows = []
    for states in (NORMAL_STATES, ABNORMAL_STATES_KAG):
        emb = backbone.encode_text([t.format(s.format(class_name(category))) for s in states for t in TEMPLATES_KAG])
        rows.append(F.normalize(F.normalize(emb, dim=-1).mean(0), dim=-1))
    return torch.stack(rows)


def conv(x: torch.Tensor, w: Weights, name: str, padding: int = 0, bias: bool = True) -> torch.Tensor:
    return F.conv2d(x, w[name + ".weight"], w[name + ".bias"] if bias else None, padding=padding)


def node_maps(w: Weights, tokens: list[torch.Tensor], grid: int, n_kernels: int) -> list[torch.Tensor]:
    """Tokens of one image, L x [N, Cv] -> MMCI nodes L x [1, C, h, w]."""
    nodes = []
    for l, t in enumerate(tokens):
        proj = torch.relu(t @ w[f"projection.linears.{l}.weight"].T + w[f"projection.linears.{l}.bias"])
        x = proj.T.reshape(1, -1, grid, grid)
        resized = [F.interpolate(conv(x, w, f"kernel_convs.convs.{k}"), size=(grid, grid), mode="bilinear",
                                 align_corners=True) for k in range(n_kernels)]
        nodes.append(sum(resized) / n_kernels)
    return nodes


def message(w: Weights, xi: torch.Tensor, xj: torch.Tensor) -> torch.Tensor:
    fi, fj = xi.flatten(2)[0], xj.flatten(2)[0]                        # [C, P]
    q = w["graph.conv.query.weight"] @ fi                              # [C, P_i]
    att = (q.T @ fj).softmax(dim=1)                                    # [P_i, P_j]
    z = (fj @ att.T).view_as(xi)
    return torch.sigmoid(F.conv2d(z, w["graph.conv.gate.weight"])) * z


def gru(w: Weights, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    xs = torch.cat([x, s], 1)
    u = torch.sigmoid(conv(xs, w, "graph.conv.gru.update_gate"))
    r = torch.sigmoid(conv(xs, w, "graph.conv.gru.reset_gate"))
    c = torch.tanh(conv(torch.cat([x, r * s], 1), w, "graph.conv.gru.out_gate"))
    return s * (1 - u) + c * u


def graph(w: Weights, nodes: list[torch.Tensor], rounds: int, training: bool) -> list[torch.Tensor]:
    h = nodes
    for _ in range(rounds):
        h = [gru(w, conv(torch.cat([message(w, hi, hj) for j, hj in enumerate(h) if j != i], 1), w,
                         "graph.conv.fuse", padding=1), hi)
             for i, hi in enumerate(h)]
    out = []
    for hi, ni in zip(h, nodes):
        y = conv(torch.cat([hi, ni], 1), w, "graph.readout.0", padding=1)
        b = "graph.readout.1."
        stats = (None, None) if training else (w[b + "running_mean"], w[b + "running_var"])
        out.append(torch.relu(F.batch_norm(y, *stats, w[b + "weight"], w[b + "bias"], training=training)))
    return out


def prompt_branch(w: Weights, backbone, images: torch.Tensor, categories: list[str], cfg, training: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """(P [B, 2L, S, S], CLS cosines [B, 2], raw tokens L x [B, N, Cv]) one image at a time."""
    with torch.no_grad():
        feats = backbone.encode_image(images, layers=cfg.layers)
    grid, size = backbone.grid[0], backbone.image_size
    probs, cosines = [], []
    for i in range(images.shape[0]):
        text = text_features(backbone, categories[i])
        nodes = node_maps(w, [t[i] for t in feats.tokens], grid, len(cfg.kernels))
        maps = graph(w, nodes, cfg.rounds, training) + nodes
        per_map = []
        for f in maps:
            f = f[0].flatten(1).T                                        # [N, C]
            logits = cfg.logit_scale * F.normalize(f, dim=-1) @ text.T   # [N, 2]
            up = F.interpolate(logits.T.reshape(1, 2, grid, grid), size=(size, size), mode="bilinear",
                               align_corners=True)
            per_map.append(up.softmax(dim=1)[0, 1])
        probs.append(torch.stack(per_map))
        e = F.normalize(feats.embedding[i], dim=-1)
        a = F.normalize(w["adapter.weight"] @ e + w["adapter.bias"], dim=-1)
        cosines.append(text @ a)
    return torch.stack(probs), torch.stack(cosines), feats.tokens


@torch.no_grad()
def public_test(w: Weights, backbone, images: torch.Tensor, supports: torch.Tensor, category: str, cfg
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(score [B], map M [B, S, S]) of the public test loop."""
    probs, cosines, tokens = prompt_branch(w, backbone, images, [category] * images.shape[0], cfg)
    bank = backbone.encode_image(supports, layers=cfg.layers).tokens
    grid, size = backbone.grid[0], backbone.image_size
    scores, maps = [], []
    for i in range(images.shape[0]):
        sim = torch.stack([F.cosine_similarity(t[i][:, None], b.reshape(-1, b.shape[-1])[None], dim=-1).amax(1)
                           for t, b in zip(tokens, bank)]).mean(0)
        sim = F.interpolate(sim.view(1, 1, grid, grid), size=(size, size), mode="bilinear", align_corners=True)
        mv = torch.cat([sim, 1 - sim], 1).softmax(1)[0, 1]
        m = cfg.prompt_weight * probs[i].mean(0) + (1 - cfg.prompt_weight) * mv
        maps.append(m)
        top = m.flatten().sort(descending=True).values[:cfg.topk].mean()
        scores.append(cfg.text_score_weight * cosines[i, 1] + cfg.map_score_weight * top)
    return torch.stack(scores), torch.stack(maps)


def public_loss(w: Weights, backbone, images: torch.Tensor, masks: torch.Tensor, categories: list[str], cfg
                ) -> torch.Tensor:
    probs, cosines, _ = prompt_branch(w, backbone, images, categories, cfg, training=True)
    gt = (masks > 0.3).float()
    label = gt.flatten(1).amax(1).long()
    total = 0.0
    for f in range(probs.shape[1]):
        p = probs[:, f].clamp(1e-5, 1 - 1e-5)
        total = total + (-(gt * (1 - p) ** 2 * p.log() + (1 - gt) * p ** 2 * (1 - p).log())).mean()
        for a, b in ((probs[:, f], gt), (1 - probs[:, f], 1 - gt)):
            dice = 1 - (2 * (a * b).flatten(1).sum(1) + 1) / (a.flatten(1).sum(1) + b.flatten(1).sum(1) + 1)
            total = total + 0.3 * dice.mean()
    return total + F.binary_cross_entropy(torch.sigmoid(cosines), F.one_hot(label, 2).float())
