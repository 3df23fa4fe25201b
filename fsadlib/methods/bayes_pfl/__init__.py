"""Bayes-PFL: Bayesian prompt flow learning for zero-shot anomaly detection (see model.py, README.md)."""

from fsadlib.methods.spec import MethodEntry, MethodSpec

SPEC = MethodSpec(
    name="bayes_pfl",
    package=__name__,
    methods=(MethodEntry("bayes_pfl", "fsadlib.methods.bayes_pfl.model:BayesPFL", few_shot=False),),
    section="fsadlib.methods.bayes_pfl.train:BayesPFLSection",
    train="fsadlib.methods.bayes_pfl.train:train_bayes_pfl",
    notebook="notebooks/33_train_bayes_pfl.ipynb",
    curves=("stage1", "stage2"),
    smoke={"train.epochs": 1, "train.stage2_epochs": 1, "train.max_steps_per_epoch": 2,
           "train.val_max_images": 4, "train.val_samples": 1},
)
