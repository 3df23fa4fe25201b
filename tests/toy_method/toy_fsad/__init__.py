"""Toy few-shot method of an OUTSIDE package (tests only): registered through the ``fsadlib.methods``
entry point, never through a file of the workbench. Its anomaly map is the distance of each pixel to
the mean normal support image, scaled by one trained parameter."""

from fsadlib.methods.spec import MethodEntry, MethodSpec

SPEC = MethodSpec(
    name="toy",
    package=__name__,
    methods=(MethodEntry("toy", "toy_fsad.model:ToyMethod", few_shot=True),),
    section="toy_fsad.train:ToySection",
    train="toy_fsad.train:train_toy",
    notebook="notebooks/39_train_toy.ipynb",
    smoke={"train.epochs": 1},
)
