"""The dictionary learner's accelerations (in-span FastICA seeding, the default since
torch-fista-bcd-v4; Anderson-accelerated batch epochs, v4's steps, an option since v5
(tests/test_atoms_steps.py has v5's searched steps); FastICA on the leading components, an
option): FastICA against scikit-learn's and planted atoms, Anderson steps against an
independent least-squares formula, a linear fixed-point problem, and the plain epochs
(their guard against bad steps: tests/test_atoms_steps.py)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from bids_app.atoms import DictionaryLearner, match_atoms, settings
from bids_app.atoms.anderson import Anderson, anderson_mix
from bids_app.atoms.seeding import ica_atoms, seed_atoms
from tests.planted import planted_rows, unit_rows, use_v3_learner


def accelerate(monkeypatch):
    """The accelerated learner with FastICA on the leading components: FastICA or
    k-means++ seeding (the better start), AA(3), two-epoch stopping rule."""
    monkeypatch.setattr(settings, "SEEDING", "auto")
    monkeypatch.setattr(settings, "STEPS", "anderson")
    monkeypatch.setattr(settings, "ANDERSON_MEMORY", 3)
    monkeypatch.setattr(settings, "STOP_WINDOW", 2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ica_atoms_equal_sklearn_fastica(seed):
    """Planted sparse mixtures, whitened independently with numpy (each eigenvector's
    largest entry positive, as ours): scikit-learn's ``FastICA(whiten=False,
    fun="logcosh")`` from the same start (the first standard-normal draw of the seed's
    generator) gives the same atoms, mapped back through the whitening (|r| >= 0.9999
    atom by atom: our products are float32)."""
    _, x = planted_rows(seed, n_neurons=3000, n_trs=120)
    ours = ica_atoms(torch.from_numpy(x), 8, np.random.default_rng(seed), tol=1e-7)
    assert ours.shape == (8, 120) and ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)

    centred = x.astype(np.float64) - x.astype(np.float64).mean(0)
    evals, evecs = np.linalg.eigh(centred.T @ centred / len(x))
    reference = _sklearn_fastica(centred, evals[::-1][:8], evecs[:, ::-1][:, :8], seed)
    np.testing.assert_allclose(np.abs(np.sum(ours * reference, axis=1)), 1.0, atol=1e-4)


def _sklearn_fastica(centred, evals, evecs, seed):
    """scikit-learn's ``FastICA(whiten=False, fun="logcosh")`` of ``centred`` rows whitened
    on the axes ``evecs`` (n_trs, k; each signed so that its largest entry is positive, as
    ours) with variances ``evals``, from the seed's first standard-normal draw; its mixing
    directions mapped back through the whitening, unit-norm rows (k, n_trs)."""
    from sklearn.decomposition import FastICA

    k = evecs.shape[1]
    evecs = evecs * np.sign(evecs[np.abs(evecs).argmax(0), np.arange(k)])
    z = centred @ (evecs / np.sqrt(evals))
    start = np.random.default_rng(seed).standard_normal((k, k))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ica = FastICA(k, whiten=False, fun="logcosh", w_init=start, max_iter=1000,
                      tol=1e-7).fit(z)
    reference = ica.components_ @ (evecs * np.sqrt(evals)).T
    return reference / np.linalg.norm(reference, axis=1, keepdims=True)


@pytest.mark.parametrize("seed", [0, 1])
def test_span_ica_atoms_equal_sklearn_fastica_on_the_span(seed):
    """``span``: the rows are whitened on the principal axes of their projection on the
    span of given atoms (numpy: QR basis, eigen-decomposition of the projections'
    covariance, eigenvectors signed in TR space), and scikit-learn's FastICA from the same
    start reaches the same atoms (each of ours matches one of its at |r| >= 0.9999, and
    they are all different: on seed 1 ours, with float32 products, reach them in another
    order); every atom lies in that span (least-squares residual < 1e-5)."""
    _, x = planted_rows(seed, n_neurons=3000, n_trs=120)
    span = x[np.random.default_rng(50 + seed).choice(len(x), 8, replace=False)]
    ours = ica_atoms(torch.from_numpy(x), 8, np.random.default_rng(seed), tol=1e-7,
                     span=span)
    assert ours.shape == (8, 120)
    coef = np.linalg.lstsq(span.T.astype(np.float64), ours.T.astype(np.float64),
                           rcond=None)[0]
    assert np.abs(span.T @ coef - ours.T).max() < 1e-5

    centred = x.astype(np.float64) - x.astype(np.float64).mean(0)
    basis = np.linalg.qr(span.T.astype(np.float64))[0]
    evals, rotation = np.linalg.eigh((centred @ basis).T @ (centred @ basis) / len(x))
    reference = _sklearn_fastica(centred, evals[::-1], basis @ rotation[:, ::-1], seed)
    similarity = np.abs(ours @ reference.T)
    np.testing.assert_allclose(similarity.max(axis=1), 1.0, atol=1e-4)
    assert len(set(similarity.argmax(axis=1))) == 8


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_span_ica_keeps_a_pattern_few_rows_hold(seed):
    """3,000 rows mixing 1-2 of 8 planted atoms, and 12 rows (0.4 %) holding a ninth
    pattern. FastICA on the leading 8 components has no atom for it (best |r| <= 0.3:
    its variance is not among them); within the span of 7 planted atoms and one of those
    rare rows (as k-means++ picks real rows) it keeps it (|r| >= 0.7; 0.73-0.89 measured)
    and the 7 planted atoms (|r| >= 0.99). That is why the demo's 32-AN Auditory group keeps
    an atom of its own with ``SEEDING = "span-ica"`` and lost it with ``"ica"``."""
    atoms, x = planted_rows(seed, n_neurons=3000, n_trs=120)
    rng = np.random.default_rng(100 + seed)
    rare = unit_rows(rng.standard_normal((1, 120)))[0]
    rare_rows = unit_rows(rare + 0.05 * rng.standard_normal((12, 120))).astype(np.float32)
    data = torch.from_numpy(np.vstack([x, rare_rows]))
    top = ica_atoms(data, 8, np.random.default_rng(seed))
    within = ica_atoms(data, 8, np.random.default_rng(seed),
                       span=np.vstack([unit_rows(atoms[:7]), rare_rows[0]]))
    assert np.abs(top @ rare).max() <= 0.3
    assert np.abs(within @ rare).max() >= 0.7
    assert np.abs(within @ unit_rows(atoms[:7]).T).max(0).min() >= 0.99


def test_span_ica_seeding_falls_back_on_a_degenerate_span(monkeypatch):
    """A span with a direction the rows do not vary in (here the constant time course:
    rows are centred) cannot be whitened, nor can rows with fewer TRs than atoms:
    ``ica_atoms`` returns None, and ``seed_atoms`` then keeps k-means++'s atoms, which are
    rows of the data."""
    from bids_app.atoms.rows import Rows

    _, x = planted_rows(0, n_neurons=1000, n_trs=60)
    degenerate = np.vstack([x[:7], np.full(60, 60 ** -0.5, dtype=np.float32)])
    assert ica_atoms(torch.from_numpy(x), 8, np.random.default_rng(0),
                     span=degenerate) is None
    monkeypatch.setattr(settings, "SEEDING", "span-ica")
    short = unit_rows(np.random.default_rng(1).standard_normal((500, 6))).astype(np.float32)
    atoms, _, _ = seed_atoms(Rows(short, None, torch.device("cpu"), True, 4096), 8,
                             np.random.default_rng(0))
    assert np.abs(atoms @ short.T).max(1) == pytest.approx(np.ones(8), abs=1e-5)


def test_accelerated_fit_recovers_planted_atoms(monkeypatch):
    """Accelerated (FastICA may start in one of its local optima on such data, e.g. a
    rotated pair), the fit recovers all 8 planted atoms (|r| >= 0.97) on data seeds 0-5."""
    accelerate(monkeypatch)
    for seed in range(6):
        atoms, x = planted_rows(seed)
        learner = DictionaryLearner(n_atoms=8, alpha=0.1, random_state=seed).fit(x)
        assert match_atoms(atoms, learner.components_).min() >= 0.97, seed


def test_ica_atoms_fall_back_to_kmeans_plus_plus(monkeypatch):
    """No FastICA when the rows cannot carry n_atoms components: fewer TRs than atoms, too
    few rows, or a rank-deficient sample; seed_atoms then picks rows (k-means++)."""
    from bids_app.atoms.rows import Rows

    rng = np.random.default_rng(0)
    assert ica_atoms(torch.from_numpy(unit_rows(rng.standard_normal((500, 8)))), 8, rng) \
        is None
    assert ica_atoms(torch.from_numpy(unit_rows(rng.standard_normal((15, 40)))), 8, rng) \
        is None
    low_rank = unit_rows(rng.standard_normal((500, 5)) @ rng.standard_normal((5, 40)))
    assert ica_atoms(torch.from_numpy(low_rank), 8, rng) is None
    x = low_rank.astype(np.float32)
    monkeypatch.setattr(settings, "SEEDING", "auto")
    atoms, _, _ = seed_atoms(Rows(x, None, torch.device("cpu"), True, 4096), 8,
                             np.random.default_rng(0))
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert np.abs(atoms @ unit.T).max(1) == pytest.approx(np.ones(8), abs=1e-5)


def test_anderson_mix_equals_least_squares_formula():
    """The type-II combination against numpy's lstsq of the residual differences."""
    rng = np.random.default_rng(3)
    points = [rng.standard_normal((5, 7)) for _ in range(4)]
    updates = [rng.standard_normal((5, 7)) for _ in range(4)]
    resid = np.stack([(u - d).ravel() for d, u in zip(points, updates)], 1)
    upd = np.stack([u.ravel() for u in updates], 1)
    gamma = np.linalg.lstsq(np.diff(resid, axis=1), resid[:, -1], rcond=None)[0]
    expected = (upd[:, -1] - np.diff(upd, axis=1) @ gamma).reshape(5, 7)
    found = anderson_mix([torch.from_numpy(p) for p in points],
                         [torch.from_numpy(u) for u in updates])
    np.testing.assert_allclose(found.numpy(), expected, rtol=1e-6, atol=1e-8)


def test_anderson_mix_accelerates_a_slow_linear_fixed_point():
    """x <- M x + b with spectral radius 0.98: plain steps need 834 to reach 1e-8, AA(3)
    (least-squares mixing of the last 4 pairs) fewer than a quarter of that (135)."""
    rng = np.random.default_rng(0)
    q = np.linalg.qr(rng.standard_normal((30, 30)))[0]
    m = q @ np.diag(np.linspace(0.1, 0.98, 30)) @ q.T
    b = rng.standard_normal(30)
    solution = np.linalg.solve(np.eye(30) - m, b)

    def steps(memory):
        x, points, updates = np.zeros(30), [], []
        for n in range(1, 5000):
            u = m @ x + b
            if np.linalg.norm(u - solution) < 1e-8 * np.linalg.norm(solution):
                return n
            points, updates = (points + [x])[-(memory + 1):], (updates + [u])[-(memory + 1):]
            x = u if len(points) < 2 else anderson_mix(
                [torch.from_numpy(p) for p in points],
                [torch.from_numpy(v) for v in updates]).numpy()
        return n

    plain, accelerated = steps(0), steps(3)
    assert plain > 500 and accelerated < plain / 4, (plain, accelerated)


def test_anderson_memory_zero_is_plain_and_steps_are_unit_rows():
    rng = np.random.default_rng(1)
    d, u = torch.from_numpy(rng.standard_normal((4, 6))), torch.from_numpy(
        rng.standard_normal((4, 6)))
    same, extrapolated = Anderson(0).step(d, u)
    assert not extrapolated and torch.equal(same, u)
    anderson = Anderson(3)
    first, extrapolated = anderson.step(d, u)
    assert not extrapolated and torch.equal(first, u)
    second, extrapolated = anderson.step(u, u + 0.1 * torch.from_numpy(
        rng.standard_normal((4, 6))))
    assert extrapolated
    np.testing.assert_allclose(second.norm(dim=1).numpy(), 1.0, atol=1e-12)


def test_accelerated_fit_converges_in_fewer_epochs(monkeypatch):
    """Sparse mixtures of 16 smooth sources in heavy noise (sd 1 per TR, as AN responses
    are mostly unexplained): the default learner (in-span FastICA seeding, searched
    steps) and the one seeded by FastICA on the leading components with AA(3) stop in
    fewer epochs than the v3 learner (k-means++ seeding, plain steps, one-epoch stopping
    rule: 18 and 8 epochs for seeds 0 and 1, against 5 and 6 for the latter), at an
    objective no higher (1e-5 relative)."""
    from bids_app.synthetic import source_mixtures

    x, _ = source_mixtures(4000, 150, n_sources=16, noise=1.0, seed=1)

    def fits():
        return [DictionaryLearner(n_atoms=16, alpha=0.1, random_state=seed).fit(x)
                for seed in (0, 1)]

    with monkeypatch.context() as patch:
        use_v3_learner(patch)
        slow = fits()
    default = fits()
    accelerate(monkeypatch)
    fast = fits()
    for faster in (default, fast):
        assert all(f.converged_ and p.converged_ for f, p in zip(faster, slow))
        assert sum(f.n_iter_ for f in faster) < sum(p.n_iter_ for p in slow)
        for f, p in zip(faster, slow):
            assert f.objective_ <= p.objective_ * (1 + 1e-5), (f.objective_, p.objective_)


def test_convergence_figure_marks_rejected_epochs():
    """The group report's convergence plot shows rejected extrapolations apart (its alt
    text says so), and says nothing of them when there are none."""
    from bids_app.report.dictionary import convergence_figure

    history = [dict(epoch=1, phase="online", objective=10.0),
               dict(epoch=2, phase="batch", objective=9.0),
               dict(epoch=3, phase="batch", objective=9.5, accepted=False),
               dict(epoch=4, phase="batch", objective=8.0)]
    assert "rejected for raising it" in convergence_figure(history)
    plain = [h for h in history if h.get("accepted", True)]
    assert "rejected" not in convergence_figure(plain).split('src="')[0]
