"""Initial atoms from a seeded subsample of the rows: greedy k-means++, rotated within
their span by FastICA (the default), or FastICA alone.

k-means++: each new atom is, of a few rows drawn with probability proportional to the
energy they have left after projection on the nearest atom so far, the one leaving the
least energy (on |cosine|, as scikit-learn's ``kmeans_plusplus``): atoms start as real,
diverse AN time courses, among them one of a pattern that few rows hold.

``settings.SEEDING = "span-ica"`` (the default since ``torch-fista-bcd-v4``) then rotates
those atoms within their span by a symmetric FastICA (logcosh contrast; Hyvarinen 1999, as
scikit-learn's ``FastICA``) of the subsample whitened on that span (:func:`ica_atoms`).
FastICA models each AN as a mix of a few independent, sparse sources (what the lasso codes
are), so it sets the atoms' mixing within their span, the direction in which dictionary
learning's own epochs creep (benchmarks/results/dictionary.md); whitened on the span
rather than on the leading principal components, it keeps the atom k-means++ gave a
pattern that few rows hold (whose variance is not among the leading components).

Other options: ``"kmeans++"`` alone (the v3 learner); ``"ica"``, FastICA whitened onto
the subsample's leading ``n_atoms`` components; ``"auto"``, whichever of the FastICA and
the k-means++ atoms codes the tuning rows at the lower lasso objective. These two lose the
demo's small planted groups (benchmarks/results/dictionary.md). FastICA is skipped (the
k-means++ atoms kept) when the subsample cannot carry ``n_atoms`` components (fewer TRs
than atoms, fewer than twice as many rows, or a near-singular covariance).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from bids_app.atoms import settings
from bids_app.atoms.anderson import unit_rows
from bids_app.atoms.lasso import Solver, lasso_cost
from bids_app.atoms.rows import Rows
from bids_app.errors import LlmfbnError

LOGGER = logging.getLogger("llmfbn")


def init_sample_size(n_rows: int, n_atoms: int) -> int:
    """Rows drawn for the initialisation (and for the warm-up epochs on a subsample)."""
    return min(n_rows, max(settings.INIT_SAMPLE, 20 * n_atoms))


def seed_atoms(data: Rows, n_atoms: int, rng: np.random.Generator, alpha: float = 0.1):
    """k-means++-like seeding (on |cosine|) from a subsample of the non-zero rows, then
    (``settings.SEEDING = "span-ica"``) those atoms rotated within their span by FastICA;
    with ``"auto"`` FastICA on the leading components instead, if its lasso codes of the
    tuning rows reach the lower objective; ``"ica"`` that FastICA; ``"kmeans++"`` none.

    Parameters
    ----------
    data : Rows, n rows of n_trs values.
    n_atoms : int
    rng : numpy Generator, the fit's (draws the subsample, the seeds and the tuning rows).
    alpha : float, the penalty of the lasso objective that picks between the FastICA and
        the k-means++ atoms (``settings.SEEDING = "auto"``).

    Returns
    -------
    atoms : ndarray (n_atoms, n_trs), float32, unit-norm rows: of the subsample
        (k-means++), or FastICA's mixing directions.
    tune_rows : ndarray (min(n_sample, settings.TUNE_SAMPLE), n_trs), float32, the rows
        on which alpha is tuned for a target sparsity.
    sample : ndarray (n_sample, n_trs), float32, the subsample (sorted row order).
    """
    n_sample = init_sample_size(data.n, n_atoms)
    index = np.sort(rng.choice(data.n, size=n_sample, replace=False))
    sample = data.take(index).cpu().numpy()                 # float32
    norms = np.linalg.norm(sample, axis=1)
    nonzero = norms > 1e-6 * max(1.0, float(norms.max(initial=0.0)))
    if int(nonzero.sum()) < n_atoms:
        raise LlmfbnError("too few non-zero rows (responding neurons) to learn from",
                          found=f"{int(nonzero.sum())} of {n_sample} sampled rows",
                          todo="check the responses or lower --n-atoms")
    # torch for the products (NumPy's BLAS threads would compete with torch's)
    unit = torch.from_numpy(sample[nonzero] / norms[nonzero, None])
    atoms = _greedy_kmeans_plusplus(unit, n_atoms, rng).numpy()
    del unit
    tune_rows = sample[:settings.TUNE_SAMPLE] if len(sample) <= settings.TUNE_SAMPLE else \
        sample[np.sort(rng.choice(len(sample), size=settings.TUNE_SAMPLE, replace=False))]
    if settings.SEEDING == "span-ica":
        rotated = ica_atoms(torch.from_numpy(sample[nonzero]), n_atoms, rng, span=atoms)
        if rotated is None:
            LOGGER.info("Atoms seeded by k-means++: %d rows x %d TRs are too few for a "
                        "FastICA within the atoms' span", int(nonzero.sum()),
                        sample.shape[1])
        else:
            LOGGER.info("Atoms seeded by k-means++, then rotated within their span by "
                        "FastICA")
            atoms = rotated
    elif settings.SEEDING in ("auto", "ica"):
        ica = ica_atoms(torch.from_numpy(sample[nonzero]), n_atoms, rng)
        if ica is None:
            LOGGER.info("Atoms seeded by k-means++: %d rows x %d TRs are too few for a "
                        "FastICA with %d components", int(nonzero.sum()), sample.shape[1],
                        n_atoms)
        elif settings.SEEDING == "ica":
            atoms = ica
        else:
            tune_x = torch.from_numpy(tune_rows)
            costs = [seed_cost(candidate, tune_x, alpha) for candidate in (ica, atoms)]
            LOGGER.info("Atoms seeded by %s: lasso objective on %d rows %.6g (FastICA) "
                        "and %.6g (k-means++)", "FastICA" if costs[0] < costs[1]
                        else "k-means++", len(tune_rows), *costs)
            if costs[0] < costs[1]:
                atoms = ica
    return atoms, tune_rows, sample


def _greedy_kmeans_plusplus(unit: torch.Tensor, n_atoms: int,
                            rng: np.random.Generator) -> torch.Tensor:
    """``n_atoms`` rows of ``unit`` (n_rows, n_trs), unit-norm rows: tensor (n_atoms, n_trs)."""
    atoms = torch.zeros((n_atoms, unit.shape[1]), dtype=torch.float32)
    first = int(rng.integers(len(unit)))
    atoms[0] = unit[first]
    best = (unit @ atoms[0]).abs()
    n_candidates = 2 + int(np.log(n_atoms))
    for k in range(1, n_atoms):
        # greedy k-means++ (as scikit-learn's kmeans_plusplus): of a few rows drawn
        # with probability ~ energy left, keep the one that leaves the least energy
        left = (1.0 - best.double() ** 2).clamp_min(0.0).numpy()
        total = left.sum()
        if total > 1e-12:
            picks = rng.choice(len(unit), size=n_candidates, p=left / total)
        else:
            picks = rng.integers(len(unit), size=n_candidates)
        cos = (unit @ unit[torch.as_tensor(picks)].T).abs()   # (n_sample, n_candidates)
        after = torch.maximum(best[:, None], cos)
        pick = int(picks[int(torch.argmin((1.0 - after.double() ** 2).sum(0)))])
        atoms[k] = unit[pick]
        best = torch.maximum(best, (unit @ atoms[k]).abs())
    return atoms


def seed_cost(atoms: np.ndarray, x: torch.Tensor, alpha: float) -> float:
    """Lasso objective 0.5 ||x - a D||^2 + alpha ||a||_1 of the rows ``x`` (n_rows, n_trs)
    coded against ``atoms`` (n_atoms, n_trs) (gap 1e-4 ||x||^2 per row, float64 sum)."""
    codes, resid_sq, _ = Solver.of(torch.from_numpy(atoms)).code(
        x, alpha, gap_tol=settings.GAP_TOL_ONLINE)
    return lasso_cost(codes, resid_sq, alpha)


def ica_atoms(rows: torch.Tensor, n_atoms: int, rng: np.random.Generator,
              max_iter: int | None = None, tol: float | None = None, span=None):
    """Mixing directions of a symmetric FastICA (logcosh) of ``rows`` (n_rows, n_trs).

    The rows are centred and whitened onto their leading ``n_atoms`` principal
    components (eigen-decomposition of the n_trs x n_trs covariance, float64; each
    eigenvector signed so that its largest entry is positive) or, with ``span`` (n_atoms,
    n_trs: atoms, e.g. k-means++'s), onto the principal axes of their projection on the
    span of those atoms (the covariance of the projections on an orthonormal basis of the
    span, from a QR decomposition), so that the result mixes those atoms only: FastICA
    then sets their mixing within their span, and keeps a pattern that few rows hold but
    an atom already has (its direction would not be among the leading components). The
    unmixing W (n_atoms x n_atoms, standard normal from ``rng``, then decorrelated) is
    iterated as scikit-learn's
    ``FastICA(algorithm="parallel", fun="logcosh")``: W <- E[g(W z) z^T] - E[g'(W z)] W,
    then symmetric decorrelation, until max | |diag(W_new W^T)| - 1 | < ``tol``
    (``settings.ICA_TOL``; at most ``settings.ICA_MAX_ITER`` iterations). Torch does the
    products (no NumPy BLAS threads beside the fit's), the (n_rows, n_atoms) ones in
    float32.

    Returns
    -------
    ndarray (n_atoms, n_trs), float32, unit-norm rows of the mixing matrix (X^T ~ A S,
    rows of A^T); or None when the rows cannot carry ``n_atoms`` components (n_trs <=
    n_atoms, n_rows < 2 * n_atoms, ``span`` of rank < n_atoms, or the n_atoms-th
    covariance eigenvalue below 1e-6 times the first).
    """
    max_iter = settings.ICA_MAX_ITER if max_iter is None else max_iter
    tol = settings.ICA_TOL if tol is None else tol
    n_rows, n_trs = rows.shape
    if n_trs <= n_atoms or n_rows < 2 * n_atoms:
        return None
    centred = rows.double() - rows.double().mean(0)
    if span is None:
        evals, evecs = torch.linalg.eigh(centred.T @ centred / n_rows)
        evals, evecs = evals.flip(0)[:n_atoms], evecs.flip(1)[:, :n_atoms]
    else:
        basis, triangle = torch.linalg.qr(torch.as_tensor(np.asarray(span)).double().T)
        diagonal = torch.diagonal(triangle).abs()
        if len(diagonal) != n_atoms or not float(diagonal.min()) > 1e-6 * float(
                diagonal.max()):
            return None
        projected = centred @ basis                            # (n_rows, n_atoms)
        evals, rotation = torch.linalg.eigh(projected.T @ projected / n_rows)
        evals, evecs = evals.flip(0), basis @ rotation.flip(1)
        del projected
    if not float(evals[-1]) > 1e-6 * float(evals[0]):
        return None
    # each eigenvector's largest entry positive: the same whitening on every LAPACK
    peak = evecs.abs().argmax(0)
    evecs = evecs * torch.sign(evecs[peak, torch.arange(n_atoms)])
    z = (centred @ (evecs / evals.sqrt())).float()    # (n_rows, n_atoms), unit covariance
    unmixing = _decorrelate(torch.from_numpy(rng.standard_normal((n_atoms, n_atoms))))
    for _ in range(max_iter):
        g = torch.tanh(z @ unmixing.float().T)        # (n_rows, n_atoms), float32
        new = ((g.T @ z).double() / n_rows
               - (1.0 - g * g).double().mean(0)[:, None] * unmixing)
        new = _decorrelate(new)
        change = float((torch.diagonal(new @ unmixing.T).abs() - 1.0).abs().max())
        unmixing = new
        if change < tol:
            break
    del z, centred
    mixing = unmixing @ (evecs * evals.sqrt()).T     # (n_atoms, n_trs): W Lambda^1/2 E^T
    return unit_rows(mixing).float().numpy()


def _decorrelate(w: torch.Tensor) -> torch.Tensor:
    """Symmetric decorrelation (W W^T)^(-1/2) W (float64)."""
    values, vectors = torch.linalg.eigh(w @ w.T)
    return (vectors * values.clamp_min(1e-300).rsqrt()) @ vectors.T @ w
