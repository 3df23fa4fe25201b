"""``make mutants``: cosmic-ray over the formula modules, each with its matching tests (not in CI).

    python tests/reference/mutants.py [--only SUBSTRING] [--out reports/mutants]

cosmic-ray edits the module in place, so everything runs in a scratch copy of the repository,
``<out>/<name>/tree`` (made when the module's session is new; never the working tree). For every
module of :data:`MODULES` it writes ``<out>/<name>/config.toml`` (the module, the test command, a
per-mutant timeout), runs ``cosmic-ray init`` + ``exec`` into ``<out>/<name>/session.sqlite`` (an
interrupted run resumes where it stopped: ``exec`` skips mutants already done) and prints the kill
rate from ``cr-report``. Survivors: ``cr-report <out>/<name>/session.sqlite --show-diff --surviving-only``.
Slow by nature: every mutant reruns the module's tests (run one module at a time in the background).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from listed_mutations import scratch_copy

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
U, R = "tests/unit/", "tests/reference/"

#: name -> (module path, tests that must kill its mutants)
MODULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "maps": ("fsadlib/maps.py", (U + "test_maps_losses.py",)),
    "losses": ("fsadlib/losses.py", (U + "test_maps_losses.py",)),
    "metrics": ("fsadlib/metrics", (U + "metrics",)),
    "winclip_model": ("fsadlib/methods/winclip/model.py", (R + "test_winclip_reference.py", U + "methods/test_winclip.py")),
    "inctrl_model": ("fsadlib/methods/inctrl/model.py", (R + "test_inctrl_reference.py", U + "methods/test_inctrl.py")),
    "inctrl_loss": ("fsadlib/methods/inctrl/train.py", (R + "test_inctrl_reference.py", U + "methods/test_inctrl.py")),
    "kag_prompt_model": ("fsadlib/methods/kag_prompt/model.py",
                         (R + "test_kag_prompt_reference.py", U + "methods/test_kag_prompt.py")),
    "kag_prompt_modules": ("fsadlib/methods/kag_prompt/modules.py",
                           (R + "test_kag_prompt_reference.py", U + "methods/test_kag_prompt.py")),
    "kag_prompt_loss": ("fsadlib/methods/kag_prompt/train.py",
                        (R + "test_kag_prompt_reference.py", U + "methods/test_kag_prompt_train.py")),
    "bayes_pfl_model": ("fsadlib/methods/bayes_pfl/model.py",
                        (R + "test_bayes_pfl_reference.py", U + "methods/test_bayes_pfl.py")),
    "bayes_pfl_flows": ("fsadlib/methods/bayes_pfl/flows.py",
                        (R + "test_bayes_pfl_reference.py", U + "methods/test_bayes_pfl.py")),
    "bayes_pfl_loss": ("fsadlib/methods/bayes_pfl/train.py",
                       (R + "test_bayes_pfl_reference.py", U + "methods/test_bayes_pfl.py")),
    "finegrained_model": ("fsadlib/methods/finegrained/model.py",
                          (R + "test_finegrained_reference.py", U + "methods/test_finegrained.py")),
    "finegrained_losses": ("fsadlib/methods/finegrained/losses.py",
                           (R + "test_finegrained_reference.py", U + "methods/test_finegrained.py")),
}

CONFIG = """[cosmic-ray]
module-path = "{module}"
timeout = {timeout}
excluded-modules = []
test-command = "{python} -m pytest -x -q -p no:randomly -p no:cacheprovider {tests}"

[cosmic-ray.distributor]
name = "local"
"""


def run_module(name: str, out: Path, timeout: float) -> str:
    module, tests = MODULES[name]
    work = out / name
    tree, config, session = work / "tree", work / "config.toml", work / "session.sqlite"
    if not session.exists():
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir(parents=True)
        scratch_copy(tree)
    config.write_text(CONFIG.format(module=module, timeout=timeout, python=sys.executable, tests=" ".join(tests)))
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
    if not session.exists():
        subprocess.run([BIN / "cosmic-ray", "init", config, session], cwd=tree, env=env, check=True)
    subprocess.run([BIN / "cosmic-ray", "exec", config, session], cwd=tree, env=env, check=True)
    report = subprocess.run([BIN / "cr-report", session], cwd=tree, capture_output=True, text=True, check=True).stdout
    summary = [line for line in report.splitlines() if re.match(r"(total jobs|complete|surviving mutants)", line)]
    return f"{name} ({module}): " + "; ".join(summary)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="modules whose name contains this text")
    parser.add_argument("--out", default=str(ROOT / "reports" / "mutants"))
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per mutant's test run")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in MODULES:
        if args.only in name:
            print(run_module(name, out, args.timeout), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
