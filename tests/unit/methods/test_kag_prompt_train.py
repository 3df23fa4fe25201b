"""KAG-prompt training pipeline on a tiny synthetic tree: synthetic-anomaly batches, protocol use,
a smoke training run with validation-only selection and a reloadable final.pt."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import yaml

from fsadlib.config import from_dict
from fsadlib.data import CLIP_MEAN, CLIP_STD, synthetic
from fsadlib.methods.base import load_checkpoint
from fsadlib.methods.kag_prompt import SPEC
from fsadlib.methods.kag_prompt.train import (
    KagDataConfig,
    KagTrainSection,
    SyntheticAnomalyBatches,
    aux_normal_samples,
    train_kag_prompt,
    training_preview,
)
from fsadlib.protocol import Protocol
from fsadlib.smoke import smoke_section

PROTOCOL = Protocol(aux_categories=("stripes", "cross"), val_categories=("grass",), target_categories=("disc",))


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A throw-away workbench root (dvc.yaml + params.yaml) with a 64 px synthetic data set."""
    root = tmp_path_factory.mktemp("repo")
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / "params.yaml").write_text(yaml.safe_dump(
        {"datasets": {"synthetic": {"reader": "mvtec", "root": "data/synthetic"}}}))
    synthetic.generate(root / "data" / "synthetic", seed=0, image_size=64, n_train=4, n_test_good=2,
                       n_test_bad=2, categories=["stripes", "cross", "grass", "disc"])
    mp = pytest.MonkeyPatch()
    mp.setenv("FSAD_ROOT", str(root))
    mp.chdir(root)  # DVCLive looks for a DVC repo from the cwd: keep it away from the real one
    yield root
    mp.undo()


def test_aux_samples_are_normal_training_images_of_aux_categories(repo):
    rows = aux_normal_samples(PROTOCOL)
    assert len(rows) == 8 and set(rows.category) == {"stripes", "cross"}
    assert (rows.split == "train").all() and (rows.label == 0).all()
    with pytest.raises(ValueError, match="nothing"):
        aux_normal_samples(Protocol(aux_categories=("nothing",), target_categories=("disc",)))


@pytest.mark.parametrize("mode", ["cutpaste", "perlin"])
def test_batches_pair_clean_and_synthetic_images(repo, mode):
    batches = SyntheticAnomalyBatches(aux_normal_samples(PROTOCOL), 64, 3, mode, CLIP_MEAN, CLIP_STD)
    np.random.seed(0)
    first = next(iter(batches))
    np.random.seed(0)
    again = next(iter(batches))
    torch.testing.assert_close(first["image"], again["image"])       # a function of the numpy seed
    img, mask = first["image"], first["mask"]
    assert img.shape == (6, 3, 64, 64) and mask.shape == (6, 64, 64)
    assert first["category"][:3] == first["category"][3:]
    assert (mask[:3] == 0).all() and (mask[3:].flatten(1).amax(1) == 1).all()
    outside = (mask[3:] == 0)[:, None].expand(-1, 3, -1, -1)
    torch.testing.assert_close(img[3:][outside], img[:3][outside], atol=1e-5, rtol=0)  # only the mask changes
    assert (img[3:] - img[:3]).abs().amax() > 0.1
    with pytest.raises(ValueError, match="batch_size 9"):
        SyntheticAnomalyBatches(aux_normal_samples(PROTOCOL), 64, 9, mode, CLIP_MEAN, CLIP_STD)


def test_nsa_batches_carry_soft_labels_and_keep_the_clean_half(repo):
    """NSA (the paper's synthesis): soft masks in [0, 1), the clean half untouched, a function of the seed."""
    rows = aux_normal_samples(PROTOCOL)
    batches = SyntheticAnomalyBatches(rows, 64, 4, "nsa", CLIP_MEAN, CLIP_STD)
    np.random.seed(1)
    first = next(iter(batches))
    np.random.seed(1)
    again = next(iter(batches))
    torch.testing.assert_close(first["image"], again["image"])
    torch.testing.assert_close(first["mask"], again["mask"])
    mask = first["mask"]
    assert (mask[:4] == 0).all() and mask.min() >= 0 and mask.max() < 1 and mask[4:].amax() > 0
    assert (first["image"][4:] != first["image"][:4]).any()
    np.random.seed(2)
    assert not torch.equal(next(iter(batches))["image"], first["image"])


def test_training_preview_pairs_each_normal_with_its_anomaly_and_draws_a_grid(repo):
    from fsadlib.data.figures import training_grid

    section = from_dict(KagTrainSection, {"model": {"backbone": {"arch": "tiny"}, "proj_dim": 24},
                                          "data": {"synthesis": "cutpaste"}}, "kag_prompt")
    np.random.seed(11)
    expected_next = np.random.random()
    np.random.seed(11)
    preview = training_preview(section, PROTOCOL, n=3)
    assert np.random.random() == expected_next, "the global numpy RNG is left as it was"
    image, mask, title = preview["image"], preview["mask"], preview["title"]
    assert image.shape == (6, 3, 64, 64) and mask.shape == (6, 64, 64)  # the tiny backbone's input size
    assert 0 <= float(image.min()) and float(image.max()) <= 1         # unnormalised for display
    assert title[0].endswith("normal") and title[1].endswith("cutpaste")
    assert (mask[0::2] == 0).all() and (mask[1::2].flatten(1).amax(1) == 1).all()
    outside = (mask[1::2] == 0)[:, None].expand(-1, 3, -1, -1)
    torch.testing.assert_close(image[1::2][outside], image[0::2][outside])  # pairs: a normal, then its anomaly
    fig = training_grid(preview, columns=4)
    assert sum(ax.has_data() for ax in fig.axes) == 6 and len(fig.axes) == 8
    with pytest.raises(ValueError, match="2 titles"):
        training_grid({**preview, "title": title[:2]})


def test_bad_data_parameters_name_the_key():
    with pytest.raises(ValueError, match="kag_prompt.data.synthesis"):
        KagDataConfig(synthesis="blur")


def test_smoke_training_writes_a_reloadable_final_checkpoint(repo):
    section = from_dict(KagTrainSection, {
        "model": {"backbone": {"arch": "tiny"}, "layers": [3, 6, 9, 12], "proj_dim": 24, "topk": 3},
        "train": {"epochs": 2, "steps_per_epoch": 1, "optimizer": "adamw", "betas": [0.9, 0.95],
                  "weight_decay": 1e-3, "schedule": "linear", "warmup": 0.1, "grad_clip": 1.0,
                  "select_metric": "auroc_mean"},
        "data": {"batch_size": 2, "val_max_images": 4}}, "kag_prompt")
    section = smoke_section(replace(section, train=replace(section.train, seed=3)), SPEC.smoke)
    dirs = {"out_dir": repo / "models" / "kag_prompt", "live_dir": repo / "reports" / "train_kag_prompt"}
    result = train_kag_prompt(section, PROTOCOL, smoke=True, **dirs)
    assert result.models == [repo / "models" / "kag_prompt" / "final.pt"]
    history = result.history
    assert len(history) == 1 and np.isfinite(history.train_loss).all(), history
    assert history.val_auroc_mean.between(0, 1).all(), history
    assert (repo / "reports" / "train_kag_prompt" / "metrics.json").is_file()
    method = load_checkpoint(result.models[0])
    assert method.config == section.model
    assert torch.load(result.models[0], weights_only=True)["extra"]["selected_from"] == "best.pt"
    with pytest.raises(ValueError, match="target categories"):
        train_kag_prompt(section, Protocol(aux_categories=("disc",), target_categories=("disc",)), smoke=True, **dirs)
