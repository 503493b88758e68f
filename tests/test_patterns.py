"""Atoms: planted-dictionary recovery, codes = scikit-learn's lasso, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from bids_app.errors import LlmfbnError
from bids_app.patterns import learn_atoms, objective, unit_rows


def _planted(rng, n_neurons=1500, n_trs=150, n_atoms=6, noise=0.05):
    atoms = rng.standard_normal((n_atoms, n_trs))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    codes = np.zeros((n_neurons, n_atoms))
    for i in range(n_neurons):
        used = rng.choice(n_atoms, size=rng.integers(1, 3), replace=False)
        codes[i, used] = rng.uniform(0.5, 2.0, used.size) * rng.choice([-1, 1], used.size)
    x = codes @ atoms + noise * rng.standard_normal((n_neurons, n_trs))
    return atoms, x.T  # responses (n_trs, n_neurons)


def test_recovers_planted_atoms():
    rng = np.random.default_rng(0)
    true_atoms, responses = _planted(rng)
    result = learn_atoms(responses, n_atoms=6, sparsity_lambda=0.05, seed=0)
    corr = np.abs(np.corrcoef(true_atoms, result.atoms)[:6, 6:])
    rows, cols = linear_sum_assignment(-corr)
    # every true atom matched by a learned one with |r| >= 0.95
    assert corr[rows, cols].min() >= 0.95, corr[rows, cols]
    assert np.allclose(np.linalg.norm(result.atoms, axis=1), 1.0, atol=1e-5)


def test_codes_equal_sklearn_lasso_and_objective():
    from sklearn.decomposition import sparse_encode

    rng = np.random.default_rng(1)
    _, responses = _planted(rng, n_neurons=400)
    responses[:, 7] = 0.0               # a silent neuron (constant, so all-zero once z-scored)
    result = learn_atoms(responses, n_atoms=6, sparsity_lambda=0.1, seed=3)
    x, active = unit_rows(responses)
    assert not active[7] and result.n_silent == 1
    codes = result.codes.toarray()
    assert np.all(codes[7] == 0)
    reference = sparse_encode(x[active].astype(np.float64), result.atoms.astype(np.float64),
                              algorithm="lasso_cd", alpha=0.1, max_iter=2000)
    np.testing.assert_allclose(codes[active], reference, atol=1e-4)
    # objective = 0.5 ||X - A D||^2 + lambda ||A||_1, computed independently
    resid = x - codes @ result.atoms
    expected = 0.5 * np.sum(resid.astype(np.float64) ** 2) + 0.1 * np.abs(codes).sum()
    assert result.objective == pytest.approx(expected, rel=1e-4)
    assert objective(x, result.codes, result.atoms, 0.1) == pytest.approx(expected, rel=1e-4)


def test_seeded_and_ordered():
    rng = np.random.default_rng(2)
    _, responses = _planted(rng, n_neurons=500)
    a = learn_atoms(responses, n_atoms=6, sparsity_lambda=0.1, seed=5)
    b = learn_atoms(responses, n_atoms=6, sparsity_lambda=0.1, seed=5)
    np.testing.assert_array_equal(a.atoms, b.atoms)
    usage = np.abs(a.codes.toarray()).sum(axis=0)
    assert np.all(np.diff(usage) <= 1e-6)                 # most used first
    assert np.all(a.codes.toarray().sum(axis=0) >= 0)     # sign convention


def test_too_few_neurons():
    with pytest.raises(LlmfbnError, match="n-atoms"):
        learn_atoms(np.random.default_rng(0).standard_normal((50, 10)), n_atoms=64)
