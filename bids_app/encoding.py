"""Participant-level voxel-wise encoding model of BOLD on fixed regressors (atoms).

Stage 3 of the pipeline (see ``design.md``): for one participant, the preprocessed BOLD of
each run is regressed, voxel by voxel, on the K atom time courses of that run, with the
run's nuisance confounds and a per-run intercept in the same ordinary-least-squares model.

The steps follow what nilearn's ``FirstLevelModel(noise_model="ols")`` does for
concatenated runs:

1. per run, keep the volumes that are not non-steady-state (``sample_mask``),
2. per run, scale each voxel to percent signal change around its mean over the kept volumes,
3. stack the runs; design = atoms (shared columns) + confounds and intercept of each run
   (block-diagonal, zero in the other runs' rows),
4. OLS with a pseudo-inverse, in float64, over blocks of voxels so memory stays bounded,
5. the reduced model (confounds and intercepts only) gives the partial R² of the atoms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bids_app.errors import LlmfbnError

__all__ = [
    "CONFOUND_STRATEGY",
    "OLSResult",
    "ParticipantFit",
    "RunData",
    "design_matrix",
    "fit_ols",
    "fit_participant",
    "load_run_confounds",
    "percent_signal_change",
]

#: Confounds regressed out with the atoms: 6 rigid-body motion parameters, fMRIPrep's
#: discrete-cosine drift terms, and 5 CSF + 5 WM anatomical CompCor components, as the
#: Narratives authors did (Nastase et al. 2021). Keyword arguments of
#: :func:`nilearn.interfaces.fmriprep.load_confounds`.
CONFOUND_STRATEGY = dict(
    strategy=("motion", "high_pass", "compcor"),
    motion="basic",
    compcor="anat_separated",
    n_compcor=5,
)

#: Voxels solved at once; bounds the float64 working memory to
#: about 8 * n_samples * VOXEL_BLOCK bytes per array.
VOXEL_BLOCK = 20_000

#: Additional kept volumes required beyond the number of regressors.
MIN_EXTRA_VOLUMES = 10

# An atom whose part not explained by the confounds (and the other atoms) is smaller than
# this fraction of its norm cannot be estimated.
_COLLINEAR_RTOL = 1e-6


# --------------------------------------------------------------------------------------
# Confounds
# --------------------------------------------------------------------------------------

def _confounds_tsv_name(bold_path: Path) -> str:
    """fMRIPrep name of the confounds TSV that belongs to ``bold_path`` (for messages)."""
    entities = bold_path.name.split("_")
    kept = [e for e in entities
            if "-" in e and e.split("-", 1)[0] not in ("space", "res", "den", "desc")]
    return "_".join(kept + ["desc-confounds", "timeseries.tsv"])


def load_run_confounds(bold_path) -> tuple[pd.DataFrame, np.ndarray]:
    """Load the nuisance confounds of one fMRIPrep run.

    Uses :func:`nilearn.interfaces.fmriprep.load_confounds` with :data:`CONFOUND_STRATEGY`
    and ``demean=True`` (means taken over the kept volumes). Non-steady-state volumes
    (fMRIPrep's ``non_steady_state_outlierXX`` columns) are dropped through the sample mask.

    Parameters
    ----------
    bold_path : str or pathlib.Path
        fMRIPrep preprocessed BOLD image, e.g.
        ``sub-01_task-x_space-MNI152NLin2009cAsym_res-2_desc-preproc_bold.nii.gz``. The
        confounds TSV (``*_desc-confounds_timeseries.tsv``) and its JSON sidecar (needed for
        the CompCor masks) must sit next to it.

    Returns
    -------
    confounds : pandas.DataFrame of shape (n_kept, n_confounds)
        Demeaned confounds of the kept volumes; the index holds the volume indices.
    sample_mask : numpy.ndarray of shape (n_kept,), int
        Indices of the kept volumes of the run (all volumes when none is dropped).

    Raises
    ------
    LlmfbnError
        If the confounds TSV or its JSON sidecar is missing, or a required column is absent.
    """
    from nilearn.interfaces.fmriprep import load_confounds

    bold_path = Path(bold_path)
    tsv_name = _confounds_tsv_name(bold_path)
    expected = (f"'{tsv_name}' with columns trans_x..rot_z, cosineNN and a_comp_cor_NN "
                "(or c_comp_cor_NN/w_comp_cor_NN), and its JSON sidecar "
                f"'{tsv_name[:-4]}.json' giving each CompCor component's Mask, next to "
                f"'{bold_path.name}' (fMRIPrep >= 1.4 layout)")
    try:
        confounds, sample_mask = load_confounds(str(bold_path), **CONFOUND_STRATEGY,
                                                demean=True)
    except (ValueError, KeyError, OSError, TypeError) as err:
        text = str(err)
        if "json" in text.lower():
            what = "the JSON sidecar of the confounds file is missing or unreadable"
            todo = ("copy the '*_desc-confounds_timeseries.json' that fMRIPrep wrote next to "
                    "its TSV; it is needed to tell CSF from WM CompCor components")
        elif "could not find associated confound file" in text.lower():
            what = "no confounds file was found for this run"
            todo = "point to an fMRIPrep derivatives folder that holds the confounds TSV"
        elif "invalid file type" in text.lower():
            what = "the BOLD file is not named like an fMRIPrep preprocessed image"
            todo = "give the '*_desc-preproc_bold.nii.gz' file written by fMRIPrep"
        else:
            what = "required confound columns are missing"
            todo = ("rerun fMRIPrep (>= 1.4) or add the missing columns; the confound "
                    "strategy is motion (basic), cosine drifts and 5 CSF + 5 WM aCompCor")
        raise LlmfbnError(f"Cannot load the confounds of '{bold_path}': {what}",
                          expected=expected,
                          found=f"{type(err).__name__}: {text.rstrip('.')}",
                          todo=todo) from err

    n_volumes = len(confounds)
    if sample_mask is None:
        sample_mask = np.arange(n_volumes)
    sample_mask = np.asarray(sample_mask, dtype=int)
    if sample_mask.size == 0:
        raise LlmfbnError(f"All volumes of '{bold_path}' are flagged as outliers",
                          expected="some steady-state volumes",
                          found=f"0 of {n_volumes} volumes kept",
                          todo="check the non_steady_state_outlier columns of the confounds")
    # nilearn keeps all rows (maskers apply the sample mask later); we keep only used rows.
    confounds = confounds.iloc[sample_mask].astype(np.float64)
    confounds.index = pd.Index(sample_mask, name="volume")
    return confounds, sample_mask


# --------------------------------------------------------------------------------------
# Data containers
# --------------------------------------------------------------------------------------

@dataclass
class RunData:
    """Everything the encoding model needs from one run.

    Attributes
    ----------
    bold : numpy.ndarray of shape (n_volumes, n_voxels), float32
        Masked BOLD of the run, all volumes (raw scanner units).
    confounds : pandas.DataFrame of shape (n_kept, n_confounds)
        Confounds of the kept volumes (as returned by :func:`load_run_confounds`). A frame
        with all n_volumes rows is accepted too; its kept rows are used.
    sample_mask : numpy.ndarray of shape (n_kept,), int
        Indices of the kept volumes of the run.
    atoms : numpy.ndarray of shape (n_volumes, n_atoms)
        Atom regressors of this run sampled on its frame grid (all volumes).
    name : str
        Run label used to prefix its confound columns, e.g. ``"task-pieman_run-1"``.
    """

    bold: np.ndarray
    confounds: pd.DataFrame
    sample_mask: np.ndarray
    atoms: np.ndarray
    name: str


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
        Design matrix of the full model (see :func:`design_matrix`).
    n_volumes_used : int
        Number of kept volumes over all runs.
    """

    effect: np.ndarray
    t: np.ndarray
    r2: np.ndarray
    dof: int
    design: pd.DataFrame
    n_volumes_used: int


# --------------------------------------------------------------------------------------
# OLS
# --------------------------------------------------------------------------------------

class _OLSSolver:
    """Pseudo-inverse of one design, reused for every block of voxels."""

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
        """Return betas, rss for ``Y`` (n_samples, n_block) float64."""
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
    solver = _OLSSolver(X)
    if solver.dof <= 0:
        raise ValueError(f"no residual degrees of freedom: {X.shape[0]} samples, "
                         f"design rank {solver.rank}")
    n_voxels = Y.shape[1]
    betas = np.empty((X.shape[1], n_voxels))
    t = np.empty_like(betas)
    rss = np.empty(n_voxels)
    for start in range(0, n_voxels, VOXEL_BLOCK):
        block = slice(start, min(start + VOXEL_BLOCK, n_voxels))
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


# --------------------------------------------------------------------------------------
# Design
# --------------------------------------------------------------------------------------

def _atom_names(n_atoms: int) -> list[str]:
    width = max(2, len(str(n_atoms)))
    return [f"atom{k + 1:0{width}d}" for k in range(n_atoms)]


def _check_runs(runs: Sequence[RunData]) -> list[pd.DataFrame]:
    """Validate the runs and return each run's confounds restricted to its kept volumes."""
    if len(runs) == 0:
        raise LlmfbnError("No runs to fit", expected="at least one run",
                          found="an empty list", todo="check the participant's BOLD runs")
    names = [run.name for run in runs]
    if len(set(names)) != len(names):
        raise LlmfbnError("Run names must be unique", expected="one name per run",
                          found=f"{names}", todo="name runs by their task and run entities")
    n_atoms = {np.asarray(run.atoms).shape[1] if np.ndim(run.atoms) == 2 else None
               for run in runs}
    if len(n_atoms) != 1 or None in n_atoms:
        raise LlmfbnError("All runs must have the same atoms",
                          expected="atoms of shape (n_volumes, n_atoms) with one n_atoms",
                          found=", ".join(f"{run.name}: {np.shape(run.atoms)}" for run in runs),
                          todo="compute every run's atoms from the same dictionary")
    kept_confounds = []
    for run in runs:
        n_volumes = np.shape(run.bold)[0]
        if np.ndim(run.bold) != 2:
            raise LlmfbnError(f"BOLD of {run.name} is not 2-D",
                              expected="masked BOLD (n_volumes, n_voxels)",
                              found=f"shape {np.shape(run.bold)}",
                              todo="mask the 4-D image with the brain mask first")
        if np.shape(run.atoms)[0] != n_volumes:
            raise LlmfbnError(f"Atoms and BOLD of {run.name} differ in length",
                              expected=f"atoms with one row per BOLD volume ({n_volumes})",
                              found=f"{np.shape(run.atoms)[0]} atom rows",
                              todo="sample the atoms on this run's frame times "
                                   "(RepetitionTime, StartTime, number of volumes)")
        mask = np.asarray(run.sample_mask)
        if (mask.ndim != 1 or mask.size == 0 or not np.issubdtype(mask.dtype, np.integer)
                or mask.min() < 0 or mask.max() >= n_volumes
                or np.any(np.diff(mask) <= 0)):
            raise LlmfbnError(f"Invalid sample mask for {run.name}",
                              expected=f"increasing volume indices in [0, {n_volumes})",
                              found=f"{mask.size} entries, dtype {mask.dtype}",
                              todo="use the sample_mask returned by load_run_confounds")
        confounds = pd.DataFrame(run.confounds)
        if len(confounds) == mask.size:
            pass
        elif len(confounds) == n_volumes:
            confounds = confounds.iloc[mask]
        else:
            raise LlmfbnError(f"Confounds of {run.name} do not match its volumes",
                              expected=f"{mask.size} (kept) or {n_volumes} (all) rows",
                              found=f"{len(confounds)} rows",
                              todo="load confounds and BOLD from the same run")
        values = confounds.to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(values)):
            bad = confounds.columns[~np.all(np.isfinite(values), axis=0)].tolist()
            raise LlmfbnError(f"Confounds of {run.name} contain NaN or inf",
                              expected="finite values on the kept volumes",
                              found=f"non-finite values in {bad}",
                              todo="drop the affected volumes or columns")
        kept_confounds.append(confounds)
    return kept_confounds


def design_matrix(runs: Sequence[RunData]) -> pd.DataFrame:
    """Design matrix of the participant model, all runs stacked.

    Parameters
    ----------
    runs : sequence of RunData
        The participant's runs.

    Returns
    -------
    pandas.DataFrame of shape (n_volumes_used, n_atoms + sum(n_confounds + 1))
        Rows: the kept volumes of every run in run order, indexed by (run, volume).
        Columns: ``atom01`` … ``atomKK`` (shared by all runs), then for each run its
        confounds named ``<run>_<confound>`` and its intercept ``<run>_constant``; a run's
        confound and intercept columns are zero on the other runs' rows.
    """
    kept_confounds = _check_runs(runs)
    n_atoms = np.shape(runs[0].atoms)[1]
    atom_names = _atom_names(n_atoms)
    n_rows = [np.asarray(run.sample_mask).size for run in runs]
    offsets = np.concatenate([[0], np.cumsum(n_rows)])

    atoms = np.concatenate([np.asarray(run.atoms, dtype=np.float64)[np.asarray(run.sample_mask)]
                            for run in runs])
    columns = list(atom_names)
    blocks = [atoms]
    for i, (run, confounds) in enumerate(zip(runs, kept_confounds)):
        names = [f"{run.name}_{col}" for col in confounds.columns] + [f"{run.name}_constant"]
        block = np.zeros((offsets[-1], len(names)))
        rows = slice(offsets[i], offsets[i + 1])
        block[rows, :-1] = confounds.to_numpy(dtype=np.float64)
        block[rows, -1] = 1.0
        columns += names
        blocks.append(block)
    index = pd.MultiIndex.from_arrays(
        [np.repeat([run.name for run in runs], n_rows),
         np.concatenate([np.asarray(run.sample_mask) for run in runs])],
        names=["run", "volume"])
    return pd.DataFrame(np.hstack(blocks), index=index, columns=columns)


def _check_atoms_estimable(design: pd.DataFrame, n_atoms: int) -> None:
    """Raise if some atom is (jointly) collinear with the confounds and intercepts."""
    X = design.to_numpy()
    atoms, nuisance = X[:, :n_atoms], X[:, n_atoms:]
    names = list(design.columns[:n_atoms])
    coef, *_ = np.linalg.lstsq(nuisance, atoms, rcond=None)
    resid = atoms - nuisance @ coef
    norms = np.linalg.norm(atoms, axis=0)
    safe_norms = np.where(norms > 0, norms, 1.0)
    kept_fraction = np.linalg.norm(resid, axis=0) / safe_norms
    kept_fraction[norms == 0] = 0.0
    single = [n for n, f in zip(names, kept_fraction) if f < _COLLINEAR_RTOL]
    if single:
        zero = [n for n, nrm in zip(names, norms) if nrm == 0]
        found = f"{', '.join(single)} lie in the span of the confounds and run intercepts"
        if zero:
            found += f" ({', '.join(zero)} are all zero on the kept volumes)"
        raise LlmfbnError("The design is rank-deficient in the atom columns",
                          expected="atoms not explained by the confounds and run intercepts",
                          found=found,
                          todo="drop or re-learn those atoms, or use fewer confounds")
    # Jointly: the confound-free parts of the atoms must be linearly independent.
    _, S, Vt = np.linalg.svd(resid / safe_norms, full_matrices=False)
    if S.size and S[-1] < _COLLINEAR_RTOL * max(1.0, S[0]):
        null = Vt[-1]
        involved = [n for n, v in zip(names, null) if abs(v) > 0.1 * np.abs(null).max()]
        raise LlmfbnError("The design is rank-deficient in the atom columns",
                          expected="atoms linearly independent once the confounds and run "
                                   "intercepts are accounted for",
                          found=f"{', '.join(involved)} are jointly collinear with the "
                                "confounds",
                          todo="drop one of those atoms or re-learn the dictionary")


# --------------------------------------------------------------------------------------
# Participant model
# --------------------------------------------------------------------------------------

GLM_MODES = ("separate", "joint")


def fit_participant(runs: Sequence[RunData], glm: str = "separate") -> ParticipantFit:
    """Fit the voxel-wise encoding model of one participant.

    Per run, the kept volumes (``sample_mask``) of BOLD and atoms are taken and BOLD is
    scaled to percent signal change; the runs are stacked with the design of
    :func:`design_matrix` and fitted by OLS (float64, blocks of :data:`VOXEL_BLOCK` voxels).
    The reduced model (confounds and intercepts only) gives the partial R² of all atoms
    together (the joint model's).

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
    n_voxels = {np.shape(run.bold)[1] for run in runs}
    if len(n_voxels) != 1:
        raise LlmfbnError("Runs differ in their number of voxels",
                          expected="BOLD of all runs masked with the same brain mask",
                          found=", ".join(f"{r.name}: {np.shape(r.bold)[1]}" for r in runs),
                          todo="mask every run with one participant-level mask")
    n_voxels = n_voxels.pop()
    n_used, n_regressors = design.shape
    if n_used < n_regressors + MIN_EXTRA_VOLUMES:
        raise LlmfbnError("Too few volumes for the encoding model",
                          expected=f"at least {n_regressors + MIN_EXTRA_VOLUMES} kept volumes "
                                   f"({n_regressors} regressors + {MIN_EXTRA_VOLUMES})",
                          found=f"{n_used} kept volumes over {len(runs)} run(s)",
                          todo="use more runs or fewer atoms/confounds")
    _check_atoms_estimable(design, n_atoms)

    full = _OLSSolver(design.to_numpy())
    reduced = _OLSSolver(design.to_numpy()[:, n_atoms:])
    if glm == "separate":
        # atoms with the confounds projected out; one regressor each in its own model
        atoms = design.to_numpy()[:, :n_atoms]
        atoms_resid = atoms - design.to_numpy()[:, n_atoms:] @ reduced.solve(atoms)[0]
        atoms_ss = np.sum(atoms_resid**2, axis=0)                 # (n_atoms,)
        dof_separate = reduced.dof - 1
    masks = [np.asarray(run.sample_mask) for run in runs]

    effect = np.zeros((n_atoms, n_voxels), dtype=np.float32)
    t = np.zeros((n_atoms, n_voxels), dtype=np.float32)
    r2 = np.zeros(n_voxels, dtype=np.float32)
    for start in range(0, n_voxels, VOXEL_BLOCK):
        block = slice(start, min(start + VOXEL_BLOCK, n_voxels))
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
        betas, rss = full.solve(Y)
        _, rss_reduced = reduced.solve(Y)
        if glm == "separate":
            # Y's residual on the confounds is not needed: atoms_resid is orthogonal to them
            betas = (atoms_resid.T @ Y) / atoms_ss[:, None]       # (n_atoms, n_voxels)
            rss_k = np.clip(rss_reduced[None, :] - betas**2 * atoms_ss[:, None], 0.0, None)
            se = np.sqrt(rss_k / dof_separate / atoms_ss[:, None])
            tb = np.divide(betas, se, out=np.zeros_like(betas), where=se > 0)
        else:
            tb = full.t_values(betas[:n_atoms], rss / full.dof)
        ok = varies & (rss_reduced > 0)
        r2_block = np.zeros_like(rss)
        r2_block[ok] = 1.0 - rss[ok] / rss_reduced[ok]
        betas[:, ~varies] = 0.0
        tb[:, ~varies] = 0.0
        effect[:, block] = betas[:n_atoms]
        t[:, block] = tb
        r2[block] = r2_block
    dof = dof_separate if glm == "separate" else full.dof
    return ParticipantFit(effect=effect, t=t, r2=r2, dof=dof, design=design,
                          n_volumes_used=n_used)


def cross_validated_r(runs: Sequence[RunData]) -> np.ndarray:
    """Leave-one-run-out prediction correlation of the joint atom model, per voxel.

    For each held-out run: every run's BOLD (kept volumes, percent signal change) and atoms
    are residualised on that run's own confounds and intercept; atom weights are fitted by
    OLS on the other runs and predict the held-out run; the map is the Pearson correlation
    of prediction and held-out data, averaged over folds. Unlike the in-sample R², chance
    level is 0.

    Returns
    -------
    r : array (n_voxels,) float32; 0 where a voxel is constant within any run (its
        correlation is undefined there and would be rounding noise).
    """
    if len(runs) < 2:
        raise LlmfbnError("cross-validation needs at least two runs",
                          found=f"{len(runs)} run", todo="add runs or stories")
    confounds = _check_runs(runs)
    n_voxels = np.shape(runs[0].bold)[1]
    residual_atoms, projectors = [], []
    for run, conf in zip(runs, confounds):
        mask = np.asarray(run.sample_mask)
        nuisance = np.column_stack([conf.to_numpy(np.float64), np.ones(mask.size)])
        projector = np.eye(mask.size) - nuisance @ np.linalg.pinv(nuisance)
        projectors.append(projector)
        residual_atoms.append(projector @ np.asarray(run.atoms, np.float64)[mask])
    r_sum = np.zeros(n_voxels)
    for start in range(0, n_voxels, VOXEL_BLOCK):
        block = slice(start, min(start + VOXEL_BLOCK, n_voxels))
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
