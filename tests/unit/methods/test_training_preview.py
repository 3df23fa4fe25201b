"""The training notebooks' data grid: every trainable method folder's preview, from params.yaml with the
smoke policy, on a 64 px synthetic data set (the workbench's own params.yaml and protocol)."""

from __future__ import annotations

import shutil

import pytest
import torch

from fsadlib.data import load_samples, make_shots, synthetic
from fsadlib.data.figures import training_grid
from fsadlib.methods import list_methods
from fsadlib.methods.registry import spec_of
from fsadlib.methods.training import preview_training_data
from fsadlib.paths import repo_root

TRAINABLE = sorted({spec_of(m).name for m in list_methods() if spec_of(m).trainable})


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("preview")
    shutil.copy(repo_root() / "params.yaml", root / "params.yaml")
    (root / "dvc.yaml").write_text("stages: {}\n")
    mp = pytest.MonkeyPatch()
    mp.setenv("FSAD_ROOT", str(root))
    synthetic.generate(root / "data" / "synthetic", seed=0, image_size=64, n_train=8, n_test_good=1, n_test_bad=1)
    make_shots(load_samples("synthetic"), (1, 2, 4, 8), (0, 1, 2))
    yield root
    mp.undo()


@pytest.mark.parametrize("name", TRAINABLE)
def test_every_trainable_method_previews_its_training_data(repo, name):
    preview = preview_training_data(name, smoke=True)
    assert preview is not None, f"{name}: its train module has no training_preview"
    image, mask = preview["image"], preview["mask"]
    assert image.ndim == 4 and image.shape[1] == 3 and mask.shape == (len(image), *image.shape[-2:])
    assert len(preview["title"]) == len(image) > 0
    assert 0 <= float(image.min()) and float(image.max()) <= 1 and torch.isfinite(mask).all()
    assert sum(ax.has_data() for ax in training_grid(preview).axes) == len(image)
