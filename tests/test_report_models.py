"""Issue 11's comparison pieces: layer profiles on relative depth, the coupling matrix's
significance marks, the consistency interval, and the models side by side."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from bids_app.group import assign_atoms, organisation_metrics
from bids_app.report import coupled as coupled_module
from bids_app.report.dictionary import significant_pairs
from bids_app.report.layers import layer_counts_of, layer_profile, layer_sizes, relative_depth
from bids_app.report.models import (
    member_layer_counts,
    metrics_figure,
    metrics_side_by_side,
    overview_table,
    write_models_report,
)
from tests.report_toys import group_result, model_summaries


def _text(path) -> str:
    return path.read_text(encoding="utf-8")


# ------------------------------------------------------------------------ layer profiles
def test_relative_depth_puts_first_and_last_layers_at_0_and_1():
    np.testing.assert_allclose(relative_depth(5), [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(relative_depth(1), [0])
    # a 6- and an 80-layer model share the axis: their middle layers sit near 0.5
    assert abs(relative_depth(6)[3] - relative_depth(80)[40]) < 0.1


def test_layer_profile_is_the_share_of_each_layers_ans():
    rng = np.random.default_rng(0)
    sizes = rng.integers(50, 500, size=12)
    counts = rng.binomial(sizes, 0.2)
    depth, percent = layer_profile(counts, sizes)
    np.testing.assert_allclose(percent, 100 * counts / sizes)
    np.testing.assert_allclose(depth, np.arange(12) / 11)
    # raw counts would mirror layer sizes; the share does not: a sub-group drawn with one
    # rate from layers of very different sizes has a flat profile
    flat_sizes = np.array([1000, 10, 1000, 10])
    _, flat = layer_profile(flat_sizes // 10, flat_sizes)
    np.testing.assert_allclose(flat, 10.0)
    _, empty_layer = layer_profile([0, 3], [0, 6])
    np.testing.assert_allclose(empty_layer, [0, 50])
    with pytest.raises(ValueError, match="layer counts"):
        layer_profile([1, 2], [3, 4, 5])
    with pytest.raises(ValueError, match="more sub-group members"):
        layer_profile([5], [4])


def test_layer_sizes_count_distinct_ans_per_layer():
    neurons = pd.DataFrame({"row": range(7), "layer": [0, 0, 0, 2, 2, 2, 2],
                            "unit": [0, 1, 1, 0, 1, 2, 3]})      # (0, 1) twice: FIR delays
    np.testing.assert_array_equal(layer_sizes(neurons), [2, 0, 4])
    table = pd.DataFrame({"atom": [1, 2], "layer00": [1, 2], "layer02": [3, 0]})
    np.testing.assert_array_equal(layer_counts_of(table, "atom", 1, 3), [1, 0, 3])
    np.testing.assert_array_equal(layer_counts_of(table, "atom", 9, 3), [0, 0, 0])
    members = pd.DataFrame({"network": ["A", "B", "B"], "neuron": [4, 4, 7],
                            "layer": [1, 1, 2]})
    np.testing.assert_array_equal(member_layer_counts(members, 3), [0, 1, 1])


def test_atom_section_shows_its_subgroup_share_per_layer(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(coupled_module, "layer_figure",
                        lambda counts, sizes, title: seen.append((counts, sizes)) or "")
    result = group_result(tmp_path, n_atoms=4, n_coupled=1)
    coupled_module.layers_part(result, result.assignments.iloc[0])
    counts, sizes = seen[0]
    np.testing.assert_array_equal(counts, [1, 2])      # the toy's layer00, layer01
    np.testing.assert_array_equal(sizes, [5, 5])       # 5 ANs in each of its 2 layers


# --------------------------------------------------------------- coupling significance
def _coupling(rng, n_atoms=6, networks=("A", "B", "C"), null=False):
    rows = [{"atom": a, "network": n, "sign": s, "iou": rng.uniform(0, 0.5),
             "overlap_rate": 0.5, "p_overlap": 10 ** rng.uniform(-8, 0),
             "n_atom_voxels": 100, "n_network_voxels": 300, "n_overlap": 50}
            for a in range(1, n_atoms + 1) for n in networks for s in "+-"]
    table = pd.DataFrame(rows)
    if null:
        table["network_effect"] = 0.0
        table["p_null"] = 10 ** rng.uniform(-6, 0, len(table))
    return table


@pytest.mark.parametrize("null", [False, True])
def test_marked_pairs_are_those_whose_test_passes(null):
    rng = np.random.default_rng(3)
    coupling = _coupling(rng, null=null)
    n_atoms, n_tests = 6, 6 * 3 * 2
    p = coupling["p_null" if null else "p_overlap"].to_numpy()
    expected = {(int(a), n) for a, n, q in zip(coupling["atom"], coupling["network"], p)
                if q * n_tests < 0.05}
    assert 0 < len(expected) < 18
    assert significant_pairs(coupling, n_atoms) == expected
    # every assigned pair is marked (assignment = passing pair of highest IoU)
    assigned = assign_atoms(coupling, n_atoms, min_iou=0.1)
    assigned = assigned[assigned["network"] != "none"]
    marked = significant_pairs(coupling, n_atoms, min_iou=0.1)
    assert {(int(a), n) for a, n in zip(assigned["atom"], assigned["network"])} <= marked


# ------------------------------------------------------------------ consistency interval
def _subject_assign(match: np.ndarray) -> pd.DataFrame:
    """Subjects' assignments: atom k+1 to network "A" where ``match[k, s]``, else "B"."""
    return pd.DataFrame([{"subject": s, "atom": k + 1, "network": "A" if m else "B"}
                         for (k, s), m in np.ndenumerate(match)])


def test_consistency_interval_brackets_the_mean_and_narrows_with_subjects():
    rng = np.random.default_rng(5)
    group = pd.DataFrame({"atom": [1, 2, 3], "network": ["A", "A", "A"]})
    widths = []
    for n_subjects in (10, 160):
        match = rng.random((3, n_subjects)) < 0.6
        metrics = organisation_metrics(group, _subject_assign(match), ["A", "B"], seed=1)
        mean = metrics["consistency"]["mean_consistency"]
        low, high = metrics["consistency"]["ci95"]["mean_consistency"]
        assert mean == pytest.approx(match.mean())
        assert 0 <= low <= mean <= high <= 1
        widths.append(high - low)
    assert widths[1] < widths[0] / 2          # ~1/sqrt(n): 4x narrower for 16x subjects
    every = organisation_metrics(group, _subject_assign(np.ones((3, 8), bool)), ["A", "B"])
    assert every["consistency"]["ci95"]["mean_consistency"] == [1.0, 1.0]
    none = organisation_metrics(group, None, ["A", "B"])
    assert none["consistency"]["ci95"]["mean_consistency"] is None


# ------------------------------------------------------------------------ models report
def test_models_side_by_side_tables(tmp_path):
    models = model_summaries(tmp_path)
    overview = overview_table(models).set_index("model")
    assert overview.loc["toy1", "layers"] == 6 and overview.loc["toy2", "layers"] == 12
    assert overview.loc["toy2", "networks coupled"] == "Auditory, Default"
    assert overview.loc["toy1", "AN sub-group per network"] == "Auditory 60 (10.0 %)"
    # a network coupled by the network-prediction test only is listed, and marked
    models[1].networks = models[1].networks.assign(coupled_by=["atoms", "atoms"])
    models[1].networks.loc[2] = ["Visual", 0, 7, "prediction"]
    assert overview_table(models).set_index("model").loc["toy2", "networks coupled"] == (
        "Auditory, Default, Visual (prediction)")
    metrics = metrics_side_by_side(models).set_index("metric")
    assert metrics.loc["AN specialisation", "toy1"] == "0.7 (0.6 – 0.8)"
    assert metrics.loc["AN-side diversity (participation ratio)", "toy2"].startswith("missing")
    assert metrics.loc["coupled atoms", "toy2"] == "4"
    assert metrics.loc["coupled atoms", "toy1"] == "3 (4 – 6)"
    assert metrics_figure(models).startswith("<img")      # a point outside its interval


def test_models_report_links_each_model_and_shows_no_nan(toy_reports):
    text = _text(toy_reports["models"])
    for name in ("toy1", "toy2"):
        assert f"href='desc-{name}_report.html'" in text
    assert text.count("<img") == 3
    assert "relative depth (0 = first layer, 1 = last)" in text
    assert "0.6 (0.5 – 0.8)" in text
    assert not re.search(r">\s*(nan|NaN|None)\s*<", text)


def test_each_models_report_links_the_comparison(tmp_path):
    from bids_app.report import write_group_report

    result = group_result(tmp_path, n_atoms=4, n_coupled=1)
    assert "side by side" not in _text(write_group_report(result))
    result.models_report = tmp_path / "group" / "desc-models_report.html"
    assert "<a href='desc-models_report.html'>side by side</a>" in _text(
        write_group_report(result))


def test_models_report_written_once_for_several_models(tmp_path):
    path = write_models_report(model_summaries(tmp_path, n_layers=(6, 32)), tmp_path,
                               "toyatlas", ["01", "02", "03"])
    assert path == tmp_path / "group" / "desc-models_report.html"
    assert "Models</dt><dd>toy1, toy2" in _text(path)
