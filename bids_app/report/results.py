"""What the workflow hands to the reports: the results of one subject or one model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class SubjectResult:
    """One subject's participant-level fit of one model."""

    config: object             # Config of the run
    spec: object               # ModelSpec
    subject: str
    fit: object                # encoding.ParticipantFit
    cv_r: np.ndarray | None    # (n_voxels,) leave-one-run-out r, None with one run
    mask_img: object           # nibabel image of the analysed voxels
    mask: np.ndarray           # 3-D bool


@dataclass
class GroupResult:
    """One model's group-level results."""

    config: object             # Config, carrying the participant level's settings
    spec: object               # ModelSpec
    atlas: object              # atlases.FBNAtlas
    inputs: object             # bids.readers.GroupInputs (subjects, mask, mask_img)
    atoms: object              # bids.readers.AtomOutputs (time courses, stability, log)
    t_map: np.ndarray          # (n_atoms, n_voxels) group t
    significant: np.ndarray    # (n_atoms, n_voxels) bool, FDR
    coupling: pd.DataFrame
    assignments: pd.DataFrame
    atom_groups: pd.DataFrame
    metrics: dict

    @property
    def n_atoms(self) -> int:
        return int(self.t_map.shape[0])
