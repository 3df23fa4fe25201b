"""FineGrainedAD's prompts, scoring and MLSA losses written from the equations with plain tensor
operations on a dict of weights (the prompt parameters of a
:class:`~fsadlib.methods.finegrained.FineGrainedAD`), prompt by prompt; the frozen CLIP (its V-V path
included) is the shared backbone's and the token ids are the model's prompt table (the texts have their
own tests). ``paper`` selects the public code's variants (README table).

Prompts (context N_j [n_ctx, W], anomaly tokens A_m [n_ctx_ab, W], attribute weights w [2, 4]):
    seq(ids, ctx) = [SOS] ctx tokens-of-ids ...   (EOT shifted by the context length)
    image level, normal row i:      seq(caption_i, N_j) + sum_a sig(w[0, a]) mean_pieces seq(attr_a, N_j)
    image level, handcrafted row i: seq(abnormal_i, N_j) + sum_a sig(w[1, a]) seq(negative_a[i], N_j)
    image level, learned set (j, m): seq(caption_i, N_j A_m) + sum_a sig(w[1, a]) mean_pieces seq(attr_a, N_j A_m)
    other levels: the same without the attribute terms. Features: norm(text tower).
Scoring of a token v (unit V-V patch token, or the unit global feature g): level c* = argmax_c <v, n_c>,
    T(v) = softmax(s [<v, n_c*>, <v, a_c*>])[1] with n_c = norm(mean normal_c), a_c = norm(mean abnormal_c);
    V(p) = mean over memory layers of min_j (1 - cos(x_l(p), bank_l(j))) / 2 (raw original-path tokens);
    map = gaussian_filter(up(2 / (1/T + 1/V)), sigma), score = 2 / (1/T(g) + 1/max_p V(p)).
Losses per level (v = tokens weighted by the level's region map): L_v2t = CE(s [v.t_n, v.t_a^m], 0),
    L_tri = mean relu(|v - t_n|^2 - |v - t_a|^2 + margin) (``paper``: squared distances summed over the
    token axis first, PromptAD's ``TripletLoss`` on [k, N, D]), L_match = |mean hand - mean learned|^2;
    L_reg = |mean_s h^img_s - mean_s norm(sum_e h^e_s) - mean normal_bg|.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from fsadlib.methods.finegrained.prompts import ATTRIBUTES

Weights = dict[str, torch.Tensor]


def seq(backbone, ids: torch.Tensor, ctx: torch.Tensor) -> tuple[torch.Tensor, int]:
    emb = backbone.token_embeddings(ids[None])[0]
    return torch.cat([emb[:1], ctx, emb[1:]])[:emb.shape[0]], int(ids.argmax()) + ctx.shape[0]


def level_features(w: Weights, backbone, table) -> list[dict[str, torch.Tensor]]:
    """Per level {"normal", "handcrafted", "learned"} unit features (learned rows set-major)."""
    normal_ctx, abnormal_ctx = w["prompts.normal_ctx.tokens"], w["prompts.abnormal_ctx.tokens"]
    sig = torch.sigmoid(w["prompts.attribute_logits"])
    learned_ctx = [torch.cat([normal_ctx[j], abnormal_ctx[m]]) for j in range(normal_ctx.shape[0])
                   for m in range(abnormal_ctx.shape[0])]
    attrs = [(ATTRIBUTES.index(a.name), table.attr_normal[i], table.attr_abnormal[i])
             for i, a in enumerate(table.texts.attributes)]

    def mean_seq(rows, ctx):
        return torch.stack([seq(backbone, r, ctx)[0] for r in rows]).mean(0)

    seqs, eots, index = [], [], []
    for c in range(table.n_levels):
        groups = {"normal": [], "handcrafted": [], "learned": []}
        for kind, rows, contexts in (("normal", table.level_normal[c], list(normal_ctx)),
                                     ("handcrafted", table.level_abnormal[c], list(normal_ctx)),
                                     ("learned", table.level_normal[c], learned_ctx)):
            for ctx in contexts:
                for i, row in enumerate(rows):
                    e, eot = seq(backbone, row, ctx)
                    if c == 0:
                        for a, attr_normal, attr_negative in attrs:
                            if kind == "handcrafted":
                                e = e + sig[1, a] * seq(backbone, attr_negative[i], ctx)[0]
                            else:
                                e = e + sig[0 if kind == "normal" else 1, a] * mean_seq(attr_normal, ctx)
                    groups[kind].append(len(seqs))
                    seqs.append(e)
                    eots.append(eot)
        index.append(groups)
    feats = F.normalize(backbone.encode_text_embeddings(torch.stack(seqs), torch.tensor(eots)), dim=-1)
    return [{k: feats[v] for k, v in g.items()} for g in index]


def pairs(levels) -> torch.Tensor:
    """[C, 2, D]: (norm mean normal, norm mean of handcrafted and learned) per level."""
    return torch.stack([torch.stack([F.normalize(f["normal"].mean(0), dim=-1),
                                     F.normalize(torch.cat([f["handcrafted"], f["learned"]]).mean(0), dim=-1)])
                        for f in levels])


def text_score(v: torch.Tensor, pair: torch.Tensor, scale: float) -> torch.Tensor:
    """v [D] -> P(abnormal) at the level of the most similar normal feature."""
    c = int((pair[:, 0] @ v).argmax())
    return (scale * torch.stack([pair[c, 0] @ v, pair[c, 1] @ v])).softmax(0)[1]


def harmonic(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 2 / (1 / (a + 1e-8) + 1 / (b + 1e-8))


@torch.no_grad()
def forward(w: Weights, backbone, table, cfg, supports: torch.Tensor, images: torch.Tensor, paper: bool = False
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(score [B], map [B, S, S])."""
    pair = pairs(level_features(w, backbone, table))
    last = backbone.num_layers

    def encode(x):
        f = backbone.encode_image(x, layers=cfg.memory_layers, vv_from=1, vv_layers=[last])
        patch = F.normalize(backbone.model.visual.ln_post(f.vv_tokens[0]) @ backbone.model.visual.proj, dim=-1)
        return patch, F.normalize(f.embedding, dim=-1), f.tokens

    _, _, bank = encode(supports)
    patch, glob, memory = encode(images)
    grid, size = backbone.grid[0], backbone.image_size
    scores, maps = [], []
    for b in range(images.shape[0]):
        t = torch.stack([text_score(v, pair, cfg.logit_scale) for v in patch[b]])
        vis = torch.stack([((1 - F.normalize(q[b], dim=-1) @ F.normalize(m.flatten(0, 1), dim=-1).T) / 2).amin(1)
                           for q, m in zip(memory, bank)]).mean(0)
        up = F.interpolate(harmonic(t, vis).view(1, 1, grid, grid), size=(size, size), mode="bilinear",
                           align_corners=False)[0, 0]
        maps.append(torch.from_numpy(gaussian_filter(up.double().numpy(), cfg.sigma,
                                                     mode="reflect" if paper else "mirror")).float())
        scores.append(harmonic(text_score(glob[b], pair, cfg.logit_scale), vis.max()))
    return torch.stack(scores), torch.stack(maps)


def mlsa_loss(levels, tokens: torch.Tensor, weights: torch.Tensor, cfg, paper: bool = False) -> torch.Tensor:
    """tokens [k, N, D] unit V-V tokens of the shots; weights [k, E + 1, N] (entities, then background)."""
    n_sets = cfg.n_pro * cfg.n_pro_ab
    total = 0.0
    for c, f in enumerate(levels):
        region = None if c == 0 else weights[:, -1] if c == 1 else weights[:, c - 2]
        v = tokens if region is None else tokens * region[..., None]
        t_n = F.normalize(f["normal"].mean(0), dim=-1)
        t_all = torch.cat([f["handcrafted"], f["learned"]])
        t_a = F.normalize(t_all.mean(0), dim=-1)
        logits = cfg.logit_scale * torch.cat([(v @ t_n)[..., None], v @ t_all.T], -1).flatten(0, 1)
        total = total + F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long))
        if paper:
            d_pos, d_neg = (v - t_n).pow(2).sum(1), (v - t_a).pow(2).sum(1)       # [k, D]: summed over tokens
        else:
            d_pos, d_neg = (v - t_n).pow(2).sum(-1), (v - t_a).pow(2).sum(-1)     # [k, N]
        total = total + torch.relu(d_pos - d_neg + cfg.triplet_margin).mean()
        total = total + cfg.match_weight * (f["handcrafted"].mean(0) - f["learned"].mean(0)).pow(2).sum()

    def per_set(f):
        return f["learned"].view(n_sets, -1, f["learned"].shape[-1]).mean(1)

    image = per_set(levels[0])
    entities = F.normalize(sum(per_set(f) for f in levels[2:]), dim=-1)
    reg = (image.mean(0) - entities.mean(0) - levels[1]["normal"].mean(0)).norm()
    return total + cfg.reg_weight * reg
