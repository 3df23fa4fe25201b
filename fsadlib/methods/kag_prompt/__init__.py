"""KAG-prompt: kernel-aware hierarchical graph prompts over CLIP layers (AAAI 2025). See README.md."""

from fsadlib.methods.spec import MethodEntry, MethodSpec

SPEC = MethodSpec(
    name="kag_prompt",
    package=__name__,
    methods=(MethodEntry("kag_prompt", "fsadlib.methods.kag_prompt.model:KagPrompt", few_shot=True),),
    section="fsadlib.methods.kag_prompt.train:KagTrainSection",
    train="fsadlib.methods.kag_prompt.train:train_kag_prompt",
    notebook="notebooks/32_train_kag_prompt.ipynb",
    smoke={"train.epochs": 1, "train.steps_per_epoch": 2, "data.batch_size": 2, "data.val_max_images": 4},
)
