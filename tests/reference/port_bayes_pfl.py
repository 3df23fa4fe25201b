"""Bayes-PFL's public prompt learner, test path and stage-1 loss (``xiaozhen228/Bayes-PFL``:
``PlanarPFL`` / ``PlanarPFL_state`` flows, ``Context_Prompting``, ``test.py``, ``loss.py``), written from
their equations with plain tensor operations on a dict of weights (the state of a
:class:`~fsadlib.methods.bayes_pfl.BayesPFL`), one image at a time; the frozen CLIP is the shared backbone's.

Flows (K planar steps): z0 = mu + sqrt(var) e, var = exp(h / 2), (mu, h) from two MLPs
(Linear-Softplus-Linear-Softplus-Linear); z_k = z_{k-1} + u_k tanh(w_k.z_{k-1} + b_k),
ld_k = log(|1 + u_k.(1 - tanh^2) w_k| + 1e-5). Context: input g, u/w/b = Linear(g); states: input the
free ``state`` vector, free u/w/b.
KL (``binary_loss_function`` with the batch's N images): context: mean_n [log q0 - log N(z_K) - sum_k ld];
states (z0 of batch 1 broadcast against N rows): log q0 - log N(z_K) - (1/N) sum_k ld.
Prompt for bank entry b, state s, sample r: "X <class>" with the X embedding replaced by
[c_b + z_ctx] (P rows) [s^s_b + z_s] (Q rows); EOT read-out shifted by P + Q - 1; T = norm(E).
Image: logit = exp(tau_i) <norm(M_c T + c), norm(v)>, v = g (stage 1) or M_i(g + Fuse(tokens)) (stage 2);
text_prob = mean_{r,b} softmax_s(logit)[1].
Pixel, layer l: P = norm(F_l A_l); T' = norm(T + MHA(T W_q + q, P, P)), 4 heads, scale D^-1/2;
logits = exp(tau_p) P T'^T; prob = softmax_s(up_ac(logits))[1]; raw map = mean over l, r, b.
Score = 0.5 text_prob + 0.5 mean(top-k(raw)); map = scipy gaussian_filter(raw, sigma) (mode reflect).
Stage-1 loss for bank entry b: CE(logits) + sum_l [FocalLoss + DiceLoss] + 0.01 (KL_ctx + KL_n + KL_a) + Orth,
FocalLoss: pt = p_gt, -(1 - pt)^2 log(pt + 1e-8), foreground mean + background mean (eps 1e-8);
Dice on the abnormal channel over the batch (smooth 1e-5); Orth: per state mean over (n, b, c) of
squared off-diagonal cosines of the B bank embeddings.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from fsadlib.prompts import class_name

Weights = dict[str, torch.Tensor]


def linear(x: torch.Tensor, w: Weights, name: str) -> torch.Tensor:
    return x @ w[name + ".weight"].T + w[name + ".bias"]


def mlp(x: torch.Tensor, w: Weights, name: str) -> torch.Tensor:
    h = F.softplus(linear(x, w, name + ".0"))
    return linear(F.softplus(linear(h, w, name + ".2")), w, name + ".4")


def planar(z: torch.Tensor, u: torch.Tensor, wv: torch.Tensor, b: torch.Tensor):
    """z [W]; u, wv [K, W]; b [K] -> (z_K, sum_k ld_k)."""
    total = 0.0
    for k in range(u.shape[0]):
        h = torch.tanh(wv[k] @ z + b[k])
        total = total + torch.log(torch.abs(1 + (wv[k] * (1 - h ** 2)) @ u[k]) + 1e-5)
        z = z + u[k] * h
    return z, total


def flow_sample(w: Weights, enc: str, x: torch.Tensor, u, wv, b, e: torch.Tensor):
    """One sample: (z_K, log q0(z0) - log N(z_K; 0, I), sum ld) with the constants dropped."""
    mu, var = mlp(x, w, enc + ".mean"), torch.exp(0.5 * mlp(x, w, enc + ".log_var"))
    z0 = mu + var.sqrt() * e
    zk, ld = planar(z0, u, wv, b)
    log_q0 = (-0.5 * var.log() - 0.5 * (z0 - mu) ** 2 / var).sum()
    return zk, log_q0 + 0.5 * (zk ** 2).sum(), ld


def prompts(w: Weights, backbone, cfg, g: torch.Tensor, category: str, e_ctx: torch.Tensor, e_n: torch.Tensor,
            e_a: torch.Tensor, paper: bool, n_batch: int = 1):
    """Text embeddings T [R, 2, B, D] of one image (g [D]) and its KL terms (ctx, normal, abnormal)."""
    k, width = cfg.n_flows, backbone.text_width
    ids = backbone.tokenize([f"X {class_name(category)}"])
    emb = backbone.token_embeddings(ids)[0]                               # [L, W]
    shift = cfg.context_length + cfg.state_length - 1
    eot = int(ids[0].argmax()) + shift
    u = linear(g, w, "context_flow.amor_u").view(k, width)
    wv = linear(g, w, "context_flow.amor_w").view(k, width)
    b = linear(g, w, "context_flow.amor_b")
    seqs, kl_ctx, kl_states = [], [], {0: [], 1: []}
    r_count = e_ctx.shape[0]
    for r in range(r_count):
        z_ctx, a, ld = flow_sample(w, "context_flow.encoder", g, u, wv, b, e_ctx[r])
        kl_ctx.append(a - ld)
        for s, (name, e) in enumerate((("normal", e_n), ("abnormal", e_a))):
            flow = f"{name}_flow."
            z_s, a_s, ld_s = flow_sample(w, "state_encoder", w[flow + "state"][0], w[flow + "u"][0],
                                         w[flow + "w"][0], w[flow + "b"][0], e[r])
            kl_states[s].append(a_s - (ld_s / n_batch if paper else ld_s))
            for j in range(cfg.bank_size):
                inserted = torch.cat([w["context.tokens"][j] + z_ctx, w[f"{name}_state.tokens"][j] + z_s])
                seqs.append(torch.cat([emb[:1], inserted, emb[2:]])[:emb.shape[0]])
    # the text tower is row-independent: one call for the image's R x 2 x B prompts
    text = backbone.encode_text_embeddings(torch.stack(seqs), torch.full((len(seqs),), eot))
    kl = (torch.stack(kl_ctx).mean(), torch.stack(kl_states[0]).mean(), torch.stack(kl_states[1]).mean())
    return F.normalize(text, dim=-1).view(r_count, 2, cfg.bank_size, -1), kl


def image_logits(w: Weights, g: torch.Tensor, tokens: list[torch.Tensor], text: torch.Tensor, stage: int):
    """text [..., D] -> logits [...] of one image (tokens L x [n, Cv])."""
    v = g
    if stage == 2:
        x = linear(torch.cat(tokens, -1), w, "fuse.reduce")
        att = linear(x, w, "fuse.score").softmax(0)
        v = linear(g + linear((att * x).sum(0), w, "fuse.out"), w, "image_mapping")
    t = F.normalize(linear(text, w, "class_mapping"), dim=-1)
    return w["log_scale_image"].exp() * (t @ F.normalize(v, dim=-1))


def pixel_logits(w: Weights, tok: torch.Tensor, layer: int, text: torch.Tensor, heads: int) -> torch.Tensor:
    """RCA of one image and layer: tok [n, Cv], text [T, D] -> logits [T, n]."""
    p = F.normalize(tok @ w[f"rca.patch_proj.{layer}.weight"].T, dim=-1)
    d = text.shape[-1]
    q = linear(text, w, "rca.query")
    outs = []
    for h in range(heads):
        sl = slice(h * d // heads, (h + 1) * d // heads)
        att = (q[:, sl] @ p[:, sl].T * d ** -0.5).softmax(-1)
        outs.append(att @ p[:, sl])
    t2 = F.normalize(text + torch.cat(outs, -1), dim=-1)
    return w["log_scale_pixel"].exp() * t2 @ p.T


def prob_map(logits: torch.Tensor, grid: int, size: int) -> torch.Tensor:
    """logits [2, n] (normal, abnormal) -> abnormal probability [S, S]."""
    up = F.interpolate(logits.view(1, 2, grid, grid), size=(size, size), mode="bilinear", align_corners=True)
    return up.softmax(1)[0, 1]


@torch.no_grad()
def public_test(w: Weights, backbone, cfg, images: torch.Tensor, category: str, e_ctx: torch.Tensor,
                e_n: torch.Tensor, e_a: torch.Tensor, paper: bool = True):
    """(score [N], blurred map [N, S, S]); e_ctx [N, R, W] (one draw per image), e_n / e_a [R, W]."""
    feats = backbone.encode_image(images, layers=cfg.layers)
    grid, size, stage = backbone.grid[0], backbone.image_size, int(w["stage"])
    scores, maps = [], []
    for i in range(images.shape[0]):
        g, tokens = feats.embedding[i], [t[i] for t in feats.tokens]
        text, _ = prompts(w, backbone, cfg, g, category, e_ctx[i], e_n, e_a, paper)    # [R, 2, B, D]
        flat = text.permute(0, 2, 1, 3).reshape(-1, 2, text.shape[-1])               # [R*B, 2, D]
        text_prob = image_logits(w, g, tokens, flat, stage).softmax(-1)[:, 1].mean()
        per = [prob_map(pixel_logits(w, tok, l, pair, cfg.rca_heads), grid, size)
               for l, tok in enumerate(tokens) for pair in flat]
        raw = torch.stack(per).mean(0)
        top = raw.flatten().sort(descending=True).values[:cfg.topk].mean()
        scores.append(cfg.text_weight * text_prob + (1 - cfg.text_weight) * top)
        blurred = gaussian_filter(raw.numpy().astype(np.float64), cfg.sigma, mode="reflect" if paper else "mirror")
        maps.append(torch.from_numpy(blurred).float())
    return torch.stack(scores), torch.stack(maps)


def stage1_loss(w: Weights, backbone, cfg, batch: dict, noise: torch.Tensor, b: int, kl_weight: float = 0.01,
                paper: bool = True) -> torch.Tensor:
    """noise [N + 2, 1, W] (one per image, then normal and abnormal), b the step's bank entry."""
    images, n = batch["image"], batch["image"].shape[0]
    with torch.no_grad():
        feats = backbone.encode_image(images, layers=cfg.layers)
    grid, size = backbone.grid[0], backbone.image_size
    gt = (batch["mask"] > 0.5).float()
    texts, logits, kls, probs = [], [], [], []
    for i in range(n):
        g, tokens = feats.embedding[i], [t[i] for t in feats.tokens]
        text, kl = prompts(w, backbone, cfg, g, batch["category"][i], noise[i], noise[n], noise[n + 1], paper, n)
        texts.append(text[0])                                                       # [2, B, D]
        kls.append(kl)
        logits.append(image_logits(w, g, tokens, text[0, :, b], 1))
        probs.append(torch.stack([prob_map(pixel_logits(w, tok, l, text[0, :, b], cfg.rca_heads), grid, size)
                                  for l, tok in enumerate(tokens)]))
    ce = F.cross_entropy(torch.stack(logits), batch["label"].long())
    probs = torch.stack(probs)                                                      # [N, L, S, S]
    pixel = 0.0
    for l in range(probs.shape[1]):
        p = probs[:, l]
        pt = torch.where(gt > 0, p, 1 - p)
        focal = -(1 - pt) ** 2 * torch.log(pt + 1e-8)
        fg = gt > 0
        pixel = pixel + (focal * fg).sum() / (fg.sum() + 1e-8) + (focal * ~fg).sum() / ((~fg).sum() + 1e-8)
        pixel = pixel + 1 - (2 * (p * gt).sum() + 1e-5) / (p.sum() + gt.sum() + 1e-5)
    kl = torch.stack([k[0] for k in kls]).mean() + kls[0][1] + kls[0][2]
    text = torch.stack(texts)                                                       # [N, 2, B, D]
    orth = 0.0
    for s in range(2):
        cos = torch.einsum("nbd,ncd->nbc", text[:, s], text[:, s]) ** 2
        orth = orth + (cos * (1 - torch.eye(cos.shape[-1]))).mean()
    return ce + pixel + kl_weight * kl + orth
