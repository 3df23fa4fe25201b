"""MLSA (b): the multi-level alignment losses of FineGrainedAD (spec B1.4 b, segmentation script).

Per level (image, background, each entity) with features f (:class:`LevelFeatures`), visual tokens
v [k, N, D] (unit norm V-V patch tokens of the k shots; multiplied by the level's region weight map
w [k, N] for the background and entity levels: tokens are reweighted, not selected), s the raw
``logit_scale`` (~4.6, an explicit parameter), t_n = norm(mean f.normal), t_a^m every abnormal
feature (handcrafted and learned), t_a = norm(mean t_a^m):

    L_v2t   = CE( s * [<v, t_n>, <v, t_a^1>, ..., <v, t_a^M>], target 0 )   mean over all tokens
    L_tri   = mean relu( ||v - t_n||^2 - ||v - t_a||^2 + margin )             margin 1.0
              (``triplet_over_tokens``, the public code: PromptAD's TripletLoss sums the squared
               differences over dim 1 of [k, N, D], the TOKEN axis: mean_{k,d} relu(sum_N (v - t_n)^2
               - sum_N (v - t_a)^2 + margin))
    L_match = || mean(handcrafted) - mean(learned) ||^2                      weight lambda_1 = 0.001

and once, with h_s the learned-abnormal features of context set s (mean over a level's pieces):

    L_reg = || mean_s h_s^image - mean_s norm(sum_e h_s^entity_e) - mean(normal background) ||

    L = sum_levels (L_v2t + L_tri + lambda_1 L_match) + reg_weight * L_reg
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fsadlib.methods.finegrained.prompts import LevelFeatures


def level_losses(v: torch.Tensor, f: LevelFeatures, scale: float, margin: float,
                 triplet_over_tokens: bool = False) -> dict[str, torch.Tensor]:
    """L_v2t, L_tri and L_match of one level; v [k, N, D]."""
    t_n = F.normalize(f.normal.mean(0), dim=-1)
    t_ab = f.abnormal
    t_a = F.normalize(t_ab.mean(0), dim=-1)
    logits = scale * torch.cat([(v @ t_n)[..., None], v @ t_ab.T], dim=-1)  # [k, N, 1 + M]
    target = torch.zeros(logits.shape[:-1].numel(), dtype=torch.long, device=v.device)
    v2t = F.cross_entropy(logits.flatten(0, 1), target)
    axis = 1 if triplet_over_tokens else -1
    tri = F.relu((v - t_n).pow(2).sum(axis) - (v - t_a).pow(2).sum(axis) + margin).mean()
    match = (f.handcrafted.mean(0) - f.learned.mean(0)).pow(2).sum()
    return {"v2t": v2t, "tri": tri, "match": match}


def learned_per_set(f: LevelFeatures, n_sets: int) -> torch.Tensor:
    """[S, D]: the learned-abnormal features of each context set, averaged over the level's pieces."""
    return f.learned.view(n_sets, -1, f.learned.shape[-1]).mean(1)


def regulariser(levels: list[LevelFeatures], n_sets: int) -> torch.Tensor:
    """L_reg (levels in the order image, background, entities...)."""
    image = learned_per_set(levels[0], n_sets)
    entities = F.normalize(sum(learned_per_set(f, n_sets) for f in levels[2:]), dim=-1)
    return (image.mean(0) - entities.mean(0) - levels[1].normal.mean(0)).norm()


def mlsa_loss(levels: list[LevelFeatures], tokens: torch.Tensor, weights: torch.Tensor, n_sets: int,
              scale: float, margin: float, match_weight: float, reg_weight: float,
              triplet_over_tokens: bool = False) -> dict[str, torch.Tensor]:
    """Total loss and its parts. tokens [k, N, D] unit norm; weights [k, E + 1, N] (entities, then
    background) from :func:`fsadlib.methods.finegrained.regions.region_weights`."""
    weighted = [tokens] + [tokens * weights[:, -1, :, None]] + [tokens * weights[:, e, :, None]
                                                               for e in range(len(levels) - 2)]
    parts = [level_losses(v, f, scale, margin, triplet_over_tokens) for v, f in zip(weighted, levels)]
    out = {k: sum(p[k] for p in parts) for k in ("v2t", "tri", "match")}
    out["reg"] = regulariser(levels, n_sets)
    out["loss"] = out["v2t"] + out["tri"] + match_weight * out["match"] + reg_weight * out["reg"]
    return out
