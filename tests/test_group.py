"""Tests for bids_app.group: group maps, FBN coupling, AN sub-groups, metrics."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bids_app.atlases import FBNAtlas, load_fbn_atlas
from bids_app.errors import LlmfbnError
from bids_app.group import (
    assign_atoms,
    coupling_table,
    fdr_mask,
    one_sample_t,
    organisation_metrics,
    subject_assignments,
)

SHAPE = (16, 16, 16)
AFFINE = np.array([[3.0, 0, 0, -24], [0, 3.0, 0, -24], [0, 0, 3.0, -24], [0, 0, 0, 1]])
N_ATOMS = 6


@pytest.fixture(scope="module")
def planted_atlas(tmp_path_factory):
    """4 networks from a user 3-D label file (labels 1 and 2 both named 'A')."""
    folder = tmp_path_factory.mktemp("atlas")
    labels = np.zeros(SHAPE, dtype=np.int16)
    labels[2:5, 3:13, 3:13] = 1
    labels[5:7, 3:13, 3:13] = 2
    labels[7:10, 3:13, 3:13] = 3
    labels[10:12, 3:13, 3:13] = 4
    labels[12:14, 3:13, 3:13] = 5
    nib.save(nib.Nifti1Image(labels, AFFINE), folder / "nets.nii.gz")
    pd.DataFrame({"index": [1, 2, 3, 4, 5], "name": ["A", "A", "B", "C", "D"]}).to_csv(
        folder / "nets.tsv", sep="\t", index=False)
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[1:15, 1:15, 1:15] = 1
    atlas = load_fbn_atlas(folder / "nets.nii.gz", nib.Nifti1Image(mask, AFFINE))
    assert atlas.network_names == ("A", "B", "C", "D")
    return atlas


def _planted_effects(atlas, seed, n_subjects=16, amplitude=1.2, planted=True):
    rng = np.random.default_rng(seed)
    effects = rng.normal(size=(n_subjects, N_ATOMS, atlas.n_voxels))
    if planted:
        effects[:, 0, atlas.masks[0]] += amplitude  # atom 1: network A, positive
        effects[:, 1, atlas.masks[1]] -= amplitude  # atom 2: network B, negative
    return effects


def _group_assignment(effects, atlas):
    t, p = one_sample_t(effects)
    coupling = coupling_table(t, fdr_mask(p, 0.05), atlas)
    return coupling, assign_atoms(coupling, N_ATOMS, min_iou=0.1, alpha=0.05)


# --------------------------------------------------------------------------- statistics


def test_one_sample_t_matches_scipy():
    rng = np.random.default_rng(1)
    effects = rng.normal(0.3, 1.0, size=(12, 5, 300))
    t, p = one_sample_t(effects)
    ref = stats.ttest_1samp(effects, 0.0, axis=0)
    assert t.shape == p.shape == (5, 300)
    np.testing.assert_allclose(t, ref.statistic, rtol=0, atol=1e-10)
    np.testing.assert_allclose(p, ref.pvalue, rtol=0, atol=1e-10)


def test_one_sample_t_zero_variance():
    rng = np.random.default_rng(2)
    effects = rng.normal(size=(8, 3, 50))
    effects[:, 0, :10] = 0.0   # all zero
    effects[:, 1, :5] = 2.5    # constant, non-zero (scipy would give an infinite t)
    t, p = one_sample_t(effects)
    assert np.all(t[0, :10] == 0) and np.all(p[0, :10] == 1)
    assert np.all(t[1, :5] == 0) and np.all(p[1, :5] == 1)
    assert np.all(np.isfinite(t)) and np.all((p >= 0) & (p <= 1))
    np.testing.assert_allclose(t[2], stats.ttest_1samp(effects[:, 2], 0.0).statistic,
                               atol=1e-10)
    with pytest.raises(LlmfbnError, match="two subjects"):
        one_sample_t(effects[:1])


def _bh_reference(p_row, q):
    """Textbook BH step-up: reject the k smallest p, k = max{i : p_(i) <= i q / m}."""
    m = p_row.size
    order = np.argsort(p_row, kind="stable")
    below = p_row[order] <= q * np.arange(1, m + 1) / m
    reject = np.zeros(m, dtype=bool)
    if below.any():
        k = np.flatnonzero(below).max() + 1
        reject[order[:k]] = True
    return reject


@pytest.mark.parametrize("q", [0.01, 0.05, 0.2])
def test_fdr_mask_matches_hand_bh(q):
    rng = np.random.default_rng(3)
    p = rng.uniform(size=(4, 500))
    p[0, :40] = rng.uniform(0, 1e-4, size=40)  # planted signal
    p[2, :5] = rng.uniform(0, 1e-3, size=5)
    p[3, :] = rng.uniform(0.5, 1.0, size=500)  # nothing to find
    mask = fdr_mask(p, q)
    for row in range(4):
        np.testing.assert_array_equal(mask[row], _bh_reference(p[row], q))
    assert mask[0, :40].all() and not mask[3].any()
    with pytest.raises(LlmfbnError):
        fdr_mask(p, 1.5)


# --------------------------------------------------------------------------- coupling


def _exact_hypergeom_sf(x, n_total, n_network, n_atom):
    """P(X >= x) for X ~ Hypergeom(n_total, n_network, n_atom), with exact fractions."""
    total = math.comb(n_total, n_atom)
    tail = sum(math.comb(n_network, k) * math.comb(n_total - n_network, n_atom - k)
               for k in range(x, min(n_network, n_atom) + 1))
    return float(Fraction(tail, total))


def test_coupling_table_counts_against_sets():
    rng = np.random.default_rng(4)
    n_voxels = 200
    masks = rng.uniform(size=(3, n_voxels)) < [[0.2], [0.3], [0.1]]
    atlas = FBNAtlas("toy", ("X", "Y", "Z"), masks, "test")
    t = rng.normal(size=(2, n_voxels))
    significant = rng.uniform(size=(2, n_voxels)) < 0.3
    significant[1] = False  # an empty atom map
    table = coupling_table(t, significant, atlas)
    assert len(table) == 2 * 3 * 2
    assert list(table.columns[:3]) == ["atom", "network", "sign"]
    for row in table.itertuples():
        sign = 1 if row.sign == "+" else -1
        atom = {v for v in range(n_voxels)
                if significant[row.atom - 1, v] and np.sign(t[row.atom - 1, v]) == sign}
        net = set(np.flatnonzero(masks[atlas.network_names.index(row.network)]))
        assert row.n_atom_voxels == len(atom) and row.n_network_voxels == len(net)
        assert row.n_overlap == len(atom & net)
        if atom:
            assert row.iou == pytest.approx(len(atom & net) / len(atom | net), abs=1e-12)
            assert row.overlap_rate == pytest.approx(len(atom & net) / len(atom), abs=1e-12)
            assert row.p_overlap == pytest.approx(
                _exact_hypergeom_sf(len(atom & net), n_voxels, len(net), len(atom)),
                rel=1e-9, abs=1e-15)
        else:
            assert row.p_overlap == 1.0 and row.overlap_rate == 0.0


def test_planted_truth_assignment(planted_atlas):
    atlas = planted_atlas
    coupling, assigned = _group_assignment(_planted_effects(atlas, seed=5), atlas)
    assert list(assigned["atom"]) == list(range(1, N_ATOMS + 1))
    got = {(r.atom, r.network, r.sign) for r in assigned.itertuples() if r.network != "none"}
    assert got == {(1, "A", "+"), (2, "B", "-")}
    assert assigned.loc[0, "iou"] > 0.8 and assigned.loc[1, "iou"] > 0.8
    assert (assigned.loc[2:, "network"] == "none").all()
    # p_overlap of one case, against scipy.stats.hypergeom called directly.
    row = coupling[(coupling.atom == 1) & (coupling.network == "A") & (coupling.sign == "+")]
    row = row.iloc[0]
    expected = stats.hypergeom(atlas.n_voxels, int(atlas.masks[0].sum()),
                               int(row.n_atom_voxels)).sf(int(row.n_overlap) - 1)
    assert row.p_overlap == pytest.approx(expected, rel=1e-12)
    assert row.n_network_voxels == atlas.masks[0].sum()
    # Bonferroni over atoms x networks x signs.
    n_tests = N_ATOMS * 4 * 2
    assert assigned.loc[0, "p_fwe"] == pytest.approx(min(1.0, row.p_overlap * n_tests))


@pytest.mark.parametrize("seed", [6, 7, 8])
def test_null_data_assigns_nothing(planted_atlas, seed):
    _, assigned = _group_assignment(_planted_effects(planted_atlas, seed, planted=False),
                                    planted_atlas)
    assert (assigned["network"] == "none").all()
    assert assigned["sign"].isna().all() and assigned["iou"].isna().all()


def test_assign_atoms_rules():
    """Highest IoU among passing (network, sign); IoU and Bonferroni thresholds apply."""
    rows = [
        # atom, network, sign, iou, p_overlap
        (1, "X", "+", 0.60, 0.02),   # best IoU but p_fwe = 0.16: fails
        (1, "Y", "-", 0.30, 1e-4),   # passes -> chosen
        (1, "X", "-", 0.20, 1e-6),   # passes, lower IoU
        (1, "Y", "+", 0.00, 1.0),
        (2, "X", "+", 0.05, 1e-20),  # IoU below min_iou
        (2, "X", "-", 0.00, 1.0),
        (2, "Y", "+", 0.00, 1.0),
        (2, "Y", "-", 0.00, 1.0),
    ]
    coupling = pd.DataFrame(rows, columns=["atom", "network", "sign", "iou", "p_overlap"])
    coupling = coupling.assign(n_atom_voxels=10, n_network_voxels=20, n_overlap=5,
                               overlap_rate=0.5)
    assigned = assign_atoms(coupling, n_atoms=3, min_iou=0.1, alpha=0.05)
    assert list(assigned["network"]) == ["Y", "none", "none"]
    assert assigned.loc[0, "sign"] == "-"
    assert assigned.loc[0, "p_fwe"] == pytest.approx(1e-4 * 3 * 2 * 2)
    assert assigned.loc[2, "n_atom_voxels"] == 0  # atom 3 absent from the table
    # with the surrogate null, the passing candidate of smallest p goes first (X-: p 1e-6),
    # not the one of highest IoU (Y-); the array form agrees, and without by_p it keeps IoU
    from bids_app.group.coupling import best_networks

    null = coupling.assign(network_effect=0.0, p_null=coupling["p_overlap"])
    by_p = assign_atoms(null, n_atoms=3, min_iou=0.1, alpha=0.05)
    assert list(by_p["network"]) == ["X", "none", "none"] and by_p.loc[0, "sign"] == "-"
    table = null.sort_values(["atom", "network", "sign"])
    shape = (2, 2, 2)                                   # atom, network, sign (table order)
    iou = np.moveaxis(table["iou"].to_numpy().reshape(shape), -1, 0)
    p_fwe = np.moveaxis(np.minimum(1, table["p_null"].to_numpy() * 8).reshape(shape), -1, 0)
    assert best_networks(iou, p_fwe, 0.1, 0.05, by_p=True).tolist() == [0, -1]
    assert best_networks(iou, p_fwe, 0.1, 0.05).tolist() == [1, -1]


def test_subject_assignments(planted_atlas):
    atlas = planted_atlas
    rng = np.random.default_rng(9)
    n_subjects, dof = 5, 120
    t_subjects = rng.standard_t(dof, size=(n_subjects, N_ATOMS, atlas.n_voxels))
    t_subjects[:4, 0, atlas.masks[0]] += 7.0   # atom 1 -> A(+) in subjects 0..3
    t_subjects[4, 0, atlas.masks[2]] += 7.0    # ... but -> C(+) in subject 4
    t_subjects[:, 1, atlas.masks[1]] -= 7.0    # atom 2 -> B(-) everywhere
    table = subject_assignments(t_subjects, dof, atlas)
    assert list(table.columns) == ["subject", "atom", "network", "sign"]
    assert len(table) == n_subjects * N_ATOMS
    atom1 = table[table.atom == 1].set_index("subject")["network"]
    assert list(atom1) == ["A", "A", "A", "A", "C"]
    assert (table[table.atom == 2]["network"] == "B").all()
    assert (table[table.atom == 2]["sign"] == "-").all()
    assert (table[table.atom > 2]["network"] == "none").all()

    group = pd.DataFrame({"atom": range(1, N_ATOMS + 1),
                          "network": ["A", "B"] + ["none"] * 4,
                          "sign": ["+", "-"] + [None] * 4})
    metrics = organisation_metrics(group, table, atlas.network_names)
    per_atom = {a["atom"]: a["consistency"] for a in metrics["consistency"]["per_atom"]}
    assert per_atom == {1: pytest.approx(0.8), 2: pytest.approx(1.0)}


# --------------------------------------------------------------------------- sub-groups


# --------------------------------------------------------------------------- metrics


def test_organisation_metrics_hand_values():
    group = pd.DataFrame({"atom": [1, 2, 3, 4, 5, 6],
                          "network": ["A", "A", "B", "C", "none", "none"]})
    rows = []
    for subject in range(4):
        rows += [(subject, 1, "A"),
                 (subject, 2, "A" if subject < 2 else "B"),
                 (subject, 3, "B" if subject == 0 else "none")]
        if subject != 3:  # subject 3 has no row for atom 4: counts as a mismatch
            rows.append((subject, 4, "C"))
    subject_assign = pd.DataFrame(rows, columns=["subject", "atom", "network"])
    metrics = organisation_metrics(group, subject_assign, ["A", "B", "C", "D"])
    json.dumps(metrics)  # plain types only
    div = metrics["diversity"]
    assert div["n_coupled_atoms"] == 4 and div["n_networks_covered"] == 3
    assert div["fraction_networks_covered"] == pytest.approx(0.75)
    # shares (1/2, 1/4, 1/4): H = 1.5 ln 2, divided by ln 4 -> 0.75
    assert div["normalised_entropy"] == pytest.approx(0.75, abs=1e-12)
    cons = metrics["consistency"]
    assert cons["n_subjects"] == 4
    assert [(a["atom"], a["consistency"]) for a in cons["per_atom"]] == [
        (1, 1.0), (2, 0.5), (3, 0.25), (4, 0.75)]
    assert cons["mean_consistency"] == pytest.approx(0.625)
    assert set(metrics["definitions"]) >= {"n_coupled_atoms", "normalised_entropy",
                                           "mean_consistency"}


def test_organisation_metrics_edge_cases():
    one = pd.DataFrame({"atom": [1, 2], "network": ["A", "none"]})
    metrics = organisation_metrics(one, None, ["A", "B"])
    assert metrics["diversity"]["normalised_entropy"] == 0.0
    assert metrics["consistency"]["mean_consistency"] is None
    nothing = pd.DataFrame({"atom": [1, 2], "network": ["none", "none"]})
    subject_assign = pd.DataFrame({"subject": [0, 0], "atom": [1, 2],
                                   "network": ["A", "none"]})
    metrics = organisation_metrics(nothing, subject_assign, ["A", "B"])
    json.dumps(metrics)
    assert metrics["diversity"]["n_coupled_atoms"] == 0
    assert metrics["diversity"]["fraction_networks_covered"] == 0.0
    assert metrics["consistency"]["mean_consistency"] is None
    same = pd.DataFrame({"atom": [1, 2], "network": ["A", "A"]})   # -(1 log 1) is -0.0
    entropy = organisation_metrics(same, None, ["A", "B"])["diversity"]["normalised_entropy"]
    assert entropy == 0.0 and math.copysign(1.0, entropy) == 1.0
    even = pd.DataFrame({"atom": [1, 2], "network": ["A", "B"]})
    assert organisation_metrics(even, None, ["A", "B"])["diversity"][
        "normalised_entropy"] == pytest.approx(1.0)


# --------------------------------------------------------------------------- brain-side bootstrap


@pytest.mark.parametrize("max_counts", [0, 1, 32])
@pytest.mark.parametrize("df", [2, 5, 40])
def test_fdr_mask_from_t_equals_fdr_mask_of_p(df, max_counts, monkeypatch):
    """The critical-|t| form of Benjamini-Hochberg rejects the same voxels as
    :func:`fdr_mask` on the two-sided p values, on random maps with and without signal:
    by counting alone, by counting then sorting, and by sorting alone (``_MAX_COUNTS``)."""
    from bids_app.group import stats as group_stats
    from bids_app.group.stats import fdr_critical_t, fdr_mask_from_t

    monkeypatch.setattr(group_stats, "_MAX_COUNTS", max_counts)
    rng = np.random.default_rng(df)
    t = rng.standard_t(df, size=(8, 3000))
    t[1, :300] += 100.0                     # strong signal in part of a map
    t[2, :30] += 4.0                        # weak signal
    t[3] = 0.0                              # a map of zero-variance voxels
    t[4, ::7] = -t[4, ::7] * 3              # both signs
    for q in (0.01, 0.05, 0.2):
        expected = fdr_mask(2.0 * stats.t.sf(np.abs(t), df), q)
        got = fdr_mask_from_t(t, fdr_critical_t(t.shape[1], df, q))
        assert expected[1].sum() > 200 and not expected[3].any()
        np.testing.assert_array_equal(got, expected)
    with pytest.raises(ValueError, match="critical values"):
        fdr_mask_from_t(t, fdr_critical_t(10, df, 0.05))


def test_best_networks_follows_assign_atoms(planted_atlas):
    """The array form of the assignment rule picks the same network as assign_atoms on
    random coupling tables, ties included (two networks of equal IoU)."""
    from bids_app.group import coupling_p_fwe
    from bids_app.group.coupling import best_networks

    names = list(planted_atlas.network_names)
    assigned_ties = n_assigned = 0
    for seed in range(6):
        effects = _planted_effects(planted_atlas, seed, n_subjects=10, amplitude=1.5)
        coupling, assigned = _group_assignment(effects, planted_atlas)
        if seed % 2:                                     # a tie: B copies A's IoU and p
            for column in ("iou", "p_overlap"):
                a = coupling["network"] == "A"
                coupling.loc[coupling["network"] == "B", column] = coupling.loc[a, column].values
            assigned = assign_atoms(coupling, N_ATOMS, min_iou=0.1)
        shape = (N_ATOMS, len(names), 2)                 # table order: atom, network, sign
        iou = np.moveaxis(coupling["iou"].to_numpy().reshape(shape), -1, 0)
        p_fwe = np.moveaxis(coupling_p_fwe(coupling, N_ATOMS).reshape(shape), -1, 0)
        got = best_networks(iou, p_fwe, min_iou=0.1, alpha=0.05)
        expected = [names.index(n) if n != "none" else -1 for n in assigned["network"]]
        assert got.tolist() == expected
        n_assigned += int((got >= 0).sum())
        assigned_ties += int(seed % 2 and got[0] == 0)   # A and B tie for atom 1: A first
    assert n_assigned >= 6 and assigned_ties >= 1


@pytest.mark.parametrize("null", [False, True])
def test_resampled_networks_equal_the_group_chain(planted_atlas, null):
    """Each bootstrap resample's assignments (array form) equal the group chain run on the
    resampled subjects' maps (group_coupling), with the hypergeometric test and with the
    surrogate null."""
    from bids_app.group import group_coupling, network_effects
    from bids_app.group.metrics import bootstrap_samples, resampled_networks

    effects = _planted_effects(planted_atlas, 7, n_subjects=8, amplitude=0.8)
    means = network_effects(effects, planted_atlas.masks)
    null_means = None
    if null:
        rng = np.random.default_rng(3)
        null_means = network_effects(rng.normal(size=(8, 12, planted_atlas.n_voxels)),
                                     planted_atlas.masks)
    samples = bootstrap_samples(8, 25, seed=4, stream=1)
    got = resampled_networks(effects, planted_atlas, samples, q=0.05, min_iou=0.1,
                             network_means=means, null_network_means=null_means)
    names = list(planted_atlas.network_names)
    coupled_draws = 0
    for sample, row in zip(samples, got):
        _, _, _, assigned = group_coupling(
            effects[sample], planted_atlas, q=0.05, min_iou=0.1, network_means=means[sample],
            null_network_means=None if null_means is None else null_means[sample])
        expected = [names.index(n) if n != "none" else -1 for n in assigned["network"]]
        assert row.tolist() == expected
        coupled_draws += bool((row >= 0).any())
    # neither empty nor all alike: the resamples disagree with each other
    assert coupled_draws >= 15 and len({tuple(row) for row in got}) >= 2


def test_bootstrap_samples_are_seeded_and_never_one_subject():
    from bids_app.group.metrics import bootstrap_samples

    a = bootstrap_samples(3, 300, seed=1, stream=2)
    b = bootstrap_samples(3, 300, seed=1, stream=2)
    assert len(a) == 300 and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert all(np.unique(s).size > 1 for s in a)     # 1/9 of raw draws are one subject
    assert not bootstrap_samples(1, 10, seed=1, stream=2)


def test_bootstrap_diversity_on_planted_and_null_data(planted_atlas):
    """Planted truth: two networks coupled strongly in every subject give a degenerate
    interval at the point value; a network carried by half of the subjects (not coupled in
    the full sample) is coupled in some resamples, so the interval reaches above the point
    value; a null dataset gives [0, 0]."""
    from bids_app.group import bootstrap_diversity, diversity_metrics

    def interval(effects):
        _, assigned = _group_assignment(effects, planted_atlas)
        point = diversity_metrics(assigned, planted_atlas.network_names)
        return point, bootstrap_diversity(effects, planted_atlas, q=0.05, min_iou=0.1,
                                          n_boot=100, seed=0)

    strong = _planted_effects(planted_atlas, 11, n_subjects=12, amplitude=3.0)
    point, ci = interval(strong)
    assert point["n_networks_covered"] == 2
    assert ci["n_networks_covered"] == [2.0, 2.0] and ci["n_coupled_atoms"] == [2.0, 2.0]
    assert ci["fraction_networks_covered"] == [0.5, 0.5]

    fragile = _planted_effects(planted_atlas, 12, n_subjects=12, amplitude=0.0)
    fragile[:6, 1, planted_atlas.masks[1]] -= 2.5     # network B in half of the subjects
    fragile[:, 0, planted_atlas.masks[0]] += 3.0      # network A in all of them
    point, ci = interval(fragile)
    assert point["n_networks_covered"] == 1
    assert ci["n_networks_covered"] == [1.0, 2.0]
    assert ci["normalised_entropy"][0] == 0.0 < ci["normalised_entropy"][1]

    null = _planted_effects(planted_atlas, 13, n_subjects=12, planted=False)
    _, ci = interval(null)
    assert ci["n_coupled_atoms"] == [0.0, 0.0] and ci["normalised_entropy"] == [0.0, 0.0]


def test_resampled_networks_same_with_worker_processes(planted_atlas):
    """Resamples split over two forked workers give the same assignments as one process."""
    from bids_app.group import network_effects
    from bids_app.group.metrics import bootstrap_samples, resampled_networks

    effects = _planted_effects(planted_atlas, 8, n_subjects=8, amplitude=0.8)
    samples = bootstrap_samples(8, 15, seed=2, stream=1)
    means = network_effects(effects, planted_atlas.masks)
    one = resampled_networks(effects, planted_atlas, samples, network_means=means)
    two = resampled_networks(effects, planted_atlas, samples, network_means=means,
                             n_workers=2)
    assert one.shape == (15, N_ATOMS) and (one >= 0).any()
    np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("overlapping", [False, True])
def test_overlap_arrays_count_sets(overlapping):
    """Overlap counts equal set intersections, for disjoint networks (one pass by labels) and
    for overlapping user masks (one gather per network)."""
    from bids_app.group.coupling import overlap_arrays

    rng = np.random.default_rng(5)
    n_voxels = 500
    labels = rng.integers(0, 4, n_voxels)                       # 3 networks + none
    masks = np.stack([labels == k for k in range(3)])
    if overlapping:
        masks[1] |= rng.random(n_voxels) < 0.2
    parts = rng.random((2, 6, n_voxels)) < 0.1
    overlap, atom_size, network_size, iou, rate = overlap_arrays(parts, masks)
    for sign in range(2):
        for atom in range(6):
            a = set(np.flatnonzero(parts[sign, atom]))
            for net in range(3):
                n = set(np.flatnonzero(masks[net]))
                assert overlap[sign, atom, net] == len(a & n)
                assert atom_size[sign, atom, net] == len(a)
                assert network_size[sign, atom, net] == len(n)
                assert iou[sign, atom, net] == pytest.approx(len(a & n) / len(a | n))


@pytest.mark.parametrize("disjoint", [True, False])
def test_signed_overlaps_equal_overlap_arrays_of_the_stacked_parts(disjoint):
    """The bootstrap's overlaps from the significant voxels' indices: the same integers
    and IoU as overlap_arrays of the positive and negative parts, with t = 0 and NaN
    voxels, empty maps, and disjoint or overlapping networks."""
    from bids_app.group.coupling import overlap_arrays, signed_overlaps

    rng = np.random.default_rng(11)
    n_voxels = 5000
    t = rng.standard_normal((4, n_voxels)) * 3
    t[1] = 0.0                                        # nothing significant
    t[2, :50] = 0.0
    t[3, ::13] = np.nan
    significant = np.abs(t) >= 2.0
    significant[2, :50] = True                        # t = 0 marked: in neither part
    labels = rng.integers(0, 6, n_voxels)
    masks = np.stack([labels == k for k in range(5)])  # label 5: no network
    if not disjoint:
        masks[0, :300] = True                         # overlaps network of voxel
    parts = np.stack([significant & (t > 0), significant & (t < 0)])
    overlap, atom_size, _, iou, _ = overlap_arrays(parts, masks)
    for sizes in (None, masks.sum(axis=1)):
        got = signed_overlaps(t, significant, masks, sizes)
        np.testing.assert_array_equal(got[0], overlap)
        np.testing.assert_array_equal(got[1], atom_size)
        np.testing.assert_array_equal(got[2], iou)
    assert overlap[:, 1].sum() == 0 and overlap.sum() > 1000
