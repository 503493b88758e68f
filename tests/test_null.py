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
