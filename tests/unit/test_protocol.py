import pytest

from fsadlib.protocol import Protocol


def test_protocol_refuses_leaks():
    Protocol(aux_categories=("a",), val_categories=("b",), target_categories=("c",)).check()
    with pytest.raises(ValueError, match=r"\['c'\]"):
        Protocol(aux_categories=("a", "c"), target_categories=("c",)).check()
    with pytest.raises(ValueError, match="validation"):
        Protocol(aux_categories=("a",), val_categories=("a",)).check()
    # another data set as target: same names are different categories
    Protocol(aux_dataset="mvtec", aux_categories=("bottle",), target_dataset="visa",
             target_categories=("bottle",)).check()


def test_validation_sets_are_balanced_fixed_and_checked():
    import pandas as pd

    from fsadlib.protocol import validation_sets

    rows = [{"dataset": "d", "category": "v", "split": "test", "label": int(i >= 8), "image_path": f"t{i}"}
            for i in range(10)]
    rows += [{"dataset": "d", "category": "v", "split": "train", "label": 0, "image_path": f"n{i}"}
             for i in range(5)]
    samples = pd.DataFrame(rows)
    proto = Protocol(aux_dataset="d", val_categories=("v",))
    (vs,) = validation_sets(samples, proto, max_images=4, n_supports=2, seed=3)
    assert sorted(vs.test.label.tolist()) == [0, 0, 1, 1] and len(vs.supports) == 2
    assert all(p.startswith("n") for p in vs.supports)
    again = validation_sets(samples, proto, max_images=4, n_supports=2, seed=3)[0]
    assert again.supports == vs.supports and again.test.image_path.tolist() == vs.test.image_path.tolist()
    assert len(validation_sets(samples, proto)[0].test) == 10
    with pytest.raises(ValueError, match="'v'"):
        validation_sets(samples[samples.label == 0], proto)
    with pytest.raises(KeyError, match="unknown categories"):
        validation_sets(samples, Protocol(aux_dataset="d", val_categories=("w",)))
