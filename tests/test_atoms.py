"""Atoms stage (pipeline wrapper around the torch learner): planted recovery, codes equal
scikit-learn's lasso, silent ANs, determinism, stability report."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from bids_app.atoms import learn_atoms, responding_rows
from bids_app.errors import LlmfbnError
from tests.planted import planted_rows


@pytest.mark.parametrize("seed", [0, 1])
def test_recovers_planted_atoms(seed):
    true_atoms, x = planted_rows(seed, n_neurons=1500, n_trs=150, n_atoms=6)
    result = learn_atoms(x, n_atoms=6, sparsity_lambda=0.05, seed=0, stability=False)
    corr = np.abs(np.corrcoef(true_atoms, result.atoms)[:6, 6:])
    rows, cols = linear_sum_assignment(-corr)
    assert corr[rows, cols].min() >= 0.95, corr[rows, cols]
    assert np.allclose(np.linalg.norm(result.atoms, axis=1), 1.0, atol=1e-5)


def test_codes_equal_sklearn_lasso_silent_rows_and_objective():
    from sklearn.decomposition import sparse_encode

    _, x = planted_rows(1, n_neurons=400, n_trs=150, n_atoms=6)
    x[[7, 100]] = 0.0                                  # silent ANs
    np.testing.assert_array_equal(np.setdiff1d(np.arange(400), responding_rows(x)), [7, 100])
    result = learn_atoms(x, n_atoms=6, sparsity_lambda=0.1, seed=3, stability=False)
    assert result.n_silent == 2
    codes = result.codes.toarray()
    assert np.all(codes[[7, 100]] == 0)
    active = np.ones(400, bool)
    active[[7, 100]] = False
    reference = sparse_encode(x[active].astype(np.float64), result.atoms.astype(np.float64),
                              algorithm="lasso_cd", alpha=0.1, max_iter=5000)
    np.testing.assert_allclose(codes[active], reference, atol=1e-4)
    resid = x.astype(np.float64) - codes @ result.atoms
    expected = 0.5 * np.sum(resid ** 2) + 0.1 * np.abs(codes).sum()
    assert result.objective == pytest.approx(expected, rel=1e-4)
    meta = result.meta()
    assert meta["SilentNeurons"] == 2 and meta["ConvergenceLog"]


def test_seeded_ordered_and_stability_reported():
    _, x = planted_rows(2, n_neurons=600, n_trs=150, n_atoms=6)
    a = learn_atoms(x, n_atoms=6, sparsity_lambda=0.1, seed=5, stability=True)
    b = learn_atoms(x, n_atoms=6, sparsity_lambda=0.1, seed=5, stability=False)
    np.testing.assert_array_equal(a.atoms, b.atoms)
    usage = np.abs(a.codes.toarray()).sum(axis=0)
    assert np.all(np.diff(usage) <= 1e-6)                 # most used first
    assert np.all(a.codes.toarray().sum(axis=0) >= 0)     # sign convention
    stab = a.meta()["stability"]
    assert len(stab["seed_vs_seed"]) == 6 and len(stab["half_vs_half"]) == 6
    assert stab["median_seed_vs_seed"] > 0.95 and stab["median_half_vs_half"] > 0.95


def test_too_few_neurons():
    x = np.random.default_rng(0).standard_normal((10, 50)).astype(np.float32)
    with pytest.raises(LlmfbnError, match="n-atoms"):
        learn_atoms(x, n_atoms=64)


def test_stability_refits_side_by_side_give_the_same_numbers():
    """The three stability refits run in forked one-thread processes (--nprocs of them):
    the same matched |r| as one after another, and as with one --nprocs."""
    from bids_app.atoms.learn import atom_stability

    _, x = planted_rows(3, n_neurons=800, n_trs=120, n_atoms=6)
    rows = responding_rows(x)
    atoms = learn_atoms(x, n_atoms=6, sparsity_lambda=0.1, seed=1, stability=False).atoms
    serial = atom_stability(x, rows, atoms, 6, 0.1, seed=1, n_threads=1)
    parallel = atom_stability(x, rows, atoms, 6, 0.1, seed=1, n_threads=2)
    for key in ("seed_vs_seed", "half_vs_half", "seeds", "split_seed"):
        assert serial[key] == parallel[key], key
    assert serial["median_half_vs_half"] > 0.9
