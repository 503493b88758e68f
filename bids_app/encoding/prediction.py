"""How well the atoms together predict each network's signal out of sample **(ours)**.

The coupling null (:mod:`bids_app.group.null`) tests atoms one at a time. When a network's
signal is shared by several collinear atoms, each is weak alone and adds little given the
others, and the network can be missed although the atoms describe it well (one 202-frame
run at 6 mm: a planted DefaultMode signal carried by six atoms, best atom p_fwe 0.16).
This is the network-level test beside it: all atoms in one ridge model of the network's
mean signal, scored on frames the model was not fitted on.

For each network's mean signal ``y`` (:attr:`ParticipantFit.network_signals`, percent
signal change) and a block of regressors ``A`` (the atoms, or one block of multivariate
surrogates, :func:`bids_app.group.null.phase_randomised_blocks`):

1. ``y`` and ``A`` are residualised on the confounds, nuisance regressors and intercepts
   (the columns of the participant design after the atoms);
2. the kept volumes of each run are split into their first and second halves in time; a
   ridge (``ridge`` x identity, regressors centred and scaled to unit norm on the training
   rows, with an intercept) is fitted on the first halves of all runs and predicts the
   second halves, and the other way round;
3. the statistic is the Pearson correlation of prediction and held-out signal, averaged
   over the two folds.

Halves in time rather than random frames, because neighbouring frames share the
haemodynamic response: a random split would score the smoothness, not the story. Out of
sample, so that 64 smooth regressors on a few hundred frames do not explain any signal by
their number alone (the in-sample R² of random blocks reaches 0.87-0.96 of a planted
network's signal: measured in ``docs/metrics.md``). The group level compares the atoms'
group-mean correlation with the blocks' (:func:`bids_app.group.null.prediction_table`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from bids_app.encoding.ols import OLSSolver

__all__ = ["PREDICTION_RIDGE", "half_split", "split_half_prediction"]

#: Ridge of the prediction, for regressors scaled to unit norm on the training rows.
PREDICTION_RIDGE = 1.0


def half_split(run_lengths: Sequence[int]) -> np.ndarray:
    """(sum(run_lengths),) bool: True on the first half (in time) of each run's rows."""
    return np.concatenate([np.arange(int(n)) < int(n) // 2 for n in run_lengths])


def _fold_r(X: np.ndarray, y: np.ndarray, train: np.ndarray, ridge: float) -> np.ndarray:
    """(n_pools,) correlation of the ridge prediction with ``y`` on the rows not in
    ``train``; ``X`` (n_rows, n_regressors), ``y`` (n_rows, n_pools)."""
    test = ~train
    x_mean, y_mean = X[train].mean(axis=0), y[train].mean(axis=0)
    Xt = X[train] - x_mean
    scale = np.linalg.norm(Xt, axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    Xt = Xt / scale
    weights = np.linalg.solve(Xt.T @ Xt + ridge * np.eye(X.shape[1]),
                              Xt.T @ (y[train] - y_mean))
    pred = ((X[test] - x_mean) / scale) @ weights
    pred = pred - pred.mean(axis=0)
    data = y[test] - y[test].mean(axis=0)
    denom = np.sqrt(np.sum(pred ** 2, axis=0) * np.sum(data ** 2, axis=0))
    return np.divide(np.sum(pred * data, axis=0), denom, out=np.zeros(denom.shape),
                     where=denom > 0)


def split_half_prediction(design: pd.DataFrame, n_atoms: int, blocks, signals,
                          run_lengths: Sequence[int],
                          ridge: float = PREDICTION_RIDGE) -> np.ndarray:
    """(n_blocks, n_pools) the split-half prediction correlation of each block of regressors
    on each pooled signal (see the module docstring).

    ``design`` a participant fit's design (the ``n_atoms`` atoms first, then the confounds,
    nuisance regressors and intercepts); ``blocks`` (n_blocks, n_volumes_used, n_regressors)
    on the design's rows (e.g. the atoms, then surrogate blocks); ``signals``
    (n_volumes_used, n_pools) the fit's ``network_signals``; ``run_lengths`` the kept
    volumes of each run, in the design's order.
    """
    solver = OLSSolver(design.to_numpy(np.float64)[:, n_atoms:])

    def residual(values):          # the confounds, nuisance and intercepts projected out
        return values - solver.X @ (solver.pinv @ values)

    signals = residual(np.asarray(signals, dtype=np.float64))
    first = half_split(run_lengths)
    if first.size != signals.shape[0]:
        raise ValueError(f"run lengths add up to {first.size} rows, the design has "
                         f"{signals.shape[0]}")
    blocks = np.asarray(blocks, dtype=np.float64)             # (n_blocks, n_rows, n_regr)
    n_blocks, n_rows, n_regressors = blocks.shape
    stacked = residual(blocks.transpose(1, 0, 2).reshape(n_rows, -1))   # one projection
    out = np.empty((n_blocks, signals.shape[1]))
    for b in range(n_blocks):
        X = stacked[:, b * n_regressors:(b + 1) * n_regressors]
        out[b] = 0.5 * (_fold_r(X, signals, first, ridge) + _fold_r(X, signals, ~first, ridge))
    return out
