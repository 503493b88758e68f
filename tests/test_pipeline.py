"""End to end on the synthetic datasets: planted truth recovered, null gives nothing,
outputs form a BIDS-Derivatives dataset that pybids indexes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

#: end-to-end runs of the whole pipeline (minutes): `pytest -m "not slow"` skips them
pytestmark = pytest.mark.slow


def _assignments(output: Path) -> pd.DataFrame:
    return pd.read_csv(output / "group" / "desc-minilm_assignments.tsv", sep="\t")


def test_planted_networks_are_coupled_and_only_them(planted_run):
    bids_dir, output = planted_run
    truth = json.loads((bids_dir / "sourcedata" / "llmfbn_truth.json").read_text())
    planted = {n["network"] for n in truth["networks"]}
    assert len(planted) == 3
    coupled = set(_assignments(output)["network"]) - {"none"}
    assert coupled == planted


def test_null_dataset_couples_no_atom(null_run):
    _, output = null_run
    assignments = _assignments(output)
    assert len(assignments) == 64
    assert (assignments["network"] == "none").all()
    metrics = json.loads((output / "group" / "desc-minilm_metrics.json").read_text())
    assert metrics["diversity"]["n_coupled_atoms"] == 0


def test_planted_subgroups_overlap_truth(planted_run):
    """The AN sub-group of the atoms coupled to a planted network contains its planted ANs
    more often than chance (the planted ANs drive that network's signal)."""
    bids_dir, output = planted_run
    truth = json.loads((bids_dir / "sourcedata" / "llmfbn_truth.json").read_text())
    import scipy.sparse as sp

    codes = sp.load_npz(output / "atoms" / "desc-minilm_codes.npz").tocsc()
    assignments = _assignments(output)
    n_neurons = codes.shape[0]
    for entry in truth["networks"]:
        atoms = assignments.loc[assignments["network"] == entry["network"], "atom"] - 1
        members = np.zeros(n_neurons, bool)
        for k in atoms:
            members[codes[:, k].nonzero()[0]] = True
        hit_rate = members[entry["neurons"]].mean()
        base_rate = members.mean()
        assert hit_rate > base_rate, (entry["network"], hit_rate, base_rate)


def test_derivatives_dataset_is_indexed_by_pybids(planted_run):
    from bids_app.bids.describe import derivatives_layout

    _, output = planted_run
    description = json.loads((output / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "llmfbn"
    assert description["GeneratedBy"][0]["Version"]
    assert description["SourceDatasets"]
    layout = derivatives_layout(output)
    indexed = {Path(f.path) for f in layout.get(extension=[".nii.gz"])}
    on_disk = set(output.rglob("*.nii.gz"))
    assert on_disk and on_disk == indexed
    # every map has a JSON sidecar recording the model and settings
    for path in on_disk:
        sidecar = json.loads(Path(str(path).replace(".nii.gz", ".json")).read_text())
        for key in ("Model", "NumberOfAtoms", "SparsityLambda", "HRF", "ConfoundStrategy",
                    "Seed"):
            assert key in sidecar, (path.name, key)
    # participant maps carry standard entities, and stat with the shipped configuration
    tmaps = layout.get(subject="001", suffix="statmap", extension=".nii.gz")
    assert {f.entities.get("space") for f in tmaps} == {"MNI152NLin2009cAsym"}
    assert {f.entities["stat"] for f in tmaps} == {"effect", "t", "rsquare", "cvr"}
    masks = layout.get(subject="001", suffix="mask", extension=".nii.gz")
    assert {f.entities["task"] for f in masks} == {"lighthouse", "market"}
    assert not list(output.rglob(".*.tmp*")), "temporary files left behind"


def test_participant_maps_shapes(planted_run):
    _, output = planted_run
    func = output / "sub-001" / "func"
    stem = "sub-001_space-MNI152NLin2009cAsym_desc-minilm"
    effect = nib.load(func / f"{stem}_stat-effect_statmap.nii.gz")
    t = nib.load(func / f"{stem}_stat-t_statmap.nii.gz")
    r2 = nib.load(func / f"{stem}_stat-rsquare_statmap.nii.gz")
    assert effect.shape[3] == 64 and t.shape == effect.shape and r2.ndim == 3
    r2_data = np.asarray(r2.dataobj)
    assert np.all((r2_data >= 0) & (r2_data <= 1))
    atoms = pd.read_csv(output / "atoms" / "desc-minilm_atoms.tsv", sep="\t")
    assert list(atoms.columns[:5]) == ["acquisition", "task", "run", "frame", "time_s"]
    assert atoms.shape[1] == 5 + 64
    assert (output / "atoms" / "desc-minilm_stability.json").is_file()
    logs = list((output / "logs").glob("config_participant_*.json"))
    assert logs and json.loads(logs[0].read_text())["model"] == ["minilm"]
    assert (output / "logs" / "CITATION.md").is_file()
    assert (output / "group" / "desc-minilm_report.html").stat().st_size > 10_000


def test_rerun_reuses_cache_and_keeps_outputs(planted_run, capsys):
    """A second participant run reuses the cached atoms, rewrites identical maps, removes
    the temporaries of killed runs (owner gone) and keeps those of live ones."""
    from bids_app.atomic import host_label
    from bids_app.cli.run import main

    bids_dir, output = planted_run
    path = output / "sub-002" / "func" / \
        "sub-002_space-MNI152NLin2009cAsym_desc-minilm_stat-t_statmap.nii.gz"
    before = np.asarray(nib.load(path).dataobj).copy()
    work = output.parent.parent.parent / "work"
    dead = 2 ** 22 + 12345                      # above the kernel's default pid_max
    stale = [path.with_name(f".{path.name}.tmp-{host_label()}-{dead}-abcdefgh.nii.gz"),
             work / "llmfbn" / "responses" / f".0123abcd.tmp-{host_label()}-{dead}-zz"]
    stale[0].write_bytes(b"half a map")
    stale[1].mkdir(parents=True)
    (stale[1] / "x.npy").write_bytes(b"half an array")
    live = output / f".notes.txt.tmp-{host_label()}-{os.getpid()}-abcdefgh"
    live.write_text("a live run's file")
    code = main([str(bids_dir), str(output), "participant", "--participant-label", "002",
                 "-w", str(work)])
    assert code == 0
    np.testing.assert_array_equal(np.asarray(nib.load(path).dataobj), before)
    assert not any(p.exists() for p in stale) and live.exists()
    live.unlink()
