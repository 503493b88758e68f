"""Figures of time series: atom time courses, motion and confound traces, the design matrix.

Runs are drawn end to end on one time axis in seconds; dashed lines mark where one run
ends and the next begins.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bids_app.report.figures import png, pyplot

#: fMRIPrep's reports flag volumes above this framewise displacement (mm).
FD_THRESHOLD_MM = 0.5
#: Colour of the frames that carry a story (the frames used) on atom time courses.
USED_COLOR = "#fbe3b0"


def _run_axis(ax, names: list[str], starts: list[float]) -> None:
    """Dashed run boundaries and run names above the axis."""
    from matplotlib.transforms import blended_transform_factory

    where = blended_transform_factory(ax.transData, ax.transAxes)
    for i, (name, start) in enumerate(zip(names, starts)):
        if i:
            ax.axvline(start, color="0.25", ls="--", lw=0.9)
        ax.text(start, 1.01, f" {name}", transform=where, fontsize=8, va="bottom",
                color="0.25")


def _spans(flags: np.ndarray) -> list[tuple[int, int]]:
    """[(first, last)] indices of the runs of True in ``flags``."""
    edges = np.diff(np.concatenate([[0], flags.astype(int), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1))


def _row_labels(ax, labels: list[str], fontsize: float = 7) -> None:
    """One label per image row on the left of ``ax``, written as plain texts: what
    ``set_yticks(range(n), labels)`` shows without its tick objects (each tick is two
    lines, two texts and a grid line: ~4 ms each, ~0.3 s for a design matrix's rows)."""
    ax.set_yticks([])
    where = ax.get_yaxis_transform()
    for row, text in enumerate(labels):
        ax.text(-0.004, row, text, transform=where, ha="right", va="center",
                fontsize=fontsize)


def atom_timecourse_figure(table: pd.DataFrame, column: str, title: str) -> str:
    """One atom's time course (``column`` of the atoms TSV, with its ``acquisition`` and
    ``time_s`` columns) in seconds, runs end to end; when the table has a ``used`` column
    (1 = a frame that carries a story) those frames are shaded."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10.5, 2.3))
    names, starts, offset = [], [], 0.0
    acquisitions = table["acquisition"].to_numpy()
    for name in pd.unique(acquisitions):
        rows = table[acquisitions == name]
        time_s = rows["time_s"].to_numpy(np.float64)
        t_r = float(np.median(np.diff(time_s))) if len(time_s) > 1 else 1.0
        x = offset + time_s - time_s[0]
        if "used" in rows.columns:
            for first, last in _spans(rows["used"].to_numpy() == 1):
                ax.axvspan(x[first] - t_r / 2, x[last] + t_r / 2, color=USED_COLOR, lw=0,
                           label="frames used (story)" if not names else None)
        ax.plot(x, rows[column].to_numpy(), color="#1f4e9c", lw=0.9)
        names.append(str(name))
        starts.append(offset)
        offset = x[-1] + t_r
    _run_axis(ax, names, starts)
    ax.set_xlim(0, offset)
    ax.set_xlabel("time (s), runs end to end", fontsize=9)
    ax.set_ylabel("atom value\n(a.u., unit norm)", fontsize=9)
    ax.tick_params(labelsize=8)
    if "used" in table.columns:
        ax.legend(fontsize=8, loc="upper right", frameon=False)
    ax.set_title(title, fontsize=10, pad=14)
    return png(fig, f"{title}: time course in seconds over {len(names)} run(s)")


def motion_figure(runs, threshold_mm: float = FD_THRESHOLD_MM) -> str:
    """Framewise displacement (mm) of each run (:class:`RunCheck`) in seconds, the dropped
    volumes marked, the threshold drawn; standardised DVARS below when fMRIPrep wrote it."""
    plt = pyplot()
    has_dvars = any("std_dvars" in r.motion.columns for r in runs)
    fig, axes = plt.subplots(2 if has_dvars else 1, 1, figsize=(10.5, 3.6 if has_dvars else
                                                                2.2), sharex=True,
                             squeeze=False)
    offset, starts = 0.0, []
    for run in runs:
        x = offset + run.t_r_s * np.arange(run.n_volumes)
        dropped = np.setdiff1d(np.arange(run.n_volumes), run.kept)
        for ax, trace in zip(axes[:, 0], ("framewise_displacement", "std_dvars")):
            if trace in run.motion.columns:
                ax.plot(x, run.motion[trace].to_numpy(), color="#1f4e9c", lw=0.9)
            for first, last in _spans(np.isin(np.arange(run.n_volumes), dropped)):
                ax.axvspan(x[first] - run.t_r_s / 2, x[last] + run.t_r_s / 2, color="0.8",
                           lw=0, label="dropped volumes" if not starts else None)
        starts.append(offset)
        offset = x[-1] + run.t_r_s
    axes[0, 0].axhline(threshold_mm, color="#c0392b", lw=1,
                       label=f"{threshold_mm:g} mm (fMRIPrep's flag)")
    axes[0, 0].set_ylabel("framewise\ndisplacement (mm)", fontsize=9)
    axes[0, 0].legend(fontsize=8, loc="upper right", frameon=False)
    if has_dvars:
        axes[1, 0].set_ylabel("standardised\nDVARS", fontsize=9)
    _run_axis(axes[0, 0], [r.name for r in runs], starts)
    axes[-1, 0].set_xlabel("time (s), runs end to end", fontsize=9)
    axes[-1, 0].set_xlim(0, offset)
    for ax in axes[:, 0]:
        ax.tick_params(labelsize=8)
    return png(fig, "Framewise displacement" + (" and standardised DVARS" if has_dvars else "")
               + " of each run, dropped volumes shaded")


def confounds_figure(runs) -> str:
    """The nuisance regressors of each run (z-scored per column over its kept volumes),
    one row per regressor, runs end to end; blank where a run has no such column."""
    plt = pyplot()
    names = list(dict.fromkeys(c for r in runs for c in r.confounds.columns))
    blocks, starts, offset = [], [], 0
    for run in runs:
        values = run.confounds.reindex(columns=names).to_numpy(np.float64)
        sd = np.nanstd(values, axis=0)
        blocks.append((values - np.nanmean(values, axis=0)) / np.where(sd > 0, sd, 1.0))
        starts.append(offset)
        offset += len(values)
    fig, ax = plt.subplots(figsize=(10.5, 0.9 + 0.13 * len(names)))
    image = ax.imshow(np.concatenate(blocks).T, aspect="auto", cmap="RdBu_r", vmin=-3,
                      vmax=3, interpolation="nearest")
    _row_labels(ax, names)
    _run_axis(ax, [r.name for r in runs], [s - 0.5 for s in starts])
    ax.set_xlabel("kept volume, runs end to end", fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    fig.colorbar(image, ax=ax, fraction=0.02, pad=0.01).set_label("z", fontsize=9)
    return png(fig, f"{len(names)} nuisance regressors over the kept volumes: "
                    + ", ".join(names))


def design_figure(design: pd.DataFrame, n_atoms: int) -> str:
    """The design matrix drawn with one row per regressor (so that every label is legible)
    and the kept volumes of the runs from left to right, each regressor scaled to its largest
    |value|; braces on the right group the atoms and each run's confounds and intercept."""
    plt = pyplot()
    values = design.to_numpy(np.float64)
    scale = np.abs(values).max(axis=0)
    runs = list(dict.fromkeys(design.index.get_level_values(0)))
    labels = list(design.columns[:n_atoms])
    groups = [("atoms (all runs)", 0, n_atoms)]
    for run in runs:
        cols = [c for c in design.columns[n_atoms:] if str(c).startswith(f"{run}_")]
        groups.append((f"{run}: confounds, intercept", len(labels), len(labels) + len(cols)))
        labels += [str(c)[len(run) + 1:] for c in cols]
    fig, ax = plt.subplots(figsize=(10.5, 1.2 + 0.105 * len(labels)))
    ax.imshow((values / np.where(scale > 0, scale, 1.0)).T, aspect="auto", cmap="gray",
              vmin=-1, vmax=1, interpolation="nearest")
    _row_labels(ax, labels)
    rows = list(design.index.get_level_values(0))
    _run_axis(ax, runs, [rows.index(r) - 0.5 for r in runs])
    ax.set_xlabel("kept volume, runs end to end", fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    for name, first, stop in groups:
        ax.annotate("", xy=(1.01, first - 0.5), xytext=(1.01, stop - 0.5),
                    xycoords=("axes fraction", "data"),
                    arrowprops=dict(arrowstyle="-", lw=1.2))
        ax.text(1.02, (first + stop - 1) / 2, name, fontsize=8, va="center",
                transform=ax.get_yaxis_transform())
    return png(fig, f"Design matrix, {values.shape[0]} volumes x {values.shape[1]} regressors: "
                    + ", ".join(map(str, design.columns)))
