"""Figures of maps on the brain: thresholded stat maps (glass brain and slices, with a
network outline), fit maps with their chance level, and the brain mask over the mean BOLD.

The brains are composed as pixel arrays by :mod:`.rasters` (nilearn's conventions,
schematics, template and colour maps; one matplotlib image per figure instead of one axes
per view) and matplotlib adds the titles, labels, colour bars and histograms.
"""

from __future__ import annotations

import numpy as np

from bids_app.bids.images import unmask
from bids_app.report import rasters
from bids_app.report.figures import DPI, colorbar, png, pyplot

#: Where the colour bar sits, right of the brains (figure fraction).
_CBAR_RECT = [0.93, 0.12, 0.012, 0.76]
#: Colour of the outline of a functional network.
OUTLINE_COLOR = "#00b050"
#: Colours of goodness-of-fit maps, from chance (pale yellow) to the best voxels (red).
FIT_CMAP = "YlOrRd"
#: Grey levels of the MNI template under the slices (nilearn's dimmed template on white).
_TEMPLATE_LEVELS = (0.35, 0.95)
#: Label styles over the pictures.
_SIDE = dict(fontsize=11, ha="center", va="center", color="k")
_CUT = dict(fontsize=10, ha="left", va="top", color="k")


def _rgb(colour) -> np.ndarray:
    from matplotlib.colors import to_rgb

    return np.array(to_rgb(colour), np.float32)


def _even_cuts(in_brain: rasters.Volume, n_cuts: int) -> list[float]:
    """``n_cuts`` axial cuts evenly through the slices that hold ``in_brain`` voxels."""
    z = np.flatnonzero(in_brain.data.any(axis=(0, 1)))
    if not len(z):
        z = np.arange(in_brain.data.shape[2])
    ijk = np.linspace(z[0], z[-1], n_cuts + 2)[1:-1]
    return [float(in_brain.origin_mm[2] + in_brain.step_mm[2] * k) for k in ijk]


def _cut_coords(shown_values: np.ndarray, affine, n_cuts: int,
                in_brain: rasters.Volume) -> list[float]:
    """Axial cuts through the map's strongest parts (nilearn's ``find_cut_slices``), or
    evenly through the brain when nothing is shown."""
    if not np.any(shown_values):
        return _even_cuts(in_brain, n_cuts)
    import nibabel as nib
    from nilearn.plotting import find_cut_slices

    return [float(z) for z in find_cut_slices(nib.Nifti1Image(shown_values, affine),
                                              direction="z", n_cuts=n_cuts)]


def _glass_row(picture: rasters.Picture, overlay: rasters.Overlay, directions: str,
               box, outline=None, outline_rgb=None) -> None:
    """Glass-brain views side by side in ``box``, L/R marked on the views that show both
    hemispheres."""
    views = [rasters.glass_view(d, overlay.vol) for d in directions]
    for direction, view, placed in zip(directions, views,
                                       rasters.row_layout(views, box, gap_px=12)):
        x, y, w, h = placed
        picture.paste(placed, rasters.glass_pixels(overlay, direction, view, w, h,
                                                   outline, outline_rgb))
        if direction in "yz":
            picture.label(x + 0.08 * w, y + 8, "L", **_SIDE)
            picture.label(x + 0.92 * w, y + 8, "R", **_SIDE)


def _slice_row(picture: rasters.Picture, overlay, cuts: list[float], view: rasters.View,
               box, background, **style) -> None:
    """Axial slices at ``cuts`` (mm) side by side in ``box``: L/R above, z below."""
    colour = "w" if style.get("empty", 1.0) < 0.5 else "k"
    for z, placed in zip(cuts, rasters.row_layout([view] * len(cuts), box, gap_px=8)):
        x, y, w, h = placed
        picture.paste(placed, rasters.slice_pixels(overlay, z, view, w, h, background,
                                                   **style))
        picture.label(x + 6, y + 2, "L", **{**_SIDE, "color": colour})
        picture.label(x + w - 6, y + 2, "R", **{**_SIDE, "color": colour})
        picture.label(x, y + h + 2, f"z={int(round(z))}", **{**_CUT, "color": colour})


def _figure(width_in: float, height_in: float):
    plt = pyplot()
    fig = plt.figure(figsize=(width_in, height_in), dpi=DPI)
    return fig, rasters.Picture(int(round(width_in * DPI)), int(round(height_in * DPI)))


def stat_map_figure(values: np.ndarray, mask: np.ndarray, affine, *, threshold: float,
                    label: str, title: str, outline: np.ndarray | None = None,
                    outline_label: str = "", n_cuts: int = 7) -> str:
    """A (n_voxels,) signed stat map where |value| >= ``threshold``: glass brain (four
    projections) above axial slices on the MNI template, one symmetric colour scale
    (colour bar labelled ``label``, the threshold greyed out on it), and the outline of
    ``outline`` ((n_voxels,) bool, e.g. a network) drawn in green on both."""
    from nilearn.plotting.cm import cold_hot

    shown = np.abs(values) >= threshold
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)  # not-a-number: not shown
    vmax = float(max(np.abs(values).max(initial=0.0), threshold * 1.1, 1e-6))
    volume = unmask(np.where(shown, values, 0.0).astype(np.float32), mask)
    vol = rasters.volume(volume, affine)
    shown_vol = rasters.volume(unmask(shown.astype(np.uint8), mask), affine).data > 0
    overlay = rasters.Overlay(vol, shown_vol, cold_hot, -vmax, vmax)
    in_brain = rasters.volume(mask.astype(np.uint8), affine)
    region = None
    if outline is not None and outline.any():
        region = rasters.volume(unmask(outline.astype(np.uint8), mask), affine).data > 0
    fig, picture = _figure(10.5, 5.0)
    width, height = picture.rgb.shape[1], picture.rgb.shape[0]
    top = 44 if outline_label else 30
    green = _rgb(OUTLINE_COLOR)
    _glass_row(picture, overlay, "lzry", (4, top, 0.92 * width - 8, 0.46 * height - top + 14),
               region, green)
    cuts = _cut_coords(volume, affine, n_cuts, in_brain)
    _slice_row(picture, overlay, cuts, rasters.slice_view(in_brain, in_brain.data > 0),
               (4, 0.52 * height + 6, 0.92 * width - 8, 0.48 * height - 34),
               rasters.mni_template(), levels=_TEMPLATE_LEVELS, outline=region,
               outline_grid=vol, outline_rgb=green)
    picture.label(width / 2, 8, title, fontsize=11, ha="center", va="top")
    if outline_label:
        picture.label(width / 2, 26, f"green outline: {outline_label}", fontsize=9,
                      ha="center", va="top", color=OUTLINE_COLOR)
    picture.draw(fig)
    colorbar(fig, _CBAR_RECT, cold_hot, -vmax, vmax, label, threshold)
    return png(fig, f"{title}; colour bar: {label}"
                    + (f"; green outline: {outline_label}" if outline_label else ""),
               crop=False)


def fit_map_figure(values: np.ndarray, mask: np.ndarray, affine, *, chance: float,
                   label: str, title: str) -> str:
    """A (n_voxels,) goodness-of-fit map (R², correlation) beside the histogram of its
    values, the chance level drawn on both: the glass brain colours only the voxels above
    chance, the histogram marks chance and the median."""
    from matplotlib import colormaps

    finite = values[np.isfinite(values)]             # not-a-number voxels: not shown
    vmax = max(float(np.percentile(finite, 99.5)) if finite.size else chance, chance + 1e-3)
    vol = rasters.volume(unmask(values.astype(np.float32), mask), affine)
    in_mask = rasters.volume(mask.astype(np.uint8), affine).data > 0
    overlay = rasters.Overlay(vol, in_mask & (vol.data > chance), colormaps[FIT_CMAP],
                              chance, vmax)
    fig, picture = _figure(10.5, 2.8)
    width, height = picture.rgb.shape[1], picture.rgb.shape[0]
    _glass_row(picture, overlay, "lzr", (4, 30, 0.56 * width - 8, height - 36))
    heading = f"{title} (coloured where above chance = {chance:.3g})"
    picture.label(width / 2, 6, heading, fontsize=11, ha="center", va="top")
    picture.draw(fig)
    colorbar(fig, [0.565, 0.1, 0.01, 0.75], FIT_CMAP, chance, vmax, label)
    ax = fig.add_axes([0.71, 0.2, 0.28, 0.68])
    ax.hist(finite, bins=60, color="0.55")
    ax.axvline(chance, color="#c0392b", lw=1.5, label=f"chance {chance:.3g}")
    median = float(np.median(finite)) if finite.size else float("nan")
    ax.axvline(median, color="k", ls="--", lw=1, label=f"median {median:.3g}")
    ax.set_xlabel(label, fontsize=9)
    ax.set_ylabel("voxels", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=8, frameon=False)
    return png(fig, f"{heading}; histogram of the voxels' values, median {median:.3g}")


def mask_figure(mean_bold: np.ndarray, mask_img, title: str, n_cuts: int = 8) -> str:
    """The analysed brain mask (red outline) over the mean BOLD image, axial mosaic."""
    mask = np.asarray(mask_img.dataobj) > 0
    mean = np.asarray(mean_bold, np.float32)
    inside = mean[mask] if mask.any() else mean.ravel()
    low, high = np.percentile(inside, [2, 98]) if inside.size else (0.0, 1.0)
    scaled = np.clip((mean - low) / max(high - low, 1e-12), 0, 1)
    background = rasters.volume(scaled.astype(np.float32), mask_img.affine)
    in_brain = rasters.volume(mask.astype(np.uint8), mask_img.affine)
    fig, picture = _figure(10.5, 2.4)
    picture.rgb[:] = 0.0
    width, height = picture.rgb.shape[1], picture.rgb.shape[0]
    full = rasters.slice_view(in_brain, in_brain.data > 0, margin_mm=8.0)
    _slice_row(picture, None, _even_cuts(in_brain, n_cuts), full,
               (4, 32, width - 8, height - 54), background, floor=-1.0, levels=(0.0, 1.0),
               empty=0.0, outline=in_brain.data > 0, outline_grid=in_brain,
               outline_rgb=_rgb("r"))
    picture.label(width / 2, 6, title, fontsize=11, ha="center", va="top", color="w")
    picture.draw(fig)
    return png(fig, title, crop=False)
