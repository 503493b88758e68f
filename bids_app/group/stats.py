"""Group statistics of atom maps: one-sample t across subjects, FDR within each map.

Arrays: ``effects`` (n_subjects, n_atoms, n_voxels); ``t``, ``p`` and ``significant``
(n_atoms, n_voxels); voxels in ``np.flatnonzero(mask)`` order.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from bids_app.errors import LlmfbnError
from bids_app.group.disk import DiskStack


def one_sample_t(effects) -> tuple[np.ndarray, np.ndarray]:
    """One-sample t-test of atom effects against zero across subjects.

    Parameters
    ----------
    effects : array-like or DiskStack of shape (n_subjects, n_atoms, n_voxels)
        Each subject's effect (beta) map of each atom, in BOLD units per unit of atom; read
        one atom at a time.

    Returns
    -------
    t : ndarray of shape (n_atoms, n_voxels)
        t statistic with n_subjects - 1 degrees of freedom.
    p : ndarray of shape (n_atoms, n_voxels)
        Two-sided p value. Voxels where all subjects have the same value (zero variance),
        or with a non-finite effect, get t = 0 and p = 1.
    """
    if not isinstance(effects, DiskStack):    # a DiskStack is read one atom at a time
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


def fdr_critical_t(n_voxels: int, df: float, q: float = 0.05) -> np.ndarray:
    """(n_voxels,) the Benjamini-Hochberg critical values on the |t| scale, decreasing: the
    i-th largest |t| of a map (two-sided, ``df`` degrees of freedom) passes the step-up rule
    when it is at least ``c[i - 1] = t.isf(q i / (2 n_voxels), df)``."""
    ranks = np.arange(1, int(n_voxels) + 1, dtype=np.float64)
    return stats.t.isf(q * ranks / (2.0 * n_voxels), df)


def fdr_mask_from_t(t, critical: np.ndarray) -> np.ndarray:
    """:func:`fdr_mask` of two-sided t maps without computing a p value per voxel.

    ``t`` (..., n_voxels), each row one map; ``critical`` from :func:`fdr_critical_t` with
    that map size. Benjamini-Hochberg's step-up rule keeps the k largest |t| for the largest
    k whose k-th largest |t| reaches ``critical[k - 1]``; only values above the last (least
    strict) critical value can pass, so only those are sorted. Same voxels as
    :func:`fdr_mask` on the p values of ``t`` except, at worst, a |t| within rounding of a
    critical value.
    """
    t = np.asarray(t)
    rows = np.abs(t).reshape(-1, t.shape[-1])       # NaN compares False: never passes
    if rows.shape[1] != critical.size:
        raise ValueError(f"{critical.size} critical values for maps of {rows.shape[1]} voxels")
    # compared in the maps' own precision (float32 maps are not copied to float64)
    critical = np.asarray(critical, dtype=rows.dtype if rows.dtype.kind == "f" else None)
    threshold = np.full((rows.shape[0], 1), np.inf, dtype=critical.dtype)
    candidate = rows >= critical[-1]
    for row in np.flatnonzero(candidate.any(axis=1)):
        threshold[row] = _step_up_threshold(rows[row, candidate[row]], critical)
    return (rows >= threshold).reshape(t.shape)


#: Counting passes of :func:`_step_up_threshold` before it sorts instead.
_MAX_COUNTS = 32


def _step_up_threshold(top: np.ndarray, critical: np.ndarray):
    """The |t| from which a map's values pass Benjamini-Hochberg, given ``top``, its values
    that reach the least strict critical value (unsorted); inf when none passes.

    The rule keeps the k* largest values, k* = max{k : N(c[k-1]) >= k}, N(v) the number of
    values >= v (the k-th largest reaches c[k-1] exactly when k values do). From
    k = top.size, k <- N(c[k-1]) never skips it: N(c[k-1]) <= k for every k reached (c
    decreases), and every k' between N(c[k-1]) and k fails, as N(c[k'-1]) <= N(c[k-1]) <
    k'. It stops at the first k with N(c[k-1]) = k: k*, whose passing values are exactly
    those >= c[k*-1]. Each step counts the values left instead of sorting them (a few
    steps in practice; after ``_MAX_COUNTS`` the sorted form finishes)."""
    k = top.size
    for _ in range(_MAX_COUNTS):
        top = top[top >= critical[k - 1]]
        if top.size == k:
            return critical[k - 1]
        if top.size == 0:
            return np.inf
        k = top.size
    top = -np.sort(-top)                                  # descending
    passing = np.flatnonzero(top >= critical[:top.size])
    return top[passing[-1]] if passing.size else np.inf
