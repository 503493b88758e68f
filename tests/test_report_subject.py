"""The subject report: data checks, fit maps against their chance levels, thresholded atom
maps, the labelled design matrix, errors and warnings."""

from __future__ import annotations

import html
import logging
import re
import warnings

import numpy as np
import pytest
from scipy import stats

from bids_app.report import SubjectResult, collect_warnings, write_subject_report
from bids_app.report.checks import data_warnings, partial_r2_chance, runs_table, t_threshold
from tests.report_toys import subject_result


def _text(path) -> str:
    return html.unescape(path.read_text())


def test_subject_report_sections(toy_reports, tmp_path):
    text = _text(toy_reports["subject"])
    result = subject_result(tmp_path)
    fit = result.fit
    for heading in ("Data checks", "Motion", "Confounds in the model", "Brain mask",
                    "Model fit", "Atom maps", "Design matrix", "Errors and warnings",
                    "Methods"):
        assert f">{heading}<" in text, heading
    assert "Repetition time</dt><dd>1.5 s" in text
    assert f"Volumes used</dt><dd>{fit.n_volumes_used} (dropped: 6 non-steady-state)" in text
    n_nuisance = fit.design.shape[1] - 4
    chance = 4 / (fit.n_volumes_used - n_nuisance)
    assert f"chance = {chance:.3g}" in text                    # on the R² figure
    assert "Cross-validated prediction r (coloured where above chance = 0)" in text
    threshold = stats.t.isf(0.0005, fit.dof)
    assert f"|t| ≥ {threshold:.2f} (p < 0.001 uncorrected, two-sided, df = {fit.dof})" in text
    assert f"t (df = {fit.dof})" in text                        # colour bar label
    for label in ("atom01", "task-a_trans_x", "task-b_constant"):
        assert label in text                                    # design columns
    assert "UserWarning: a toy warning" in text
    assert "nan" not in re.sub(r"<img[^>]*>", "", text).lower().replace("nan)", "")


def test_partial_r2_chance_is_the_mean_under_white_noise():
    """Independent reference: OLS on white noise, many voxels."""
    rng = np.random.default_rng(0)
    n, k, p0 = 200, 8, 12
    nuisance = np.column_stack([np.ones(n), rng.normal(size=(n, p0 - 1))])
    full = np.column_stack([rng.normal(size=(n, k)), nuisance])
    y = rng.normal(size=(n, 4000))

    def rss(x):
        return np.sum((y - x @ np.linalg.lstsq(x, y, rcond=None)[0]) ** 2, axis=0)

    r2 = 1 - rss(full) / rss(nuisance)
    import pandas as pd

    chance = partial_r2_chance(k, pd.DataFrame(full))
    assert chance == k / (n - p0)
    assert abs(r2.mean() - chance) < 0.05 * chance


def test_t_threshold_is_two_sided():
    assert np.isclose(t_threshold(10_000), stats.norm.isf(0.0005), atol=1e-3)
    assert np.isclose(t_threshold(20, alpha=0.05), stats.t.isf(0.025, 20))


def test_runs_table_and_derived_warnings(tmp_path):
    result = subject_result(tmp_path)
    table = runs_table(result.runs)
    fd = result.runs[0].framewise_displacement[result.runs[0].kept]
    row = table.iloc[0]
    assert (row["volumes"], row["dropped (non-steady-state)"], row["used"]) == (150, 3, 147)
    assert np.isclose(row["mean FD (mm)"], np.nanmean(fd))
    assert row["used volumes with FD > 0.5 mm"] == 1
    assert data_warnings(result.runs, result.fit.r2, 0.01, result.cv_r) == []
    result.runs[1].motion = result.runs[1].motion.iloc[:, :0]       # no FD column
    found = data_warnings(result.runs, np.zeros(3), 0.01, -np.ones(3))
    assert any("no framewise_displacement" in f for f in found)
    assert any("not above its chance level" in f for f in found)
    assert any("cross-validated r" in f for f in found)
    assert np.isnan(runs_table(result.runs).iloc[1]["mean FD (mm)"])


def test_report_without_run_checks_or_cv(tmp_path, monkeypatch):
    """What older callers hand over (fit, mask, no run checks, one run) still renders
    (brain figures stubbed out for speed)."""
    for name in ("stat_map_figure", "fit_map_figure"):
        monkeypatch.setattr(f"bids_app.report.subject.{name}", lambda *a, **k: "<img/>")
    full = subject_result(tmp_path)
    result = SubjectResult(config=full.config, spec=full.spec, subject="02", fit=full.fit,
                           cv_r=None, mask_img=full.mask_img, mask=full.mask)
    text = _text(write_subject_report(result, n_best_atoms=1))
    assert "No run information" in text and "it needs at least two runs" in text
    assert "No errors or warnings to report" in text


def test_collect_warnings_keeps_python_warnings_and_log_records():
    logger = logging.getLogger("llmfbn")
    with pytest.warns(UserWarning, match="repeated thing"):      # still shown
        with collect_warnings() as found:
            for _ in range(3):
                warnings.warn("repeated thing", UserWarning, stacklevel=1)
            logger.warning("the log said %s", "so")
            logger.info("not a warning")
    assert "warning: the log said so" in found
    assert "UserWarning: repeated thing (3 times)" in found
    assert len(found) == 2


def test_subject_report_figures_in_their_places_and_deterministic(tmp_path):
    """Every figure's placeholder is replaced by its PNG, and the same result gives the
    very same page."""
    one = write_subject_report(subject_result(tmp_path / "a"), n_best_atoms=2).read_text()
    two = write_subject_report(subject_result(tmp_path / "b"), n_best_atoms=2).read_text()
    assert "llmfbn-figure-" not in two and two.count("data:image/png;base64,") >= 8
    assert one == two


def test_drawing_setup_loads_the_plotting_libraries_in_one_thread():
    """The participant level's background setup: started once however often it is asked,
    and after wait() no thread of it is left (a fork may follow) and the libraries the
    figures need are loaded."""
    import sys
    import threading

    from bids_app.report import rasters
    from bids_app.report.subject import DrawingSetup

    setup = DrawingSetup()
    setup.wait()                                   # never started: nothing to wait for
    setup.start()
    first = setup._thread
    setup.start()
    assert setup._thread is first
    setup.wait()
    assert not any(t.name == "llmfbn-report-setup" for t in threading.enumerate())
    assert "matplotlib.pyplot" in sys.modules and "nilearn.plotting" in sys.modules
    assert rasters.mni_template.cache_info().currsize == 1


def test_network_prediction_section(tmp_path):
    """With the coupling null the subject report shows each network's split-half r by the
    atoms against the surrogate blocks' mean ± sd, and how far above them (in sd, checked
    against numpy); without it the section is absent."""
    from dataclasses import replace

    import pandas as pd

    from bids_app.report.subject import network_prediction_table

    rng = np.random.default_rng(3)
    prediction = pd.DataFrame(rng.uniform(-0.2, 0.2, (11, 2)), columns=["Auditory", "Visual"])
    prediction.iloc[0, 0] = 0.9
    prediction.insert(0, "block", ["atoms"] + [f"null{k:04d}" for k in range(1, 11)])
    rows = network_prediction_table(prediction)
    blocks = prediction["Auditory"].to_numpy()[1:]
    assert rows.loc[0, "above the blocks (sd)"] == pytest.approx(
        (0.9 - blocks.mean()) / blocks.std(ddof=1))
    assert rows.loc[0, "r of surrogate blocks (mean ± sd)"] == (
        f"{blocks.mean():.3f} ± {blocks.std(ddof=1):.3f}")
    result = subject_result(tmp_path)
    assert ">Network prediction<" not in _text(write_subject_report(result, n_best_atoms=1))
    result = replace(result, fit=replace(result.fit, network_prediction=prediction))
    text = _text(write_subject_report(result, n_best_atoms=1))
    assert ">Network prediction<" in text and "against 10 blocks of surrogate atoms" in text
    assert "<td>Auditory</td><td class='num'>0.9</td>" in text
