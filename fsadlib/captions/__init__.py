"""MFSC multi-level captions (FineGrainedAD): schema, vocabularies, offline and VLM captioners, builder."""

from fsadlib.captions.build import (
                                    CaptionsConfig,
                                    build_captions,
                                    caption_table,
                                    captions_path,
                                    load_captions,
                                    make_captioner,
                                    token_table,
)
from fsadlib.captions.figure import caption_figure
from fsadlib.captions.offline import OfflineCaptioner, OfflineConfig, describe_image
from fsadlib.captions.schema import Captions, read_captions, save_captions, validate
from fsadlib.captions.text import split_to_fit
from fsadlib.captions.vlm import VlmCaptioner, VlmConfig

__all__ = [
    "Captions", "CaptionsConfig", "OfflineCaptioner", "OfflineConfig", "VlmCaptioner", "VlmConfig",
    "build_captions", "caption_figure", "caption_table", "captions_path", "describe_image", "load_captions",
    "make_captioner", "read_captions", "save_captions", "split_to_fit", "token_table", "validate",
]
