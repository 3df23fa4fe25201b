"""k-shot files: location, drawn from train/good only, nested, deterministic, independent, errors."""

from __future__ import annotations

import json

import pytest

from fsadlib.data import load_shots, make_shots, read_samples, shot_file
from fsadlib.data.shots import draw_shots, shot_table


@pytest.fixture
def samples(workbench, mvtec_tree):
    return read_samples("mvtec", mvtec_tree, "tiny")


def test_shot_file_location(workbench):
    assert shot_file("mvtec", "bottle", 4, 2) == workbench / "data" / "shots" / "mvtec" / "bottle" / "k4_seed2.json"


def test_make_and_load(samples):
    written = make_shots(samples, ks=(1, 2, 3), seeds=(0, 1, 2))
    assert len(written) == 2 * 3 * 3
    content = json.loads(shot_file("tiny", "screw", 2, 1).read_text())
    assert content["k"] == 2 and content["seed"] == 1 and content["dataset"] == "tiny"
    train_good = set(samples[(samples.split == "train") & (samples.label == 0)].image_path)
    table = shot_table("tiny", ["bottle", "screw"], (1, 2, 3), (0, 1, 2))
    assert table.image_path.isin(train_good).all()
    for (category, seed), group in table.groupby(["category", "seed"]):
        sets = [group[group.k == k].image_path.tolist() for k in (1, 2, 3)]
        assert [len(s) for s in sets] == [1, 2, 3] and len(set(sets[2])) == 3
        assert sets[0] == sets[1][:1] and sets[1] == sets[2][:2], "nested: k-shot = first k of one shuffle"
        assert all(p.split("/")[-4] == category for p in sets[2])
    assert load_shots("tiny", "bottle", 3, 0) == content_of("bottle", 3, 0)


def content_of(category: str, k: int, seed: int) -> list[str]:
    return json.loads(shot_file("tiny", category, k, seed).read_text())["images"]


def test_deterministic_and_independent_of_other_categories(samples):
    make_shots(samples, ks=(2,), seeds=(5,))
    first = content_of("screw", 2, 5)
    make_shots(samples[samples.category == "screw"], ks=(2,), seeds=(5,))
    assert content_of("screw", 2, 5) == first


def test_seeds_differ():
    pool = [f"img{i:02d}.png" for i in range(20)]
    draws = {tuple(draw_shots(pool, 4, seed, "d", "c")) for seed in range(5)}
    assert len(draws) == 5
    assert draw_shots(list(reversed(pool)), 4, 0, "d", "c") == draw_shots(pool, 4, 0, "d", "c")


def test_errors(samples):
    with pytest.raises(FileNotFoundError, match=r"k-shot file not found: .*tiny/bottle/k8_seed0\.json; written by "
                                                r"the make_shots stage: dvc repro make_shots@tiny"):
        load_shots("tiny", "bottle", 8, 0)
    with pytest.raises(FileNotFoundError, match=r"k3_seed7\.json; k 3 is not in params\.yaml shots\.ks \[1, 2, 4, 8\]; "
                                                r"seed 7 is not in params\.yaml shots\.seeds \[0, 1, 2\]: add it there"):
        load_shots("tiny", "bottle", 3, 7)
    with pytest.raises(ValueError, match=r"cannot draw 8 shots for 'tiny/bottle': 3 normal training images"):
        make_shots(samples, ks=(8,), seeds=(0,))
