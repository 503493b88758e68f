"""The coupling null: surrogates keep the spectrum; p values are calibrated on null maps."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from bids_app.group import network_effects, null_table, phase_randomised
from bids_app.group.null import null_p_values


def test_surrogates_keep_each_runs_power_spectrum():
    """Each surrogate's amplitude spectrum, run by run, is its atom's up to one common scale
    (the unit norm); the time course differs; the same seed gives the same surrogates."""
    rng = np.random.default_rng(0)
    atoms = rng.normal(size=(3, 120)).cumsum(axis=1)
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    segments = np.repeat(["a", "b"], [70, 50])
    out = phase_randomised(atoms, segments, 6, seed=1)
    assert out.shape == (6, 120)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-12)
    for s in range(6):
        source = atoms[s % 3]
        ratio = np.concatenate([
            np.abs(np.fft.rfft(out[s, segments == lab]))
            / np.maximum(np.abs(np.fft.rfft(source[segments == lab])), 1e-12)
            for lab in ("a", "b")])
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-6)
        assert abs(np.corrcoef(out[s], source)[0, 1]) < 0.9
    np.testing.assert_array_equal(out, phase_randomised(atoms, segments, 6, seed=1))


def test_null_p_values_are_calibrated_for_smooth_null_maps():
    """Smooth random effect maps (no coupling): the fraction of p < 0.05 per sign is near
    0.05 (binomial 99.9 % band over 13 networks x 400 maps, + 0.02 for the null's estimated
    spread), and a map with a planted network effect gets a tiny p."""
    rng = np.random.default_rng(2)
    shape = (18, 18, 18)

    def smooth_maps(n):
        return np.stack([gaussian_filter(rng.normal(size=shape), 2.5).ravel()
                         for _ in range(n)])

    networks = smooth_maps(13) > 0.05                       # blobby network masks

    def statistic(maps):
        return network_effects(maps[None], networks)[0]

    null, atoms = statistic(smooth_maps(32)), statistic(smooth_maps(400))
    _, p = null_table(atoms, null)
    rate = (p < 0.05).mean()
    n = p.size
    assert abs(rate - 0.05) < 3.3 * np.sqrt(0.05 * 0.95 / n) + 0.02, rate
    planted = smooth_maps(1) + 0.3 * networks[:1].astype(float)
    _, p_planted = null_table(statistic(planted), null)
    assert p_planted[0, 0, 0] < 1e-4


def test_null_p_values_two_signs():
    null = np.random.default_rng(3).normal(size=(50, 2))
    p = null_p_values(np.array([[5.0, -5.0]]), null)
    assert p[0, 0, 0] < 1e-4 and p[1, 0, 1] < 1e-4
    assert p[1, 0, 0] > 0.99 and p[0, 0, 1] > 0.99


def test_standardised_network_effects_have_the_same_null_spread():
    """Under noise, an OLS effect's spread grows as the confounds explain more of the
    regressor (1 / its residual norm); the coupling null's standardised statistic (effect x
    residual norm, the unit-noise t numerator) has the noise's spread for every regressor.
    Without it, an atom the drifts nearly span beats its phase-randomised surrogates by
    chance (measured on a null dataset: |z| up to 7; standardised 3.2 over 832 tests)."""
    import pandas as pd

    from bids_app.encoding import network_effects_of

    rng = np.random.default_rng(5)
    n = 300
    t = np.arange(n)
    confounds = np.column_stack([np.cos(np.pi * (2 * t + 1) * (k + 1) / (2 * n))
                                 for k in range(4)] + [np.ones(n)])
    mostly_drift = confounds[:, 0] + 0.05 * rng.standard_normal(n)
    regressors = np.column_stack([mostly_drift, rng.standard_normal(n)])
    design = pd.DataFrame(np.column_stack([regressors, confounds]))
    noise = rng.standard_normal((n, 4000)) * 2.0                  # 4000 null "networks"
    raw = network_effects_of(design, 2, regressors, noise)
    standard = network_effects_of(design, 2, regressors, noise, standardised=True)
    assert raw[0].std() > 5 * raw[1].std()                     # the drift-like one: wild
    np.testing.assert_allclose(standard.std(axis=1), 2.0, rtol=0.06)
    # the same numbers from one-regressor OLS fits: effect / sqrt((X'X)^-1_00)
    for k in range(2):
        x = np.column_stack([regressors[:, k], confounds])
        inverse = np.linalg.inv(x.T @ x)
        beta = (inverse @ x.T @ noise[:, :50])[0]
        np.testing.assert_allclose(standard[k, :50], beta / np.sqrt(inverse[0, 0]),
                                   rtol=1e-8, atol=1e-10)
    # the joint GLM (both regressors in one model) standardises by its own (X'X)^-1
    joint = network_effects_of(design, 2, regressors, noise, glm="joint", standardised=True)
    np.testing.assert_allclose(joint.std(axis=1), 2.0, rtol=0.06)


def test_partial_network_effects_equal_refits_with_the_surrogate_in_its_atoms_place():
    """The coupling null's statistics equal explicit OLS refits: atom k's standardised
    effect in the model with every regressor (effect / sqrt((X'X)^-1_kk)), and surrogate
    s's in the same model with the surrogate in place of atom s mod K; collinear atoms,
    drifts, random signals; rtol 1e-8. Under noise both have the noise's spread, for a
    nearly collinear atom too."""
    import pandas as pd

    from bids_app.encoding import partial_network_effects

    rng = np.random.default_rng(8)
    n, k = 240, 4
    t = np.arange(n)
    confounds = np.column_stack([np.cos(np.pi * (2 * t + 1) * (j + 1) / (2 * n))
                                 for j in range(3)] + [np.ones(n)])
    base = rng.standard_normal((n, 3))
    atoms = np.column_stack([base @ rng.standard_normal(3) + 0.3 * rng.standard_normal(n)
                             for _ in range(k)])
    atoms[:, 3] = atoms[:, 0] + 0.05 * rng.standard_normal(n)       # nearly collinear
    design = pd.DataFrame(np.column_stack([atoms, confounds]))
    surrogates = rng.standard_normal((n, 10))
    signals = rng.standard_normal((n, 3)) + atoms[:, :2] @ rng.standard_normal((2, 3))
    got_atoms, got_surrogates = partial_network_effects(design, k, surrogates, signals)

    def standardised(x, column):
        inverse = np.linalg.inv(x.T @ x)
        return (inverse @ x.T @ signals)[column] / np.sqrt(inverse[column, column])

    x = design.to_numpy()
    for j in range(k):
        np.testing.assert_allclose(got_atoms[j], standardised(x, j), rtol=1e-8, atol=1e-10)
    for s in range(surrogates.shape[1]):
        swapped = x.copy()
        swapped[:, s % k] = surrogates[:, s]
        np.testing.assert_allclose(got_surrogates[s], standardised(swapped, s % k),
                                   rtol=1e-8, atol=1e-10)
    noise = 2.0 * rng.standard_normal((n, 4000))
    null_atoms, null_surrogates = partial_network_effects(design, k, surrogates, noise)
    np.testing.assert_allclose(null_atoms.std(axis=1), 2.0, rtol=0.06)
    np.testing.assert_allclose(null_surrogates.std(axis=1), 2.0, rtol=0.06)


def test_two_statistics_combine_by_bonferroni():
    """With the table's two statistics (alone, then given the other atoms), p_null is
    min(1, 2 min(p_alone, p_given)) per atom, network and sign; one statistic is left as it
    is; columns that are not whole blocks of networks are an error. The coupling table gets
    both statistics' columns."""
    import pandas as pd
    import pytest

    from bids_app.group.coupling import add_null
    from bids_app.group.null import combined_null_p

    rng = np.random.default_rng(9)
    n_atoms, n_networks = 3, 2
    null = rng.normal(size=(500, 2 * n_networks))
    atoms = rng.normal(size=(n_atoms, 2 * n_networks))
    atoms[0, 0], atoms[1, 3] = 6.0, -6.0          # atom 1 alone, atom 2 given the others
    alone = null_p_values(atoms[:, :n_networks], null[:, :n_networks])
    given = null_p_values(atoms[:, n_networks:], null[:, n_networks:])
    got = combined_null_p(atoms, null, n_networks)
    np.testing.assert_allclose(got, np.minimum(1.0, 2 * np.minimum(alone, given)))
    assert got[0, 0, 0] < 1e-4 and got[1, 1, 1] < 1e-4
    np.testing.assert_allclose(combined_null_p(atoms[:, :n_networks], null[:, :n_networks]),
                               alone)
    with pytest.raises(ValueError, match="blocks"):
        combined_null_p(atoms[:, :3], null[:, :3], n_networks)
    statistic, p = null_table(atoms, null, n_networks)
    coupling = pd.DataFrame({"atom": np.repeat(np.arange(1, n_atoms + 1), 2 * n_networks),
                             "network": np.tile(np.repeat(["A", "B"], 2), n_atoms),
                             "sign": np.tile(["+", "-"], n_atoms * n_networks)})
    table = add_null(coupling, statistic, p)
    np.testing.assert_allclose(table["network_effect"], np.repeat(atoms[:, :2].ravel(), 2))
    np.testing.assert_allclose(table["network_effect_given"],
                               np.repeat(atoms[:, 2:].ravel(), 2))
    np.testing.assert_allclose(table["p_null"], np.moveaxis(p, 0, -1).ravel())


def test_group_reads_both_statistics_or_warns_on_old_tables(caplog):
    """The group level stacks the tables' two statistics (alone, then given the other atoms)
    per network; when a subject's table is from before the second one, every subject is
    read with the first only, and the log says so."""
    import logging
    from types import SimpleNamespace

    import pandas as pd

    from bids_app.group.streaming import null_network_arrays

    atlas = SimpleNamespace(network_names=["A", "B"], name="toy")
    rng = np.random.default_rng(2)

    def table(given: bool):
        columns = ["A", "B"] + (["A_given", "B_given"] if given else [])
        out = pd.DataFrame(rng.normal(size=(5, len(columns))), columns=columns)
        out.insert(0, "regressor", ["atom01", "atom02", "null0001", "null0002", "null0003"])
        return out

    both = [table(True), table(True)]
    inputs = SimpleNamespace(subjects=["01", "02"], network_effects=both, n_atoms=2)
    atoms, nulls = null_network_arrays(inputs, atlas)
    assert atoms.shape == (2, 2, 4) and nulls.shape == (2, 3, 4)
    np.testing.assert_allclose(atoms[1], both[1][["A", "B", "A_given", "B_given"]].to_numpy()[:2])
    mixed = SimpleNamespace(subjects=["01", "02"], network_effects=[table(True), table(False)],
                            n_atoms=2)
    with caplog.at_level(logging.WARNING, logger="llmfbn"):
        atoms, nulls = null_network_arrays(mixed, atlas)
    assert atoms.shape == (2, 2, 2) and nulls.shape == (2, 3, 2)
    assert "_given" in caplog.text
