"""The backbone layer: frozen CLIP over open_clip (backbone.py) and ImageNet CNN encoders (cnn.py);
``build_backbone(config)`` builds either from a method's ``backbone`` config. Every backbone offers what
the evaluation reads: ``image_size``, ``mean`` / ``std`` (its input normalisation), ``geometry``,
``device``, ``random_weights``, ``effective_precision()`` and ``config``."""

from fsadlib.clip.backbone import BackboneConfig, ClipBackbone, ImageFeatures, default_device
from fsadlib.clip.cache import FeatureCache, tensor_key
from fsadlib.clip.cnn import CnnBackbone, CnnBackboneConfig, build_backbone
from fsadlib.clip.precision import PRECISIONS, effective_precision

__all__ = ["PRECISIONS", "BackboneConfig", "ClipBackbone", "CnnBackbone", "CnnBackboneConfig", "FeatureCache",
           "ImageFeatures", "build_backbone", "default_device", "effective_precision", "tensor_key"]
