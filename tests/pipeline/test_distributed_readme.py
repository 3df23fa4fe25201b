"""README "More than one GPU or machine", CPU form: its command lines, run as written in a copy of the
finished smoke pipeline (two gloo processes each), evaluate WinCLIP+ into exactly the files the
pipeline's one-process stage wrote and train KAG-prompt on two ranks."""

from __future__ import annotations

import re
import shlex

import numpy as np
from pipeline_support import copy_finished, run

from fsadlib.io import load_torch, read_json
from fsadlib.paths import repo_root

OUT = "two_processes"


def readme_cpu_commands() -> list[str]:
    """The command lines of the first bash block of the README section (the CPU form)."""
    text = (repo_root() / "README.md").read_text()
    section = text.split("## More than one GPU or machine", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    cpu = next(b for b in blocks if "--nproc-per-node 2" in b)
    return [line for line in cpu.splitlines() if line.strip() and not line.startswith("#")]


def test_readme_cpu_commands_evaluate_like_one_process_and_train_on_two_ranks(smoke_pipeline, tmp_path):
    src, env = smoke_pipeline
    dst = copy_finished(src, tmp_path / "workbench")
    env = {**env, "PYTHONPATH": str(dst), "FSAD_ROOT": str(dst)}
    commands = readme_cpu_commands()
    assert [c.split()[0] for c in commands] == ["python", "torchrun"]
    for i, line in enumerate(commands):
        result = run(shlex.split(line), dst, env, tmp_path / f"command{i}.log")
        assert result.returncode == 0, f"{line}\n{(tmp_path / f'command{i}.log').read_text()[-4000:]}"

    runs = sorted((dst / "results" / "winclip_plus").glob("*/k*/seed*"))
    assert runs
    for one in runs:
        two = dst / OUT / one.relative_to(dst)
        assert read_json(two / "metrics.json") == read_json(one / "metrics.json"), one
        assert (two / "scores.csv").read_bytes() == (one / "scores.csv").read_bytes(), one
        for npz in sorted(one.glob("*.npz")):
            with np.load(npz) as a, np.load(two / npz.name) as b:
                for key in a.files:
                    np.testing.assert_array_equal(a[key], b[key], err_msg=f"{npz.name}: {key}")
    [config] = (dst / OUT / "models" / "kag_prompt").rglob("train_config.json")
    assert read_json(config)["world_size"] == 2
    history = load_torch(config.parent / "final.pt")["extra"]["history"]
    assert [h["epoch"] for h in history] == list(range(1, len(history) + 1)) and history
    assert list((dst / OUT / "reports" / "train_kag_prompt").rglob("summary.json"))
