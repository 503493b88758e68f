"""Writing derivatives: BIDS names, atomic writes, dataset_description."""

from __future__ import annotations

import json
import os
import stat

import nibabel as nib
import numpy as np
import pytest

from bids_app.atomic import atomic_path
from bids_app.bids import derivatives as out
from bids_app.bids.describe import write_dataset_files
from bids_app.bids.naming import BIDSIGNORE, bids_name


def test_bids_name_orders_entities():
    name = bids_name("statmap", ".nii.gz", stat="t", desc="minilm", sub="01",
                         space="MNI152NLin2009cAsym", res="2")
    assert name == "sub-01_space-MNI152NLin2009cAsym_res-2_desc-minilm_stat-t_statmap.nii.gz"
    with pytest.raises(ValueError):
        bids_name("statmap", ".nii.gz", model="x")


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "a" / "map.nii.gz"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("killed")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "map.nii.gz"
    img = nib.Nifti1Image(np.arange(24, dtype=np.float32).reshape(2, 3, 4), np.eye(4))
    out.write_nifti(target, img)
    np.testing.assert_array_equal(np.asarray(nib.load(target).dataobj), np.asarray(img.dataobj))
    out.write_json(tmp_path / "x.json", {"a": np.float32(1.5), "b": np.arange(2)})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1.5, "b": [0, 1]}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    # final files follow the umask (mkstemp's private 0600 must not leak into outputs)
    old = os.umask(0o022)
    try:
        out.write_text(tmp_path / "y.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "y.txt").stat().st_mode) == 0o644


def test_dataset_description(tmp_path):
    path = write_dataset_files(tmp_path / "out", tmp_path / "bids",
                               tmp_path / "bids/derivatives/fmriprep",
                               {"Name": "Narratives", "DatasetDOI": "10.1/x"}, {})
    desc = json.loads(path.read_text())
    assert desc["DatasetType"] == "derivative"
    assert desc["GeneratedBy"][0]["Name"] == "llmfbn"
    assert desc["SourceDatasets"][0]["DOI"] == "10.1/x"
    assert desc["DatasetLinks"]["fmriprep"].endswith("/bids/derivatives/fmriprep")
    assert (tmp_path / "out" / ".bidsignore").is_file()
    assert (tmp_path / "out" / "README.md").is_file()


def test_bidsignore_keeps_user_lines_and_drops_old_patterns(tmp_path):
    """Patterns of older versions ("atoms/": not matched by the validator) are replaced."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / ".bidsignore").write_text("atoms/\nmine/*.txt\n")
    write_dataset_files(tmp_path / "out", tmp_path / "bids", tmp_path / "f", {}, {})
    lines = (tmp_path / "out" / ".bidsignore").read_text().split()
    assert lines == ["mine/*.txt", *BIDSIGNORE]
