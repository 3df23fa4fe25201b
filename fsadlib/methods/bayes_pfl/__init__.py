"""Bayes-PFL: Bayesian prompt flow learning for zero-shot anomaly detection (see model.py, README.md)."""

from fsadlib.methods.bayes_pfl.model import BayesPFL, BayesPFLConfig
from fsadlib.methods.bayes_pfl.train import BayesPFLSection, BayesPFLTrainConfig, train_bayes_pfl

__all__ = ["BayesPFL", "BayesPFLConfig", "BayesPFLSection", "BayesPFLTrainConfig", "train_bayes_pfl"]
