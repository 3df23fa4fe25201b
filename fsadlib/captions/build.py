"""Build, store and load the MFSC captions of a data set (``data/captions/<dataset>/<category>.json``).

``build_captions(dataset, categories, config)`` takes, per category, the first ``n_images`` normal
training images (``train`` split, label 0, sorted by path; FineGrainedAD describes one normal image
per category) and asks the configured captioner (``captions`` section of params.yaml) for the three
levels; the category's anomaly phrases (:mod:`fsadlib.captions.vocab`) are attached and the result
is validated and written atomically. ``load_captions`` reads one back (validated; a missing file is
an error naming it and the stage that makes it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fsadlib import reads
from fsadlib.captions.offline import OfflineCaptioner, OfflineConfig
from fsadlib.captions.schema import LEVEL3_LISTS, Captions, read_captions, save_captions
from fsadlib.captions.vlm import VlmCaptioner, VlmConfig, http_chat, transformers_chat
from fsadlib.captions.vocab import anomaly_phrases
from fsadlib.paths import data_dir
from fsadlib.progress import progress
from fsadlib.prompts import class_name

CAPTIONERS = ("offline", "http", "transformers")


@dataclass(frozen=True)
class CaptionsConfig:
    captioner: str = "offline"
    n_images: int = 1
    offline: OfflineConfig = field(default_factory=OfflineConfig)
    vlm: VlmConfig = field(default_factory=VlmConfig)

    def __post_init__(self) -> None:
        if self.captioner not in CAPTIONERS:
            raise ValueError(f"captions.captioner must be one of {CAPTIONERS}, got {self.captioner!r}")
        if self.n_images < 1:
            raise ValueError(f"captions.n_images must be >= 1, got {self.n_images}")


def make_captioner(config: CaptionsConfig):
    """The captioner callable named by ``config.captioner``."""
    if config.captioner == "offline":
        return OfflineCaptioner(config.offline)
    chat = http_chat(config.vlm) if config.captioner == "http" else transformers_chat(config.vlm)
    return VlmCaptioner(chat, config.vlm, config.captioner)


def captions_path(dataset: str, category: str, root: str | Path | None = None) -> Path:
    """``<root or data/captions>/<dataset>/<category>.json``."""
    return Path(root if root is not None else data_dir() / "captions") / dataset / f"{category}.json"


def load_captions(dataset: str, category: str, root: str | Path | None = None) -> Captions:
    """The validated captions of one category."""
    path = captions_path(dataset, category, root)
    reads.record("data", f"captions:{dataset}")
    if not path.is_file():
        raise FileNotFoundError(f"captions of {dataset}/{category} not found: {path} "
                                "(run the build_captions stage: dvc repro build_captions)")
    return read_captions(path)


def reference_images(samples: pd.DataFrame, category: str, n: int) -> list[str]:
    """The first ``n`` normal training images of ``category`` (sorted by path)."""
    normal = samples[(samples["category"] == category) & (samples["split"] == "train") & (samples["label"] == 0)]
    if normal.empty:
        raise KeyError(f"no normal training images for category '{category}'; known categories: "
                       f"{sorted(samples['category'].unique())}")
    return sorted(normal["image_path"])[:n]


def build_captions(dataset: str, categories: list[str] | None = None, config: CaptionsConfig = CaptionsConfig(),
                   root: str | Path | None = None, samples: pd.DataFrame | None = None) -> dict[str, Path]:
    """Caption every category (default: all of ``dataset``); returns category -> written file."""
    if samples is None:
        from fsadlib.data import load_samples

        samples = load_samples(dataset)
    categories = list(categories) if categories else sorted(samples["category"].unique())
    captioner = make_captioner(config)
    written = {}
    for category in progress(categories, desc=f"captions {dataset}"):
        images = reference_images(samples, category, config.n_images)
        captions = captioner(images, dataset, category, class_name(category), anomaly_phrases(dataset, category))
        written[category] = save_captions(captions_path(dataset, category, root), captions)
    return written


def caption_table(captions: list[Captions]) -> pd.DataFrame:
    """One row per (category, level, item): the texts MLLP builds its prompts from."""
    rows = []
    for c in captions:
        rows.append((c.category, "1 image", "foreground / background", f"{c.foreground} / {c.background}"))
        rows.append((c.category, "image", "caption", c.caption))
        rows.append((c.category, "2 foreground", "relation", c.relation))
        for i, name in enumerate(c.entity):
            rows.append((c.category, "2 foreground", f"entity {i + 1}",
                         f"{name} (number {c.number[i]}, location {c.location[i]})"))
            rows.append((c.category, "3 component", f"entity {i + 1}",
                         "; ".join(f"{k} {getattr(c, k)[i]}" for k in LEVEL3_LISTS)))
    return pd.DataFrame(rows, columns=["category", "level", "item", "text"])


def token_table(captions: list[Captions]) -> pd.DataFrame:
    """BPE token count (CLIP's tokenizer, without SOS/EOT) of every text MLLP prompts are built from."""
    from open_clip.tokenizer import SimpleTokenizer

    tokenizer = SimpleTokenizer()
    rows = []
    for c in captions:
        texts = [("caption", c.caption), ("relation", c.relation), ("background", f"{c.background} background")]
        texts += [("entity_caption", t) for t in c.entity_caption]
        rows += [(c.category, name, len(tokenizer.encode(text))) for name, text in texts]
    return pd.DataFrame(rows, columns=["category", "field", "tokens"])
