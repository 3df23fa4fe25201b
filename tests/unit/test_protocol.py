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
