"""MLSA (a): language-guided progressive region aggregation with DPC-KNN (spec B1.4 a).

**DPC-KNN** (density-peak clustering with k-NN density, as TCFormer's CTM), per batch item, tokens
x [N, C]: d_ij = ||x_i - x_j|| / sqrt(C); density rho_i = exp(-mean_{j in kNN(i)} d_ij^2) (the k
nearest include i itself) plus U(0, 1e-6) tie-breaking noise from a seeded generator; delta_i =
min distance to a denser token (the largest distance when none); the ``n_clusters`` tokens with the
largest rho * delta are the centres and every token joins its nearest centre. Masked tokens get
distance max+1 to everyone and density 0, so they are never centres and never change a density.

**Effective k.** The public code configures k = 8 (stage 1) and k = 5 (stage 2) but replaces k by
min(3, floor(clusters / 2)) whenever k exceeds the cluster count (:func:`effective_k`), so stage 1
runs with k = 1. Kept for parity (``dpc_k_background`` / ``dpc_k_entity`` change the configured k).

**Region weights** (:func:`region_weights`), from the k normal shots, at ``upscale`` x the patch grid:
1. guide_i = [cos(v_i, n_e) for each entity e, cos(v_i, n_bg)] (length E + 1): "language guidance";
2. DPC-KNN with 2 clusters; the cluster whose mean visual token is closer (cosine) to the background
   text feature n_bg is the background;
3. DPC-KNN on the foreground tokens with E + 1 clusters; each entity text feature n_e is matched to
   the foreground cluster whose mean visual token has the highest cosine to it;
4. weight maps w_e = 1 + ``boost`` on the matched cluster (entity e) or on the background cluster
   (background level), 1 elsewhere; average-pooled ``upscale`` x ``upscale`` to the patch grid.

Deviation (bug fix): the public code matches clusters with the cluster means of the FIRST shot only
and applies the match to every shot's own labels, whose cluster ids are unrelated; here every shot
is matched with its own cluster means. The hand-drawn cluster map it uses for VisA pcb2 is not used.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def effective_k(k: int, n_clusters: int) -> int:
    """The public code's cap: k > clusters -> min(3, clusters // 2) (at least 1)."""
    return max(1, min(3, n_clusters // 2)) if k > n_clusters else k


def dpc_knn(x: torch.Tensor, n_clusters: int, k: int, mask: torch.Tensor | None = None,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Cluster index [B, N] of tokens x [B, N, C] (see the module docstring); ``mask`` [B, N] True = use."""
    b, n, c = x.shape
    dist = torch.cdist(x.float(), x.float()) / c ** 0.5
    if mask is not None:
        dist = torch.where(mask[:, None, :], dist, dist.max() + 1)
    knn = dist.topk(min(k, n), dim=-1, largest=False).values
    density = torch.exp(-(knn ** 2).mean(-1))
    density = density + torch.rand(density.shape, generator=generator).to(density) * 1e-6
    if mask is not None:
        density = density * mask
    denser = density[:, None, :] > density[:, :, None]
    dist_max = dist.flatten(1).amax(1)[:, None, None]
    delta = torch.where(denser, dist, dist_max).amin(-1)
    centres = (delta * density).topk(n_clusters, dim=-1).indices  # [B, K]
    to_centre = torch.gather(dist, 1, centres[:, :, None].expand(-1, -1, n))  # [B, K, N]
    labels = to_centre.argmin(1)
    labels.scatter_(1, centres, torch.arange(n_clusters, device=x.device).expand(b, -1))
    return labels


def cluster_means(tokens: torch.Tensor, labels: torch.Tensor, n_clusters: int,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean token of each cluster: [B, N, D], [B, N] -> [B, K, D] (zeros for an empty cluster)."""
    onehot = F.one_hot(labels, n_clusters).float()
    if mask is not None:
        onehot = onehot * mask[..., None]
    return onehot.transpose(1, 2) @ tokens / onehot.sum(1)[..., None].clamp_min(1)


@dataclass
class Regions:
    """weights [B, E + 1, N] at the patch grid (entities, then background); labels at the fine grid."""

    weights: torch.Tensor
    background: torch.Tensor      # [B, Nf] bool, stage-1 background
    entity_cluster: torch.Tensor  # [B, Nf] stage-2 cluster (-1 on the background)
    matched: torch.Tensor         # [B, E] stage-2 cluster matched to each entity


def region_weights(tokens: torch.Tensor, entity_text: torch.Tensor, background_text: torch.Tensor,
                   upscale: int, boost: float = 1.5, k_background: int = 8, k_entity: int = 5,
                   generator: torch.Generator | None = None) -> Regions:
    """Region weight maps from fine-grid tokens [B, Nf, D] (Nf = (upscale * g)^2, unit norm),
    entity text features [E, D] and the background text feature [D] (see the module docstring)."""
    b, nf, _ = tokens.shape
    e = entity_text.shape[0]
    side = round(nf ** 0.5)
    if side * side != nf or side % upscale:
        raise ValueError(f"{nf} fine tokens are not a square grid divisible by upscale {upscale}")
    texts = F.normalize(torch.cat([entity_text, background_text[None]]).float(), dim=-1)
    guide = tokens.float() @ texts.T  # [B, Nf, E + 1]
    stage1 = dpc_knn(guide, 2, effective_k(k_background, 2), generator=generator)
    means1 = F.normalize(cluster_means(tokens.float(), stage1, 2), dim=-1)
    bg_cluster = (means1 @ texts[-1]).argmax(1)  # [B]
    background = stage1 == bg_cluster[:, None]
    fg = ~background
    stage2 = dpc_knn(guide, e + 1, effective_k(k_entity, e + 1), mask=fg, generator=generator)
    means2 = F.normalize(cluster_means(tokens.float(), stage2, e + 1, mask=fg), dim=-1)
    matched = (means2 @ texts[:-1].T).argmax(1)  # [B, E]
    regions = torch.cat([(stage2[:, None, :] == matched[:, :, None]) & fg[:, None, :], background[:, None, :]], 1)
    fine = 1 + boost * regions.float()  # [B, E + 1, Nf]
    coarse = F.avg_pool2d(fine.view(b * (e + 1), 1, side, side), upscale).view(b, e + 1, -1)
    return Regions(coarse, background, torch.where(fg, stage2, -1), matched)
