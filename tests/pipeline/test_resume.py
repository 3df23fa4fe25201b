"""Resume under DVC: a training stage killed mid-epoch, after its first checkpoint, resumes from that
checkpoint on the next ``dvc repro`` (its models folder persists) and ends with the model an
uninterrupted run gives, bit for bit.

One small training run (FineGrainedAD, smoke sizes, one category) in a copy of the smoke pipeline;
the epochs are made 4 steps long so that the kill lands inside the second one.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import nbformat
import psutil
import torch
import yaml
from pipeline_support import BIN, TIMEOUT_S, run

from fsadlib.io import load_torch

STAGE = "pipelines/finegrained/dvc.yaml:train_finegrained@synthetic"
REFERENCE = """
import sys
from pathlib import Path
from fsadlib.methods.training import train_method

train_method("finegrained", smoke=True, out_dir=Path(sys.argv[1]), live_dir=Path(sys.argv[1]) / "live")
"""


def test_training_killed_mid_epoch_resumes_under_dvc_bit_for_bit(smoke_pipeline, tmp_path):
    src, env = smoke_pipeline
    dst = shutil.copytree(src, tmp_path / "workbench", symlinks=True)
    env = {**env, "PYTHONPATH": str(dst), "FSAD_ROOT": str(dst)}
    params = yaml.safe_load((dst / "params.yaml").read_text())
    evaluation = params["protocol"]["synthetic"]
    category = evaluation["target_categories"][0]
    evaluation["target_categories"] = [category]
    params["finegrained"]["train"]["steps_per_epoch"] = 4
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.rmtree(dst / "models" / "finegrained")
    folder = dst / "models" / "finegrained" / "synthetic" / f"trained_on_{evaluation['aux_dataset']}" / "synthetic" / "k1" / "seed0"
    last, final = folder / category / "last.pt", folder / f"{category}.pt"

    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen([str(BIN / "dvc"), "repro", "-s", STAGE], cwd=dst, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + TIMEOUT_S
        while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        # the whole tree: the notebook's kernel runs in a session of its own (jupyter_client), so killing
        # dvc's process group alone leaves it training for up to a second, time to finish the model
        kernels = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
        for child in kernels:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        psutil.wait_procs(kernels, timeout=10)
    assert last.exists(), f"no first checkpoint:\n{(tmp_path / 'killed.log').read_text()[-3000:]}"
    assert not final.exists() and load_torch(last)["train_state"]["epoch"] == 1, "killed too late"

    rerun = run([str(BIN / "dvc"), "repro", "-s", STAGE], dst, env, tmp_path / "rerun.log")
    assert rerun.returncode == 0, (tmp_path / "rerun.log").read_text()[-3000:]
    executed = nbformat.read(dst / "reports" / "notebooks" / "34_train_finegrained_synthetic.ipynb", as_version=4)
    stderr = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", [])
                     if o.get("name") == "stderr")
    assert f"resuming from {last} after epoch 1" in stderr, "the rerun did not resume from the kept checkpoint"

    reference = tmp_path / "reference"  # the same training, uninterrupted, in a fresh process
    subprocess.run([sys.executable, "-c", REFERENCE, str(reference)], cwd=dst, env=env, check=True,
                   timeout=TIMEOUT_S, capture_output=True)
    resumed, uninterrupted = load_torch(final), load_torch(reference / final.relative_to(folder.parents[2]))
    assert resumed["state_dict"].keys() == uninterrupted["state_dict"].keys()
    for name, tensor in uninterrupted["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], tensor), name
    assert resumed["extra"]["history"] == uninterrupted["extra"]["history"]
