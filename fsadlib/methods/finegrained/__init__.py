"""FineGrainedAD: MFSC captions, MLLP prompts, MLSA alignment, memory-bank fusion (see README.md)."""

from fsadlib.methods.spec import MethodEntry, MethodSpec

SPEC = MethodSpec(
    name="finegrained",
    package=__name__,
    methods=(MethodEntry("finegrained", "fsadlib.methods.finegrained.model:FineGrainedAD", few_shot=True,
                         per_category=True),),
    section="fsadlib.methods.finegrained.train:FineGrainedSection",
    train="fsadlib.methods.finegrained.train:train_finegrained",
    notebook="notebooks/34_train_finegrained.ipynb",
    smoke={"train.epochs": 2},
    train_reads=("target",),   # the k shots of each target category, nothing auxiliary
    train_deps=("data/captions/{target}",),   # the captions of the data set it trains on
)
