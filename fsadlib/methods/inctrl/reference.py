"""The public InCTRL test path, re-implemented step by step as a slow reference (tests, benchmark).

What the public ``InCTRL.forward`` does for a batch of B queries with one shared set of k prompts
(``normal_list``), with the weights of an :class:`~fsadlib.methods.inctrl.model.Inctrl`:

- repeat the k prompt images for every query (shot-major, [k*B, 3, S, S]) and encode them again;
- stack the tapped layers and ``reshape`` (not permute) to [B, L, N, C] / [B, L, k*N, C] / [B, k, D];
- per query, per layer, per query patch: re-normalise the whole prompt bank and take
  min_j (1 - cos) / 2 (a Python loop over patches);
- per query: build the 7 x 22 + 4 x 22 prompts, tokenise and encode all 242 through the text tower.

With B = 1 its output equals :meth:`Inctrl.forward`; with B > 1 it equals ``legacy_reshape = 1``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fsadlib.methods.inctrl.model import Inctrl
from fsadlib.prompts import build_prompts, class_name
from fsadlib.prompts.ensemble import ABNORMAL_STATES_WINCLIP, NORMAL_STATES, TEMPLATES_WINCLIP


@torch.no_grad()
def public_forward(method: Inctrl, images: torch.Tensor, prompts: torch.Tensor, category: str
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """images [B, 3, S, S], prompts [k, 3, S, S] -> (final score [B], image-level score s_i [B])."""
    bb, layers = method.backbone, method.config.layers
    b, k = images.shape[0], prompts.shape[0]
    repeated = prompts.unsqueeze(1).repeat(1, b, 1, 1, 1).reshape(k * b, *prompts.shape[1:])
    q = bb.encode_image(images, layers=layers)
    p = bb.encode_image(repeated, layers=layers)
    q_tokens = torch.stack(q.tokens)                                   # [L, B, N, C]
    p_tokens = torch.stack(p.tokens)                                   # [L, k*B, N, C]
    n_layers, _, n, c = q_tokens.shape
    q_tokens = q_tokens.reshape(b, n_layers, n, c)
    p_tokens = p_tokens.reshape(b, n_layers, n * k, c)
    p_emb = p.embedding.reshape(b, k, -1)
    residual = method.adapter(p_emb).mean(1) - method.adapter(q.embedding)
    text_scores, patch_maps = [], []
    for i in range(b):
        per_layer = []
        for j in range(n_layers):
            bank, rows = p_tokens[i, j], []
            for t in range(n):
                bank = bank / bank.norm(dim=-1, keepdim=True)
                x = q_tokens[i, j, t].unsqueeze(0)
                x = x / x.norm(dim=-1, keepdim=True)
                rows.append((0.5 * (1 - x @ bank.T)).min(dim=1).values)
            per_layer.append(torch.stack(rows))
        patch_maps.append(torch.stack(per_layer).squeeze(2).mean(0))
        texts = build_prompts(class_name(category, {}), NORMAL_STATES, ABNORMAL_STATES_WINCLIP, TEMPLATES_WINCLIP)
        pos = F.normalize(bb.encode_text(list(texts.normal)), dim=-1).mean(0, keepdim=True)
        neg = F.normalize(bb.encode_text(list(texts.abnormal)), dim=-1).mean(0, keepdim=True)
        text = F.normalize(torch.cat([pos, neg]), dim=-1)
        g = F.normalize(q.embedding[i:i + 1], dim=-1)
        text_scores.append((method.config.text_scale * g @ text.T).softmax(-1)[0, 1])
    patch_map = torch.stack(patch_maps)
    s_i = method.image_head(residual)
    s_h = method.holistic_head(patch_map + torch.stack(text_scores)[:, None] + s_i[:, None])
    return (s_h + patch_map.max(dim=1).values) / 2, s_i
