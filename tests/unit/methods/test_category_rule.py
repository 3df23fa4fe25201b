"""One category rule: ``setup_category`` takes the category KEY everywhere and each method derives the
class name it writes into its prompts in one place (``AnomalyMethod.display_name``).

On a tiny data set whose categories are VisA keys with another display name (``pcb1`` -> "printed
circuit board", ``chewinggum`` -> "chewing gum"), every text a method sends to the text encoder is
recorded in its training step, its validation and the evaluation runner, and the three must be equal.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from fsadlib.clip import BackboneConfig, ClipBackbone
from fsadlib.data import make_shots, read_samples, samples_geometry, synthetic
from fsadlib.evaluate import EvalConfig, evaluate
from fsadlib.protocol import Protocol

KEYS = {"stripes": "pcb1", "grass": "chewinggum"}   # synthetic category -> VisA key it is renamed to
TINY = BackboneConfig(arch="tiny")
EVAL = EvalConfig(batch_size=4, save_maps=0)


@pytest.fixture(scope="module")
def visa_like(tmp_path_factory):
    """A workbench root with data set ``visa_like`` (categories pcb1, chewinggum; 64 px) and 1-shot files."""
    root = tmp_path_factory.mktemp("bench")
    data_root = root / "data" / "visa_like"
    synthetic.generate(data_root, image_size=64, n_train=3, n_test_good=2, n_test_bad=2, categories=tuple(KEYS))
    for old, new in KEYS.items():
        (data_root / old).rename(data_root / new)
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / "params.yaml").write_text(yaml.safe_dump({"datasets": {"visa_like": {"reader": "mvtec",
                                                                                  "root": "data/visa_like"}}}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FSAD_ROOT", str(root))
        samples = read_samples("mvtec", data_root, "visa_like")
        make_shots(samples, ks=(1,), seeds=(0,))
        yield root, samples


@pytest.fixture
def texts(monkeypatch):
    """Every text sent to a backbone's text encoder (``encode_text_cached`` and ``tokenize``)."""
    seen: list[str] = []
    for name in ("encode_text_cached", "tokenize"):
        original = getattr(ClipBackbone, name)

        def spy(self, batch, _original=original):
            seen.extend(batch)
            return _original(self, batch)

        monkeypatch.setattr(ClipBackbone, name, spy)
    return seen


def protocol(key: str) -> Protocol:
    other = next(k for k in KEYS.values() if k != key)
    return Protocol(aux_dataset="visa_like", aux_categories=(other,), val_categories=(key,),
                    target_dataset="visa_like", target_categories=())


def recorded(texts: list[str], run, every: bool = False) -> set[str]:
    """The texts encoded while ``run()`` runs that name a category (``every``: all of them)."""
    texts.clear()
    run()
    return {t for t in texts if every or any(word in t for word in ("pcb", "printed circuit", "chewing"))}


def evaluation_texts(texts, method, samples, key, k, out: Path) -> set[str]:
    return recorded(texts, lambda: evaluate(method, "visa_like", k=k, seed=0, config=EVAL, categories=[key],
                                            samples=samples, out_dir=out))


@pytest.mark.parametrize("key", ["pcb1", "chewinggum"])
def test_inctrl_encodes_the_same_text_in_training_validation_and_evaluation(visa_like, texts, tmp_path, key):
    from fsadlib.methods.inctrl.model import Inctrl, InctrlConfig
    from fsadlib.methods.inctrl.train import (
        CachedImages,
        InctrlDataConfig,
        InctrlLossConfig,
        PromptedBatches,
        backbone_loader,
        inctrl_loss,
        make_validate,
    )

    _, samples = visa_like
    data = InctrlDataConfig(normals_per_batch=1, anomalies_per_batch=1, val_max_images=2)
    method = Inctrl(InctrlConfig(backbone=TINY))
    geometry = samples_geometry(samples, method.backbone.geometry)
    images = CachedImages(method.backbone.image_size, backbone_loader(method.backbone, geometry))
    rows = samples[samples.category == key].reset_index(drop=True)
    batch = next(iter(PromptedBatches(rows, 1, images, data)))
    training = recorded(texts, lambda: inctrl_loss(method, batch, InctrlLossConfig()))
    validation = recorded(texts, lambda: make_validate(samples, protocol(key), 1, images, data)(method))
    evaluation = evaluation_texts(texts, method, samples, key, 1, tmp_path)
    assert training and training == validation == evaluation
    assert all(key in t for t in training)   # InCTRL's rule: the key itself ("_" -> " ", as the public code)


@pytest.mark.parametrize("key", ["pcb1", "chewinggum"])
def test_kag_prompt_encodes_the_same_text_in_training_validation_and_evaluation(visa_like, texts, tmp_path, key):
    from fsadlib.methods.kag_prompt.model import KagPrompt, KagPromptConfig
    from fsadlib.methods.kag_prompt.train import KagDataConfig, KagLossConfig, kag_loss, make_validate

    _, samples = visa_like
    method = KagPrompt(KagPromptConfig(backbone=TINY, layers=(3, 6, 9, 12), proj_dim=24, topk=3))
    bb = method.backbone
    batch = {"image": torch.zeros(2, 3, 64, 64), "mask": torch.zeros(2, 64, 64), "category": [key, key]}
    training = recorded(texts, lambda: kag_loss(method, batch, KagLossConfig()))
    data = KagDataConfig(batch_size=2, val_max_images=2)
    validation = recorded(texts, lambda: make_validate(protocol(key), data, bb.image_size, bb.mean, bb.std)(method))
    evaluation = evaluation_texts(texts, method, samples, key, 1, tmp_path)
    assert training and training == validation == evaluation
    assert all(KagPrompt.display_name(key) in t for t in training) and KagPrompt.display_name(key) != key


@pytest.mark.parametrize("key", ["pcb1"])
def test_bayes_pfl_encodes_the_same_text_in_training_validation_and_evaluation(visa_like, texts, tmp_path, key):
    from fsadlib.methods.bayes_pfl.augment import BayesPFLAugmentConfig
    from fsadlib.methods.bayes_pfl.model import BayesPFL, BayesPFLConfig
    from fsadlib.methods.bayes_pfl.train import BayesPFLTrainConfig, stage1_loss, train_loader, validation_fn

    _, samples = visa_like
    cfg = BayesPFLTrainConfig(batch_size=2, val_max_images=2, val_samples=1)
    method = BayesPFL(BayesPFLConfig(backbone=TINY, layers=(3, 6, 9, 12), test_samples=1, topk=30, sigma=1.0))
    aux = replace(protocol(key), aux_categories=(key,), val_categories=(next(k for k in KEYS.values() if k != key),))
    batch = next(iter(train_loader(method, aux, cfg, BayesPFLAugmentConfig())))
    training = recorded(texts, lambda: stage1_loss(method, batch, cfg))
    method._prompt_ids.clear()
    validation = recorded(texts, lambda: validation_fn(protocol(key), cfg)(method))
    method._prompt_ids.clear()
    evaluation = evaluation_texts(texts, method, samples, key, 0, tmp_path)
    assert training == validation == evaluation == {"X printed circuit board"}


def test_winclip_encodes_the_display_name_at_evaluation(visa_like, texts, tmp_path):
    from fsadlib.methods.winclip.model import WinClip, WinClipConfig

    _, samples = visa_like
    method = WinClip(WinClipConfig(backbone=TINY, window_sizes=(2,)))
    evaluation = evaluation_texts(texts, method, samples, "chewinggum", 0, tmp_path)
    assert evaluation and all("chewing gum" in t for t in evaluation)


def test_finegrained_trains_and_evaluates_on_the_captions_of_the_key(visa_like, texts, tmp_path):
    from fsadlib.captions import build_captions
    from fsadlib.data import load_images, load_shots
    from fsadlib.methods.finegrained.model import FineGrainedAD, FineGrainedConfig, load_finegrained
    from fsadlib.methods.finegrained.train import fit_category
    from fsadlib.train import TrainConfig

    _, samples = visa_like
    build_captions("visa_like", ["pcb1"], samples=samples)
    method = FineGrainedAD(FineGrainedConfig(backbone=TINY, captions_dataset="visa_like", memory_layers=(3, 8),
                                             region_upscale=1))
    supports = load_images(load_shots("visa_like", "pcb1", 1, 0), 64, method.backbone.mean, method.backbone.std)
    train = TrainConfig(epochs=1, steps_per_epoch=1, optimizer="sgd", amp=0)
    training = recorded(texts, lambda: fit_category(method, "pcb1", supports, train, tmp_path / "pcb1.pt"),
                        every=True)
    evaluation = recorded(texts, lambda: evaluate(load_finegrained(tmp_path / "pcb1.pt"), "visa_like", k=1, seed=0,
                                                  config=EVAL, categories=["pcb1"], samples=samples,
                                                  out_dir=tmp_path / "eval"), every=True)
    assert training and training == evaluation
