"""FineGrainedAD: MFSC captions, MLLP prompts, MLSA alignment, memory-bank fusion (see README.md)."""

from fsadlib.methods.finegrained.model import (
                                               FineGrainedAD,
                                               FineGrainedConfig,
                                               category_model,
                                               load_finegrained,
                                               model_path,
)
from fsadlib.methods.finegrained.train import FineGrainedSection, history_table, train_finegrained

__all__ = ["FineGrainedAD", "FineGrainedConfig", "FineGrainedSection", "category_model", "history_table",
           "load_finegrained", "model_path", "train_finegrained"]
