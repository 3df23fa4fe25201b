"""Few-shot PatchCore on a pretrained ImageNet CNN (training-free baseline; see model.py and README.md)."""

from fsadlib.methods.spec import MethodEntry, MethodSpec

SPEC = MethodSpec(
    name="patchcore",
    package=__name__,
    methods=(MethodEntry("patchcore", "fsadlib.methods.patchcore.model:PatchCore", few_shot=True),),
    section="fsadlib.methods.patchcore.model:PatchCoreSection",
)
