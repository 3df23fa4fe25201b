"""Apply each formula change listed in issue 15 to a scratch copy of the repository and check that
the tests named for it fail (a change the suite does not notice is reported as SURVIVED).

    python tests/reference/listed_mutations.py [--only SUBSTRING] [--jobs 1]

Each mutation is an exact text replacement that must match once; the copy holds fsadlib/, tests/,
pyproject.toml, params.yaml and dvc.yaml (the repo root marker). Exit status 1 when any survives or
does not apply. Not collected by pytest (no ``test_`` prefix); ``make listed-mutations`` runs it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
M = "fsadlib/methods/"
T = "tests/unit/methods/"
R = "tests/reference/"


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]   # the method's test files (reference first)
    first: str = ""          # a test expected to catch it, run alone first (saves time when it does)


# reference tests first: with -x a killed mutant stops at its first failure
INCTRL = (R + "test_inctrl_reference.py", T + "test_inctrl.py")
WINCLIP = (R + "test_winclip_reference.py", T + "test_winclip.py")
KAG = (R + "test_kag_prompt_reference.py", T + "test_kag_prompt.py", T + "test_kag_prompt_train.py")
BAYES = (R + "test_bayes_pfl_reference.py", T + "test_bayes_pfl.py")
FINE = (R + "test_finegrained_reference.py", T + "test_finegrained.py")
INCTRL_FIRST = R + "test_inctrl_reference.py::test_paper_preset_equals_the_public_test_path_at_batch_3"
WINCLIP_FIRST = R + "test_winclip_reference.py::test_equals_the_port[winclip_plus-workbench]"
KAG_FIRST = R + "test_kag_prompt_reference.py::test_test_loop_equals_the_port_under_both_presets"
BAYES_LOSS_FIRST = R + "test_bayes_pfl_reference.py::test_stage1_loss_and_gradients_equal_the_port[paper]"
FINE_FORWARD_FIRST = R + "test_finegrained_reference.py::test_forward_equals_the_port"
FINE_LOSS_FIRST = R + "test_finegrained_reference.py::test_training_loss_gradients_and_regions_equal_the_port"
BAYES_TEST_FIRST = R + "test_bayes_pfl_reference.py::test_workbench_test_path_equals_the_port_with_shared_noise"

MUTATIONS = [
    Mutation("inctrl: BN/ReLU order swapped in both heads", M + "inctrl/model.py",
             "nn.Linear(dim_in, h1), nn.ReLU(), nn.BatchNorm1d(h1),\n"
             "                                 nn.Linear(h1, h2), nn.ReLU(), nn.BatchNorm1d(h2),",
             "nn.Linear(dim_in, h1), nn.BatchNorm1d(h1), nn.ReLU(),\n"
             "                                 nn.Linear(h1, h2), nn.BatchNorm1d(h2), nn.ReLU(),", INCTRL, INCTRL_FIRST),
    Mutation("inctrl: adapter's last ReLU dropped", M + "inctrl/model.py",
             "nn.Linear(dim // reduction, dim, bias=False), nn.ReLU())",
             "nn.Linear(dim // reduction, dim, bias=False))", INCTRL, INCTRL_FIRST),
    Mutation("inctrl: a bias added to the adapter", M + "inctrl/model.py",
             "nn.Linear(dim, dim // reduction, bias=False)", "nn.Linear(dim, dim // reduction, bias=True)", INCTRL, INCTRL_FIRST),
    Mutation("winclip+: mean over the few-shot scales replaced by max", M + "winclip/model.py",
             "return torch.stack(maps).mean(0)", "return torch.stack(maps).amax(0)", WINCLIP, WINCLIP_FIRST),
    Mutation("winclip+: window scales dropped from the few-shot map", M + "winclip/model.py",
             "return torch.stack(maps).mean(0)", "return maps[0]", WINCLIP, WINCLIP_FIRST),
    Mutation("kag: MMCI resized with align_corners=False", M + "kag_prompt/modules.py",
             'F.interpolate(conv(flat), size=size, mode="bilinear", align_corners=True)',
             'F.interpolate(conv(flat), size=size, mode="bilinear", align_corners=False)', KAG, KAG_FIRST),
    Mutation("kag: MMCI summed instead of averaged", M + "kag_prompt/modules.py",
             "for conv in self.convs) / len(self.convs)", "for conv in self.convs)", KAG, KAG_FIRST),
    Mutation("kag: LayerProjection without its transpose", M + "kag_prompt/modules.py",
             "x.transpose(2, 3).reshape(", "x.reshape(", KAG, KAG_FIRST),
    Mutation("kag: projection without ReLU", M + "kag_prompt/modules.py",
             "maps = [F.relu(lin(t))", "maps = [lin(t)", KAG, KAG_FIRST),
    Mutation("bayes_pfl: KL term removed from the stage-1 loss", M + "bayes_pfl/train.py",
             "loss = ce + focal + dice + cfg.kl_weight * kl + cfg.orth_weight * orth",
             "loss = ce + focal + dice + cfg.orth_weight * orth", BAYES, BAYES_LOSS_FIRST),
    Mutation("bayes_pfl: images scored with the normal-state probability", M + "bayes_pfl/model.py",
             "text_prob = self.image_logits(feats, text).softmax(dim=2)[:, :, 1]",
             "text_prob = self.image_logits(feats, text).softmax(dim=2)[:, :, 0]", BAYES, BAYES_TEST_FIRST),
    Mutation("bayes_pfl: map from the last layer only", M + "bayes_pfl/model.py",
             "raw = torch.stack([self.upsample(gaps[:, l]).mean(1) for l in range(gaps.shape[1])], 1).mean(1)",
             "raw = self.upsample(gaps[:, -1]).mean(1)", BAYES, BAYES_TEST_FIRST),
    Mutation("finegrained: arithmetic instead of harmonic fusion", M + "finegrained/model.py",
             "patch = harmonic_mean(text, visual)", "patch = (text + visual) / 2", FINE, FINE_FORWARD_FIRST),
    Mutation("finegrained: image score from the visual term alone", M + "finegrained/model.py",
             "score = harmonic_mean(self.text_scores(enc.embedding, pairs), visual.amax(1))",
             "score = visual.amax(1)", FINE, FINE_FORWARD_FIRST),
    Mutation("finegrained: no Gaussian blur", M + "finegrained/model.py",
             "amap = gaussian_blur(to_map(patch, self.backbone.grid, self.backbone.image_size), self.config.sigma,",
             "amap = (lambda m, *_: m)(to_map(patch, self.backbone.grid, self.backbone.image_size), self.config.sigma,",
             FINE, FINE_FORWARD_FIRST),
    Mutation("finegrained: L_reg without its background term", M + "finegrained/losses.py",
             "- levels[1].normal.mean(0)).norm()", ").norm()", FINE, FINE_LOSS_FIRST),
    Mutation("finegrained: background level with entity 0's weights", M + "finegrained/losses.py",
             "[tokens * weights[:, -1, :, None]]", "[tokens * weights[:, 0, :, None]]", FINE, FINE_LOSS_FIRST),
    Mutation("finegrained: wrong attribute-weight row (normal prompts)", M + "finegrained/prompts.py",
             "e_n = e_n + weights[0, a]", "e_n = e_n + weights[1, a]", FINE, FINE_LOSS_FIRST),
    Mutation("finegrained: wrong attribute-weight row (abnormal prompts)", M + "finegrained/prompts.py",
             "e_h = e_h + weights[1, a]", "e_h = e_h + weights[0, a]", FINE, FINE_LOSS_FIRST),
    Mutation("finegrained: a single memory layer", M + "finegrained/model.py",
             "for q, bank in zip(enc.memory, self.memory)]", "for q, bank in zip(enc.memory[:1], self.memory[:1])]",
             FINE, FINE_FORWARD_FIRST),
    Mutation("finegrained: memory bank from the V-V tokens", M + "finegrained/model.py",
             "memory=[F.normalize(t, dim=-1) for t in feats.tokens]",
             "memory=[F.normalize(feats.vv_tokens[0], dim=-1) for t in feats.tokens]", FINE, FINE_FORWARD_FIRST),
    Mutation("finegrained: regions guided by the abnormal background text", M + "finegrained/train.py",
             "levels[1].pair()[0]", "levels[1].pair()[1]", FINE, FINE_LOSS_FIRST),
]


def scratch_copy(dst: Path) -> None:
    for name in ("fsadlib", "tests"):
        shutil.copytree(ROOT / name, dst / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "params.yaml", "dvc.yaml"):
        shutil.copy2(ROOT / name, dst / name)


def fails(tests: list[str], copy: Path) -> bool:
    env = {**os.environ, "PYTHONPATH": str(copy), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:randomly", *tests],
                          cwd=copy, env=env, capture_output=True, text=True, check=False)
    return proc.returncode != 0


def run(mutation: Mutation, copy: Path) -> str:
    """'KILLED', 'SURVIVED' or 'NOT APPLIED' (the text to replace does not occur exactly once).
    The ``first`` test runs alone; if it passes, every test file of the method runs."""
    target = copy / mutation.path
    original = target.read_text()
    if original.count(mutation.old) != 1:
        return "NOT APPLIED"
    target.write_text(original.replace(mutation.old, mutation.new))
    try:
        if mutation.first and fails([mutation.first], copy):
            return "KILLED"
        return "KILLED" if fails(list(mutation.tests), copy) else "SURVIVED"
    finally:
        target.write_text(original)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run the mutations whose name contains this text")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if args.only in m.name]
    failures = 0
    with tempfile.TemporaryDirectory(prefix="listed-mutations-") as tmp:
        copy = Path(tmp)
        scratch_copy(copy)
        for m in chosen:
            start = time.perf_counter()
            status = run(m, copy)
            failures += status != "KILLED"
            print(f"{status:11s} {time.perf_counter() - start:6.1f}s  {m.name}", flush=True)
    print(f"{len(chosen) - failures}/{len(chosen)} listed mutations killed")
    return int(failures > 0)


if __name__ == "__main__":
    raise SystemExit(main())
