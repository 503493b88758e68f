"""Small results for the report tests: a subject and a group on the coarse MNI grid of the
synthetic dataset, with blobs where the maps should show something."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import scipy.sparse as sp

from bids_app.atlases import FBNAtlas
from bids_app.bids.naming import atom_names
from bids_app.bids.readers import AtomOutputs, GroupInputs
from bids_app.config import Config
from bids_app.encoding import ParticipantFit, RunData, design_matrix
from bids_app.report import GroupResult, RunCheck, SubjectResult
from bids_app.synthetic import analysis_grid

#: Centres (mm) of the toy networks; each is a 20 mm ball.
NETWORKS = {"Auditory": (-52.0, -20.0, 8.0), "DefaultMode": (0.0, -56.0, 28.0),
            "Visual": (0.0, -84.0, 4.0)}


def grid():
    """(mask_img, mask, xyz) of the coarse MNI grid; xyz (n_voxels, 3) in mm."""
    mask_img, mask = analysis_grid()
    ijk = np.argwhere(mask)
    xyz = ijk @ mask_img.affine[:3, :3].T + mask_img.affine[:3, 3]
    return mask_img, mask, xyz


def blob(xyz: np.ndarray, centre, radius_mm: float = 20.0) -> np.ndarray:
    """(n_voxels,) Gaussian bump at ``centre`` (mm)."""
    return np.exp(-np.sum((xyz - np.asarray(centre)) ** 2, axis=1) / (2 * radius_mm**2 / 4))


def _run_check(name: str, n_volumes: int, rng) -> tuple[RunCheck, RunData]:
    kept = np.arange(3, n_volumes)
    confounds = pd.DataFrame(rng.normal(size=(kept.size, 5)), index=kept,
                             columns=["trans_x", "rot_z", "cosine00", "c_comp_cor_00",
                                      "w_comp_cor_00"])
    fd = np.abs(rng.normal(0.12, 0.08, n_volumes))
    fd[0] = np.nan
    fd[40] = 0.9
    motion = pd.DataFrame({"framewise_displacement": fd})
    check = RunCheck(name=name, t_r_s=1.5, n_volumes=n_volumes, kept=kept,
                     confounds=confounds, motion=motion)
    atoms = rng.normal(size=(n_volumes, 4))
    return check, RunData(bold=np.zeros((n_volumes, 1)), confounds=confounds,
                          sample_mask=kept, atoms=atoms, name=name)


def subject_result(output_dir, n_volumes: int = 150) -> SubjectResult:
    """Two runs, 4 atoms; atom02 is expressed in the auditory ball, R² above chance there."""
    rng = np.random.default_rng(0)
    mask_img, mask, xyz = grid()
    pairs = [_run_check(name, n_volumes, rng) for name in ("task-a", "task-b")]
    design = design_matrix([data for _, data in pairs])
    t = rng.normal(size=(4, len(xyz))).astype(np.float32)
    t[1] += 9 * blob(xyz, NETWORKS["Auditory"])
    r2 = (0.03 + 0.01 * rng.random(len(xyz)) + 0.3 * blob(xyz, NETWORKS["Auditory"]))
    fit = ParticipantFit(effect=0.1 * t, t=t, r2=r2.astype(np.float32),
                         dof=design.shape[0] - design.shape[1] + 3, design=design,
                         n_volumes_used=design.shape[0])
    mean_bold = np.zeros(mask.shape, np.float32)
    mean_bold[mask] = 600 + 100 * rng.random(int(mask.sum()))
    config = Config(bids_dir=output_dir, output_dir=output_dir, analysis_level="participant")
    return SubjectResult(config=config, spec=SimpleNamespace(name="toy", label="toy"),
                         subject="01", fit=fit, cv_r=0.2 * blob(xyz, NETWORKS["Auditory"])
                         + 0.02 * rng.normal(size=len(xyz)), mask_img=mask_img, mask=mask,
                         runs=[check for check, _ in pairs], mean_bold=mean_bold,
                         warnings=["UserWarning: a toy warning"])


def _atoms_table(n_atoms: int, used: bool, rng) -> pd.DataFrame:
    parts = []
    for task, n in (("a", 120), ("b", 100)):
        frame = np.arange(n)
        part = pd.DataFrame({"acquisition": f"task-{task}", "task": task, "run": "n/a",
                             "frame": frame, "time_s": 0.75 + 1.5 * frame})
        if used:
            part["used"] = ((frame >= 10) & (frame < n - 12)).astype(int)
        parts.append(part)
    table = pd.concat(parts, ignore_index=True)
    courses = rng.normal(size=(len(table), n_atoms))
    return pd.concat([table, pd.DataFrame(courses / np.linalg.norm(courses, axis=0),
                                          columns=atom_names(n_atoms))], axis=1)


def group_result(output_dir, n_atoms: int = 8, n_coupled: int = 5,
                 used: bool = True) -> GroupResult:
    """``n_coupled`` atoms coupled (each a blob in one toy network), 6 subjects; one metric
    is missing (None)."""
    rng = np.random.default_rng(1)
    mask_img, mask, xyz = grid()
    names = list(NETWORKS)
    masks = np.stack([blob(xyz, c) > 0.3 for c in NETWORKS.values()])
    t_map = rng.normal(size=(n_atoms, len(xyz)))
    rows = []
    for k in range(n_coupled):
        network = names[k % len(names)]
        t_map[k] += (8 if k % 2 == 0 else -8) * blob(xyz, NETWORKS[network])
        rows.append({"atom": k + 1, "network": network, "sign": "+" if k % 2 == 0 else "-",
                     "iou": 0.3 + 0.05 * k, "n_atom_voxels": 200 + k})
    rows += [{"atom": k + 1, "network": "none", "sign": None, "iou": np.nan,
              "n_atom_voxels": 0} for k in range(n_coupled, n_atoms)]
    assignments = pd.DataFrame(rows)
    coupling = assignments[assignments["network"] != "none"][["atom", "network", "iou"]]
    coupling = coupling.assign(p_overlap=1e-6)       # every coupled pair significant
    stability = {"seed_vs_seed": list(np.linspace(0.5, 0.99, n_atoms)),
                 "half_vs_half": list(np.linspace(0.4, 0.95, n_atoms)), "seeds": [0, 1],
                 "split_seed": 0, "median_seed_vs_seed": 0.75, "median_half_vs_half": 0.7}
    atoms = AtomOutputs(table=_atoms_table(n_atoms, used, rng),
                        codes=sp.csr_matrix((10, n_atoms)),
                        projections=np.zeros((10, n_atoms), np.float32),
                        neurons=pd.DataFrame({"row": range(10), "layer": [0] * 5 + [1] * 5,
                                             "unit": list(range(5)) * 2}),
                        sidecar={}, stability=stability,
                        source=output_dir / "atoms" / "desc-toy_atoms.tsv")
    groups = pd.DataFrame({"atom": range(1, n_atoms + 1), "n_neurons": 3,
                           "layer00": 1, "layer01": 2})
    config = Config(bids_dir=output_dir, output_dir=output_dir, analysis_level="group")
    subjects = [f"{i:02d}" for i in range(1, 7)]
    return GroupResult(
        config=config, spec=SimpleNamespace(name="toy", label="toy", identity="toy"),
        atlas=FBNAtlas("toyatlas", tuple(names), masks, "test"),
        inputs=GroupInputs(subjects=subjects, dof=None,
                           mask=mask, mask_img=mask_img),
        atoms=atoms, t_map=t_map, significant=np.abs(t_map) > 4.5, coupling=coupling,
        assignments=assignments, atom_groups=groups,
        metrics={"diversity": {"n_coupled_atoms": n_coupled, "normalised_entropy": 0.9,
                               "atoms_per_network": {"Auditory": 2, "Visual": 0}},
                 "consistency": {"n_subjects": 6, "per_atom": [], "mean_consistency": None},
                 "an_side": {"an_diversity": 2.5, "an_specialisation": 0.8, "an_overlap": 0.1,
                             "n_subgroups": 2,
                             "ci95": {"an_diversity": [1.9, 3.1], "an_specialisation": None,
                                      "an_overlap": [0.0, 0.2]}},
                 "definitions": {"n_coupled_atoms": "Number of atoms assigned to some FBN."}})


def model_summaries(output_dir, n_layers=(6, 12)) -> list:
    """Two toy models (6 and 12 layers) for the models report; the second lacks one
    metric (None) and its AN sub-groups sit in its last layers."""
    from bids_app.report.models import ModelSummary

    summaries = []
    for i, layers in enumerate(n_layers):
        sizes = np.full(layers, 100 * (i + 1))
        counts = np.zeros(layers)
        counts[-2:] = [10, 30] if i else [0, 0]
        counts[:2] = [0, 0] if i else [40, 20]
        networks = pd.DataFrame({"network": ["Auditory", "Default"][: i + 1],
                                 "n_atoms": [2, 1][: i + 1],
                                 "n_neurons": [int(counts.sum()), 5][: i + 1]})
        # toy1's coupled-atom count lies outside its percentile interval (it can)
        metrics = {"diversity": {"n_coupled_atoms": 3 + i, "normalised_entropy": 0.5 + 0.1 * i,
                                 **({} if i else {"ci95": {"n_coupled_atoms": [4.0, 6.0]}})},
                   "consistency": {"mean_consistency": 0.6 + 0.1 * i,
                                   "ci95": {"mean_consistency": [0.5, 0.8]}},
                   "an_side": {"an_diversity": None if i else 1.5,
                               "an_specialisation": 0.7, "an_overlap": 0.05,
                               "ci95": {"an_specialisation": [0.6, 0.8], "an_diversity": None,
                                        "an_overlap": [0.0, 0.1]}}}
        coupled = pd.DataFrame({"atom": [1, 2, 3][: 2 + i],
                                "network": ["Auditory", "Auditory", "Default"][: 2 + i]})
        summaries.append(ModelSummary(
            name=f"toy{i + 1}", label=f"toy{i + 1}", metrics=metrics, coupled=coupled,
            networks=networks, member_counts=counts, layer_sizes=sizes,
            report=output_dir / "group" / f"desc-toy{i + 1}_report.html"))
    return summaries
