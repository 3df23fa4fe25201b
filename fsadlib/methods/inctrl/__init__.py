"""InCTRL: in-context residual learning with few-shot normal prompts (see model.py, README.md)."""

from fsadlib.methods.spec import MethodEntry, MethodSpec

SPEC = MethodSpec(
    name="inctrl",
    package=__name__,
    methods=(MethodEntry("inctrl", "fsadlib.methods.inctrl.model:Inctrl", few_shot=True),),
    section="fsadlib.methods.inctrl.train:InctrlSection",
    train="fsadlib.methods.inctrl.train:train_inctrl",
    notebook="notebooks/31_train_inctrl.ipynb",
    curves=("k{k}",),
    smoke={"train.epochs": 1, "train.steps_per_epoch": 2, "data.normals_per_batch": 2,
           "data.anomalies_per_batch": 2, "data.val_max_images": 4},
)
