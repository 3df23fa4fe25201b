"""CLIP backbone layer over open_clip (see backbone.py)."""

from fsadlib.clip.backbone import BackboneConfig, ClipBackbone, ImageFeatures, default_device
from fsadlib.clip.cache import FeatureCache, tensor_key

__all__ = ["BackboneConfig", "ClipBackbone", "FeatureCache", "ImageFeatures", "default_device", "tensor_key"]
