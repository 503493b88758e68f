"""The subject report: ``sub-<label>.html``.

Like fMRIPrep's reports, it starts with what was done to the data (runs, volumes used and
dropped, motion, confounds, the brain mask over the mean BOLD), then shows the fit (R² and
cross-validated r against their chance levels, the best atoms' thresholded t maps, the
design matrix), then the errors and warnings.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from bids_app.bids import derivatives as out
from bids_app.bids.naming import atom_name, subject_report
from bids_app.report.brains import fit_map_figure, mask_figure, stat_map_figure
from bids_app.report.checks import (
    SUBJECT_T_ALPHA,
    data_warnings,
    partial_r2_chance,
    runs_table,
    t_threshold,
)
from bids_app.report.html import methods, note, page, section, summary_list, table
from bids_app.report.methods import citation_text
from bids_app.report.traces import (
    FD_THRESHOLD_MM,
    confounds_figure,
    design_figure,
    motion_figure,
)


def _ready_to_draw() -> None:
    """Import matplotlib and nilearn's plotting, read its glass-brain schematics and load
    its MNI template (the background of the slices): ~1 s the first figure would otherwise
    spend (:class:`DrawingSetup` does it while the GLM runs)."""
    from nilearn import plotting  # noqa: F401

    from bids_app.report import rasters
    from bids_app.report.figures import pyplot

    pyplot()
    for direction in "lryz":
        rasters.schematic_bounds(direction)
    rasters.mni_template()


class DrawingSetup:
    """:func:`_ready_to_draw` in a background thread: :meth:`start` it once the BOLD is
    read (the GLM's BLAS calls release the GIL, so the imports and the template read run
    on another core meanwhile; during the read they slowed the decompression as much as
    they saved), :meth:`wait` before the report is drawn and before any fork. A failure
    is left to the figures, which load the same things and raise it where it is
    reported."""

    def __init__(self):
        self._thread = None

    def start(self) -> None:
        import threading

        if self._thread is not None:
            return

        def setup():
            try:
                _ready_to_draw()
            except Exception:  # noqa: BLE001 - the figures meet it again and report it
                pass

        self._thread = threading.Thread(target=setup, name="llmfbn-report-setup",
                                        daemon=True)
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()


def _summary(result) -> str:
    fit, runs = result.fit, result.runs
    trs = sorted({f"{r.t_r_s:g}" for r in runs})
    return summary_list({
        "Subject": f"sub-{result.subject}",
        "Language model": result.spec.name,
        "Runs": ", ".join(r.name for r in runs) or "n/a",
        "Repetition time": (" / ".join(trs) + " s") if trs else "n/a",
        "Volumes used": f"{fit.n_volumes_used} (dropped: "
                        f"{sum(r.n_dropped for r in runs)} non-steady-state)",
        "Voxels analysed": f"{int(result.mask.sum()):,}",
        "GLM": f"{result.config.glm}, {fit.dof} residual degrees of freedom",
        "Confounds": result.config.confound_strategy,
    })


def _data_checks(result) -> str:
    if not result.runs:
        return section("Data checks", note("No run information was handed to the report."))
    parts = [table(runs_table(result.runs)),
             note(f"FD: framewise displacement (fMRIPrep, Power et al. 2012); volumes above "
                  f"{FD_THRESHOLD_MM:g} mm are counted but kept. Nuisance regressors: the "
                  "confounds below plus the run's intercept."),
             "<h3>Motion</h3>", motion_figure(result.runs),
             "<h3>Confounds in the model</h3>", confounds_figure(result.runs)]
    if result.mean_bold is not None:
        parts += ["<h3>Brain mask</h3>",
                  mask_figure(result.mean_bold, result.mask_img,
                              "Analysed voxels (red outline: intersection of the runs' "
                              "fMRIPrep brain masks) over the mean BOLD")]
    return section("Data checks", *parts)


def network_prediction_table(prediction):
    """One row per network: the split-half prediction r of its mean signal by the atoms,
    the surrogate blocks' mean and standard deviation, and how many of those standard
    deviations the atoms lie above them. ``prediction``: the fit's network-prediction
    table (column ``block``: ``atoms`` then the blocks; one column per network)."""
    import pandas as pd

    values = prediction.drop(columns="block")
    atoms, blocks = values.iloc[0], values.iloc[1:]
    mean, sd = blocks.mean(), blocks.std(ddof=1)
    return pd.DataFrame({
        "network": list(values.columns), "r (atoms)": atoms.to_numpy(),
        "r of surrogate blocks (mean ± sd)": [f"{m:.3f} ± {d:.3f}" for m, d in zip(mean, sd)],
        "above the blocks (sd)": ((atoms - mean) / sd.where(sd > 0)).to_numpy()})


def _network_prediction(result) -> str:
    """The subject's network-prediction table, when the run has one (the coupling null)."""
    prediction = getattr(result.fit, "network_prediction", None)
    if prediction is None:
        return ""
    n_blocks = len(prediction) - 1
    return section(
        "Network prediction",
        note("How well all atoms together predict each network's mean signal in this "
             "subject out of sample: a ridge fitted on the first half of each run's volumes "
             "predicts the second half, and vice versa (Pearson r, confounds projected out), "
             f"against {n_blocks} blocks of surrogate atoms with the same spectra and "
             "correlations. One subject's values are noisy: the group level tests the mean "
             "over subjects (the group report's Networks section)."),
        table(network_prediction_table(prediction)))


def _fit_maps(result, r2_chance: float) -> str:
    fit, mask, affine = result.fit, result.mask, result.mask_img.affine
    n_atoms = fit.t.shape[0]
    parts = [note(f"In-sample partial R² of the {n_atoms} atoms beyond the confounds. Its "
                  f"chance level is {r2_chance:.3f} = {n_atoms} / ({fit.n_volumes_used} "
                  "volumes − nuisance columns), its mean when BOLD is white noise; only "
                  "voxels above it are coloured. Autocorrelated BOLD raises the in-sample R² "
                  "of any regressors above that level; the cross-validated r below has no "
                  "such bias."),
             fit_map_figure(fit.r2, mask, affine, chance=r2_chance, label="partial R²",
                            title="Partial R² of the atoms")]
    if result.cv_r is None:
        parts.append(note("Cross-validated r not computed: it needs at least two runs.",
                          "warn"))
    else:
        parts += [note("Leave-one-run-out prediction correlation of the joint atom model "
                       "(held-out runs, confounds projected out); chance level 0."),
                  fit_map_figure(result.cv_r, mask, affine, chance=0.0,
                                 label="cross-validated r",
                                 title="Cross-validated prediction r")]
    return section("Model fit", *parts)


def _best_atoms(result, n_best: int) -> str:
    fit, mask, affine = result.fit, result.mask, result.mask_img.affine
    n_atoms = fit.t.shape[0]
    threshold = t_threshold(fit.dof)
    n_above = (np.abs(fit.t) >= threshold).sum(axis=1)
    best = np.lexsort((-np.abs(fit.t).max(axis=1), -n_above))[:n_best]
    parts = [note(f"The {len(best)} atoms with the most voxels above |t| ≥ {threshold:.2f} "
                  f"(p < {SUBJECT_T_ALPHA:g} uncorrected, two-sided, df = {fit.dof}); "
                  "only those voxels are coloured.")]
    for k in best:
        parts.append(stat_map_figure(
            fit.t[k], mask, affine, threshold=threshold, label=f"t (df = {fit.dof})",
            title=f"{atom_name(k, n_atoms)}: {int(n_above[k]):,} voxels with |t| ≥ "
                  f"{threshold:.2f}"))
    return section("Atom maps", *parts)


def _warnings(result, r2_chance: float) -> str:
    found = data_warnings(result.runs, result.fit.r2, r2_chance, result.cv_r)
    raised = list(result.warnings)
    if not found and not raised:
        return section("Errors and warnings", note("No errors or warnings to report.", "ok"))
    parts = [note(text, "warn") for text in found]
    if raised:
        parts += ["<h3>Raised while this subject was processed</h3>",
                  "<ul>" + "".join(f"<li>{html.escape(t)}</li>" for t in raised) + "</ul>"]
    return section("Errors and warnings", *parts)


def write_subject_report(result, n_best_atoms: int = 4) -> Path:
    """The subject report of a :class:`SubjectResult`: data checks, fit maps against chance,
    the best atoms' thresholded t maps, the labelled design matrix, errors and warnings."""
    config, spec, fit = result.config, result.spec, result.fit
    r2_chance = partial_r2_chance(fit.t.shape[0], fit.design)
    parts = [f"<h1>llmfbn: sub-{html.escape(result.subject)}, model "
             f"{html.escape(spec.name)}</h1>",
             _summary(result), _data_checks(result), _fit_maps(result, r2_chance),
             _best_atoms(result, n_best_atoms),
             _network_prediction(result),
             section("Design matrix",
                     note("One row per regressor (a column of the design): the atoms, "
                          "shared by all runs, then each run's confounds and intercept, "
                          "zero on the other runs' volumes; each scaled to its largest "
                          "|value|."),
                     design_figure(fit.design, fit.t.shape[0])),
             _warnings(result, r2_chance),
             *methods(citation_text(config, spec, config.fbn_atlas))]
    path = subject_report(config.output_dir, result.subject)
    out.write_text(path, page(f"llmfbn sub-{result.subject}", parts))
    return path
