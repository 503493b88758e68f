"""The participant-level encoding model: atom effects, t and partial R² maps, and the
leave-one-run-out prediction correlation.

The steps follow what nilearn's ``FirstLevelModel(noise_model="ols")`` does for
concatenated runs: per run, the kept volumes of BOLD are scaled to percent signal change
around their mean; the runs are stacked with the design of
:func:`~bids_app.encoding.design.design_matrix`; OLS with a pseudo-inverse, in float64,
over blocks of voxels (:func:`~bids_app.encoding.ols.voxel_blocks`); the reduced model
(confounds, nuisance regressors and intercepts only) gives the partial R² of the atoms and
the maps of the nuisance regressors (:mod:`~bids_app.encoding.nuisance`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bids_app.encoding.design import RunData, check_atoms_estimable, check_runs, design_matrix
from bids_app.encoding.nuisance import NuisanceContrasts, NuisanceMaps
from bids_app.encoding.ols import OLSSolver, percent_signal_change, voxel_blocks
from bids_app.errors import LlmfbnError

__all__ = ["GLM_MODES", "MIN_EXTRA_VOLUMES", "ParticipantFit", "cross_validated_r",
           "fit_participant", "minimum_volumes", "network_effects_of",
           "partial_network_effects"]

#: GLM modes of :func:`fit_participant`.
GLM_MODES = ("separate", "joint")

#: Additional kept volumes required beyond the number of regressors.
MIN_EXTRA_VOLUMES = 10


@dataclass
class ParticipantFit:
    """Encoding model of one participant.

    Attributes
    ----------
    effect : numpy.ndarray of shape (n_atoms, n_voxels), float32
        Atom coefficients, in percent signal change per unit of atom.
    t : numpy.ndarray of shape (n_atoms, n_voxels), float32
        t statistic of each atom coefficient (``dof`` degrees of freedom).
    r2 : numpy.ndarray of shape (n_voxels,), float32
        Partial R² of the atoms, ``1 - RSS_full / RSS_confounds_only``.
    dof : int
        Residual degrees of freedom of the full model.
    design : pandas.DataFrame of shape (n_volumes_used, n_regressors)
        Design matrix of the full model (see
        :func:`~bids_app.encoding.design.design_matrix`).
    n_volumes_used : int
        Number of kept volumes over all runs.
    network_signals : numpy.ndarray of shape (n_volumes_used, n_pools), optional
        The BOLD averaged over each pool of voxels (``pools`` of :func:`fit_participant`,
        e.g. the networks of an atlas), in percent signal change as the model fits it: the
        targets on which :func:`network_effects_of` fits further regressors exactly as the
        atoms are fitted voxel by voxel (their effects equal the pool means of their maps).
    network_effect : pandas.DataFrame, optional
        Set by the workflow when the coupling null is fitted: column ``regressor`` (the
        atoms, then the null's surrogate atoms) and one column per network of the atlas,
        each regressor's effect on the network's mean signal.
    network_prediction : pandas.DataFrame, optional
        Set by the workflow with the coupling null: column ``block`` (``atoms``, then the
        surrogate blocks) and one column per network, the split-half prediction
        correlation of the network's mean signal by the block
        (:func:`bids_app.encoding.prediction.split_half_prediction`).
    nuisance : NuisanceMaps or None
        Effect and t maps of each stimulus nuisance regressor in the model without atoms
        (None when no run has one).
    """

    effect: np.ndarray
    t: np.ndarray
    r2: np.ndarray
    dof: int
    design: pd.DataFrame
    n_volumes_used: int
    nuisance: NuisanceMaps | None = None
    network_signals: np.ndarray | None = None
    network_effect: pd.DataFrame | None = None
    network_prediction: pd.DataFrame | None = None


@dataclass
class _SeparateAtoms:
    """The atoms with the confounds and intercepts projected out, for ``glm="separate"``.

    ``resid`` (n_volumes_used, n_atoms) float64, ``ss`` (n_atoms,) its column sums of
    squares, ``dof`` the residual degrees of freedom of each one-atom model.
    """

    resid: np.ndarray
    ss: np.ndarray
    dof: int


def _separate_atoms(design: pd.DataFrame, n_atoms: int, reduced: OLSSolver) -> _SeparateAtoms:
    # atoms with the confounds projected out; one regressor each in its own model
    atoms = design.to_numpy()[:, :n_atoms]
    atoms_resid = atoms - design.to_numpy()[:, n_atoms:] @ reduced.solve(atoms)[0]
    atoms_ss = np.sum(atoms_resid**2, axis=0)                 # (n_atoms,)
    return _SeparateAtoms(resid=atoms_resid, ss=atoms_ss, dof=reduced.dof - 1)


def _common_n_voxels(runs: Sequence[RunData]) -> int:
    """The number of voxels of every run's BOLD; raise if they differ."""
    n_voxels = {np.shape(run.bold)[1] for run in runs}
    if len(n_voxels) != 1:
        raise LlmfbnError("Runs differ in their number of voxels",
                          expected="BOLD of all runs masked with the same brain mask",
                          found=", ".join(f"{r.name}: {np.shape(r.bold)[1]}" for r in runs),
                          todo="mask every run with one participant-level mask")
    return n_voxels.pop()


def minimum_volumes(n_atoms: int, n_confounds: Sequence[int]) -> int:
    """Kept volumes the participant model needs: one per regressor (the atoms, each run's
    confounds and intercept) plus :data:`MIN_EXTRA_VOLUMES`.

    Parameters
    ----------
    n_atoms : int
        Number of atoms (columns shared by all runs).
    n_confounds : sequence of int
        Number of confound columns of each run.
    """
    return n_atoms + sum(n + 1 for n in n_confounds) + MIN_EXTRA_VOLUMES


def _check_enough_volumes(design: pd.DataFrame, n_runs: int) -> None:
    """Raise unless at least n_regressors + MIN_EXTRA_VOLUMES volumes are kept."""
    n_used, n_regressors = design.shape
    if n_used < n_regressors + MIN_EXTRA_VOLUMES:
        raise LlmfbnError("Too few volumes for the encoding model",
                          expected=f"at least {n_regressors + MIN_EXTRA_VOLUMES} kept volumes "
                                   f"({n_regressors} regressors + {MIN_EXTRA_VOLUMES})",
                          found=f"{n_used} kept volumes over {n_runs} run(s)",
                          todo="use more runs or fewer atoms/confounds")


def _block_targets(runs: Sequence[RunData], masks, block: slice):
    """Stacked kept BOLD of one block of voxels in percent signal change.

    Returns ``Y`` (n_volumes_used, n_block) float64, zero in voxels constant within every
    run, and ``varies`` (n_block,) bool, the voxels that vary within some run.
    """
    parts, varies = [], np.zeros(block.stop - block.start, dtype=bool)
    for run, mask in zip(runs, masks):
        y = np.asarray(run.bold[:, block], dtype=np.float64)[mask]
        if not np.all(np.isfinite(y)):
            raise LlmfbnError(f"BOLD of {run.name} contains NaN or inf",
                              expected="finite values inside the brain mask",
                              found="non-finite values in the kept volumes",
                              todo="check the preprocessed image and the brain mask")
        varies |= np.ptp(y, axis=0) > 0
        parts.append(percent_signal_change(y))
    Y = np.concatenate(parts)
    Y[:, ~varies] = 0.0
    return Y, varies


def _fit_block(Y, varies, full: OLSSolver, reduced: OLSSolver,
               separate: _SeparateAtoms | None, n_atoms: int, contrasts: NuisanceContrasts):
    """Effect (n_atoms, n_block), t (n_atoms, n_block), partial R² (n_block,), and the
    nuisance effect and t (n_nuisance, n_block), float64, of one block of targets; 0 where
    the voxel does not vary."""
    betas, rss = full.solve(Y)
    betas_reduced, rss_reduced = reduced.solve(Y)
    nuisance_effect, nuisance_t = contrasts.apply(betas_reduced, rss_reduced, reduced.dof)
    nuisance_effect[:, ~varies] = 0.0
    nuisance_t[:, ~varies] = 0.0
    if separate is not None:
        # Y's residual on the confounds is not needed: atoms_resid is orthogonal to them
        betas = (separate.resid.T @ Y) / separate.ss[:, None]    # (n_atoms, n_voxels)
        rss_k = np.clip(rss_reduced[None, :] - betas**2 * separate.ss[:, None], 0.0, None)
        se = np.sqrt(rss_k / separate.dof / separate.ss[:, None])
        tb = np.divide(betas, se, out=np.zeros_like(betas), where=se > 0)
    else:
        tb = full.t_values(betas[:n_atoms], rss / full.dof)
    ok = varies & (rss_reduced > 0)
    r2_block = np.zeros_like(rss)
    r2_block[ok] = 1.0 - rss[ok] / rss_reduced[ok]
    betas[:, ~varies] = 0.0
    tb[:, ~varies] = 0.0
    return betas[:n_atoms], tb, r2_block, nuisance_effect, nuisance_t


def fit_participant(runs: Sequence[RunData], glm: str = "separate",
                    pools=None) -> ParticipantFit:
    """Fit the voxel-wise encoding model of one participant.

    Per run, the kept volumes (``sample_mask``) of BOLD and atoms are taken and BOLD is
    scaled to percent signal change; the runs are stacked with the design of
    :func:`~bids_app.encoding.design.design_matrix` and fitted by OLS (float64, blocks of
    :data:`~bids_app.encoding.ols.VOXEL_BLOCK` voxels). The reduced model (confounds,
    nuisance and intercepts) gives the partial R² of all atoms together (the joint
    model's). Stimulus nuisance regressors (``RunData.nuisance``) are columns of each run
    like its confounds, in every model; their own maps come from the model without atoms.

    Parameters
    ----------
    runs : sequence of RunData
        The participant's runs; all share the same voxels and atoms.
    glm : {"separate", "joint"}
        ``"joint"``: one OLS with all atoms; effect and t of an atom are its unique
        contribution given the others. ``"separate"`` (ours, default): one OLS per atom with
        the confounds and intercepts, i.e. exactly the model ``[atom_k, confounds,
        intercepts]`` for each k, computed at once via the Frisch-Waugh-Lovell theorem.
        Atoms learned from smooth haemodynamic responses are strongly collinear (variance
        inflation factors in the hundreds are common), which leaves the joint t maps with
        little power; the separate maps say where each atom's time course is expressed.
    pools : array-like of shape (n_pools, n_voxels), optional
        Weights of voxel pools (e.g. each network's voxels, each row summing to 1): the
        targets averaged over each pool are kept as ``network_signals`` (one pass, no
        second read of the BOLD).

    Returns
    -------
    ParticipantFit
        Atom effects (% signal change per atom unit), t and partial R² maps. Voxels whose
        BOLD is constant within every run (outside the brain) get effect, t and r2 of 0.

    Raises
    ------
    LlmfbnError
        If atoms and BOLD differ in length, runs differ in voxels, BOLD is not finite, an
        atom is collinear with the confounds, or fewer than n_regressors + 10 volumes are
        kept.
    """
    if glm not in GLM_MODES:
        raise LlmfbnError(f"unknown GLM mode {glm!r}", expected=" or ".join(GLM_MODES))
    design = design_matrix(runs)
    n_atoms = np.shape(runs[0].atoms)[1]
    n_voxels = _common_n_voxels(runs)
    _check_enough_volumes(design, len(runs))
    check_atoms_estimable(design, n_atoms)

    full = OLSSolver(design.to_numpy())
    reduced = OLSSolver(design.to_numpy()[:, n_atoms:])
    contrasts = NuisanceContrasts(design.columns[n_atoms:], reduced.pinv, runs)
    separate = _separate_atoms(design, n_atoms, reduced) if glm == "separate" else None
    masks = [np.asarray(run.sample_mask) for run in runs]

    effect = np.zeros((n_atoms, n_voxels), dtype=np.float32)
    t = np.zeros((n_atoms, n_voxels), dtype=np.float32)
    r2 = np.zeros(n_voxels, dtype=np.float32)
    nuisance = np.zeros((2, len(contrasts.names), n_voxels))      # effect, t
    if pools is not None:
        pools = np.asarray(pools, dtype=np.float64)
        if pools.ndim != 2 or pools.shape[1] != n_voxels:
            raise ValueError(f"pools must be (n_pools, {n_voxels}), got {pools.shape}")
        signals = np.zeros((design.shape[0], pools.shape[0]))
    for block in voxel_blocks(n_voxels):
        Y, varies = _block_targets(runs, masks, block)
        if pools is not None:
            signals += Y @ pools[:, block].T
        (effect[:, block], t[:, block], r2[block], nuisance[0][:, block],
         nuisance[1][:, block]) = _fit_block(Y, varies, full, reduced, separate, n_atoms,
                                             contrasts)
    dof = separate.dof if separate is not None else full.dof
    return ParticipantFit(effect=effect, t=t, r2=r2, dof=dof, design=design,
                          n_volumes_used=design.shape[0],
                          nuisance=contrasts.maps(nuisance[0], nuisance[1], reduced.dof)
                          if contrasts.names else None,
                          network_signals=signals if pools is not None else None)


def network_effects_of(design: pd.DataFrame, n_atoms: int, regressors, signals,
                       glm: str = "separate", standardised: bool = False) -> np.ndarray:
    """(n_regressors, n_pools) effects of regressors on pooled signals, each regressor
    fitted exactly as :func:`fit_participant` fits an atom.

    ``design`` the fit's design (its columns after the first ``n_atoms`` are the confounds,
    nuisance regressors and intercepts); ``regressors`` (n_volumes_used, n_regressors) on
    the design's rows (e.g. the coupling null's surrogate atoms); ``signals``
    (n_volumes_used, n_pools) the fit's ``network_signals``. ``glm="separate"``: each
    regressor alone with the confounds (Frisch-Waugh-Lovell); ``"joint"``: consecutive
    blocks of ``n_atoms`` regressors, each block in one model with the confounds, as the
    atoms are (a last, shorter block is fitted alone). With the atoms' own columns this
    gives the pool means of the effect maps, since OLS is linear in the targets.

    ``standardised``: each effect divided by its standard error per unit of noise,
    ``sqrt((X'X)^-1_kk)`` (for ``separate`` ``1 / ||x~_k||``, the regressor's norm after the
    confounds are projected out). Under a null of noise with the same variance for every
    regressor, this has the same spread for every regressor, however much of it the
    confounds explain; the effect itself does not (a regressor the drifts nearly span gets
    huge, noisy effects).
    """
    if glm not in GLM_MODES:
        raise LlmfbnError(f"unknown GLM mode {glm!r}", expected=" or ".join(GLM_MODES))
    confounds = design.to_numpy(np.float64)[:, n_atoms:]
    regressors = np.asarray(regressors, dtype=np.float64)
    signals = np.asarray(signals, dtype=np.float64)
    reduced = OLSSolver(confounds)
    if glm == "separate":
        resid = regressors - confounds @ reduced.solve(regressors)[0]
        ss = np.sum(resid ** 2, axis=0)
        scale = np.sqrt(ss) if standardised else ss
        return np.divide(resid.T @ signals, scale[:, None],
                         out=np.zeros((regressors.shape[1], signals.shape[1])),
                         where=ss[:, None] > 0)
    out = np.empty((regressors.shape[1], signals.shape[1]))
    for first in range(0, regressors.shape[1], n_atoms):
        block = regressors[:, first:first + n_atoms]
        solver = OLSSolver(np.column_stack([block, confounds]))
        effects = solver.solve(signals)[0][:block.shape[1]]
        if standardised:
            unit_se = np.sqrt(solver.cov_diag[:block.shape[1]])[:, None]
            effects = np.divide(effects, unit_se, out=np.zeros_like(effects),
                                where=unit_se > 0)
        out[first:first + block.shape[1]] = effects
    return out


def partial_network_effects(design: pd.DataFrame, n_atoms: int, surrogates, signals
                            ) -> tuple[np.ndarray, np.ndarray]:
    """The coupling null's statistics on pooled signals: what each atom, and each surrogate
    atom in its place, adds to the other atoms.

    ``design`` a fit's design (the ``n_atoms`` atoms first, then the confounds, nuisance
    regressors and intercepts); ``surrogates`` (n_volumes_used, n_surrogates) on its rows,
    surrogate ``s`` standing for atom ``s mod n_atoms`` (as
    :func:`bids_app.group.null.phase_randomised` draws them); ``signals`` (n_volumes_used,
    n_pools) the fit's ``network_signals``.

    Returns ``(atoms, surrogates)``, (n_atoms, n_pools) and (n_surrogates, n_pools): the
    standardised effect (effect / its standard error per unit noise, the t numerator
    ``r.y / ||r||``) of atom k in the model with every regressor of ``design``, i.e. given
    the other atoms and the confounds (``r`` the atom with all of them projected out), and
    of surrogate s in the same model with the surrogate in place of its atom. Exact without
    a refit: the projection on everything but atom k is the full model's minus the part
    along ``r_k``, and ``r_k = X (X'X)^+ e_k / (X'X)^+_kk``.

    Why given the other atoms: a network's signal is usually shared by several atoms, and a
    surrogate that correlates with that signal by chance draws a large effect, so the
    separate effects' null is as wide as the signal is strong (one 202-frame run: a planted
    DefaultMode signal shared by five atoms was not coupled, null p 7e-4 against a
    Bonferroni 3e-5). Given the other atoms, what is left of the network's signal is mostly
    noise, and so is the null's spread.
    """
    solver = OLSSolver(design.to_numpy(np.float64))
    signals = np.asarray(signals, dtype=np.float64)
    surrogates = np.asarray(surrogates, dtype=np.float64)
    cov = solver.cov_diag[:n_atoms]                           # 1 / ||r_k||^2
    rows = solver.pinv[:n_atoms]                              # r_k / ||r_k||^2, as rows
    ok = cov > 0
    scale = np.sqrt(np.where(ok, cov, 1.0))
    atoms = np.where(ok[:, None], (rows @ signals) / scale[:, None], 0.0)
    own = np.arange(surrogates.shape[1]) % n_atoms
    # the surrogate with everything but its own atom projected out
    resid = surrogates - solver.X @ (solver.pinv @ surrogates)
    along = np.einsum("kn,nk->k", rows[own], surrogates)      # r_k.u / ||r_k||^2
    resid += (rows[own] / np.where(ok[own], cov[own], 1.0)[:, None]).T * along
    norms = np.linalg.norm(resid, axis=0)
    out = np.divide(resid.T @ signals, norms[:, None],
                    out=np.zeros((surrogates.shape[1], signals.shape[1])),
                    where=norms[:, None] > 0)
    return atoms, out


def cross_validated_r(runs: Sequence[RunData]) -> np.ndarray:
    """Leave-one-run-out prediction correlation of the joint atom model, per voxel.

    For each held-out run: every run's BOLD (kept volumes, percent signal change) and atoms
    are residualised on that run's own confounds and intercept; atom weights are fitted by
    OLS on the other runs and predict the held-out run; the map is the Pearson correlation
    of prediction and held-out data, averaged over folds. Unlike the in-sample R², chance
    level is 0.

    Parameters
    ----------
    runs : sequence of RunData
        At least two runs of one participant, sharing voxels and atoms.

    Returns
    -------
    r : array (n_voxels,) float32; 0 where a voxel is constant within any run (its
        correlation is undefined there and would be rounding noise).
    """
    if len(runs) < 2:
        raise LlmfbnError("cross-validation needs at least two runs",
                          found=f"{len(runs)} run", todo="add runs or stories")
    confounds = check_runs(runs)
    n_voxels = np.shape(runs[0].bold)[1]
    residual_atoms, projectors = [], []
    for run, conf in zip(runs, confounds):
        mask = np.asarray(run.sample_mask)
        nuisance = np.column_stack([conf.to_numpy(np.float64), np.ones(mask.size)])
        projector = np.eye(mask.size) - nuisance @ np.linalg.pinv(nuisance)
        projectors.append(projector)
        residual_atoms.append(projector @ np.asarray(run.atoms, np.float64)[mask])
    r_sum = np.zeros(n_voxels)
    for block in voxel_blocks(n_voxels):
        kept = [np.asarray(run.bold[:, block], np.float64)[np.asarray(run.sample_mask)]
                for run in runs]
        varies = np.all([np.ptp(y, axis=0) > 0 for y in kept], axis=0)
        residual_bold = [p @ percent_signal_change(y) for y, p in zip(kept, projectors)]
        for held in range(len(runs)):
            train = [i for i in range(len(runs)) if i != held]
            weights = np.linalg.lstsq(np.vstack([residual_atoms[i] for i in train]),
                                      np.vstack([residual_bold[i] for i in train]),
                                      rcond=None)[0]
            pred = residual_atoms[held] @ weights
            data = residual_bold[held]
            pred = pred - pred.mean(0)
            data = data - data.mean(0)
            denom = np.sqrt(np.sum(pred**2, 0) * np.sum(data**2, 0))
            r_sum[block] += np.divide(np.sum(pred * data, 0), denom,
                                      out=np.zeros(denom.shape), where=varies & (denom > 0))
    return (r_sum / len(runs)).astype(np.float32)
