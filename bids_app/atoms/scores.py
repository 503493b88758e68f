"""How good atoms are: the dictionary objective of a fit, and how well two sets match."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from bids_app.atoms.rows import Rows, check_matrix


def _objective_chunks(data: Rows, codes, atoms, alpha) -> float:
    """The objective of ``codes`` (CSR, n, n_atoms) and ``atoms`` on the rows of ``data``."""
    atoms64 = np.asarray(atoms, dtype=np.float64)
    total = 0.0
    for start, stop in data.chunks():
        block = codes[start:stop]
        x = data.get(start, stop).cpu().double().numpy()
        resid = x - block @ atoms64
        total += 0.5 * float(np.sum(resid * resid))
    return total + alpha * float(abs(codes).sum())


def dictionary_objective(X, codes, atoms, alpha, chunk_rows: int = 4096) -> float:
    """``0.5 * ||X - codes @ atoms||_F^2 + alpha * ||codes||_1`` in float64, by chunks.

    Parameters
    ----------
    X : array (n_neurons, n_trs), NumPy array or memory map.
    codes : array or scipy.sparse matrix (n_neurons, n_atoms).
    atoms : array (n_atoms, n_trs).
    alpha : float, the penalty (scikit-learn's ``alpha``).
    """
    X = check_matrix(X)
    codes = sp.csr_matrix(codes) if not sp.issparse(codes) else codes.tocsr()
    data = Rows(X, None, torch.device("cpu"), resident=False, chunk_rows=chunk_rows)
    return _objective_chunks(data, codes, atoms, float(alpha))


def match_atoms(atoms_a, atoms_b) -> np.ndarray:
    """|Pearson correlation| of the atoms paired by the Hungarian algorithm.

    Parameters
    ----------
    atoms_a, atoms_b : arrays (n_atoms, n_trs)

    Returns
    -------
    ndarray (n_atoms,): the matched |correlations|, in the order of ``atoms_a``'s rows.
    """
    from scipy.optimize import linear_sum_assignment

    a = np.asarray(atoms_a, dtype=np.float64)
    b = np.asarray(atoms_b, dtype=np.float64)
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    corr = np.abs((a @ b.T) / np.maximum(np.outer(na, nb), 1e-30))
    corr[(na == 0)[:, None] | (nb == 0)[None, :]] = 0.0
    rows, cols = linear_sum_assignment(-corr)
    matched = np.zeros(a.shape[0])
    matched[rows] = corr[rows, cols]
    return matched
