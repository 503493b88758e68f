"""The network-prediction test: multivariate surrogates, the split-half ridge against
scikit-learn, the group test's calibration, and the tables the group level reads."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge

from bids_app.encoding import half_split, split_half_prediction
from bids_app.group import phase_randomised_blocks, prediction_table
from bids_app.group.streaming import prediction_arrays
from bids_app.group.subgroups import SubGroups, coupled_networks


def _smooth_atoms(rng, n_atoms, n_frames, mixing=True):
    atoms = rng.normal(size=(n_atoms, n_frames)).cumsum(axis=1)
    atoms -= atoms.mean(axis=1, keepdims=True)
    if mixing:                                         # correlated, like learned atoms
        atoms = rng.normal(size=(n_atoms, n_atoms)) @ atoms
    return atoms / np.linalg.norm(atoms, axis=1, keepdims=True)


def test_blocks_keep_spectra_and_the_atoms_correlations():
    """Each block keeps every atom's amplitude spectrum run by run and, since all atoms of
    a block share the random phases, the atoms' inner products (to 1e-10); the time
    courses differ from the atoms; blocks differ; the seed fixes them."""
    rng = np.random.default_rng(0)
    atoms = _smooth_atoms(rng, 5, 130)
    segments = np.repeat(["a", "b"], [70, 60])
    blocks = phase_randomised_blocks(atoms, segments, 4, seed=3)
    assert blocks.shape == (4, 5, 130)
    for block in blocks:
        np.testing.assert_allclose(block @ block.T, atoms @ atoms.T, atol=1e-10)
        for lab in ("a", "b"):
            cols = segments == lab
            np.testing.assert_allclose(np.abs(np.fft.rfft(block[:, cols], axis=1)),
                                       np.abs(np.fft.rfft(atoms[:, cols], axis=1)),
                                       atol=1e-10)
        assert np.abs(block - atoms).max(axis=1).min() > 0.1
    assert np.abs(blocks[0] - blocks[1]).max() > 0.1
    np.testing.assert_array_equal(blocks, phase_randomised_blocks(atoms, segments, 4, seed=3))


def test_half_split_takes_the_first_half_of_each_run():
    np.testing.assert_array_equal(half_split([4, 3]),
                                  [True, True, False, False, True, False, False])


def _toy_design(rng, lengths, n_atoms):
    """A design like the participant level's: atoms, then per-run confounds and intercepts."""
    n = sum(lengths)
    atoms = rng.normal(size=(n, n_atoms)).cumsum(axis=0)
    confounds = np.zeros((n, 2 * len(lengths)))
    start = 0
    for i, length in enumerate(lengths):
        rows = slice(start, start + length)
        confounds[rows, 2 * i] = 1.0
        confounds[rows, 2 * i + 1] = np.linspace(-1, 1, length)
        start += length
    columns = [f"atom{k + 1:02d}" for k in range(n_atoms)] + [
        f"c{j}" for j in range(confounds.shape[1])]
    return pd.DataFrame(np.column_stack([atoms, confounds]), columns=columns), atoms, confounds


def test_split_half_prediction_matches_scikit_learn_ridge():
    """Against an independent reference on random data: confounds projected out with
    numpy's lstsq, then scikit-learn's Ridge (alpha 1, intercept) on regressors scaled to
    unit norm on the training rows, scored by numpy's corrcoef, averaged over both folds
    (agreement to 1e-9)."""
    rng = np.random.default_rng(1)
    lengths = [60, 50]
    design, atoms, confounds = _toy_design(rng, lengths, 6)
    signals = atoms @ rng.normal(size=(6, 3)) + rng.normal(scale=5.0, size=(110, 3))
    other = rng.normal(size=(110, 6)).cumsum(axis=0)
    got = split_half_prediction(design, 6, np.stack([atoms, other]), signals, lengths)

    def residual(a):
        return a - confounds @ np.linalg.lstsq(confounds, a, rcond=None)[0]

    first = np.r_[np.arange(60) < 30, np.arange(50) < 25]
    y = residual(signals)
    for b, block in enumerate((atoms, other)):
        X = residual(block)
        for n in range(3):
            folds = []
            for train in (first, ~first):
                scale = np.linalg.norm(X[train] - X[train].mean(axis=0), axis=0)
                model = Ridge(alpha=1.0).fit(X[train] / scale, y[train, n])
                pred = model.predict(X[~train] / scale)
                folds.append(np.corrcoef(pred, y[~train, n])[0, 1])
            assert got[b, n] == pytest.approx(np.mean(folds), abs=1e-9)
    assert got[0].min() > 0.3 and got[0].mean() > got[1].mean()   # the atoms made them


def test_group_test_is_calibrated_on_null_and_finds_a_planted_network():
    """Atoms no better than their surrogate blocks: over 400 draws of 13 networks the rate
    of p < 0.05 is 0.05 within the binomial 99.9 % band (+ 0.02 for the null's estimated
    spread); Bonferroni over networks keeps the share of draws with a coupled network near
    its alpha, 0.025. A network the atoms predict (r 0.8 against blocks near 0) is coupled, the
    others are not."""
    rng = np.random.default_rng(4)
    names = [f"n{i}" for i in range(13)]
    p_values, any_coupled = [], []
    for _ in range(400):
        draws = rng.normal(0.0, 0.15, size=(6, 101, 13))
        table = prediction_table(draws[:, 0], draws[:, 1:], names)
        p_values.append(table["p"].to_numpy())
        any_coupled.append(table["coupled"].any())
    p_values = np.concatenate(p_values)
    rate = (p_values < 0.05).mean()
    assert abs(rate - 0.05) < 3.3 * np.sqrt(0.05 * 0.95 / p_values.size) + 0.02, rate
    assert np.mean(any_coupled) < 0.025 + 3.3 * np.sqrt(0.025 * 0.975 / 400) + 0.02
    draws = rng.normal(0.0, 0.15, size=(6, 101, 13))
    draws[:, 0, 2] += 0.8
    table = prediction_table(draws[:, 0], draws[:, 1:], names)
    assert table["coupled"].tolist() == [i == 2 for i in range(13)]
    assert table.loc[2, "p_fwe"] < 1e-4 and table.loc[2, "r"] > 0.6
    assert list(table.columns) == ["network", "r", "r_null_mean", "r_null_sd", "fisher_z",
                                   "fisher_z_null_mean", "fisher_z_null_sd", "z", "p",
                                   "p_fwe", "coupled"]


def test_group_test_averages_fisher_z_and_stays_calibrated_where_blocks_predict_well():
    """The group statistic is the subjects' mean arctanh r (numpy's arctanh, to 1e-12),
    referred to the blocks' means of arctanh r. Draws shaped as the demo's Auditory
    network (a slow planted signal that the surrogate blocks predict fairly well): each
    block's z is shared by the subjects, N(0.65, 0.2), plus N(0, 0.12) per subject, so in
    r the blocks' group means are skewed towards 0 by the bound at 1. On null draws (atoms
    drawn as a block) the test is calibrated (p < 0.05 at 0.05 within the binomial 99.9 %
    band + 0.02); atoms at z 1.45 (r ~ 0.9, the demo's 0.89) are coupled on at least 18 of
    20 draws, where the mean of r (the statistic before) couples them on at most half."""
    from scipy import stats

    from bids_app.group.null import fisher_z, null_z

    rng = np.random.default_rng(11)
    names = [f"n{i}" for i in range(13)]

    def draws(atoms_z=None):
        z = rng.normal(0.65, 0.2, size=(1, 101, 13)) + rng.normal(0, 0.12, (6, 101, 13))
        if atoms_z is not None:
            z[:, 0, 4] = atoms_z + rng.normal(0, 0.12, size=6)
        return np.tanh(z)

    p_values = []
    for _ in range(300):
        r = draws()
        table = prediction_table(r[:, 0], r[:, 1:], names)
        p_values.append(table["p"].to_numpy())
    np.testing.assert_allclose(table["fisher_z"], np.arctanh(r[:, 0]).mean(axis=0),
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(table["r"], r[:, 0].mean(axis=0), rtol=0, atol=1e-12)
    p_values = np.concatenate(p_values)
    rate = (p_values < 0.05).mean()
    assert abs(rate - 0.05) < 3.3 * np.sqrt(0.05 * 0.95 / p_values.size) + 0.02, rate
    coupled_z, coupled_r = 0, 0
    for _ in range(20):
        r = draws(atoms_z=1.45)
        table = prediction_table(r[:, 0], r[:, 1:], names)
        coupled_z += bool(table.loc[4, "coupled"])
        z_r, _, _ = null_z(r[:, 0].mean(axis=0), r[:, 1:].mean(axis=0))
        coupled_r += bool(min(1.0, stats.t.sf(z_r[4], df=99) * 13) < 0.025)
    assert coupled_z >= 18 and coupled_r <= 10, (coupled_z, coupled_r)
    assert np.isfinite(fisher_z(np.array([1.0, -1.0]))).all()


def test_prediction_arrays_read_the_tables_and_check_the_atlas():
    from bids_app.errors import LlmfbnError

    atlas = SimpleNamespace(network_names=["A", "B"], name="toy")
    rng = np.random.default_rng(5)

    def table(atlas_name="toy"):
        out = pd.DataFrame(rng.uniform(-1, 1, size=(4, 2)), columns=["A", "B"],
                           index=["atoms", "null0001", "null0002", "null0003"])
        out.attrs["atlas"] = atlas_name
        return out

    tables = [table(), table()]
    inputs = SimpleNamespace(subjects=["01", "02"], network_predictions=tables)
    atoms, nulls = prediction_arrays(inputs, atlas)
    assert atoms.shape == (2, 2) and nulls.shape == (2, 3, 2)
    np.testing.assert_allclose(nulls[1], tables[1].to_numpy()[1:])
    assert prediction_arrays(SimpleNamespace(subjects=["01"], network_predictions=None),
                             atlas) == (None, None)
    with pytest.raises(LlmfbnError, match="other networks"):
        prediction_arrays(SimpleNamespace(subjects=["01", "02"],
                                          network_predictions=[table(), table("yeo7")]), atlas)


def test_a_predicted_network_gets_a_subgroup_without_an_atom():
    """A network the prediction test couples, with no assigned atom, gets a composite and a
    sub-group ('coupled_by' prediction, n_atoms 0); one with both routes says so."""
    rng = np.random.default_rng(6)
    atoms = _smooth_atoms(rng, 4, 80)
    codes = rng.normal(size=(30, 4))
    responses = codes @ atoms
    responses /= np.linalg.norm(responses - responses.mean(axis=1, keepdims=True), axis=1,
                                keepdims=True)
    projections = responses @ atoms.T
    neurons = pd.DataFrame({"layer": np.repeat([0, 1], 15), "unit": np.tile(np.arange(15), 2)})
    assignments = pd.DataFrame({"atom": [1, 2, 3, 4], "network": ["A", "none", "none", "none"],
                                "sign": ["+", "", "", ""]})
    effects = rng.normal(size=(4, 3))
    assert coupled_networks(assignments, ["B", "A"]) == ["A", "B"]
    groups = SubGroups(projections, atoms, neurons, assignments, effects, ["A", "B", "C"],
                       threshold=0.5, extra_networks=["A", "B"])
    assert groups.networks["network"].tolist() == ["A", "B"]
    assert groups.networks["coupled_by"].tolist() == ["atoms+prediction", "prediction"]
    assert groups.networks["n_atoms"].tolist() == [1, 0]
    composite = effects[:, 1] @ atoms
    expected = [np.corrcoef(r, composite)[0, 1] for r in responses]
    np.testing.assert_allclose(groups.scores["B"], expected, atol=1e-10)
    plain = SubGroups(projections, atoms, neurons, assignments, effects, ["A", "B", "C"],
                      threshold=0.5)
    assert plain.networks["network"].tolist() == ["A"]
    assert plain.networks["coupled_by"].tolist() == ["atoms"]


def test_reader_returns_none_without_a_table_and_rejects_a_damaged_one(tmp_path):
    """No table (participant outputs from before 2026-12-02): None, the group level then
    couples by the atom tests only (tests/test_pipeline.py); a correlation outside [-1, 1]:
    a clear error."""
    from bids_app.bids import readers

    assert readers._network_prediction(tmp_path, "01", "minilm") is None
    path = readers.naming.subject_network_prediction(tmp_path, "01", "minilm")
    path.parent.mkdir(parents=True)
    pd.DataFrame({"block": ["atoms", "null0001"], "A": [0.5, 1.5]}).to_csv(
        path, sep="\t", index=False)
    with pytest.raises(readers.LlmfbnError, match="not what the participant level writes"):
        readers._network_prediction(tmp_path, "01", "minilm")
