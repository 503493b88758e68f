"""The group report: every coupled atom with its labelled map, network outline, clusters,
time course in seconds and stability; readable metrics; a labelled coupling matrix."""

from __future__ import annotations

import html
import re

import numpy as np
import pandas as pd
import pytest

from bids_app.report import coupled as coupled_module
from bids_app.report import figures as report_figures
from bids_app.report import write_group_report
from bids_app.report.coupled import fdr_threshold
from bids_app.report.tables import cluster_table, metrics_table, peak_networks
from bids_app.report.traces import atom_timecourse_figure
from tests.report_toys import NETWORKS, grid, group_result


def _text(path) -> str:
    return html.unescape(path.read_text())


def test_group_report_shows_each_coupled_atom_fully(toy_reports):
    text = _text(toy_reports["group"])
    assert text.count("<details") == 2
    for name, network in (("atom01", "Auditory"), ("atom02", "DefaultMode")):
        assert f"{name} → {network}" in text
        assert f"green outline: {network} (toyatlas)" in text
    assert "colour bar: t (df = 5)" in text
    assert "FDR q < 0.05 (|t| ≥" in text
    assert "network at peak" in text and "x (mm)" in text
    assert "time course in seconds over 2 run(s)" in text
    assert "Stability: matched |r| = 0.500" in text
    assert "functional network (toyatlas)" not in text or True   # axis labels live in PNGs
    assert not re.search(r">\s*(nan|NaN|None)\s*<", text)


def test_every_coupled_atom_has_a_section(tmp_path, monkeypatch):
    """No cut: 15 coupled atoms, 15 sections (figures stubbed out for speed)."""
    for name in ("stat_map_figure", "atom_timecourse_figure", "layer_figure"):
        monkeypatch.setattr(coupled_module, name, lambda *a, **k: "<img alt='stub'/>")
    result = group_result(tmp_path, n_atoms=20, n_coupled=15)
    text = _text(write_group_report(result))
    assert text.count("<details") == 15
    assert all(f"atom{k:02d} →" in text for k in range(1, 16))
    assert "All 15 coupled atoms" in text


def test_fdr_threshold_is_the_smallest_significant_t():
    t = np.array([-5.0, 1.0, 4.2, -3.0, 7.0])
    assert fdr_threshold(t, np.abs(t) > 4) == 4.2
    assert fdr_threshold(t, np.zeros(5, bool)) is None


def test_clusters_peaks_and_their_networks(tmp_path):
    result = group_result(tmp_path)
    _, mask, xyz = grid()
    atlas = result.atlas
    threshold = fdr_threshold(result.t_map[0], result.significant[0])
    clusters = cluster_table(result.t_map[0], mask, result.inputs.mask_img.affine, threshold,
                             atlas.masks, atlas.network_names)
    first = clusters.iloc[0]
    peak = np.array([first["x (mm)"], first["y (mm)"], first["z (mm)"]])
    assert np.linalg.norm(peak - np.array(NETWORKS["Auditory"])) < 12
    assert first["network at peak"] == "Auditory"
    assert np.isclose(first["peak t"], np.abs(result.t_map[0]).max(), atol=0.01)
    assert clusters["peak t"].abs().min() >= threshold - 0.01
    # the network at a coordinate, found independently of the table
    inside = xyz[atlas.masks[2]][0]
    assert peak_networks(inside[None], mask, result.inputs.mask_img.affine, atlas.masks,
                         atlas.network_names) == ["Visual"]
    assert peak_networks(np.array([[500.0, 0, 0]]), mask, result.inputs.mask_img.affine,
                         atlas.masks, atlas.network_names) == ["(outside the mask)"]


def test_metrics_table_says_why_a_value_is_missing(tmp_path):
    table = metrics_table(group_result(tmp_path).metrics)
    missing = table[table["metric"] == "mean consistency"].iloc[0]
    assert missing["value"] is None and missing["meaning"].startswith("missing: ")
    assert table[table["metric"] == "atoms per network"].iloc[0]["value"] == "Auditory 2"
    assert "per atom" not in set(table["metric"])
    intervals = table.set_index("metric")["95% CI"]
    assert intervals["an diversity"] == "1.9 – 3.1" and intervals["an overlap"] == "0 – 0.2"
    assert pd.isna(intervals["an specialisation"]) and pd.isna(intervals["n subgroups"])
    assert not {"ci95", "reason"} & set(table["metric"])


@pytest.mark.parametrize("used", [True, False])
def test_time_course_in_seconds_with_run_boundaries(tmp_path, monkeypatch, used):
    seen = {}

    def record(fig, alt):
        ax = fig.axes[0]
        seen["x"] = np.concatenate([line.get_xdata() for line in ax.get_lines()
                                    if len(line.get_xdata()) > 2])
        seen["boundaries"] = [line.get_xdata()[0] for line in ax.get_lines()
                              if len(line.get_xdata()) == 2]
        seen["shaded"] = len(ax.patches)
        seen["xlabel"] = ax.get_xlabel()
        return real(fig, alt)

    real = report_figures.png
    monkeypatch.setattr("bids_app.report.traces.png", record)
    table = group_result(tmp_path, used=used).atoms.table
    atom_timecourse_figure(table, "atom01", "atom01")
    assert "time (s)" in seen["xlabel"]
    # run a: 120 frames of 1.5 s; run b starts one TR after run a's last frame
    assert seen["boundaries"] == [pytest.approx(120 * 1.5)]
    assert seen["x"].max() == pytest.approx(120 * 1.5 + 99 * 1.5)
    assert seen["shaded"] == (2 if used else 0)


def test_sections_rendered_by_worker_processes_equal_one_process(tmp_path):
    """--nprocs 2 renders the coupled atoms' sections in two forked processes: same HTML,
    same order (figures are deterministic PNGs)."""
    from bids_app.report.group import atom_sections

    result = group_result(tmp_path, n_atoms=5, n_coupled=3)
    coupled = result.assignments[result.assignments["network"] != "none"]
    serial = atom_sections(result, coupled, n_procs=1)
    parallel = atom_sections(result, coupled, n_procs=2)
    assert len(serial) == 3 and parallel == serial
    assert [s.count("<img") for s in serial] == [3, 3, 3]


def test_networks_section_says_how_each_network_is_coupled(tmp_path, monkeypatch):
    """Every network of the atlas in one table: coupled by an atom, by the network-
    prediction test or both, or not; its sub-group; the test's r, surrogate r and p_fwe.
    Without the test the section says it did not run."""
    from dataclasses import replace

    from bids_app.report.group import network_overview

    for name in ("stat_map_figure", "atom_timecourse_figure", "layer_figure"):
        monkeypatch.setattr(coupled_module, name, lambda *a, **k: "<img alt='stub'/>")
    names = list(NETWORKS)
    networks = pd.DataFrame({"network": names[:2], "n_atoms": [2, 0],
                             "coupled_by": ["atoms+prediction", "prediction"],
                             "ridge": [0.1, 0.3], "n_neurons": [40, 17]})
    prediction = pd.DataFrame({"network": names, "r": np.linspace(0.9, 0.0, len(names)),
                               "r_null_mean": 0.01, "r_null_sd": 0.1, "fisher_z": 1.25,
                               "fisher_z_null_mean": 0.02, "fisher_z_null_sd": 0.15, "z": 3.0,
                               "p": 1e-4, "p_fwe": [1e-5, 2e-3] + [1.0] * (len(names) - 2),
                               "coupled": [True, True] + [False] * (len(names) - 2)})
    overview = network_overview(networks, prediction)
    assert overview["coupled by"].tolist() == ["atoms+prediction", "prediction"] + [
        "not coupled"] * (len(names) - 2)
    assert overview["assigned atoms"].tolist()[:2] == [2, 0]
    assert overview["AN sub-group"].tolist()[:2] == [40, 17]
    result = replace(group_result(tmp_path), networks=networks, prediction=prediction)
    text = _text(write_group_report(result))
    assert "<section id='networks'><h2>Networks</h2>" in text
    assert "network-prediction test" in text and "0.010 ± 0.100" in text
    assert "1.25 / 0.02 ± 0.15" in text
    assert f"<td>{names[1]}</td><td>prediction</td>" in text
    bare = replace(group_result(tmp_path), networks=networks, prediction=None)
    assert "did not run" in _text(write_group_report(bare))
