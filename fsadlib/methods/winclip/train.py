"""WinCLIP's "training" stage: nothing is learned; it builds and saves the per-category banks.

Layout under ``out_dir`` (default ``models/winclip/``), for every target category of the protocol:

    winclip/final.pt                                           method checkpoint (config only)
    winclip/banks/<dataset>/<category>/text.pt                 text features [2, D]
    winclip_plus/final.pt
    winclip_plus/banks/<dataset>/<category>/k<k>_seed<s>.pt    text + window banks [k*W_s, D] per
                                                               window size + patch bank [k*N, Cv]

Every file is written atomically; a bank that already exists with the same method config is kept
(an interrupted stage resumes). The evaluation may load these with :meth:`WinClip.load_bank` or
rebuild them on the fly with ``setup_category`` (same numbers; the tests check the round trip).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from fsadlib.clip import ClipBackbone
from fsadlib.data.shots import ShotsConfig
from fsadlib.methods.winclip.model import WinClip, WinClipConfig, WinClipPlus
from fsadlib.progress import progress
from fsadlib.protocol import Protocol
from fsadlib.tracking import open_live

#: (dataset, category, k, seed, backbone) -> the k support images [k, 3, S, S] for that backbone
SupportLoader = Callable[[str, str, int, int, ClipBackbone], torch.Tensor]


@dataclass(frozen=True)
class WinClipSection:
    """The ``winclip`` section of params.yaml (shared by ``winclip`` and ``winclip_plus``)."""

    model: WinClipConfig = field(default_factory=WinClipConfig)


def bank_path(out_dir: str | Path, method: str, dataset: str, category: str, k: int = 0, seed: int = 0) -> Path:
    """Where the bank of (method, dataset, category, k, seed) lives; k = 0 is the zero-shot text bank."""
    name = "text.pt" if k == 0 else f"k{k}_seed{seed}.pt"
    return Path(out_dir) / method / "banks" / dataset / category / name


def load_supports(dataset: str, category: str, k: int, seed: int, backbone: ClipBackbone) -> torch.Tensor:
    """The images of the frozen k-shot file (``fsadlib.data.shots``), normalised for ``backbone``."""
    from fsadlib.data import load_images, load_shots

    return load_images(load_shots(dataset, category, k, seed), backbone.image_size, backbone.mean, backbone.std)


def train_winclip(section: WinClipSection, protocol: Protocol, shots: ShotsConfig, smoke: bool = False,
                  out_dir: str | Path | None = None, live_dir: str | Path | None = None,
                  supports: SupportLoader = load_supports) -> pd.DataFrame:
    """Build and save both checkpoints and every bank of ``protocol``'s target categories, with the
    WinCLIP+ banks for every (k, seed) of ``shots`` (the ``shots`` section of params.yaml).

    ``smoke`` keeps only the first k and the first seed. Returns one row per bank: method, dataset,
    category, k, seed, path, window_rows (sum over scales of k * W_s), patch_rows (k * N), seconds,
    status ("built" or "kept"). DVCLive (``live_dir``, default ``reports/train_winclip``) records the
    number of banks and the build time.
    """
    from fsadlib.paths import models_dir, reports_dir

    protocol.check()
    out_dir = Path(out_dir) if out_dir is not None else models_dir() / "winclip"
    ks = shots.ks[:1] if smoke else shots.ks
    seeds = shots.seeds[:1] if smoke else shots.seeds
    zero = WinClip(section.model)
    plus = WinClipPlus(section.model, backbone_model=zero.backbone)
    for method in (zero, plus):
        method.save_checkpoint(out_dir / method.name / "final.pt")
    dataset = protocol.target_dataset
    jobs = [(zero, c, 0, 0) for c in protocol.target_categories]
    jobs += [(plus, c, k, s) for c in protocol.target_categories for k in ks for s in seeds]
    rows = []
    for method, category, k, seed in progress(jobs, desc="winclip banks"):
        path = bank_path(out_dir, method.name, dataset, category, k, seed)
        start = time.perf_counter()
        try:  # resume: keep a bank written earlier with the same method config
            method.load_bank(path)
            status = "kept"
        except (FileNotFoundError, ValueError):
            method.setup_category(category, supports(dataset, category, k, seed, zero.backbone) if k else None)
            method.save_bank(path)
            status = "built"
        bank = method.bank
        rows.append({"method": method.name, "dataset": dataset, "category": category, "k": k, "seed": seed,
                     "path": str(path), "window_rows": sum(w.shape[0] for w in bank.windows or []),
                     "patch_rows": 0 if bank.patches is None else bank.patches.shape[0],
                     "seconds": time.perf_counter() - start, "status": status})
    table = pd.DataFrame(rows)
    with open_live(live_dir or reports_dir() / "train_winclip") as live:
        live.log_metric("banks", len(table))
        live.log_metric("banks_built", int((table.status == "built").sum()))
        live.log_metric("build_seconds", float(table.seconds.sum()))
    return table

