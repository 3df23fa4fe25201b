"""One frozen CLIP backbone over open_clip: layer taps, text injection, value-value path, caches.

Configuration (``BackboneConfig``, the ``backbone`` section of a method's params):

- ``arch``: an open_clip model name (``ViT-B-16-plus-240``, ``ViT-L-14-336``, ``ViT-H-14`` ...),
  ``tiny`` (the test model, see :mod:`fsadlib.clip.tiny`), or ``local-dir:/path`` (a folder with
  ``open_clip_config.json`` and weights).
- ``pretrained``: ``None`` (random init, seeded with 0 so it is reproducible), an open_clip tag (``laion400m_e32``, ``openai`` ...; needs the
  file in the Hugging Face cache when offline), or a local ``.pt`` / ``.bin`` / ``.safetensors`` file.
- ``image_size``: input size; ``None`` keeps the architecture's native size. Pretrained positional
  embeddings are resized (bicubic, antialiased) to the new grid, e.g. 336 -> 518 px (24 -> 37 grid).
- ``quick_gelu``: ``None`` keeps the architecture default; ``True``/``False`` forces the activation
  (Bayes-PFL's checkpoints were trained with plain GELU on OpenAI weights). Stored in checkpoints.
- ``precision``: ``auto`` = bf16 autocast on CUDA, fp32 on CPU; or ``fp32`` / ``bf16``
  (:mod:`fsadlib.clip.precision`; the paper presets use ``fp32``, as the public code).
- ``geometry``: the image transform of the method's inputs (:mod:`fsadlib.data.geometry`:
  ``resize_crop`` | ``squash``); ``None`` (default) leaves it to the data set
  (:func:`fsadlib.data.resolve_geometry`).

Layer indices are 1-based block numbers everywhere (block 1 is the first residual block), as in the
papers: InCTRL taps 7/9/11 of ViT-B-16+, Bayes-PFL 6/12/18/24 of ViT-L-14.

Shapes: B images, N = grid_h * grid_w patch tokens, Cv = vision width, W = text width, D = joint
embedding width, L = 77 context length.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from fsadlib.clip.cache import FeatureCache
from fsadlib.clip.precision import FrozenEncoder, check_precision
from fsadlib.clip.tiny import register_model_configs, resolve_arch
from fsadlib.data.geometry import check_geometry


@dataclass(frozen=True)
class BackboneConfig:
    arch: str = "tiny"
    pretrained: str | None = None
    image_size: int | None = None
    quick_gelu: bool | None = None
    precision: str = "auto"
    geometry: str | None = None

    def __post_init__(self) -> None:
        if self.geometry is not None:
            check_geometry(self.geometry, "backbone.geometry")
        check_precision(self.precision)
        if self.image_size is not None and int(self.image_size) <= 0:
            raise ValueError(f"backbone.image_size must be positive, got {self.image_size}")


@dataclass
class ImageFeatures:
    """Output of :meth:`ClipBackbone.encode_image`.

    embedding:   [B, D]       pooled CLS -> ln_post -> proj (not normalised)
    tokens:      list of [B, N, Cv]  raw residual-stream patch tokens after each requested block
                 (no ln_post, no projection, CLS dropped), in the order requested
    cls_tokens:  list of [B, Cv]     the CLS token after each requested block
    vv_tokens:   list of [B, N, Cv]  value-value path patch tokens after each requested block
                 (empty unless ``vv_from`` was given)
    """

    embedding: torch.Tensor
    tokens: list[torch.Tensor] = field(default_factory=list)
    cls_tokens: list[torch.Tensor] = field(default_factory=list)
    vv_tokens: list[torch.Tensor] = field(default_factory=list)


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class ClipBackbone(FrozenEncoder):
    """A frozen open_clip CLIP with the feature access the anomaly-detection methods need."""

    def __init__(self, config: BackboneConfig | None = None) -> None:
        super().__init__()
        self.config = config or BackboneConfig()
        self.model = _build_model(self.config)
        self.model.eval().requires_grad_(False)
        for name in ("transformer", "token_embedding", "positional_embedding", "ln_final"):
            if not hasattr(self.model, name):
                raise ValueError(f"backbone.arch {self.config.arch!r}: only open_clip CLIP models with a "
                                 "standard text transformer are supported (no CustomTextCLIP / HF text)")
        if not self.model.visual.transformer.batch_first:
            raise ValueError("open_clip vision transformer must be batch_first (open_clip >= 2.26)")
        self.tokenizer = open_clip.get_tokenizer(resolve_arch(self.config.arch))
        visual = self.model.visual
        self.image_size: int = int(visual.image_size[0])
        self.patch_size: int = int(visual.patch_size[0])
        self.grid: tuple[int, int] = tuple(int(g) for g in visual.grid_size)
        self.vision_width: int = int(visual.conv1.out_channels)
        self.num_layers: int = len(visual.transformer.resblocks)
        self.text_width: int = int(self.model.token_embedding.embedding_dim)
        self.context_length: int = int(self.model.positional_embedding.shape[0])
        self.embed_dim: int = int(visual.output_dim)
        pp = getattr(visual, "preprocess_cfg", {}) or {}
        self.mean: tuple[float, ...] = tuple(pp.get("mean", open_clip.OPENAI_DATASET_MEAN))
        self.std: tuple[float, ...] = tuple(pp.get("std", open_clip.OPENAI_DATASET_STD))
        self.geometry: str | None = self.config.geometry
        self.text_cache = FeatureCache()

    # -- basics -------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.model.logit_scale.device


    def _check_layers(self, layers: Sequence[int], what: str) -> None:
        bad = [l for l in layers if not 1 <= int(l) <= self.num_layers]
        if bad:
            raise ValueError(f"{what} {bad} out of range: {self.config.arch} has blocks 1..{self.num_layers}")

    # -- image side ---------------------------------------------------------------------------
    def encode_image(self, images: torch.Tensor, layers: Sequence[int] = (),
                     vv_from: int | None = None, vv_layers: Sequence[int] = ()) -> ImageFeatures:
        """Run the vision tower once; return the pooled embedding and the requested taps.

        images [B, 3, S, S] (S = ``self.image_size``, CLIP-normalised). ``layers``: 1-based blocks
        whose raw outputs are returned. ``vv_from``: first block (1-based) of the value-value path
        (CLIP Surgery / PromptAD / AnomalyCLIP "V-V" attention): starting from the input of block
        ``vv_from``, a second residual stream accumulates, in each block l >= vv_from,

            vv <- vv + out_proj( softmax(V_l V_l^T / sqrt(d_h)) V_l ),  V_l = value(ln_1(x_{l-1}))

        where x is the original stream (the V-V path has no MLP and reads the original stream's
        normalised input, so it never changes the original outputs). ``vv_layers`` are the blocks
        whose V-V stream is returned (default: the last block). Attention uses SDPA throughout.
        """
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (self.image_size,) * 2:
            raise ValueError(f"images must be [B, 3, {self.image_size}, {self.image_size}], "
                             f"got {tuple(images.shape)}")
        layers = [int(l) for l in layers]
        self._check_layers(layers, "layers")
        if vv_from is not None:
            self._check_layers([vv_from], "vv_from")
            vv_layers = [int(l) for l in vv_layers] or [self.num_layers]
            self._check_layers(vv_layers, "vv_layers")
            if min(vv_layers) < vv_from:
                raise ValueError(f"vv_layers {vv_layers} must be >= vv_from {vv_from}")
        visual = self.model.visual
        taps: dict[int, torch.Tensor] = {}
        vv_taps: dict[int, torch.Tensor] = {}
        with self.autocast():
            x = visual._embeds(images.to(self.device))
            vv = None
            for i, block in enumerate(visual.transformer.resblocks, start=1):
                if vv_from is not None and i >= vv_from:
                    vv = (x if vv is None else vv) + block.ls_1(value_value_attention(block.attn, block.ln_1(x)))
                    if i in vv_layers:
                        vv_taps[i] = vv
                x = block(x)
                if i in layers:
                    taps[i] = x
            pooled, _ = visual._pool(x)
            embedding = pooled @ visual.proj if visual.proj is not None else pooled
        return ImageFeatures(
            embedding=embedding.float(),
            tokens=[taps[l][:, 1:].float() for l in layers],
            cls_tokens=[taps[l][:, 0].float() for l in layers],
            vv_tokens=[vv_taps[l][:, 1:].float() for l in (vv_layers if vv_from is not None else [])],
        )

    def project_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Map raw vision tokens [..., Cv] into the joint space [..., D] (ln_post, then proj)."""
        visual = self.model.visual
        out = visual.ln_post(tokens)
        return out @ visual.proj if visual.proj is not None else out

    # -- text side ----------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids [N, L]; a text longer than the context raises ``ValueError`` naming it."""
        texts = list(texts)
        if hasattr(self.tokenizer, "encode"):  # open_clip's BPE tokenizer; SOS + tokens + EOT
            for text in texts:
                if len(self.tokenizer.encode(text)) + 2 > self.context_length:
                    raise ValueError(f"prompt longer than {self.context_length} tokens (would be cut): {text!r}")
        ids = self.tokenizer(texts)
        return ids.to(self.device)

    def token_embeddings(self, token_ids: torch.Tensor) -> torch.Tensor:
        """[N, L] ids -> [N, L, W] token embeddings (the text tower's input before positions)."""
        return self.model.token_embedding(token_ids.to(self.device))

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Plain prompts -> [N, D] text embeddings (not normalised), one batched call."""
        ids = self.tokenize(texts)
        return self.encode_text_embeddings(self.token_embeddings(ids), ids.argmax(dim=-1))

    def encode_text_cached(self, texts: Sequence[str]) -> torch.Tensor:
        """:meth:`encode_text` memoised on (backbone config, prompts); returns a detached tensor."""
        key = (repr(self.config), tuple(texts))
        return self.text_cache.get_or_compute(key, lambda: self.encode_text(texts).detach())

    def encode_text_embeddings(self, embeddings: torch.Tensor, eot_index: torch.Tensor) -> torch.Tensor:
        """Run the text tower on token embeddings [N, L, W]; read out at ``eot_index`` [N] -> [N, D].

        Differentiable in ``embeddings`` (learnable prompts flow gradients through the frozen tower).
        With CLIP's causal mask a token's output depends only on the tokens up to it, so the tower runs
        on the first L' = max(eot_index) + 1 positions only (embeddings, positions and mask cut to L'):
        the same read-out as the full context (to float rounding, about 1e-7 relatively), at L' / L of
        the cost (the prompts of these methods end by token 20-40 of 77). A tower without a causal
        mask attends to every position and runs on all L.
        """
        m = self.model
        if embeddings.shape[1:] != (self.context_length, self.text_width):
            raise ValueError(f"embeddings must be [N, {self.context_length}, {self.text_width}], "
                             f"got {tuple(embeddings.shape)}")
        eot_index = eot_index.to(embeddings.device)
        length, mask = self.context_length, m.attn_mask
        if mask is not None and eot_index.numel():
            length = int(eot_index.max()) + 1
            mask = mask[:length, :length]
        with self.autocast():
            x = embeddings[:, :length] + m.positional_embedding[:length].to(embeddings.dtype)
            x = m.transformer(x, attn_mask=mask)
            x = m.ln_final(x)
            x = x[torch.arange(x.shape[0], device=x.device), eot_index]
            if isinstance(m.text_projection, nn.Linear):
                x = m.text_projection(x)
            elif m.text_projection is not None:
                x = x @ m.text_projection
        return x.float()

    def inject(self, token_ids: torch.Tensor, inserted: torch.Tensor, position: int = 1,
               replace: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Insert learnable token embeddings into tokenised prompts.

        token_ids [N, L]; inserted [N, P, W] or [P, W] (broadcast to all prompts). Tokens
        ``position .. position+replace-1`` are replaced by the P inserted vectors (``replace=0``
        inserts; Bayes-PFL replaces the single placeholder "X" at position 1 with P+Q vectors), the
        rest shifts right by ``P - replace`` and is cut at L. Returns (embeddings [N, L, W],
        eot_index [N]) where eot_index is the original EOT position shifted by ``P - replace``.
        Raises ``ValueError`` when a shifted EOT would fall outside the context.
        """
        n, length = token_ids.shape
        if inserted.ndim == 2:
            inserted = inserted.unsqueeze(0).expand(n, -1, -1)
        p = inserted.shape[1]
        emb = self.token_embeddings(token_ids)
        eot = token_ids.argmax(dim=-1).to(emb.device) + (p - replace)
        if int(eot.max()) >= length:
            raise ValueError(f"injecting {p} tokens pushes the EOT past the {length}-token context")
        out = torch.cat([emb[:, :position], inserted.to(emb.dtype), emb[:, position + replace:]], dim=1)
        return out[:, :length], eot


def value_value_attention(attn: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    """V-V self-attention with the weights of ``attn``: out_proj(SDPA(V, V, V)), x [B, T, C]."""
    b, t, c = x.shape
    h = attn.num_heads
    w_v = attn.in_proj_weight[2 * c:]
    b_v = attn.in_proj_bias[2 * c:] if attn.in_proj_bias is not None else None
    v = F.linear(x, w_v, b_v).view(b, t, h, c // h).transpose(1, 2)  # [B, h, T, c/h]
    out = F.scaled_dot_product_attention(v, v, v).transpose(1, 2).reshape(b, t, c)
    return attn.out_proj(out)


def input_size(cfg: BackboneConfig) -> int:
    """The input size S of ``cfg`` without building the model: ``image_size``, else the
    architecture's native vision size (``KeyError`` naming an unknown architecture)."""
    if cfg.image_size is not None:
        return int(cfg.image_size)
    register_model_configs()
    arch = resolve_arch(cfg.arch)
    if arch.startswith("local-dir:"):
        import json

        config_file = Path(arch.split(":", 1)[1]).expanduser() / "open_clip_config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"backbone.arch {cfg.arch!r}: {config_file} not found")
        model_cfg = json.loads(config_file.read_text())["model_cfg"]
    else:
        model_cfg = open_clip.get_model_config(arch)
        if model_cfg is None:
            raise KeyError(f"backbone.arch {cfg.arch!r} is not an open_clip model")
    size = model_cfg["vision_cfg"]["image_size"]
    return int(size if isinstance(size, int) else size[0])


def _build_model(cfg: BackboneConfig) -> nn.Module:
    register_model_configs()
    arch = resolve_arch(cfg.arch)
    kwargs: dict = {}
    if cfg.image_size is not None:
        kwargs["force_image_size"] = int(cfg.image_size)
    if cfg.quick_gelu is not None:
        kwargs["quick_gelu"] = bool(cfg.quick_gelu)
    pretrained = cfg.pretrained
    if arch.startswith("local-dir:"):
        folder = Path(arch.split(":", 1)[1]).expanduser()
        if not (folder / "open_clip_config.json").is_file():
            raise FileNotFoundError(f"backbone.arch {cfg.arch!r}: {folder}/open_clip_config.json not found")
        return open_clip.create_model(arch, **kwargs)
    if arch not in open_clip.list_models():
        raise KeyError(f"backbone.arch {cfg.arch!r} is not an open_clip model; e.g. ViT-B-16-plus-240, "
                       "ViT-L-14-336, ViT-H-14, tiny, or local-dir:/path")
    if pretrained is not None and not Path(pretrained).expanduser().is_file():
        _check_hub_tag(arch, pretrained)
    elif pretrained is not None:
        pretrained = str(Path(pretrained).expanduser())
    if pretrained is None:
        # random init is a fixed function of the config (seed 0), so a checkpoint of a method on a
        # random backbone (tests, the embedded default) reloads exactly; the global RNG is untouched
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return open_clip.create_model(arch, pretrained=None, **kwargs)
    if Path(pretrained).is_file():
        return _create_from_file(arch, pretrained, kwargs)
    return open_clip.create_model(arch, pretrained=pretrained, **kwargs)


def _create_from_file(arch: str, path: str, kwargs: dict) -> nn.Module:
    """``open_clip.create_model`` with a local weights file (read with ``weights_only=True``); a
    corrupt, truncated, pickled-object or mismatched file raises ``ValueError`` naming it."""
    try:
        return open_clip.create_model(arch, pretrained=path, **kwargs)
    except pickle.UnpicklingError as err:
        raise ValueError(f"backbone.pretrained file {path}: refused to load: it is corrupt or truncated, or it holds "
                         "pickled objects beyond tensors and plain data (loading those could run code)") from err
    except (RuntimeError, EOFError, OSError, KeyError, ValueError, StopIteration) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"backbone.pretrained file {path}: cannot load it into {arch} (corrupt, truncated or "
                         f"another architecture's weights): {reason}") from err


def _check_hub_tag(arch: str, tag: str) -> None:
    """Fail fast (no 47 s of retries) when a hub tag is asked for offline and is not cached."""
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not cfg:
        raise KeyError(f"backbone.pretrained {tag!r}: neither a file nor a known tag of {arch}; "
                       f"known tags: {open_clip.list_pretrained_tags_by_model(arch)}")
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    hub = cfg.get("hf_hub", "")
    cached = False
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo_id = "/".join(hub.strip("/").split("/")[:2])
        for fname in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            if isinstance(try_to_load_from_cache(repo_id, fname), str):
                cached = True
    if offline and not cached:
        raise FileNotFoundError(
            f"backbone.pretrained {tag!r} for {arch} must be downloaded from {hub or cfg.get('url')}, "
            "but HF_HUB_OFFLINE is set and it is not in the Hugging Face cache. Download it on a "
            "machine with network and set backbone.pretrained to the local file path "
            "(.pt/.bin/.safetensors), or use arch 'local-dir:/path/to/folder'.")
