"""The runs of a participant and the design matrix of the encoding model.

Per run, the kept volumes (``sample_mask``) of atoms, confounds and stimulus nuisance
regressors are taken; the runs are stacked: the atoms are columns shared by all runs, the
confounds, nuisance regressors and the intercept of each run are columns of their own, zero
on the other runs' rows (block-diagonal).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bids_app.bids.naming import atom_names
from bids_app.errors import LlmfbnError

__all__ = ["RunData", "check_atoms_estimable", "check_runs", "design_matrix",
           "used_volumes"]

# An atom whose part not explained by the confounds (and the other atoms) is smaller than
# this fraction of its norm cannot be estimated.
_COLLINEAR_RTOL = 1e-6


@dataclass
class RunData:
    """Everything the encoding model needs from one run.

    Attributes
    ----------
    bold : numpy.ndarray of shape (n_volumes, n_voxels), float32
        Masked BOLD of the run, all volumes (raw scanner units).
    confounds : pandas.DataFrame of shape (n_kept, n_confounds)
        Confounds of the kept volumes (as returned by
        :func:`~bids_app.encoding.confounds.load_run_confounds`). A frame with all
        n_volumes rows is accepted too; its kept rows are used.
    sample_mask : numpy.ndarray of shape (n_kept,), int
        Indices of the kept volumes of the run.
    atoms : numpy.ndarray of shape (n_volumes, n_atoms)
        Atom regressors of this run sampled on its frame grid (all volumes).
    name : str
        Run label used to prefix its confound columns, e.g. ``"task-pieman_run-1"``.
    nuisance : pandas.DataFrame of shape (n_volumes or n_kept, n_nuisance), optional
        Stimulus nuisance regressors of the run (e.g. ``wordrate``, ``envelope``), all or
        kept volumes like ``confounds``. They enter the design after the confounds,
        standardised over the kept volumes (mean 0, sd 1).
    """

    bold: np.ndarray
    confounds: pd.DataFrame
    sample_mask: np.ndarray
    atoms: np.ndarray
    name: str
    nuisance: pd.DataFrame | None = None


def used_volumes(sample_mask, used_frames) -> np.ndarray:
    """The volumes of a run the GLM uses: steady-state (``sample_mask``) and used frames.

    Parameters
    ----------
    sample_mask : array-like of shape (n_kept,), int
        Volumes left after non-steady-state removal (``load_run_confounds``).
    used_frames : array-like of shape (n_frames,), bool
        Frames of the run's acquisition that carry the stimulus (``frames.tsv`` ``used``);
        frames beyond its length (a longer run of another subject) are not used.

    Returns
    -------
    ndarray of shape (n_used,), int
        Increasing volume indices in both.
    """
    used = np.flatnonzero(np.asarray(used_frames, dtype=bool))
    return np.intersect1d(np.asarray(sample_mask, dtype=int), used)


def _check_runs_agree(runs: Sequence[RunData]) -> None:
    """Raise unless there are runs, with unique names and the same number of atoms."""
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


def _check_run(run: RunData) -> pd.DataFrame:
    """Validate one run's shapes and sample mask; return its confounds on the kept volumes."""
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
    confounds = _kept_rows(run.confounds, mask, n_volumes, "Confounds", run.name)
    if run.nuisance is not None:
        nuisance = _kept_rows(run.nuisance, mask, n_volumes, "Nuisance regressors", run.name)
        values = nuisance.to_numpy(dtype=np.float64)
        std = values.std(axis=0)
        values = (values - values.mean(axis=0)) / np.where(std > 0, std, 1.0)
        confounds = pd.concat([confounds.reset_index(drop=True),
                               pd.DataFrame(values, columns=nuisance.columns)], axis=1)
    return confounds


def _kept_rows(frame, mask: np.ndarray, n_volumes: int, what: str, name: str) -> pd.DataFrame:
    """The kept rows of a run's table given with all or with kept rows; finite values."""
    frame = pd.DataFrame(frame)
    if len(frame) == mask.size:
        pass
    elif len(frame) == n_volumes:
        frame = frame.iloc[mask]
    else:
        raise LlmfbnError(f"{what} of {name} do not match its volumes",
                          expected=f"{mask.size} (kept) or {n_volumes} (all) rows",
                          found=f"{len(frame)} rows",
                          todo="load confounds and BOLD from the same run")
    values = frame.to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(values)):
        bad = frame.columns[~np.all(np.isfinite(values), axis=0)].tolist()
        raise LlmfbnError(f"{what} of {name} contain NaN or inf",
                          expected="finite values on the kept volumes",
                          found=f"non-finite values in {bad}",
                          todo="drop the affected volumes or columns")
    return frame


def check_runs(runs: Sequence[RunData]) -> list[pd.DataFrame]:
    """Validate the runs and return each run's confounds restricted to its kept volumes.

    ``runs`` are the participant's runs, as given to :func:`design_matrix`.

    Returns
    -------
    list of pandas.DataFrame
        Per run, its confounds on its kept volumes, then its standardised nuisance
        regressors, shape (n_kept, n_confounds + n_nuisance).

    Raises
    ------
    LlmfbnError
        If there are no runs, names repeat, runs differ in atoms, or a run's BOLD, atoms,
        sample mask and confounds do not fit together or confounds are not finite.
    """
    _check_runs_agree(runs)
    return [_check_run(run) for run in runs]


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
        confounds named ``<run>_<confound>``, its nuisance regressors ``<run>_<name>``
        (standardised) and its intercept ``<run>_constant``; a run's confound, nuisance and
        intercept columns are zero on the other runs' rows.
    """
    kept_confounds = check_runs(runs)
    n_atoms = np.shape(runs[0].atoms)[1]
    n_rows = [np.asarray(run.sample_mask).size for run in runs]
    offsets = np.concatenate([[0], np.cumsum(n_rows)])

    atoms = np.concatenate([np.asarray(run.atoms, dtype=np.float64)[np.asarray(run.sample_mask)]
                            for run in runs])
    columns = atom_names(n_atoms)
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


def residual_atom_gram(design, n_atoms: int) -> np.ndarray:
    """(n_atoms, n_atoms) Gram matrix of the atom columns after the other columns (confounds,
    nuisance regressors, intercepts) are projected out: ``G~ = D~^T D~``.

    It links the two GLMs exactly: an atom's separate-model effect (Frisch-Waugh-Lovell) is
    ``b_k = d~_k . y~ / G~_kk``, the joint model's effects are ``G~^-1 (diag(G~) * b)``; the
    group level uses it to turn each subject's separate effects into joint ones without
    refitting. ``design`` is a subject's design matrix (:func:`design_matrix`, or its TSV
    ``sub-<label>_desc-<model>_design.tsv``), the ``n_atoms`` atom columns first.
    """
    X = np.asarray(design, dtype=np.float64)
    atoms, others = X[:, :n_atoms], X[:, n_atoms:]
    if others.shape[1]:
        atoms = atoms - others @ np.linalg.lstsq(others, atoms, rcond=None)[0]
    return atoms.T @ atoms


def check_atoms_estimable(design: pd.DataFrame, n_atoms: int) -> None:
    """Raise if some atom is (jointly) collinear with the confounds and intercepts.

    Parameters
    ----------
    design : pandas.DataFrame of shape (n_volumes_used, n_regressors)
        Design of :func:`design_matrix`: the ``n_atoms`` atom columns first.
    n_atoms : int
        Number of atom columns.

    Raises
    ------
    LlmfbnError
        Naming the atoms that lie (alone or together) in the span of the confounds and
        run intercepts, up to a relative tolerance of 1e-6.
    """
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
