"""Group statistics of atom maps: one-sample t across subjects, FDR within each map.

Arrays: ``effects`` (n_subjects, n_atoms, n_voxels); ``t``, ``p`` and ``significant``
(n_atoms, n_voxels); voxels in ``np.flatnonzero(mask)`` order.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from bids_app.errors import LlmfbnError


def one_sample_t(effects) -> tuple[np.ndarray, np.ndarray]:
    """One-sample t-test of atom effects against zero across subjects.

    Parameters
    ----------
    effects : array-like of shape (n_subjects, n_atoms, n_voxels)
        Each subject's effect (beta) map of each atom, in BOLD units per unit of atom.

    Returns
    -------
    t : ndarray of shape (n_atoms, n_voxels)
        t statistic with n_subjects - 1 degrees of freedom.
    p : ndarray of shape (n_atoms, n_voxels)
        Two-sided p value. Voxels where all subjects have the same value (zero variance),
        or with a non-finite effect, get t = 0 and p = 1.
    """
    effects = np.asarray(effects)
    if effects.ndim != 3:
        raise ValueError(f"effects must be (n_subjects, n_atoms, n_voxels), got {effects.shape}")
    n_subjects, n_atoms, n_voxels = effects.shape
    if n_subjects < 2:
        raise LlmfbnError("The group one-sample test needs at least two subjects",
                          expected="participant-level outputs of >= 2 subjects",
                          found=f"{n_subjects} subject", todo="run the participant level on "
                          "more subjects before the group level")
    t = np.empty((n_atoms, n_voxels), dtype=np.float64)
    bad = np.empty((n_atoms, n_voxels), dtype=bool)
    # One atom at a time keeps the float64 temporaries at (n_subjects, n_voxels).
    for atom in range(n_atoms):
        values = effects[:, atom, :].astype(np.float64)
        mean = values.mean(axis=0)
        sd = values.std(axis=0, ddof=1)
        # Exact test for "all values equal": a variance computed in floating point can be
        # 1e-33 instead of 0 and would give a huge spurious t.
        bad[atom] = (np.ptp(values, axis=0) == 0) | ~np.isfinite(mean) | ~np.isfinite(sd)
        with np.errstate(divide="ignore", invalid="ignore"):
            t[atom] = mean / (sd / np.sqrt(n_subjects))
    t[bad] = 0.0
    p = 2.0 * stats.t.sf(np.abs(t), df=n_subjects - 1)
    p[bad] = 1.0
    return t, np.clip(p, 0.0, 1.0)


def fdr_mask(p, q: float = 0.05) -> np.ndarray:
    """Benjamini-Hochberg FDR threshold, applied within each atom map.

    Parameters
    ----------
    p : array-like of shape (n_atoms, n_voxels)
        p values in [0, 1]; NaN counts as 1.
    q : float, default 0.05
        False discovery rate, in (0, 1).

    Returns
    -------
    ndarray of bool, shape (n_atoms, n_voxels)
        True where the BH-adjusted p value is <= q (the voxels BH rejects).
    """
    if not 0.0 < q < 1.0:
        raise LlmfbnError("The FDR level must be between 0 and 1", expected="0 < q < 1",
                          found=f"q = {q}", todo="pass e.g. --fdr-q 0.05")
    p = np.asarray(p, dtype=np.float64)
    if p.size == 0:
        return np.zeros(p.shape, dtype=bool)
    p = np.clip(np.nan_to_num(p, nan=1.0), 0.0, 1.0)
    return stats.false_discovery_control(p, axis=-1, method="bh") <= q


# --------------------------------------------------------------------------- coupling
