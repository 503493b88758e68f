"""The numbers behind the subject report's data checks and the warnings it derives.

Each function takes the plain fields of a :class:`~bids_app.report.SubjectResult`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bids_app.report.traces import FD_THRESHOLD_MM

#: Uncorrected two-sided p of the subject report's t-map threshold (nilearn's reports'
#: default height control, fpr at 0.001).
SUBJECT_T_ALPHA = 0.001


def partial_r2_chance(n_atoms: int, design: pd.DataFrame) -> float:
    """Expected partial R² of ``n_atoms`` regressors that explain nothing.

    Under white noise the partial R² of k added regressors is Beta(k/2, (n - p0 - k)/2)
    distributed, with mean k / (n - p0): n kept volumes (rows of ``design``), p0 nuisance
    columns (the columns after the atoms). This is about n_atoms / n_volumes when p0 is
    small; autocorrelated BOLD raises it further, so voxels near it explain nothing.
    """
    n_volumes, n_columns = design.shape
    return float(n_atoms / max(n_volumes - (n_columns - n_atoms), 1))


def t_threshold(dof: int, alpha: float = SUBJECT_T_ALPHA) -> float:
    """|t| above which a two-sided test with ``dof`` degrees of freedom has p < alpha."""
    from scipy import stats

    return float(stats.t.isf(alpha / 2, dof))


def runs_table(runs) -> pd.DataFrame:
    """One row per run (:class:`RunCheck`): TR, volumes, dropped, used, motion summary."""
    rows = []
    for run in runs:
        fd = run.framewise_displacement
        fd_kept = None if fd is None else fd[run.kept]
        fd_kept = None if fd_kept is None or np.all(np.isnan(fd_kept)) else fd_kept
        rows.append({
            "run": run.name, "TR (s)": float(run.t_r_s), "volumes": int(run.n_volumes),
            "dropped (non-steady-state)": int(run.n_dropped), "used": int(len(run.kept)),
            "mean FD (mm)": None if fd_kept is None else float(np.nanmean(fd_kept)),
            "max FD (mm)": None if fd_kept is None else float(np.nanmax(fd_kept)),
            f"used volumes with FD > {FD_THRESHOLD_MM:g} mm":
                None if fd_kept is None else int(np.sum(fd_kept > FD_THRESHOLD_MM)),
            "nuisance regressors": int(run.confounds.shape[1]) + 1,
        })
    return pd.DataFrame(rows)


def data_warnings(runs, r2: np.ndarray, r2_chance: float, cv_r) -> list[str]:
    """What a reader should look at: missing motion traces, high motion, fits at chance."""
    found = []
    for run in runs:
        fd = run.framewise_displacement
        if fd is None:
            found.append(f"{run.name}: fMRIPrep's confounds have no framewise_displacement; "
                         "motion cannot be checked")
        elif np.nanmean(fd[run.kept]) > FD_THRESHOLD_MM:
            found.append(f"{run.name}: mean framewise displacement "
                         f"{np.nanmean(fd[run.kept]):.2f} mm exceeds {FD_THRESHOLD_MM:g} mm")
    if np.median(r2) <= r2_chance:
        found.append(f"median partial R² {np.median(r2):.3f} is not above its chance level "
                     f"{r2_chance:.3f}: the atoms explain no more than noise would")
    if cv_r is not None and np.median(cv_r) <= 0:
        found.append(f"median cross-validated r {np.median(cv_r):.3f} is not above 0: the "
                     "atoms do not predict held-out runs in most voxels")
    return found
