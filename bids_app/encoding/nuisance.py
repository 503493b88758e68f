"""Maps of the stimulus nuisance regressors: their effect and t in the model without atoms.

Each nuisance regressor (e.g. ``wordrate``) is a column of its own in every run that has it
(``<run>_wordrate``, block-diagonal like the confounds). Its map is the fixed-effects
contrast that averages those columns' coefficients over the runs, in the reduced model
(confounds + nuisance + run intercepts, no atoms): ``effect = c @ beta`` and
``t = effect / sqrt(sigma2 * c @ pinv(X) @ pinv(X).T @ c)``, as nilearn's
``FirstLevelModel.compute_contrast`` (OLS) computes a t contrast.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["NuisanceContrasts", "NuisanceMaps", "nuisance_names"]


@dataclass
class NuisanceMaps:
    """Effect and t maps of each nuisance regressor (model without atoms).

    effect : dict name -> ndarray (n_voxels,) float32, percent signal change per standard
        deviation of the regressor, averaged over the runs that have it.
    t : dict name -> ndarray (n_voxels,) float32, t statistic (``dof`` degrees of freedom).
    dof : int, residual degrees of freedom of the model without atoms.
    runs : dict name -> list of str, the runs whose column entered the contrast.
    """

    effect: dict
    t: dict
    dof: int
    runs: dict


def nuisance_names(runs: Sequence) -> list[str]:
    """The nuisance regressors of any of ``runs`` (``RunData``), in first-seen order."""
    names: list[str] = []
    for run in runs:
        if run.nuisance is not None:
            names += [n for n in run.nuisance.columns if n not in names]
    return names


class NuisanceContrasts:
    """The contrast of each nuisance regressor in a design without atoms.

    Parameters
    ----------
    columns : sequence of str
        Column names of the reduced design (``<run>_<name>`` for nuisance columns).
    pinv : ndarray of shape (n_columns, n_samples)
        Pseudo-inverse of the reduced design.
    runs : sequence of RunData
        The runs, for their names and their nuisance columns.
    """

    def __init__(self, columns: Sequence[str], pinv: np.ndarray, runs: Sequence):
        self.names = nuisance_names(runs)
        index = {name: i for i, name in enumerate(columns)}
        self.runs = {name: [r.name for r in runs
                            if r.nuisance is not None and name in r.nuisance.columns]
                     for name in self.names}
        self.contrasts = np.zeros((len(self.names), len(columns)))
        for row, name in enumerate(self.names):
            for run in self.runs[name]:
                self.contrasts[row, index[f"{run}_{name}"]] = 1.0 / len(self.runs[name])
        # c @ (X'X)^+ @ c' = ||c @ pinv||^2
        self.variance = np.sum((self.contrasts @ pinv) ** 2, axis=1)     # (n_names,)

    def apply(self, betas: np.ndarray, rss: np.ndarray, dof: int):
        """Effect and t (n_names, n_block) from the reduced model's betas
        (n_columns, n_block) and residual sums of squares (n_block,)."""
        effect = self.contrasts @ betas
        se = np.sqrt(self.variance[:, None] * (rss / dof)[None, :])
        t = np.divide(effect, se, out=np.zeros_like(effect), where=se > 0)
        return effect, t

    def maps(self, effect: np.ndarray, t: np.ndarray, dof: int) -> NuisanceMaps:
        """:class:`NuisanceMaps` from stacked (n_names, n_voxels) arrays."""
        return NuisanceMaps(effect=dict(zip(self.names, effect.astype(np.float32))),
                            t=dict(zip(self.names, t.astype(np.float32))), dof=int(dof),
                            runs=self.runs)

