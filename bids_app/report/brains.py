"""Figures of maps on the brain: thresholded stat maps (glass brain and slices, with a
network outline), fit maps with their chance level, and the brain mask over the mean BOLD."""

from __future__ import annotations

import numpy as np

from bids_app.bids.images import unmask_img
from bids_app.report.figures import colorbar, png, pyplot

#: Where the colour bar sits, right of the brains (figure fraction).
_CBAR_RECT = [0.93, 0.12, 0.012, 0.76]
#: Colour of the outline of a functional network.
OUTLINE_COLOR = "#00b050"
#: Colours of goodness-of-fit maps, from chance (pale yellow) to the best voxels (red).
FIT_CMAP = "YlOrRd"


def _schematics_without_limit_updates(original):
    """nilearn's ``plot_brain_schematics`` adding its outline patches with ``add_artist``.

    It adds a few hundred patches per glass-brain view with ``Axes.add_patch``, which
    recomputes the axes' data limits after each one (a third of the time of a subject's
    report); nilearn then sets the view's limits itself (``GlassBrainAxes.
    add_object_bounds``), so the data limits are never used and ``add_artist`` (the same
    steps without that update) draws the same picture (tests/test_report_figures.py)."""
    def plot_brain_schematics(ax, direction, **kwargs):
        ax.add_patch = ax.add_artist
        try:
            return original(ax, direction, **kwargs)
        finally:
            del ax.add_patch
    plot_brain_schematics.original = original
    return plot_brain_schematics


def fast_glass_brains() -> None:
    """Install :func:`_schematics_without_limit_updates` where nilearn's glass brains call
    it (once; nothing happens if a nilearn version moved it)."""
    from nilearn.plotting.displays import _axes

    current = getattr(_axes, "plot_brain_schematics", None)
    if current is not None and not hasattr(current, "original"):
        _axes.plot_brain_schematics = _schematics_without_limit_updates(current)


def _cut_coords(img, n_cuts: int, mask: np.ndarray, affine) -> list[float]:
    """Axial cuts through the map's strongest parts, or evenly through the mask when the
    map is empty."""
    from nilearn.plotting import find_cut_slices

    if np.any(np.asarray(img.dataobj)):
        return list(find_cut_slices(img, direction="z", n_cuts=n_cuts))
    z = np.flatnonzero(mask.any(axis=(0, 1)))
    ijk = np.linspace(z[0], z[-1], n_cuts + 2)[1:-1]
    return [float(affine[2, 2] * k + affine[2, 3]) for k in ijk]


def stat_map_figure(values: np.ndarray, mask: np.ndarray, affine, *, threshold: float,
                    label: str, title: str, outline: np.ndarray | None = None,
                    outline_label: str = "", n_cuts: int = 7) -> str:
    """A (n_voxels,) signed stat map where |value| >= ``threshold``: glass brain (four
    projections) above axial slices on the MNI template, one symmetric colour scale
    (colour bar labelled ``label``, the threshold greyed out on it), and the outline of
    ``outline`` ((n_voxels,) bool, e.g. a network) drawn in green on both."""
    from nilearn import plotting
    from nilearn.plotting.cm import cold_hot

    fast_glass_brains()
    plt = pyplot()
    shown = np.where(np.abs(values) >= threshold, values, 0.0)
    img = unmask_img(shown, mask, affine)
    vmax = float(max(np.abs(values).max(), threshold * 1.1, 1e-6))
    fig = plt.figure(figsize=(10.5, 5.0))
    common = dict(figure=fig, colorbar=False, threshold=threshold * (1 - 1e-6), vmax=vmax,
                  cmap=cold_hot)
    glass = plotting.plot_glass_brain(img, axes=fig.add_axes([0.0, 0.5, 0.92, 0.44]),
                                      plot_abs=False, display_mode="lzry", vmin=-vmax,
                                      **common)
    slices = plotting.plot_stat_map(img, axes=fig.add_axes([0.0, 0.0, 0.92, 0.47]),
                                    display_mode="z", vmin=-vmax, draw_cross=False,
                                    cut_coords=_cut_coords(img, n_cuts, mask, affine),
                                    **common)
    if outline is not None and outline.any():
        network = unmask_img(outline.astype(np.float32), mask, affine)
        for display in (glass, slices):
            display.add_contours(network, levels=[0.5], colors=OUTLINE_COLOR,
                                 linewidths=1.2)
    colorbar(fig, _CBAR_RECT, cold_hot, -vmax, vmax, label, threshold)
    fig.suptitle(title, fontsize=11, y=1.03)
    if outline_label:
        fig.text(0.5, 0.975, f"green outline: {outline_label}", ha="center", fontsize=9,
                 color=OUTLINE_COLOR)
    return png(fig, f"{title}; colour bar: {label}"
                    + (f"; green outline: {outline_label}" if outline_label else ""))


def fit_map_figure(values: np.ndarray, mask: np.ndarray, affine, *, chance: float,
                   label: str, title: str) -> str:
    """A (n_voxels,) goodness-of-fit map (R², correlation) beside the histogram of its
    values, the chance level drawn on both: the glass brain colours only the voxels above
    chance, the histogram marks chance and the median."""
    from nilearn import plotting

    fast_glass_brains()
    plt = pyplot()
    fig = plt.figure(figsize=(10.5, 2.8))
    vmax = max(float(np.percentile(values, 99.5)), chance + 1e-3)
    plotting.plot_glass_brain(unmask_img(np.where(values > chance, values, 0.0), mask, affine),
                              figure=fig, axes=fig.add_axes([0.0, 0.0, 0.56, 0.9]),
                              colorbar=False, plot_abs=False, display_mode="lzr",
                              threshold=chance, vmin=chance, vmax=vmax, cmap=FIT_CMAP)
    colorbar(fig, [0.565, 0.1, 0.01, 0.75], FIT_CMAP, chance, vmax, label)
    ax = fig.add_axes([0.71, 0.2, 0.28, 0.7])
    ax.hist(values, bins=60, color="0.55")
    ax.axvline(chance, color="#c0392b", lw=1.5, label=f"chance {chance:.3g}")
    median = float(np.median(values))
    ax.axvline(median, color="k", ls="--", lw=1, label=f"median {median:.3g}")
    ax.set_xlabel(label, fontsize=9)
    ax.set_ylabel("voxels", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=8, frameon=False)
    heading = f"{title} (coloured where above chance = {chance:.3g})"
    fig.suptitle(heading, fontsize=11)
    return png(fig, f"{heading}; histogram of the voxels' values, median {median:.3g}")


def mask_figure(mean_bold: np.ndarray, mask_img, title: str) -> str:
    """The analysed brain mask (red outline) over the mean BOLD image, axial mosaic."""
    import nibabel as nib
    from nilearn import plotting

    plt = pyplot()
    mean_img = nib.Nifti1Image(np.asarray(mean_bold, np.float32), mask_img.affine)
    fig = plt.figure(figsize=(10.5, 2.4))
    display = plotting.plot_anat(mean_img, figure=fig, display_mode="z", cut_coords=8,
                                 dim=-0.5, annotate=True, draw_cross=False, colorbar=False)
    display.add_contours(mask_img, levels=[0.5], colors="r", linewidths=1)
    fig.suptitle(title, fontsize=11)
    return png(fig, title)
