"""AN sub-groups: the membership rule against a plain correlation, on random inputs, and
recovery of planted sub-groups; the AN-side metrics' orderings on planted cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bids_app.atoms import response_projections
from bids_app.group import SubGroups, an_metrics, bootstrap_an_metrics, network_effects
from bids_app.recovery import recovery_table


def _unit_rows(x):
    x = x - x.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def _planted(rng, n_groups=3, group_size=30, n_neurons=600, n_frames=200, n_atoms=12,
             overlap=0, shared=0.0, noise=0.6):
    """Responses (n_neurons, n_frames) with planted groups following group signals; atoms
    that span the signals; networks each assigned the atoms of one signal."""
    signals = rng.normal(size=(n_groups, n_frames))
    if shared:
        signals = (1 - shared) * signals + shared * signals.mean(axis=0)
    x = rng.normal(size=(n_neurons, n_frames))
    groups = []
    for g in range(n_groups):
        start = g * (group_size - overlap)
        members = np.arange(start, start + group_size)
        groups.append(members)
        x[members] = signals[g] + noise * rng.normal(size=(group_size, n_frames))
    for g in range(n_groups - 1):          # overlapping ANs follow both signals
        both = np.intersect1d(groups[g], groups[g + 1])
        x[both] = signals[g] + signals[g + 1] + noise * rng.normal(size=(both.size, n_frames))
    atoms = rng.normal(size=(n_atoms, n_frames))
    atoms[:n_groups] = signals + 0.3 * rng.normal(size=(n_groups, n_frames))
    atoms = _unit_rows(atoms)
    names = [f"net{g}" for g in range(n_groups)]
    assignments = pd.DataFrame({"atom": np.arange(1, n_atoms + 1),
                                "network": names + ["none"] * (n_atoms - n_groups),
                                "sign": ["+"] * n_groups + [None] * (n_atoms - n_groups)})
    effects = np.zeros((n_atoms, n_groups))
    effects[np.arange(n_groups), np.arange(n_groups)] = rng.uniform(0.5, 1.5, n_groups)
    neurons = pd.DataFrame({"layer": np.arange(n_neurons) % 4, "unit": np.arange(n_neurons)})
    return _unit_rows(x), atoms, assignments, effects, names, neurons, groups


def test_scores_equal_the_correlation_with_the_composite():
    """Scores from the projections equal np.corrcoef of each response with the composite
    (random inputs, composites of several atoms with signed weights; abs 1e-6)."""
    rng = np.random.default_rng(0)
    x = _unit_rows(rng.normal(size=(300, 80)))
    atoms = _unit_rows(rng.normal(size=(7, 80)))
    assignments = pd.DataFrame({"atom": range(1, 8), "network": ["A", "B", "A", "none",
                                                                  "B", "A", "none"],
                                "sign": ["+", "-", "+", None, "+", "-", None]})
    effects = rng.normal(size=(7, 2))
    groups = SubGroups(response_projections(x, atoms), atoms,
                       pd.DataFrame({"layer": 0, "unit": range(300)}), assignments, effects,
                       ["A", "B"], threshold=0.1)
    for net, column, index in (("A", 0, [0, 2, 5]), ("B", 1, [1, 4])):
        composite = effects[index, column] @ atoms[index]
        reference = [np.corrcoef(row, composite)[0, 1] for row in x]
        np.testing.assert_allclose(groups.scores[net], reference, atol=1e-6)
        expected = np.flatnonzero(np.asarray(reference) >= 0.1)
        assert set(groups.members.loc[groups.members["network"] == net, "neuron"]) == \
            set(expected)


def test_fir_delays_take_the_best_delay():
    rng = np.random.default_rng(1)
    x = _unit_rows(rng.normal(size=(40, 60)))
    atoms = _unit_rows(x[:2] + 0.1 * rng.normal(size=(2, 60)))
    neurons = pd.DataFrame({"layer": np.repeat([0, 1], 20), "unit": np.repeat(range(10), 4),
                            "delay_trs": np.tile([1, 2, 3, 4], 10)})
    assignments = pd.DataFrame({"atom": [1, 2], "network": ["A", "none"], "sign": ["+", None]})
    groups = SubGroups(response_projections(x, atoms), atoms, neurons, assignments,
                       np.array([[1.0], [0.0]]), ["A"], threshold=0.5)
    assert len(groups.scores) == 10
    reference = [max(np.corrcoef(x[4 * i + d], atoms[0])[0, 1] for d in range(4))
                 for i in range(10)]
    np.testing.assert_allclose(groups.scores["A"], reference, atol=1e-6)
    assert 0 in set(groups.members["neuron"])          # row 0 built the atom


def test_planted_subgroups_are_recovered():
    """Planted groups of 30 ANs among 600: precision and recall >= 0.9 at threshold 0.6."""
    rng = np.random.default_rng(2)
    x, atoms, assignments, effects, names, neurons, groups = _planted(rng)
    found = SubGroups(response_projections(x, atoms), atoms, neurons, assignments, effects,
                      names)
    truth = {"networks": [{"network": n, "neurons": g.tolist(),
                           "functional_truth": g.tolist()} for n, g in zip(names, groups)]}
    table = recovery_table(truth, found.members, found.scores)
    assert (table["precision"] >= 0.9).all() and (table["recall"] >= 0.9).all(), table
    assert (table["auc"] >= 0.99).all()
    # a null: responses unrelated to the atoms give (almost) no members
    null = _unit_rows(rng.normal(size=x.shape))
    empty = SubGroups(response_projections(null, atoms), atoms, neurons, assignments, effects,
                      names)
    assert len(empty.members) <= 2


def _metrics(rng, **kwargs):
    x, atoms, assignments, effects, names, neurons, _ = _planted(rng, **kwargs)
    found = SubGroups(response_projections(x, atoms), atoms, neurons, assignments, effects,
                      names, threshold=0.5)
    return an_metrics(response_projections(x, atoms), atoms, found.scores[names], found.sets,
                      found.neuron_of_row)


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_more_and_more_separate_subgroups_score_higher_diversity(seed):
    rng = np.random.default_rng(seed)
    two = _metrics(rng, n_groups=2)["an_diversity"]
    four = _metrics(rng, n_groups=4)["an_diversity"]
    four_alike = _metrics(rng, n_groups=4, shared=0.8)["an_diversity"]
    assert four > two > 1.0 and four > four_alike


@pytest.mark.parametrize("seed", [6, 7, 8])
def test_overlapping_subgroups_score_lower_specialisation(seed):
    rng = np.random.default_rng(seed)
    separate = _metrics(rng, n_groups=3)
    overlapping = _metrics(rng, n_groups=3, overlap=15)
    assert separate["an_specialisation"] > overlapping["an_specialisation"]
    assert overlapping["an_overlap"] > separate["an_overlap"]


def test_bootstrap_intervals_cover_the_estimate():
    rng = np.random.default_rng(9)
    x, atoms, assignments, effects, names, neurons, _ = _planted(rng)
    subject_effects = effects[None] * rng.uniform(0.5, 1.5, (8, 1, 1))
    proj = response_projections(x, atoms)
    ci = bootstrap_an_metrics(proj, atoms, neurons, assignments, subject_effects, names,
                              0.6, n_boot=40, seed=0)
    point = SubGroups(proj, atoms, neurons, assignments, subject_effects.mean(0), names)
    value = an_metrics(proj, atoms, point.scores[names], point.sets, point.neuron_of_row)
    for key in ("an_diversity", "an_specialisation"):
        low, high = ci[key]
        assert low - 1e-9 <= value[key] <= high + 1e-9


def test_network_effects_are_means_over_network_voxels():
    rng = np.random.default_rng(10)
    effects = rng.normal(size=(3, 4, 50))
    masks = rng.random((2, 50)) > 0.5
    out = network_effects(effects, masks)
    np.testing.assert_allclose(out[1, 2, 0], effects[1, 2][masks[0]].mean())
