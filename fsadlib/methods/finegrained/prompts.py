"""MLLP, the multi-level learnable prompt of FineGrainedAD (spec B1.3), as a level table and one loop.

**Texts** (:func:`build_texts`, from the MFSC captions of one category; every random choice comes
from ``numpy.random.default_rng(prompt_seed)``, so the texts are a function of (captions, seed) and
are stored in checkpoints). Levels, in this order (the ``c`` index of every [C, ...] tensor):

| c | level      | normal text            | handcrafted abnormal texts (the *replacement* mechanism) |
|---|------------|------------------------|-----------------------------------------------------------|
| 0 | image      | global caption          | caption with the foreground noun replaced by each defect phrase |
| 1 | background | "<background> background" | that phrase put into each defect phrase ("<bg> background with hole") |
| 2+i | entity i | entity caption i        | per defect phrase: entity name put into the phrase AND its location word |
|   |            |                          | replaced by a seeded random *different* location word |

Attribute texts (superposed onto the image level only): relation (normal: the Level-2 relation;
abnormal: every entity name put into a seeded random defect phrase), colour / texture / shape (normal:
the category's words joined by ". "; abnormal: the vocabulary words the category does not have,
"negative attributes", keeping the M with the largest mean token embedding as the public code does,
M = number of handcrafted image prompts, cycled when fewer).

**Prompts.** Learnable context: ``normal_ctx`` [n_pro, n_ctx, W] shared by every normal and
handcrafted-abnormal prompt, ``abnormal_ctx`` [n_pro_ab, n_ctx_ab, W] (the "A" tokens), both
N(0, 0.02). With e(text) the token embeddings [L, W]:

    normal_j      = [SOS] N_j  text .             j < n_pro
    handcrafted_j = [SOS] N_j  abnormal text .
    learned_jm    = [SOS] N_j A_m text .         m < n_pro_ab   (set index s = j * n_pro_ab + m)

**Weighted superposition** (the paper's "concatenation", implemented as in the public code): the
image-level embedding sequences [L, W] get the attribute sequences built with the same context added
position-wise, weighted by sigmoid(w):

    E_img <- E_caption + sum_{a in relation, colour, texture, shape} sigmoid(w[kind, a]) * E_a

with kind 0 for normal prompts and 1 for both abnormal kinds (8 weights, init 0 -> 0.5), handcrafted
prompt i paired with abnormal attribute candidate i; the EOT read-out stays the caption's. All
sequences of all levels then go through the frozen text tower in ONE batched call.

Texts longer than the context budget (77 - 2 - n_ctx - n_ctx_ab tokens) are split into pieces by
:func:`fsadlib.captions.split_to_fit` (with a warning), never cut: every piece is a prompt of its
level; a split attribute text contributes the mean of its pieces' sequences. Every piece of a split
handcrafted abnormal text carries its defect phrase (:func:`carry_defect`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fsadlib.captions import Captions, split_to_fit
from fsadlib.captions.vocab import COLORS, LOCATIONS, SHAPES, TEXTURES
from fsadlib.prompts import LearnableTokens

ATTRIBUTES = ("relation", "color", "texture", "shape")
NEGATIVE_VOCAB = {"color": tuple(COLORS), "texture": TEXTURES, "shape": SHAPES}


@dataclass(frozen=True)
class LevelTexts:
    """``defects[i]``: the defect phrase written into ``abnormal[i]`` (empty: none to carry)."""

    name: str
    normal: tuple[str, ...]
    abnormal: tuple[str, ...]
    defects: tuple[str, ...] = ()


@dataclass(frozen=True)
class MllpTexts:
    """The texts of every level (image, background, entities) and of the four attributes."""

    levels: tuple[LevelTexts, ...]
    attributes: tuple[LevelTexts, ...]

    def to_json(self) -> dict:
        return asdict(self)


def build_texts(c: Captions, seed: int, caption_levels: tuple[int, ...] = (1, 2, 3),
                one_abnormal_per_entity: bool = False, phrases: tuple[str, ...] | None = None) -> MllpTexts:
    """Normal and handcrafted-abnormal texts of every level (table in the module docstring).

    ``caption_levels`` (ablation) names the MFSC levels whose fine-grained content is used:
    without 1 the background level is the bare word "background"; without 2 the entity levels are
    the bare entity names (no number, location or relation) and the relation attribute is dropped;
    without 3 the colour / texture / shape attributes are dropped. The level structure (image,
    background, entities) stays, so routing and MLSA work unchanged.

    ``one_abnormal_per_entity`` (the public code, ``preset: paper``): each entity level gets ONE
    handcrafted abnormal text, built with one seeded random defect phrase, instead of one per phrase.

    ``phrases``: the defect templates (one ``{}`` each) written into the abnormal texts; default the
    captions' ``anomaly_phrases`` (:func:`fsadlib.methods.finegrained.vocabulary.defect_phrases`).
    """
    rng = np.random.default_rng(seed)
    phrases = c.anomaly_phrases if phrases is None else phrases
    background = f"{c.background} background" if 1 in caption_levels else "background"
    levels = [
        LevelTexts("image", (c.caption,), tuple(c.caption.replace(c.foreground, p.format(c.foreground), 1)
                                                for p in phrases), tuple(p.format(c.foreground) for p in phrases)),
        LevelTexts("background", (background,), tuple(p.format(background) for p in phrases)),
    ]
    for name, loc, text in zip(c.entity, c.location, c.entity_caption):
        if 2 not in caption_levels:
            levels.append(LevelTexts(f"entity:{name}", (name,), tuple(p.format(name) for p in phrases)))
            continue
        others = [w for w in LOCATIONS if w != loc]
        abnormal = []
        chosen = (phrases[rng.integers(len(phrases))],) if one_abnormal_per_entity else phrases
        for p in chosen:
            head, _, tail = text.rpartition(loc)  # the location word is replaced at its last occurrence
            moved = f"{head}{others[rng.integers(len(others))]}{tail}"
            abnormal.append(moved.replace(name, p.format(name), 1))
        levels.append(LevelTexts(f"entity:{name}", (text,), tuple(abnormal), tuple(p.format(name) for p in chosen)))
    attributes = []
    if 2 in caption_levels:
        relation_ab = c.relation
        for name in sorted(c.entity, key=len, reverse=True):
            relation_ab = relation_ab.replace(name, phrases[rng.integers(len(phrases))].format(name))
        attributes.append(LevelTexts("relation", (c.relation,), (relation_ab,)))
    for attr in ("color", "texture", "shape") if 3 in caption_levels else ():
        own = list(dict.fromkeys(getattr(c, attr)))
        attributes.append(LevelTexts(attr, (". ".join(own),),
                                     tuple(w for w in NEGATIVE_VOCAB[attr] if w not in own)))
    return MllpTexts(tuple(levels), tuple(attributes))


def carry_defect(text: str, defect: str, n_tokens, budget: int) -> list[str]:
    """Pieces of an abnormal text that each carry its defect phrase: the text itself when it fits and
    names the defect; otherwise it is split to ``budget`` minus the phrase's tokens, and every piece
    without the phrase is prefixed with it ("<defect>. <piece>"), so no piece reads as normal text."""
    if n_tokens(text) <= budget and defect in text:
        return [text]
    room = budget - n_tokens(_sentence(defect)) - 1
    return [p if defect in p else f"{_sentence(defect)} {p}" for p in split_to_fit(text, n_tokens, room)]


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith(".") else text + "."


@dataclass
class PromptTable:
    """Token ids of one category's prompts (a per-category cache, never a buffer).

    level_normal[c] [Pn_c, L], level_abnormal[c] [Ph_c, L]; attr_normal[a] [pieces_a, L];
    attr_abnormal[a] [Ph_0, L] (one candidate per handcrafted image prompt).
    """

    texts: MllpTexts
    level_normal: list[torch.Tensor]
    level_abnormal: list[torch.Tensor]
    attr_normal: list[torch.Tensor]
    attr_abnormal: list[torch.Tensor]

    @property
    def n_levels(self) -> int:
        return len(self.level_normal)


def prepare_table(backbone, texts: MllpTexts, budget: int) -> PromptTable:
    """Split to the token budget, tokenise, and pick the negative attribute candidates."""
    def n_tokens(text: str) -> int:
        return len(backbone.tokenizer.encode(_sentence(text)))

    def ids(items: tuple[str, ...]) -> torch.Tensor:
        pieces = [_sentence(p) for t in items for p in split_to_fit(t, n_tokens, budget)]
        return backbone.tokenize(pieces)

    def abnormal_ids(level: LevelTexts) -> torch.Tensor:
        if not level.defects:
            return ids(level.abnormal)
        pieces = [_sentence(p) for t, d in zip(level.abnormal, level.defects, strict=True)
                  for p in carry_defect(t, d, n_tokens, budget)]
        return backbone.tokenize(pieces)

    level_normal = [ids(lv.normal) for lv in texts.levels]
    level_abnormal = [abnormal_ids(lv) for lv in texts.levels]
    m = level_abnormal[0].shape[0]
    attr_normal, attr_abnormal = [], []
    for attr in texts.attributes:
        attr_normal.append(ids(attr.normal))
        cand = ids(attr.abnormal)
        if attr.name != "relation":  # public-code heuristic: largest mean token embedding first
            with torch.no_grad():
                emb = backbone.token_embeddings(cand)
                eot = cand.argmax(-1)
                keep = (torch.arange(cand.shape[1], device=cand.device)[None] < eot[:, None]).float()
                score = (emb.mean(-1) * keep).sum(1) / keep.sum(1)
            cand = cand[score.argsort(descending=True, stable=True)[:m]]
        attr_abnormal.append(cand[torch.arange(m, device=cand.device) % cand.shape[0]])
    return PromptTable(texts, level_normal, level_abnormal, attr_normal, attr_abnormal)


@dataclass
class LevelFeatures:
    """Unit-norm text features of one level: normal [Pn, D], handcrafted [Ph, D], learned [S*Pn, D]
    (S = n_pro * n_pro_ab context sets, set-major)."""

    normal: torch.Tensor
    handcrafted: torch.Tensor
    learned: torch.Tensor

    @property
    def abnormal(self) -> torch.Tensor:
        return torch.cat([self.handcrafted, self.learned])

    def pair(self) -> torch.Tensor:
        """[2, D]: norm(mean normal), norm(mean abnormal (handcrafted and learned))."""
        return F.normalize(torch.stack([self.normal.mean(0), self.abnormal.mean(0)]), dim=-1)


class MultiLevelPrompts(nn.Module):
    """The learnable part of MLLP: context tokens and the 8 attribute weights (~5 K parameters at
    ViT-B-16-plus defaults: 4 * 640 + 4 * 640 + 8)."""

    def __init__(self, width: int, n_ctx: int = 4, n_pro: int = 1, n_ctx_ab: int = 1, n_pro_ab: int = 4,
                 init_std: float = 0.02, randn_attribute_logits: bool = False) -> None:
        """``randn_attribute_logits``: the attribute logits start N(0, 1) (the public code) instead of
        0 (every weight sigmoid(0) = 0.5); drawn from the global RNG after the context tokens."""
        super().__init__()
        self.normal_ctx = LearnableTokens(n_pro, n_ctx, width, std=init_std)
        self.abnormal_ctx = LearnableTokens(n_pro_ab, n_ctx_ab, width, std=init_std)
        init = torch.randn if randn_attribute_logits else torch.zeros
        self.attribute_logits = nn.Parameter(init(2, len(ATTRIBUTES)))

    @property
    def budget_tokens(self) -> int:
        """Context tokens inserted in a learned-abnormal prompt (the text budget is 77 - 2 - this)."""
        return self.normal_ctx.tokens.shape[1] + self.abnormal_ctx.tokens.shape[1]

    def learned_ctx(self) -> torch.Tensor:
        """[n_pro * n_pro_ab, n_ctx + n_ctx_ab, W]: N_j followed by A_m, set s = j * n_pro_ab + m."""
        n, a = self.normal_ctx.tokens, self.abnormal_ctx.tokens
        j, m = n.shape[0], a.shape[0]
        return torch.cat([n.repeat_interleave(m, 0), a.repeat(j, 1, 1)], dim=1)

    def encode(self, backbone, table: PromptTable) -> list[LevelFeatures]:
        """Features of every level (one text-tower call); differentiable in the parameters."""
        ctx_n, ctx_l = self.normal_ctx.tokens, self.learned_ctx()
        weights = torch.sigmoid(self.attribute_logits)

        def embed(ids: torch.Tensor, ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            # every context set with every row, set-major: [P * N, L, W], eot [P * N]
            p, n = ctx.shape[0], ids.shape[0]
            return backbone.inject(ids.repeat(p, 1), ctx.repeat_interleave(n, 0), position=1)

        def attr_mean(ids: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
            emb, _ = embed(ids, ctx)
            return emb.view(ctx.shape[0], ids.shape[0], *emb.shape[1:]).mean(1)  # [P, L, W]

        seqs, eots, sizes = [], [], []
        for c in range(table.n_levels):
            nrm, hand = table.level_normal[c], table.level_abnormal[c]
            (e_n, t_n), (e_h, t_h), (e_l, t_l) = embed(nrm, ctx_n), embed(hand, ctx_n), embed(nrm, ctx_l)
            if c == 0:
                pn = nrm.shape[0]
                for i, attr in enumerate(table.texts.attributes):  # the attributes the captions keep
                    a = ATTRIBUTES.index(attr.name)
                    e_n = e_n + weights[0, a] * attr_mean(table.attr_normal[i], ctx_n).repeat_interleave(pn, 0)
                    e_h = e_h + weights[1, a] * embed(table.attr_abnormal[i], ctx_n)[0]
                    e_l = e_l + weights[1, a] * attr_mean(table.attr_normal[i], ctx_l).repeat_interleave(pn, 0)
            seqs += [e_n, e_h, e_l]
            eots += [t_n, t_h, t_l]
            sizes += [e_n.shape[0], e_h.shape[0], e_l.shape[0]]
        feats = F.normalize(backbone.encode_text_embeddings(torch.cat(seqs), torch.cat(eots)), dim=-1)
        parts = feats.split(sizes)
        return [LevelFeatures(*parts[3 * c:3 * c + 3]) for c in range(table.n_levels)]
