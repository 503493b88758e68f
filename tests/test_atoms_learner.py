"""Torch dictionary learner: scikit-learn's objective, planted-atom recovery, lasso codes
equal to scikit-learn's, memory maps, determinism, target sparsity, convergence log."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.optimize import linear_sum_assignment

from bids_app.atoms import DictionaryLearner, dictionary_objective, match_atoms, settings
from bids_app.errors import LlmfbnError
from tests.planted import planted_rows as _planted
from tests.planted import unit_rows as _unit_rows
from tests.planted import use_v3_learner


def _objective(x, codes, atoms, alpha):
    """Independent formula: scikit-learn's ``_dict_learning`` cost, in float64."""
    codes = codes.toarray() if sp.issparse(codes) else np.asarray(codes)
    resid = np.asarray(x, np.float64) - codes.astype(np.float64) @ np.asarray(atoms, np.float64)
    return 0.5 * np.sum(resid ** 2) + alpha * np.abs(codes).sum()


@pytest.fixture(scope="module")
def planted_fit():
    true_atoms, x = _planted(0)
    return true_atoms, x, DictionaryLearner(n_atoms=8, alpha=0.1, random_state=0).fit(x)


@pytest.mark.parametrize("kind", [pytest.param("gaussian", marks=pytest.mark.slow), "planted"])
def test_objective_not_worse_than_sklearn(kind):
    """Same K and alpha: final objective <= 1.01 x scikit-learn's (batch and mini-batch)."""
    from sklearn.decomposition import DictionaryLearning, MiniBatchDictionaryLearning, sparse_encode

    if kind == "gaussian":
        x = _unit_rows(np.random.default_rng(7).standard_normal((600, 80)))
    else:
        x = _planted(8, n_neurons=600, n_trs=80)[1].astype(np.float64)
    alpha = 0.1
    ours = DictionaryLearner(n_atoms=8, alpha=alpha, random_state=0).fit(x)
    ours_value = _objective(x, ours.codes_, ours.components_, alpha)
    assert ours.objective_ == pytest.approx(ours_value, rel=1e-6)
    references = [
        DictionaryLearning(n_components=8, alpha=alpha, fit_algorithm="cd",
                           transform_algorithm="lasso_cd", random_state=0),
        MiniBatchDictionaryLearning(n_components=8, alpha=alpha, fit_algorithm="cd",
                                    batch_size=64, random_state=0),
    ]
    for model in references:
        atoms = model.fit(x).components_
        codes = sparse_encode(x, atoms, algorithm="lasso_cd", alpha=alpha)
        value = _objective(x, codes, atoms, alpha)
        assert ours_value <= 1.01 * value, (type(model).__name__, ours_value, value)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_planted_atoms(seed):
    true_atoms, x = _planted(seed)
    learner = DictionaryLearner(n_atoms=8, alpha=0.1, random_state=seed).fit(x)
    corr = np.abs(np.corrcoef(true_atoms, learner.components_)[:8, 8:])
    rows, cols = linear_sum_assignment(-corr)
    # every true atom matched by a learned one with |r| >= 0.95
    assert corr[rows, cols].min() >= 0.95, corr[rows, cols]


def test_fitted_attributes(planted_fit):
    _, x, learner = planted_fit
    atoms, codes = learner.components_, learner.codes_
    assert atoms.dtype == np.float32 and atoms.shape == (8, x.shape[1])
    np.testing.assert_allclose(np.linalg.norm(atoms, axis=1), 1.0, atol=1e-5)
    assert sp.isspmatrix_csr(codes) and codes.shape == (x.shape[0], 8)
    assert codes.dtype == np.float32
    assert learner.alpha_ == 0.1
    assert learner.n_iter_ == len(learner.history_) >= 1
    dense = codes.toarray()
    usage = np.abs(dense).sum(0)
    assert np.all(np.diff(usage) <= 1e-3)              # most used first
    assert np.all(dense.sum(0) >= 0)                   # sign convention
    assert learner.objective_ == pytest.approx(_objective(x, codes, atoms, 0.1), rel=1e-6)
    # objective_ comes from K-sized sums (||x||^2 - 2 a.c + a G a): same value in float64
    assert dictionary_objective(x, codes, atoms, 0.1) == pytest.approx(learner.objective_,
                                                                       rel=1e-7)


def test_codes_and_transform_equal_sklearn_lasso(planted_fit):
    from sklearn.decomposition import sparse_encode

    _, x, learner = planted_fit
    atoms = learner.components_.astype(np.float64)
    reference = sparse_encode(x.astype(np.float64), atoms, algorithm="lasso_cd", alpha=0.1)
    np.testing.assert_allclose(learner.codes_.toarray(), reference, atol=1e-4)
    _, new_rows = _planted(5, n_neurons=300)
    new_rows[3] = 0.0                                  # a silent neuron: all-zero code
    codes = learner.transform(new_rows)
    reference = sparse_encode(new_rows.astype(np.float64), atoms, algorithm="lasso_cd",
                              alpha=0.1)
    assert codes.shape == (300, 8)
    np.testing.assert_allclose(codes, reference, atol=1e-4)
    assert np.all(codes[3] == 0)


def test_memmap_input_same_as_array(planted_fit, tmp_path):
    _, x, learner = planted_fit
    path = tmp_path / "x.npy"
    np.save(path, x.astype(np.float64))
    mapped = np.load(path, mmap_mode="r")
    again = DictionaryLearner(n_atoms=8, alpha=0.1, random_state=0).fit(mapped)
    np.testing.assert_array_equal(again.components_, learner.components_)
    assert again.objective_ == learner.objective_
    # Streaming in small chunks (4 MiB budget): same optimum up to float rounding.
    streamed = DictionaryLearner(n_atoms=8, alpha=0.1, random_state=0, mem_gb=4e-3)
    streamed.fit(mapped)
    assert streamed.objective_ == pytest.approx(learner.objective_, rel=1e-4)
    assert match_atoms(streamed.components_, learner.components_).min() > 0.999


def test_deterministic(planted_fit):
    _, x, learner = planted_fit
    again = DictionaryLearner(n_atoms=8, alpha=0.1, random_state=0).fit(x.copy())
    np.testing.assert_array_equal(again.components_, learner.components_)
    np.testing.assert_array_equal(again.codes_.toarray(), learner.codes_.toarray())
    assert again.objective_ == learner.objective_
    assert again.history_ == learner.history_
    other = DictionaryLearner(n_atoms=8, alpha=0.1, random_state=1).fit(x)
    assert not np.array_equal(other.history_[0]["objective"],
                              learner.history_[0]["objective"])


@pytest.mark.parametrize("target", [2.0, 4.0])
def test_target_sparsity(target):
    _, x = _planted(3, n_neurons=1500)
    learner = DictionaryLearner(n_atoms=12, target_sparsity=target, random_state=0).fit(x)
    mean_nonzero = learner.codes_.nnz / x.shape[0]
    assert abs(mean_nonzero - target) <= 0.15 * target, (mean_nonzero, learner.alpha_)
    assert learner.alpha_ > 0


def test_history_decreases_and_tol_stops_early(planted_fit):
    _, x, learner = planted_fit
    kept = [h for h in learner.history_ if h["phase"] == "batch" and h.get("accepted", True)]
    assert len(kept) >= 2
    # accepted epochs never raise the objective, except right after atoms were restarted
    # or split (logged as "restarted")
    assert all(b["objective"] <= a["objective"] * (1 + 1e-6)
               for a, b in zip(kept, kept[1:]) if "restarted" not in a), kept
    assert learner.converged_ and learner.n_iter_ < learner.max_epochs
    loose = DictionaryLearner(n_atoms=8, alpha=0.1, random_state=0, tol=1e-2).fit(x)
    strict = DictionaryLearner(n_atoms=8, alpha=0.1, random_state=0, tol=1e-8).fit(x)
    assert loose.converged_ and loose.n_iter_ <= learner.n_iter_ < strict.n_iter_
    capped = DictionaryLearner(n_atoms=8, alpha=0.1, random_state=0, tol=0.0,
                               max_epochs=3).fit(x)
    assert capped.n_iter_ == 3 and not capped.converged_


def test_input_errors():
    x = np.random.default_rng(0).standard_normal((50, 20))
    with pytest.raises(LlmfbnError, match="atoms"):
        DictionaryLearner(n_atoms=64).fit(x)
    with pytest.raises(LlmfbnError, match="2-D"):
        DictionaryLearner(n_atoms=4).fit(x[0])
    bad = x.copy()
    bad[3, 4] = np.nan
    with pytest.raises(LlmfbnError, match="NaN"):
        DictionaryLearner(n_atoms=4).fit(bad)
    with pytest.raises(LlmfbnError, match="alpha"):
        DictionaryLearner(n_atoms=4, alpha=-1.0).fit(x)
    with pytest.raises(LlmfbnError, match="not fitted"):
        DictionaryLearner(n_atoms=4).transform(x)
    with pytest.raises(LlmfbnError, match="mem_gb"):
        DictionaryLearner(n_atoms=4, mem_gb=1e-9).fit(x)
    # the device goes through bids_app.devices.torch_device, the pipeline's one resolver
    with pytest.raises(LlmfbnError, match="unknown device"):
        DictionaryLearner(n_atoms=4, device="tpu").fit(x)
    if not torch.cuda.is_available():
        with pytest.raises(LlmfbnError, match="CUDA is not available"):
            DictionaryLearner(n_atoms=4, device="cuda").fit(x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(planted_fit):
    _, x, learner = planted_fit
    gpu = DictionaryLearner(n_atoms=8, alpha=0.1, random_state=0, device="cuda").fit(x)
    assert gpu.objective_ == pytest.approx(learner.objective_, rel=1e-4)
    assert match_atoms(gpu.components_, learner.components_).min() > 0.999
    again = DictionaryLearner(n_atoms=8, alpha=0.1, random_state=0, device="cuda").fit(x)
    assert again.objective_ == pytest.approx(gpu.objective_, rel=1e-6)


def test_exact_codes_equal_sklearn_lasso_from_any_start():
    """Polish on the warm start's support, FISTA where that support is wrong: the lasso
    optimum of every row, against scikit-learn's ``Lasso`` run to tol 1e-12 (abs 1e-7)."""
    from sklearn.linear_model import Lasso

    from bids_app.atoms.lasso import exact_codes, lipschitz_constant

    rng = np.random.default_rng(11)
    n_trs, n_atoms, alpha = 40, 10, 0.05
    atoms = _unit_rows(rng.standard_normal((n_atoms, n_trs)))
    x = _unit_rows(rng.standard_normal((30, 3)) @ atoms[:3]
                   + 0.3 * rng.standard_normal((30, n_trs)))
    gram = torch.from_numpy(atoms @ atoms.T)
    cross = torch.from_numpy(x @ atoms.T)
    x_sq = torch.from_numpy((x * x).sum(1))
    starts = {"zeros": np.zeros((30, n_atoms)),
              "random support": rng.standard_normal((30, n_atoms))
              * (rng.random((30, n_atoms)) < 0.3)}
    # sklearn's Lasso minimises 1/(2 n) ||y - X w||^2 + a ||w||_1, n = n_trs
    reference = np.array([Lasso(alpha=alpha / n_trs, fit_intercept=False, tol=1e-12,
                                max_iter=100_000).fit(atoms.T, row).coef_ for row in x])
    assert (reference != 0).sum(1).max() >= 2            # non-trivial supports
    for name, start in starts.items():
        codes = exact_codes(gram, cross, x_sq, alpha, torch.from_numpy(start),
                            lipschitz_constant(gram)).numpy()
        np.testing.assert_allclose(codes, reference, atol=1e-7, err_msg=name)


def test_wasted_atoms_finds_duplicates_and_rarely_used():
    from bids_app.atoms.restarts import wasted_atoms

    rng = np.random.default_rng(3)
    atoms = _unit_rows(rng.standard_normal((6, 50)))
    atoms[4] = _unit_rows(atoms[1:2] + 0.03 * rng.standard_normal((1, 50)))[0]  # |cos| > 0.9
    assert abs(atoms[4] @ atoms[1]) > 0.9
    energy = np.array([10.0, 12.0, 9.0, 11.0, 3.0, 0.2])   # atom 5: 2 % of the median
    stat_a = torch.diag(torch.from_numpy(energy))
    wasted = wasted_atoms(torch.from_numpy(atoms), stat_a)
    # of the duplicate pair (1, 4) the weaker one (4); and the rarely used atom 5
    np.testing.assert_array_equal(wasted, [4, 5])
    energy[5] = 0.0                                       # unused: left to the caller
    assert list(wasted_atoms(torch.from_numpy(atoms),
                             torch.diag(torch.from_numpy(energy)))) == [4]


def test_top_directions_equal_svd():
    from bids_app.atoms.restarts import top_directions

    rng = np.random.default_rng(5)
    basis = np.linalg.qr(rng.standard_normal((200, 3)))[0].T          # 3 directions
    resid = (rng.standard_normal((500, 3)) * [9.0, 6.0, 4.0]) @ basis \
        + 0.1 * rng.standard_normal((500, 200))
    found = top_directions(torch.from_numpy(resid), 3).numpy()
    reference = np.linalg.svd(resid, full_matrices=False)[2][:3]
    # same directions up to sign, within 1e-6
    np.testing.assert_allclose(np.abs(np.sum(found * reference, axis=1)), 1.0, atol=1e-6)


@pytest.mark.slow
def test_restarts_escape_a_local_minimum(monkeypatch):
    """Seeded case (found by search) that ends in a local minimum, with a pattern missing
    and a junk atom, when no atom may be restarted: with the restarts every true source is
    recovered (|r| >= 0.95) at a lower objective. The case was found for the v3 learner
    (k-means++ start, plain epochs), which it runs with; the default start (rotated within
    its span by FastICA) does not fall into it (every source at |r| 0.9998 without
    restarts, measured 2026-12-03)."""
    from bids_app.synthetic import source_mixtures

    use_v3_learner(monkeypatch)
    x, sources = source_mixtures(45_000, 150, n_sources=48, seed=3)
    fits = {}
    for rounds in (0, settings.MAX_RESTART_ROUNDS):
        monkeypatch.setattr(settings, "MAX_RESTART_ROUNDS", rounds)
        learner = DictionaryLearner(n_atoms=48, alpha=0.1, random_state=2).fit(x)
        fits[rounds] = (match_atoms(sources, learner.components_).min(),
                        learner.objective_)
    (stuck, stuck_objective), (escaped, objective) = fits[0], fits[max(fits)]
    assert stuck < 0.9                        # the case really is a local minimum
    assert escaped >= 0.95 and objective < stuck_objective


def test_split_pair_undoes_a_rotated_pair():
    """Atoms (s1 + s2)/sqrt2 and (s1 - s2)/sqrt2 used by ANs that hold s1 or s2 alone: the
    split gives back s1 and s2 (|cos| > 0.9999: 1-degree histogram bins)."""
    from bids_app.atoms.restarts import coactive_pairs, split_pair

    rng = np.random.default_rng(2)
    s1, s2 = np.linalg.qr(rng.standard_normal((60, 2)))[0].T
    d1, d2 = (s1 + s2) / np.sqrt(2), (s1 - s2) / np.sqrt(2)
    amplitude = rng.uniform(0.5, 2.0, 200) * rng.choice([-1, 1], 200)
    pure_s2 = np.arange(200) % 2 == 1                  # half the ANs hold s1, half s2
    codes = np.stack([amplitude, np.where(pure_s2, -amplitude, amplitude)], 1) / np.sqrt(2)
    new = split_pair(torch.from_numpy(d1), torch.from_numpy(d2), torch.from_numpy(codes))
    found = np.abs(np.array([[float(a @ torch.from_numpy(s)) for s in (s1, s2)]
                             for a in new]))
    assert sorted(found.max(1)) == pytest.approx([1, 1], abs=1e-4)
    assert set(found.argmax(1)) == {0, 1}
    # the pair shows in the co-activation counts; independent atoms do not
    coactive = np.array([[200, 200, 12], [200, 200, 10], [12, 10, 150]])
    assert coactive_pairs(coactive) == [(0, 1)]
    assert coactive_pairs(coactive, skip=[1]) == []


def test_rotated_pair_split_recovers_planted_atoms(monkeypatch):
    """A seeded planted case (found by search) that ends with two atoms each at |r| ~0.7
    with two true atoms when no pair may be split; split, every atom is recovered. Found
    for the v3 learner, which it runs with; the default start does not fall into it
    (|r| 0.9996 without splits, measured 2026-12-03)."""
    use_v3_learner(monkeypatch)
    true_atoms, x = _planted(18, n_neurons=1500, n_trs=80)
    matched = {}
    for rounds in (0, settings.MAX_RESTART_ROUNDS):
        monkeypatch.setattr(settings, "MAX_RESTART_ROUNDS", rounds)
        learner = DictionaryLearner(n_atoms=8, alpha=0.1, random_state=0).fit(x)
        matched[rounds] = match_atoms(true_atoms, learner.components_).min()
    assert matched[0] < 0.8 and matched[max(matched)] >= 0.95, matched
