"""The report's brain pictures (bids_app.report.rasters) against nilearn's own drawings
of the same maps: where the coloured voxels land, their colours, the views' extents and
the glass-brain schematic."""

from __future__ import annotations

import numpy as np
import pytest

from bids_app.report import rasters


def _toy_map(affine_kind: str):
    """A 4 mm map on an MNI-like grid with blobs of both signs in both hemispheres."""
    import nibabel as nib
    from scipy import ndimage

    rng = np.random.default_rng(7)
    shape = (45, 54, 45)
    data = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0)
    data = (data / data.std()).astype(np.float32)
    affine = np.array([[4.0, 0, 0, -90], [0, 4, 0, -126], [0, 0, 4, -72], [0, 0, 0, 1]])
    if affine_kind == "LAS":                       # x flipped on disk, same brain
        data = data[::-1]
        affine = affine @ np.array([[-1, 0, 0, shape[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0],
                                    [0, 0, 0, 1]])
    return nib.Nifti1Image(data, affine)


def _as_nilearn_shows(vol: rasters.Volume, axes=(0, 1, 2)) -> rasters.Volume:
    """The same voxels on the grid nilearn's displays draw them on: nilearn stretches an
    axis's n voxels over the span of their centres (``imshow(extent=get_bounds(...))``),
    n pixels over (n - 1) voxel steps, so its voxels sit up to half a voxel off their
    true places at the grid's edges; rasters draws each voxel over its centre ± half a
    voxel. With this grid both draw the very same geometry (along ``axes``; a slice's own
    axis is not stretched)."""
    n = np.array(vol.data.shape, float)
    stretched = np.isin(np.arange(3), axes)
    step = np.where(stretched, vol.step_mm * (n - 1) / n, vol.step_mm)
    return rasters.Volume(vol.data, vol.origin_mm + np.where(stretched, step / 2, 0), step)


def _render(draw, size=(4.0, 4.0)):
    """Draw with nilearn on a fresh figure; return its RGB pixels and the one view's axes
    (its limits and pixel box)."""
    from bids_app.report.figures import pyplot

    plt = pyplot()
    fig = plt.figure(figsize=size, dpi=100)
    display = draw(fig)
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba(), dtype=np.float32)[..., :3] / 255.0
    (ax,) = [a.ax for a in display.axes.values()]
    box = ax.get_window_extent()
    plt.close(fig)
    height = pixels.shape[0]
    x0, x1 = int(round(box.x0)), int(round(box.x1))
    y0, y1 = int(round(height - box.y1)), int(round(height - box.y0))
    return pixels[y0:y1, x0:x1], ax.get_xlim(), ax.get_ylim()


def _coloured(rgb: np.ndarray) -> np.ndarray:
    """Pixels of a colour map's saturated end (not white, grey or black)."""
    return (rgb.max(axis=-1) - rgb.min(axis=-1)) > 0.25


def _compare(theirs: np.ndarray, mine: np.ndarray):
    a, b = _coloured(theirs), _coloured(mine)
    iou = (a & b).sum() / max((a | b).sum(), 1)
    both = a & b
    colour_error = float(np.abs(theirs[both] - mine[both]).mean()) if both.any() else 1.0
    return iou, colour_error, int(a.sum())


@pytest.mark.parametrize("affine_kind", ["RAS", "LAS"])
@pytest.mark.parametrize("direction", ["l", "r", "x", "y", "z"])
def test_glass_views_show_what_nilearn_shows(direction, affine_kind):
    """Each glass-brain view: the coloured pixels where nilearn's plot_glass_brain
    (plot_abs=False, same threshold and colour scale, schematic hidden) colours them
    (IoU >= 0.97 of the coloured pixels) in its colours (mean |RGB difference| <= 0.02),
    drawn on nilearn's grid (:func:`_as_nilearn_shows`); the view's extent nilearn's but
    for that half voxel."""
    from nilearn import plotting
    from nilearn.plotting.cm import cold_hot

    img = _toy_map(affine_kind)
    threshold, vmax = 1.5, 3.0
    theirs, xlim, ylim = _render(lambda fig: plotting.plot_glass_brain(
        img, figure=fig, axes=[0, 0, 1, 1], display_mode=direction, plot_abs=False,
        threshold=threshold, vmin=-vmax, vmax=vmax, cmap=cold_hot, colorbar=False,
        annotate=False, alpha=0.0))
    vol = rasters.volume(np.asarray(img.dataobj), img.affine)
    shown = _as_nilearn_shows(vol)
    overlay = rasters.Overlay(shown, np.abs(vol.data) >= threshold, cold_hot, -vmax, vmax)
    view = rasters.View(tuple(xlim), tuple(ylim))
    mine = rasters.glass_pixels(overlay, direction, view, theirs.shape[1], theirs.shape[0],
                                with_schematic=False)
    iou, colour_error, n = _compare(theirs, mine)
    assert n > 500
    assert iou >= 0.97, iou
    assert colour_error <= 0.02, colour_error
    # the extent: nilearn's, but for the half voxel at the grid's edges (see above)
    extent = rasters.glass_view(direction, vol)
    assert np.allclose(extent.h_mm, xlim, atol=2.01) and np.allclose(extent.v_mm, ylim,
                                                                    atol=2.01)


@pytest.mark.parametrize("affine_kind", ["RAS", "LAS"])
@pytest.mark.parametrize("z_mm", [-20.0, 14.0, 22.0, 40.0])       # 14, 22: halfway
def test_slices_show_what_nilearn_shows(z_mm, affine_kind):
    """An axial slice: the coloured voxels where nilearn's plot_stat_map colours them (no
    background, same threshold and colour scale), in its colours, on nilearn's grid."""
    from nilearn import plotting
    from nilearn.plotting.cm import cold_hot

    img = _toy_map(affine_kind)
    threshold, vmax = 1.5, 3.0
    theirs, xlim, ylim = _render(lambda fig: plotting.plot_stat_map(
        img, bg_img=None, figure=fig, axes=[0, 0, 1, 1], display_mode="z",
        cut_coords=[z_mm], threshold=threshold, vmax=vmax, cmap=cold_hot, colorbar=False,
        annotate=False, draw_cross=False))
    vol = rasters.volume(np.asarray(img.dataobj), img.affine)
    shown = _as_nilearn_shows(vol, axes=(0, 1))
    overlay = rasters.Overlay(shown, np.abs(vol.data) >= threshold, cold_hot, -vmax, vmax)
    mine = rasters.slice_pixels(overlay, z_mm, rasters.View(tuple(xlim), tuple(ylim)),
                                theirs.shape[1], theirs.shape[0], None)
    iou, colour_error, n = _compare(theirs, mine)
    assert n > 500
    assert iou >= 0.97, iou
    assert colour_error <= 0.02, colour_error


@pytest.mark.parametrize("direction", ["l", "r", "y", "z"])
def test_schematic_is_nilearns(direction):
    """The schematic drawn as one collection against nilearn drawing its own patches on
    an empty glass brain of that size: mean grey-level difference <= 0.015 (measured
    0.006-0.011) and the dark lines where nilearn draws them (IoU >= 0.8, measured
    0.87-0.98)."""
    import nibabel as nib
    from nilearn import plotting

    img = nib.Nifti1Image(np.zeros((45, 54, 45), np.float32), _toy_map("RAS").affine)
    theirs, xlim, ylim = _render(lambda fig: plotting.plot_glass_brain(
        img, figure=fig, axes=[0, 0, 1, 1], display_mode=direction, colorbar=False,
        annotate=False), size=(3.0, 3.0))
    view = rasters.View(tuple(xlim), tuple(ylim))
    schematic = rasters.schematic_pixels(direction, view, theirs.shape[1], theirs.shape[0])
    mine = schematic[..., :3] + (1 - schematic[..., 3:])
    grey_theirs, grey_mine = theirs.mean(axis=-1), mine.mean(axis=-1)
    assert np.abs(grey_theirs - grey_mine).mean() <= 0.015
    dark_theirs, dark_mine = grey_theirs < 0.6, grey_mine < 0.6
    assert dark_theirs.sum() > 100
    assert (dark_theirs & dark_mine).sum() / (dark_theirs | dark_mine).sum() >= 0.8


def test_projection_is_the_signed_largest_magnitude_per_line():
    """Against a loop over projection lines, with the 'l' and 'r' views seeing only their
    hemisphere."""
    rng = np.random.default_rng(1)
    data = rng.standard_normal((10, 6, 5))
    vol = rasters.Volume(data, np.array([-9.0, 0, 0]), np.array([2.0, 2, 2]))
    shown = np.abs(data) > 0.5
    for direction, axis in (("z", 2), ("y", 1), ("x", 0), ("l", 0), ("r", 0)):
        plane, hit = rasters.projection(vol, shown, direction)
        keep = np.ones(10, bool)
        if direction == "l":
            keep = np.arange(10) < 4          # x = -9 + 2 i < 0, int() of x = 0's index
        elif direction == "r":
            keep = np.arange(10) >= 4
        values = np.where(shown & keep[:, None, None], data, 0.0)
        moved = np.moveaxis(values, axis, -1)
        expected = np.empty(moved.shape[:2])
        for index in np.ndindex(*moved.shape[:2]):
            line = moved[index]
            expected[index] = line[np.argmax(np.abs(line))]
        assert np.array_equal(plane, expected), direction
        assert np.array_equal(hit, np.moveaxis(shown & keep[:, None, None], axis, -1)
                              .any(axis=-1)), direction


def test_edges_and_row_layout():
    square = np.zeros((8, 8), bool)
    square[2:6, 2:6] = True
    border = rasters.edges(square)
    assert border[2, 2] and border[1, 3] and not border[3, 3] and not border[0, 0]
    views = [rasters.View((0, 200), (0, 100)), rasters.View((0, 100), (0, 100))]
    boxes = rasters.row_layout(views, (10, 20, 1000, 50), gap_px=10)
    assert [b[3] for b in boxes] == [50, 50] and [b[2] for b in boxes] == [100, 50]
    assert boxes[0][:2] == (10, 20) and boxes[1][0] == 120
    narrow = rasters.row_layout(views, (0, 0, 310, 500), gap_px=10)
    assert narrow[0][2] == 200 and narrow[1][2] == 100 and narrow[0][3] == 100


def test_oblique_grid_is_resampled_to_an_axis_aligned_one():
    """A map on an oblique grid (rotated 10 degrees about z): drawn from an axis-aligned
    grid of the same voxel size, nearest neighbour, the blob where the rotation puts it."""
    import nibabel as nib

    data = np.zeros((30, 30, 20), np.float32)
    data[20:24, 14:18, 8:12] = 5.0                         # a blob off the rotation axis
    angle = np.deg2rad(10)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                         [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = 3.0 * rotation
    affine[:3, 3] = [-45, -45, -30]
    vol = rasters.volume(data, affine)
    assert np.allclose(vol.step_mm, 3.0)
    assert set(np.unique(vol.data)) <= {0.0, 5.0} and (vol.data == 5).sum() > 0
    # the blob's centre in mm, on the oblique grid and on the resampled one
    centre = nib.affines.apply_affine(affine, [21.5, 15.5, 9.5])
    ijk = np.argwhere(vol.data == 5).mean(axis=0)
    assert np.allclose(vol.origin_mm + ijk * vol.step_mm, centre, atol=3.0)


def test_brain_figures_with_not_a_number_voxels():
    """A t or R² map with NaN voxels (e.g. a voxel without variance) is drawn, the NaNs
    not coloured, and the colour scale set by the finite values."""
    import base64
    import io
    import re

    from PIL import Image

    from bids_app.report.brains import fit_map_figure, stat_map_figure

    img = _toy_map("RAS")
    mask = np.ones(img.shape, bool)
    values = np.asarray(img.dataobj)[mask]
    values[::7] = np.nan
    for tag, brains in ((stat_map_figure(values, mask, img.affine, threshold=1.5,
                                         label="t", title="with NaN"), 0.9),
                        (fit_map_figure(np.abs(values) / 4, mask, img.affine, chance=0.1,
                                        label="R²", title="with NaN"), 0.55)):
        png = re.search(r'base64,([^"]+)"', tag).group(1)
        pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(png))).convert("RGB"))
        left = pixels[:, : int(brains * pixels.shape[1])] / 255.0    # not the colour bar
        assert _coloured(left).sum() > 2000
