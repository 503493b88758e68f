"""Reports render the results they are handed: each model's own atoms, names by one rule."""

from __future__ import annotations

import re
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pandas as pd
import scipy.sparse as sp

from bids_app.atlases import FBNAtlas
from bids_app.bids.naming import atom_names
from bids_app.bids.readers import AtomOutputs, GroupInputs
from bids_app.config import Config
from bids_app.report import GroupResult, write_group_report
from bids_app.report import figures as report_figures


def _result(tmp_path, label, courses, n_atoms=3):
    """A GroupResult of model ``label`` whose atom 2 is coupled to 'Net'."""
    rng = np.random.default_rng(0)
    mask = np.zeros((6, 6, 6), bool)
    mask[1:5, 1:5, 1:5] = True
    n_voxels = int(mask.sum())
    mask_img = nib.Nifti1Image(mask.astype(np.uint8), np.eye(4))
    table = pd.concat([pd.DataFrame({"acquisition": "task-a", "task": "a", "run": "n/a",
                                     "frame": np.arange(courses.shape[1]),
                                     "time_s": 1.5 * np.arange(courses.shape[1])}),
                       pd.DataFrame(courses.T, columns=atom_names(n_atoms))], axis=1)
    atoms = AtomOutputs(table=table, codes=sp.csr_matrix((4, n_atoms)),
                        projections=np.zeros((4, n_atoms), np.float32),
                        neurons=pd.DataFrame({"row": range(4), "layer": [0, 0, 1, 1]}),
                        sidecar={}, stability=None,
                        source=tmp_path / "atoms" / f"desc-{label}_atoms.tsv")
    atlas = FBNAtlas("toy", ("Net", "Other"), rng.random((2, n_voxels)) > 0.5, "test")
    assignments = pd.DataFrame({"atom": [1, 2, 3], "network": ["none", "Net", "none"],
                                "sign": [None, "+", None], "iou": [np.nan, 0.4, np.nan],
                                "n_atom_voxels": [0, 10, 0]})
    coupling = pd.DataFrame({"atom": [2], "network": ["Net"], "iou": [0.4], "p_overlap": [1e-6]})
    groups = pd.DataFrame({"atom": [1, 2, 3], "n_neurons": [0, 2, 0], "layer0": [0, 1, 0],
                           "layer1": [0, 1, 0]})
    config = Config(bids_dir=tmp_path, output_dir=tmp_path, analysis_level="group")
    spec = SimpleNamespace(name=label, label=label, identity=label)
    inputs = GroupInputs(subjects=["1", "2", "3"], dof=None,
                         mask=mask, mask_img=mask_img)
    t_map = rng.normal(size=(n_atoms, n_voxels))
    return GroupResult(config=config, spec=spec, atlas=atlas, inputs=inputs, atoms=atoms,
                       t_map=t_map, significant=np.abs(t_map) > 1, coupling=coupling,
                       assignments=assignments, atom_groups=groups,
                       metrics={"diversity": {"n": 1}, "consistency": {"c": 0.5}})


def test_each_model_report_plots_its_own_atoms(tmp_path, monkeypatch):
    """Two models in one output folder: each report's time course is its own model's."""
    plotted = []
    real_png = report_figures.png

    def recording_png(fig, alt):
        plotted.extend(line.get_ydata() for ax in fig.axes for line in ax.get_lines())
        return real_png(fig, alt)

    monkeypatch.setattr("bids_app.report.traces.png", recording_png)
    frames = np.arange(40)
    courses = {"alpha": np.stack([np.sin(frames / (k + 2)) for k in range(3)]),
               "beta": np.stack([np.cos(frames / (k + 5)) for k in range(3)])}
    for label in ("alpha", "beta"):
        plotted.clear()
        path = write_group_report(_result(tmp_path, label, courses[label]))
        assert path.name == f"desc-{label}_report.html"
        matches = [y for y in plotted if len(y) == 40]
        assert len(matches) == 1
        np.testing.assert_array_equal(matches[0], courses[label][1])     # atom02 is coupled
        assert f"desc-{label}_atoms.tsv" in path.read_text()


def test_report_atom_names_follow_the_naming_rule(tmp_path):
    courses = np.random.default_rng(1).normal(size=(120, 30))
    result = _result(tmp_path, "wide", courses, n_atoms=120)
    result.assignments = pd.DataFrame({"atom": np.arange(1, 121),
                                       "network": ["Net"] * 2 + ["none"] * 118,
                                       "sign": ["+"] * 120, "iou": 0.3,
                                       "n_atom_voxels": 5})
    text = write_group_report(result).read_text()
    names = set(re.findall(r"atom\d+", text))
    assert {"atom001", "atom002", "atom120"} <= names
    assert all(len(name) == len("atom001") for name in names)
