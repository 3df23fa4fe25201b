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
             target_categories=("bottle",), selection="fixed").check()


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


def test_selection_choices_are_checked_by_name():
    Protocol(aux_categories=("a",), selection="fixed", epoch=3, target_categories=("c",)).check()
    Protocol(aux_dataset="mvtec", aux_categories=("a", "v"), val_dataset="btad", val_categories=("v",),
             target_dataset="visa", target_categories=("c",)).check()   # same name, other data set: no overlap
    with pytest.raises(ValueError, match="protocol.selection must be one of"):
        Protocol(aux_categories=("a",), val_categories=("b",), selection="best").check()
    with pytest.raises(ValueError, match=r"'fixed' takes epoch .*protocol.val_categories is \['b'\]"):
        Protocol(aux_categories=("a",), val_categories=("b",), selection="fixed").check()
    with pytest.raises(ValueError, match="'validation' needs protocol.val_categories"):
        Protocol(aux_categories=("a",)).check()
    with pytest.raises(ValueError, match="protocol.epoch must be 'last' or an epoch number"):
        Protocol(aux_categories=("a",), selection="fixed", epoch=0).check()
    with pytest.raises(ValueError, match=r"target categories \['c'\] of 'visa'"):   # validated on the target set
        Protocol(aux_dataset="mvtec", aux_categories=("a",), val_dataset="visa", val_categories=("c",),
                 target_dataset="visa", target_categories=("c", "d")).check()
    assert Protocol(selection="fixed", epoch=4).fixed_epoch == 4 and Protocol(selection="fixed").fixed_epoch is None
    assert Protocol(epoch=4).fixed_epoch is None   # an epoch only counts with selection: fixed


def test_a_model_is_refused_unless_what_it_was_trained_on_fits_the_run():
    from fsadlib.protocol import check_trained_for, shots_record

    mvtec_to_visa = Protocol(aux_dataset="mvtec", aux_categories=("bottle", "pcb1"), val_categories=("cable",),
                             target_dataset="visa", target_categories=("pcb1", "macaroni1"))
    record = mvtec_to_visa.training_record()
    assert record == {"data": "auxiliary", "aux_dataset": "mvtec", "aux_categories": ["bottle", "pcb1"],
                      "selection": "validation", "val_dataset": "mvtec", "val_categories": ["cable"], "epoch": None}
    check_trained_for(record, mvtec_to_visa, "m.pt")
    visa_to_mvtec = Protocol(aux_dataset="visa", aux_categories=("pcb1",), selection="fixed",
                             target_dataset="mvtec", target_categories=("bottle",))
    with pytest.raises(ValueError, match="m.pt was trained on 'mvtec' but this run trains on protocol.aux_dataset 'visa'"):
        check_trained_for(record, visa_to_mvtec, "m.pt")
    same_set = Protocol(aux_dataset="mvtec", aux_categories=("screw",), selection="fixed", target_dataset="mvtec",
                        target_categories=("cable", "grid"))
    with pytest.raises(ValueError, match=r"m.pt was trained or selected on \['cable'\] of 'mvtec'.*\['cable', 'grid'\]"):
        check_trained_for(record, same_set, "m.pt")
    with pytest.raises(ValueError, match="records no training data"):
        check_trained_for(None, mvtec_to_visa, "old.pt")
    shots = shots_record("visa", "pcb1", 2, 0)
    check_trained_for(shots, mvtec_to_visa, "s.pt", category="pcb1")
    with pytest.raises(ValueError, match="shots of 'pcb1' of 'visa', not of 'macaroni1'"):
        check_trained_for(shots, mvtec_to_visa, "s.pt", category="macaroni1")
    with pytest.raises(ValueError, match="'visa', not of 'bottle' of this run's target data set 'mvtec'"):
        check_trained_for(shots, visa_to_mvtec, "s.pt", category="bottle")


def test_absent_categories_are_named_with_their_data_set():
    import pandas as pd

    from fsadlib.protocol import check_data, training_files

    tables = {"mvtec": pd.DataFrame({"dataset": "mvtec", "category": ["bottle", "cable"], "image_path": ["b", "c"],
                                     "mask_path": ["", "cm"]}),
              "btad": pd.DataFrame({"dataset": "btad", "category": ["01", "cable"], "image_path": ["o", "x"],
                                    "mask_path": ["", ""]})}
    proto = Protocol(aux_dataset="mvtec", aux_categories=("bottle",), val_dataset="btad", val_categories=("cable",),
                     target_dataset="btad", target_categories=("01",))
    assert check_data(proto, ("aux", "target"), tables.__getitem__) is proto
    # the validation category comes from btad, not from mvtec's category of the same name
    assert training_files(proto, pd.concat(tables.values())) == ["b", "x"]
    with pytest.raises(KeyError, match=r"protocol.target_categories: categories \['02'\] are not in data set 'btad'"):
        check_data(Protocol(aux_categories=("a",), selection="fixed", target_dataset="btad", target_categories=("02",)),
                   ("target",), tables.__getitem__)
    with pytest.raises(KeyError, match=r"protocol.aux_categories: categories \['grid'\] are not in data set 'mvtec'"):
        check_data(Protocol(aux_dataset="mvtec", aux_categories=("grid",), selection="fixed"), ("aux",),
                   tables.__getitem__)


def test_the_protocol_lists_evaluations_by_target_data_set(tmp_path):
    import yaml

    from fsadlib.protocol import load_protocol, load_protocols

    both = {"mvtec": {"aux_dataset": "visa", "aux_categories": ["pcb1"], "selection": "fixed", "val_dataset": "visa",
                      "target_categories": ["bottle"]},
            "visa": {"aux_dataset": "mvtec", "aux_categories": ["bottle", "grid"], "val_dataset": "mvtec",
                     "val_categories": ["cable"], "epoch": "last", "target_categories": ["pcb1"]}}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"protocol": both}))
    protocols = load_protocols(params)
    assert list(protocols) == ["mvtec", "visa"]
    assert protocols["visa"] == Protocol(aux_dataset="mvtec", aux_categories=("bottle", "grid"), val_dataset="mvtec",
                                         val_categories=("cable",), target_dataset="visa", target_categories=("pcb1",))
    assert load_protocol("", params) == protocols["mvtec"] and load_protocol("visa", params) == protocols["visa"]
    with pytest.raises(KeyError, match=r"no evaluation of target data set 'btad'; it lists \['mvtec', 'visa'\]"):
        load_protocol("btad", params)
    for bad, match in [({"visa": {**both["visa"], "target_dataset": "visa"}}, "the key names the target data set"),
                       ({"visa": {k: v for k, v in both["visa"].items() if k != "val_dataset"}},
                        r"protocol.visa lacks \['val_dataset'\]"),
                       ({"visa": {**both["visa"], "aux_categorie": ["a"]}}, r"unknown key\(s\) \['aux_categorie'\]"),
                       ({"aux_dataset": "mvtec"}, "a mapping of target data set -> its evaluation")]:
        params.write_text(yaml.safe_dump({"protocol": bad}))
        with pytest.raises((KeyError, TypeError), match=match):
            load_protocols(params)
    params.write_text(yaml.safe_dump({"protocol": {"visa": {**both["visa"], "target_categories": ["cable"],
                                                            "aux_dataset": "visa", "val_dataset": "visa"}}}))
    with pytest.raises(ValueError, match=r"target categories \['cable'\] of 'visa'"):
        load_protocols(params)
