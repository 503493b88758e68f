"""Representative temporal patterns ("atoms") of all artificial neurons.

Sparse dictionary learning (Mairal et al. 2010) on X (n_neurons, n_trs), one AN per row:
minimise ``0.5 * ||X - A D||_F^2 + lambda * ||A||_1`` with ``||d_k||_2 <= 1``, the objective
and penalty scale of scikit-learn's ``DictionaryLearning``. This first version uses
scikit-learn's ``MiniBatchDictionaryLearning`` (coordinate-descent lasso) for the atoms and
``sparse_encode(algorithm="lasso_cd")`` for the final codes.

Each AN's response is z-scored over time per run upstream; here each row is scaled to unit L2
norm (ours), so ``lambda`` acts on a correlation scale whatever the number of TRs. ANs whose
response is constant (silent) have no direction: they are left out and get all-zero codes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

LOGGER = logging.getLogger("llmfbn")
#: Identifies the algorithm and its fixed settings in cache keys: change it with them.
ALGORITHM_ID = "sklearn-minibatch-cd-v2"


@dataclass
class Atoms:
    """Learned atoms and codes.

    atoms : array (n_atoms, n_trs), unit-norm temporal patterns, most used first.
    codes : scipy.sparse CSR (n_neurons, n_atoms), sparse code of every AN.
    objective : float, ``0.5 * ||X - A D||^2 + lambda * ||A||_1`` on the unit-norm rows.
    n_silent : int, ANs with a constant response (all-zero codes).
    """

    atoms: np.ndarray
    codes: sp.csr_matrix
    objective: float
    n_silent: int
    sparsity_lambda: float
    seed: int


def unit_rows(responses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """X (n_neurons, n_trs) with unit-norm rows from ``responses`` (n_trs, n_neurons).

    Returns the float32 matrix and the boolean mask of non-silent neurons.
    """
    x = np.ascontiguousarray(responses.T, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1)
    active = norms > 1e-6 * max(1.0, float(norms.max(initial=0.0)))
    x[active] /= norms[active, None]
    x[~active] = 0.0
    return x, active


def objective(x: np.ndarray, codes, atoms: np.ndarray, sparsity_lambda: float) -> float:
    """``0.5 * ||X - A D||_F^2 + lambda * ||A||_1`` (scikit-learn's dictionary objective)."""
    dense = codes.toarray() if sp.issparse(codes) else np.asarray(codes)
    resid = x.astype(np.float64) - dense @ atoms
    return float(0.5 * np.sum(resid**2) + sparsity_lambda * np.abs(dense).sum())


def learn_atoms(responses: np.ndarray, n_atoms: int = 64, sparsity_lambda: float = 0.1,
                seed: int = 0, n_epochs: int = 5, batch_size: int = 16,
                min_steps: int = 1500) -> Atoms:
    """Learn ``n_atoms`` atoms from ``responses`` (n_trs, n_neurons), z-scored per run.

    Atoms are ordered by use (sum of absolute codes, descending) and signed so that
    their summed code is positive; both are deterministic given ``seed``.

    Small mini-batches escape poor local minima that large ones get stuck in (seen on
    planted dictionaries); the number of epochs is raised until at least ``min_steps``
    mini-batch updates are made.
    """
    from sklearn.decomposition import MiniBatchDictionaryLearning, sparse_encode

    from bids_app.errors import LlmfbnError

    x, active = unit_rows(responses)
    n_active = int(active.sum())
    if n_active < n_atoms:
        raise LlmfbnError(
            f"only {n_active} artificial neurons respond (vary over time), fewer than "
            f"--n-atoms {n_atoms}", todo="lower --n-atoms or use longer stories")
    if x.shape[1] < 2:
        raise LlmfbnError("the stimulus has fewer than 2 TRs", found=f"{x.shape[1]} TRs")
    LOGGER.info("Dictionary learning: %d neurons (%d silent) x %d TRs -> %d atoms, lambda=%g",
                n_active, x.shape[0] - n_active, x.shape[1], n_atoms, sparsity_lambda)
    batch_size = min(batch_size, n_active)
    epochs = max(n_epochs, int(np.ceil(min_steps * batch_size / n_active)))
    learner = MiniBatchDictionaryLearning(
        n_components=n_atoms, alpha=sparsity_lambda, max_iter=epochs,
        batch_size=batch_size, fit_algorithm="cd",
        transform_algorithm="lasso_cd", transform_alpha=sparsity_lambda,
        random_state=seed, tol=0.0, max_no_improvement=None,
    )
    x_active = x[active].astype(np.float64)
    learner.fit(x_active)
    atoms = learner.components_.astype(np.float64)
    norms = np.linalg.norm(atoms, axis=1)
    atoms[norms > 0] /= norms[norms > 0, None]
    codes_active = sparse_encode(x_active, atoms, algorithm="lasso_cd", alpha=sparsity_lambda,
                                 max_iter=2000)
    usage = np.abs(codes_active).sum(axis=0)
    order = np.argsort(-usage, kind="stable")
    atoms, codes_active = atoms[order], codes_active[:, order]
    signs = np.where(codes_active.sum(axis=0) < 0, -1.0, 1.0)
    atoms *= signs[:, None]
    codes_active *= signs[None, :]
    codes = np.zeros((x.shape[0], n_atoms), dtype=np.float32)
    codes[active] = codes_active
    value = objective(x, codes, atoms, sparsity_lambda)
    nnz = np.count_nonzero(codes_active, axis=1)
    LOGGER.info("Atoms learned: objective %.4g, mean %.2f non-zero codes per responding AN, "
                "%d unused atoms", value, nnz.mean(), int((usage == 0).sum()))
    return Atoms(atoms=atoms.astype(np.float32), codes=sp.csr_matrix(codes), objective=value,
                 n_silent=int((~active).sum()), sparsity_lambda=sparsity_lambda, seed=seed)
