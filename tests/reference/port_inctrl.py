"""InCTRL's public forward and loss (``mala-lab/InCTRL`` ``InCTRL.forward`` + ``BinaryFocalLoss``),
written from its equations with plain tensor operations on a dict of weights (the trained parameters
and BatchNorm statistics of an :class:`~fsadlib.methods.inctrl.Inctrl`); the frozen CLIP towers are
the shared backbone's. Any batch size: the public layout is reproduced as written there.

For B queries x_b, each with k prompt images (public ``image[1:]``: k tensors [B, 3, S, S], so the
encoded prompts are shot-major, row s*B + b), L tapped layers:
    Q = stack_l tokens_l(x)       [L, B, N, C]  ->  reshape  [B, L, N, C]
    P = stack_l tokens_l(prompts) [L, k*B, N, C] -> reshape  [B, L, k*N, C]
    E = CLS(prompts)              [k*B, D]       -> reshape  [B, k, D]
    r_bl(i) = min_j 0.5 (1 - cos(Q_bl(i), P_bl(j))),   M_b = mean_l r_bl
    psi(e) = ReLU(W2 ReLU(W1 e))                   (no bias)
    s_i = eta_i(mean_k psi(E_bk) - psi(e(x_b)))
    s_a = softmax(100 <norm e(x_b), [t_n, t_a]>)[1], t = norm(mean norm E_text(prompt)) per state
    s_h = eta_h(M_b + s_a + s_i),   s = (s_h + max_i M_b(i)) / 2
    eta(z) = sigmoid(W3 BN2(ReLU(W2 BN1(ReLU(W1 z + b1)) + b2)) + b3)   (ReLU, then BatchNorm)
Loss (BinaryFocalLoss(logits=True), gamma 2, alpha 1, fed the probabilities s and s_i):
    FL(z, y) = mean( (1 - exp(-BCEwL(z, y)))^2 BCEwL(z, y) ),   loss = FL(s, y) + FL(s_i, y)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fsadlib.prompts import class_name
from fsadlib.prompts.ensemble import ABNORMAL_STATES_WINCLIP, NORMAL_STATES, TEMPLATES_WINCLIP


def eta(z: torch.Tensor, w: dict[str, torch.Tensor], head: str, training: bool) -> torch.Tensor:
    """Scoring head on [B, d] -> [B]."""
    def bn(x, i):
        p = f"{head}.net.{i}."
        if training:
            return F.batch_norm(x, None, None, w[p + "weight"], w[p + "bias"], training=True, eps=1e-5)
        return F.batch_norm(x, w[p + "running_mean"], w[p + "running_var"], w[p + "weight"], w[p + "bias"],
                            training=False, eps=1e-5)

    h = bn(torch.relu(F.linear(z, w[f"{head}.net.0.weight"], w[f"{head}.net.0.bias"])), 2)
    h = bn(torch.relu(F.linear(h, w[f"{head}.net.3.weight"], w[f"{head}.net.3.bias"])), 5)
    return torch.sigmoid(F.linear(h, w[f"{head}.net.6.weight"], w[f"{head}.net.6.bias"]))[:, 0]


def psi(e: torch.Tensor, w: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.relu(torch.relu(e @ w["adapter.net.0.weight"].T) @ w["adapter.net.2.weight"].T)


_TEXT: dict[tuple[int, str], torch.Tensor] = {}


@torch.no_grad()
def text_features(backbone, category: str) -> torch.Tensor:
    """[2, D] the public ``get_texts`` ensemble (7 x 22 normal, 4 x 22 anomalous prompts); the public
    code encodes it for every query, the same numbers each time, so it is kept per backbone here."""
    key = (id(backbone), category)
    if key not in _TEXT:
        _TEXT[key] = _text_features(backbone, category)
    return _TEXT[key]


def _text_features(backbone, category: str) -> torch.Tensor:
    name = class_name(category, {})
    # both states' prompts in one text-tower call (the public code makes one per state): the tower runs
    # up to the batch's longest prompt, so the same batch as fsadlib's keeps the float rounding equal
    prompts = [[t.format(s.format(name)) for s in states for t in TEMPLATES_WINCLIP]
               for states in (NORMAL_STATES, ABNORMAL_STATES_WINCLIP)]
    emb = F.normalize(backbone.encode_text(prompts[0] + prompts[1]), dim=-1)
    rows = [emb[:len(prompts[0])].mean(0), emb[len(prompts[0]):].mean(0)]
    return F.normalize(torch.stack(rows), dim=-1)


def public_forward(w: dict[str, torch.Tensor], backbone, layers, images: torch.Tensor, prompts: torch.Tensor,
                   categories: list[str], training: bool = False) -> dict[str, torch.Tensor]:
    """images [B, 3, S, S], prompts [B, k, 3, S, S] -> final s, s_i, s_h, s_a [B], map M [B, N]."""
    b, k = prompts.shape[:2]
    with torch.no_grad():
        q = backbone.encode_image(images, layers=layers)
        p = backbone.encode_image(prompts.transpose(0, 1).reshape(k * b, *prompts.shape[2:]), layers=layers)
        texts = {c: text_features(backbone, c) for c in set(categories)}
    n_layers, (_, n, c) = len(layers), q.tokens[0].shape
    q_tok = torch.stack(q.tokens).reshape(b, n_layers, n, c)
    p_tok = torch.stack(p.tokens).reshape(b, n_layers, k * n, c)
    p_emb = p.embedding.reshape(b, k, -1)
    patch_map = torch.stack([
        torch.stack([(0.5 * (1 - F.normalize(q_tok[i, l], dim=-1) @ F.normalize(p_tok[i, l], dim=-1).T)).amin(1)
                     for l in range(n_layers)]).mean(0)
        for i in range(b)])
    s_i = eta(psi(p_emb, w).mean(1) - psi(q.embedding, w), w, "image_head", training)
    s_a = torch.stack([(100 * F.normalize(q.embedding[i], dim=-1) @ texts[categories[i]].T).softmax(-1)[1]
                       for i in range(b)])
    s_h = eta(patch_map + s_a[:, None] + s_i[:, None], w, "holistic_head", training)
    return {"final": (s_h + patch_map.amax(1)) / 2, "image": s_i, "holistic": s_h, "text": s_a, "map": patch_map}


def binary_focal_with_logits(z: torch.Tensor, y: torch.Tensor, gamma: float = 2.0, alpha: float = 1.0
                             ) -> torch.Tensor:
    bce = F.binary_cross_entropy_with_logits(z, y, reduction="none")
    return (alpha * (1 - torch.exp(-bce)) ** gamma * bce).mean()


def public_loss(out: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    y = labels.float()
    return binary_focal_with_logits(out["final"], y) + binary_focal_with_logits(out["image"], y)
