"""Symbolic links under data/real are refused with advice; data elsewhere is read by its absolute path."""

from __future__ import annotations

import os

import pytest
import yaml

from fsadlib.data import load_samples
from fsadlib.data.links import linked_entries, main


def test_linked_folder_and_file_under_data_real_are_refused(workbench, mvtec_tree, capsys):
    real = workbench / "data" / "real"
    real.mkdir(parents=True)
    os.symlink(mvtec_tree, real / "shared_mvtec")
    datasets = {"linked": {"reader": "mvtec", "root": "data/real/shared_mvtec"},
                "elsewhere": {"reader": "mvtec", "root": str(mvtec_tree)}}
    (workbench / "params.yaml").write_text(yaml.safe_dump({"datasets": datasets}))
    with pytest.raises(ValueError, match=r"symbolic links under data/real \(1: .*shared_mvtec -> .*mvtec\)\. "
                                         r"DVC would leave a linked folder out"):
        load_samples("linked")
    assert len(load_samples("elsewhere")) == 12  # a shared disk is configured by its absolute path
    assert main([]) == 1 and "absolute path" in capsys.readouterr().err
    (real / "shared_mvtec").unlink()
    copy = real / "mvtec"
    copy.mkdir()
    (copy / "bottle").symlink_to(mvtec_tree / "bottle")
    assert linked_entries(copy) == [copy / "bottle"]
    (copy / "bottle").unlink()
    assert linked_entries(real) == [] and main([]) == 0
