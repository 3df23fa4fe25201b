"""WinCLIP / WinCLIP+ (training-free zero-/few-shot CLIP anomaly detection with window embeddings)."""

from fsadlib.methods.spec import MethodEntry, MethodSpec

SPEC = MethodSpec(
    name="winclip",
    package=__name__,
    methods=(MethodEntry("winclip", "fsadlib.methods.winclip.model:WinClip", few_shot=False),
             MethodEntry("winclip_plus", "fsadlib.methods.winclip.model:WinClipPlus", few_shot=True)),
    section="fsadlib.methods.winclip.model:WinClipSection",
)
