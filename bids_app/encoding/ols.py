"""Ordinary least squares of many voxels on one design, as nilearn's ``OLSModel``.

The pseudo-inverse of the design is computed once (:class:`OLSSolver`) and applied to blocks
of :data:`VOXEL_BLOCK` voxels in float64, so memory stays bounded for whole-brain data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["OLSResult", "OLSSolver", "VOXEL_BLOCK", "fit_ols", "percent_signal_change",
           "voxel_blocks"]

#: Voxels solved at once; bounds the float64 working memory to
#: about 8 * n_samples * VOXEL_BLOCK bytes per array. Read at call time by
#: :func:`voxel_blocks`, which every fit of this package iterates over. At 4,096 a block's
#: arrays (~10 MB for 300 volumes, ~20 MB for 600) stay under glibc's largest mmap
#: threshold (32 MiB), so each block reuses the memory the previous one freed instead of
#: mapping and page-faulting fresh memory: the 2 mm, 300-volume GLM took 3.0 s instead of
#: 4.6-5.0 s with 20,000 (benchmarks/results/scale.md), with the same maps bit for bit.
VOXEL_BLOCK = 4_096


def voxel_blocks(n_voxels: int):
    """Consecutive blocks of at most :data:`VOXEL_BLOCK` voxels.

    Parameters
    ----------
    n_voxels : int
        Number of voxels.

    Yields
    ------
    slice
        ``slice(start, min(start + VOXEL_BLOCK, n_voxels))`` for ``start = 0,
        VOXEL_BLOCK, ...``; together they cover ``range(n_voxels)`` in order.
    """
    for start in range(0, n_voxels, VOXEL_BLOCK):
        yield slice(start, min(start + VOXEL_BLOCK, n_voxels))


@dataclass
class OLSResult:
    """Ordinary-least-squares fit of many targets on one design.

    Attributes
    ----------
    betas : numpy.ndarray of shape (n_regressors, n_voxels)
        Minimum-norm least-squares coefficients, ``pinv(X) @ Y``.
    t : numpy.ndarray of shape (n_regressors, n_voxels)
        t statistic of each coefficient, ``beta_k / sqrt(sigma2 * inv(X'X)_kk)``; 0 where
        both the coefficient and its standard error are 0, ±inf where only the latter is.
    rss : numpy.ndarray of shape (n_voxels,)
        Residual sum of squares.
    dof : int
        Residual degrees of freedom, ``n_samples - rank(X)``.
    sigma2 : numpy.ndarray of shape (n_voxels,)
        Residual variance, ``rss / dof``.
    """

    betas: np.ndarray
    t: np.ndarray
    rss: np.ndarray
    dof: int
    sigma2: np.ndarray


class OLSSolver:
    """Pseudo-inverse of one design, reused for every block of voxels.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_regressors)
        Design matrix (converted to float64).

    Attributes
    ----------
    X : numpy.ndarray of shape (n_samples, n_regressors), float64
    rank : int
        Rank of ``X`` (singular values above numpy's ``matrix_rank`` cut-off).
    pinv : numpy.ndarray of shape (n_regressors, n_samples)
        Moore-Penrose pseudo-inverse of ``X``.
    cov_diag : numpy.ndarray of shape (n_regressors,)
        ``diag(pinv @ pinv.T)``, i.e. ``diag(inv(X'X))`` for a full-rank ``X``.
    dof : int
        Residual degrees of freedom, ``n_samples - rank``.
    """

    def __init__(self, X: np.ndarray):
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"design must be 2-D, got shape {X.shape}")
        n_samples, n_regressors = X.shape
        # Same cut-off as scipy.linalg.pinv / numpy.linalg.matrix_rank, so rank and pinv agree.
        U, S, Vt = np.linalg.svd(X, full_matrices=False)
        tol = (S.max() if S.size else 0.0) * max(X.shape) * np.finfo(np.float64).eps
        rank = int(np.sum(S > tol))
        U, S, Vt = U[:, :rank], S[:rank], Vt[:rank]
        self.X = X
        self.rank = rank
        self.pinv = (Vt.T / S) @ U.T                       # (n_regressors, n_samples)
        # diag(pinv @ pinv.T) == diag(inv(X'X)) for a full-rank X
        self.cov_diag = np.sum((Vt.T / S) ** 2, axis=1)    # (n_regressors,)
        self.dof = n_samples - rank

    def solve(self, Y: np.ndarray):
        """Return betas (n_regressors, n_block), rss (n_block,) for ``Y`` (n_samples,
        n_block) float64."""
        betas = self.pinv @ Y
        resid = Y - self.X @ betas
        rss = np.einsum("ij,ij->j", resid, resid)
        return betas, rss

    def t_values(self, betas: np.ndarray, sigma2: np.ndarray) -> np.ndarray:
        """t of the first ``len(betas)`` regressors given residual variances ``sigma2``."""
        se = np.sqrt(self.cov_diag[:len(betas), None] * sigma2[None, :])
        t = np.zeros_like(betas)
        np.divide(betas, se, out=t, where=se > 0)
        degenerate = (se == 0) & (betas != 0)
        t[degenerate] = np.sign(betas[degenerate]) * np.inf
        return t


def fit_ols(Y, X) -> OLSResult:
    """Fit ``Y = X @ betas + noise`` by ordinary least squares, voxel by voxel.

    Same estimator as nilearn's ``OLSModel``: ``betas = pinv(X) @ Y``, computed in float64
    over blocks of :data:`VOXEL_BLOCK` voxels.

    Parameters
    ----------
    Y : array-like of shape (n_samples, n_voxels)
        Targets (e.g. BOLD in percent signal change).
    X : array-like of shape (n_samples, n_regressors)
        Design matrix.

    Returns
    -------
    OLSResult
        betas and t of shape (n_regressors, n_voxels), rss and sigma2 of shape (n_voxels,)
        (float64), and the residual degrees of freedom ``n_samples - rank(X)``.
    """
    Y = np.asarray(Y)
    if Y.ndim == 1:
        Y = Y[:, None]
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise ValueError(f"Y (n_samples, n_voxels) and X (n_samples, n_regressors) must "
                         f"share n_samples; got Y {Y.shape}, X {X.shape}")
    solver = OLSSolver(X)
    if solver.dof <= 0:
        raise ValueError(f"no residual degrees of freedom: {X.shape[0]} samples, "
                         f"design rank {solver.rank}")
    n_voxels = Y.shape[1]
    betas = np.empty((X.shape[1], n_voxels))
    t = np.empty_like(betas)
    rss = np.empty(n_voxels)
    for block in voxel_blocks(n_voxels):
        b, r = solver.solve(np.asarray(Y[:, block], dtype=np.float64))
        betas[:, block], rss[block] = b, r
        t[:, block] = solver.t_values(b, r / solver.dof)
    return OLSResult(betas=betas, t=t, rss=rss, dof=solver.dof, sigma2=rss / solver.dof)


def percent_signal_change(Y):
    """Scale each column to percent signal change around its mean.

    ``100 * (Y / mean - 1)``, with the mean over rows; a zero mean is replaced by 1, as in
    nilearn's ``mean_scaling`` (but without its warning, since out-of-brain voxels are
    expected to be zero).

    Parameters
    ----------
    Y : array-like of shape (n_samples, n_voxels)
        Signal in scanner units.

    Returns
    -------
    numpy.ndarray of shape (n_samples, n_voxels)
        Signal in percent of its mean (float64 unless ``Y`` is float32).
    """
    Y = np.asarray(Y)
    if not np.issubdtype(Y.dtype, np.floating):
        Y = Y.astype(np.float64)
    mean = Y.mean(axis=0)
    mean = np.where(mean == 0, 1, mean).astype(Y.dtype)
    return 100 * (Y / mean - 1)
