"""The naming contract: one rule for atom names and output file names."""

from __future__ import annotations

import pytest

from bids_app.bids.naming import (
    atom_name,
    atom_names,
    bids_name,
    group_map,
    sidecar_path,
    subject_map,
    subject_nuisance_map,
)


@pytest.mark.parametrize("n_atoms, first, last", [(8, "atom01", "atom08"),
                                                  (64, "atom01", "atom64"),
                                                  (99, "atom01", "atom99"),
                                                  (120, "atom001", "atom120"),
                                                  (1000, "atom0001", "atom1000")])
def test_atom_names_share_one_width(n_atoms, first, last):
    names = atom_names(n_atoms)
    assert names[0] == first and names[-1] == last and len(set(map(len, names))) == 1
    assert atom_name(n_atoms - 1, n_atoms) == last


def test_output_names(tmp_path):
    space = {"space": "MNI152NLin2009cAsym", "res": "2"}
    path = subject_map(tmp_path, "01", space, "minilm", "t")
    assert path == tmp_path / "sub-01" / "func" / \
        "sub-01_space-MNI152NLin2009cAsym_res-2_desc-minilm_stat-t_statmap.nii.gz"
    assert sidecar_path(path).name == \
        "sub-01_space-MNI152NLin2009cAsym_res-2_desc-minilm_stat-t_statmap.json"
    assert group_map(tmp_path, space, "minilm", "tfdr").name == \
        "space-MNI152NLin2009cAsym_res-2_desc-minilm_stat-tfdr_statmap.nii.gz"
    assert bids_name("design", ".tsv", desc="x", sub="01") == "sub-01_desc-x_design.tsv"


def test_nuisance_map_names(tmp_path):
    space = {"space": "MNI152NLin2009cAsym"}
    path = subject_nuisance_map(tmp_path, "01", space, "wordrate", "t")
    assert path == (tmp_path / "sub-01" / "func" /
                    "sub-01_space-MNI152NLin2009cAsym_desc-wordrate_stat-t_statmap.nii.gz")
    assert subject_nuisance_map(tmp_path, "01", space, "envelope", "effect").name == \
        "sub-01_space-MNI152NLin2009cAsym_desc-envelope_stat-effect_statmap.nii.gz"
    with pytest.raises(ValueError, match="unknown nuisance"):
        subject_nuisance_map(tmp_path, "01", space, "pitch", "t")
