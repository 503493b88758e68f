"""What the workflow hands to the reports: the results of one subject or one model."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass
class RunCheck:
    """What the data checks of the subject report show about one BOLD run.

    Attributes
    ----------
    name : str
        Run label, e.g. ``"task-pieman_run-1"`` (the prefix of its design columns).
    t_r_s : float
        Repetition time in seconds.
    n_volumes : int
        Volumes in the BOLD file.
    kept : numpy.ndarray of shape (n_kept,), int
        Indices of the volumes that entered the model (non-steady-state volumes dropped).
    confounds : pandas.DataFrame of shape (n_kept, n_confounds)
        The nuisance regressors of the model on the kept volumes (nilearn's
        ``load_confounds`` with llmfbn's confound strategy).
    motion : pandas.DataFrame of shape (n_volumes, n_columns)
        fMRIPrep's quality traces of every volume: ``framewise_displacement`` (mm, n/a on
        the first volume, read as NaN) and ``std_dvars`` where fMRIPrep wrote them.
    """

    name: str
    t_r_s: float
    n_volumes: int
    kept: np.ndarray
    confounds: pd.DataFrame
    motion: pd.DataFrame

    @property
    def n_dropped(self) -> int:
        """Volumes left out of the model."""
        return int(self.n_volumes - len(self.kept))

    @property
    def framewise_displacement(self) -> np.ndarray | None:
        """(n_volumes,) framewise displacement in mm (NaN where undefined), or None."""
        if "framewise_displacement" not in self.motion.columns:
            return None
        return self.motion["framewise_displacement"].to_numpy(np.float64)


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
    runs: list[RunCheck] = field(default_factory=list)   # the data checks of each run
    mean_bold: np.ndarray | None = None   # 3-D mean BOLD (raw units) on the mask's grid
    warnings: list[str] = field(default_factory=list)    # warnings raised during the run


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
    models_report: object = None   # Path of the models' comparison when several were run
    #: one row per coupled network (network, n_atoms, coupled_by, ridge, n_neurons, ...)
    networks: pd.DataFrame | None = None
    #: the network-prediction test, one row per network (None without the coupling null)
    prediction: pd.DataFrame | None = None

    @property
    def n_atoms(self) -> int:
        return int(self.t_map.shape[0])

    @property
    def dof(self) -> int:
        """Degrees of freedom of the group t maps (one-sample test: n_subjects - 1)."""
        return len(self.inputs.subjects) - 1
