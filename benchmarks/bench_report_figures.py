"""The reports' brain figures: llmfbn's pixel-array pictures (bids_app.report.rasters)
against the same figures drawn with nilearn's plotting functions, at 2 mm.

A smooth random t map on nilearn's 2 mm MNI brain mask (235,375 voxels) is drawn as

- a stat-map figure: glass brain (l, z, r, y) above seven axial slices on the MNI template,
  |t| >= threshold, green network outline: ``brains.stat_map_figure`` against
  ``plot_glass_brain(display_mode="lzry")`` + ``plot_stat_map(display_mode="z")`` in one
  figure with ``add_contours`` (the code the reports used before 2026-12-02);
- a fit-map figure: glass brain (l, z, r) of the voxels above chance: ``fit_map_figure``
  (which adds a histogram) against ``plot_glass_brain(display_mode="lzr")``;

each saved as a 100 dpi PNG, ``--repeats`` times in one process after one warm-up draw
(imports, template, schematics loaded), median and range reported. Run by hand:

    python benchmarks/bench_report_figures.py [--repeats 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np


def _maps():
    from nilearn.datasets import load_mni152_brain_mask
    from scipy import ndimage

    mask_img = load_mni152_brain_mask(resolution=2)
    mask = np.asarray(mask_img.dataobj) > 0
    rng = np.random.default_rng(0)
    smooth = ndimage.gaussian_filter(rng.standard_normal(mask.shape), 3.0)
    t = (smooth[mask] / smooth[mask].std() * 2.0).astype(np.float32)
    outline = smooth[mask] > np.percentile(smooth[mask], 85)
    return mask_img, mask, t, outline


def _nilearn_stat(t, mask, affine, threshold, outline):
    """The stat-map figure as nilearn's plotting draws it."""
    from nilearn import plotting
    from nilearn.plotting.cm import cold_hot

    from bids_app.bids.images import unmask_img
    from bids_app.report.figures import pyplot

    plt = pyplot()
    img = unmask_img(np.where(np.abs(t) >= threshold, t, 0.0), mask, affine)
    vmax = float(np.abs(t).max())
    fig = plt.figure(figsize=(10.5, 5.0))
    common = dict(figure=fig, colorbar=False, threshold=threshold, vmax=vmax, cmap=cold_hot)
    glass = plotting.plot_glass_brain(img, axes=fig.add_axes([0.0, 0.5, 0.92, 0.44]),
                                      plot_abs=False, display_mode="lzry", vmin=-vmax,
                                      **common)
    slices = plotting.plot_stat_map(img, axes=fig.add_axes([0.0, 0.0, 0.92, 0.47]),
                                    display_mode="z", vmin=-vmax, draw_cross=False,
                                    cut_coords=7, **common)
    network = unmask_img(outline.astype(np.float32), mask, affine)
    for display in (glass, slices):
        display.add_contours(network, levels=[0.5], colors="#00b050", linewidths=1.2)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _nilearn_fit(values, mask, affine, chance):
    from nilearn import plotting

    from bids_app.bids.images import unmask_img
    from bids_app.report.figures import pyplot

    plt = pyplot()
    fig = plt.figure(figsize=(10.5, 2.8))
    plotting.plot_glass_brain(unmask_img(np.where(values > chance, values, 0.0), mask, affine),
                              figure=fig, axes=fig.add_axes([0.0, 0.0, 0.56, 0.9]),
                              colorbar=False, plot_abs=False, display_mode="lzr",
                              threshold=chance, vmin=chance,
                              vmax=float(np.percentile(values, 99.5)), cmap="YlOrRd")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _timed(func, repeats: int) -> dict:
    func()                                   # warm-up: imports, template, schematics
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return {"median_s": round(statistics.median(times), 3),
            "min_s": round(min(times), 3), "max_s": round(max(times), 3)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    from bids_app.report.brains import fit_map_figure, stat_map_figure

    mask_img, mask, t, outline = _maps()
    affine, threshold = mask_img.affine, 3.3
    r2 = np.abs(t) / 10
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "load_1min": os.getloadavg()[0], "voxels": int(mask.sum()),
        "voxels_shown": int((np.abs(t) >= threshold).sum()),
        "stat_nilearn": _timed(lambda: _nilearn_stat(t, mask, affine, threshold, outline),
                               args.repeats),
        "stat_llmfbn": _timed(lambda: stat_map_figure(
            t, mask, affine, threshold=threshold, label="t", title="atom01",
            outline=outline, outline_label="network"), args.repeats),
        "fit_nilearn": _timed(lambda: _nilearn_fit(r2, mask, affine, 0.2), args.repeats),
        "fit_llmfbn": _timed(lambda: fit_map_figure(r2, mask, affine, chance=0.2,
                                                    label="R²", title="R²"), args.repeats),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
