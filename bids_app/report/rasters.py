"""Brain pictures composed as pixel arrays: glass-brain projections and axial slices.

nilearn's ``plot_glass_brain`` and ``plot_stat_map`` give each view its own matplotlib axes
and draw a few hundred vector outline patches per glass-brain view; at 2 mm a report
figure with eight or eleven views took 0.7-1.9 s, most of it creating axes and outline
artists (benchmarks/bench_report_figures.py). Here every view is sampled from the volume
with numpy at the figure's own pixel size (nearest neighbour, as nilearn's default
``interpolation="nearest"`` shows voxels), the views are pasted into one RGB image, and
matplotlib draws that one image, the labels and the colour bar. nilearn still supplies
what the pictures mean: its glass-brain schematics (its outline paths, drawn as one
collection per view size), its MNI template (the 1 mm file it ships) under the slices,
its ``cold_hot`` colour map and its choice of cuts (``find_cut_slices``).

Conventions are nilearn's: views in millimetres on the image's closest canonical (RAS)
orientation, neurological display (the left hemisphere on the left), the signed value of
largest magnitude along each glass-brain projection line (``plot_abs=False``), the 'l' and
'r' views each projecting one hemisphere (voxels left, respectively right, of x = 0), the
'l' view mirrored so that the brain faces left. tests/test_report_rasters.py checks the
views against nilearn's own drawings of the same maps.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

#: Projection axis, then the (horizontal, vertical) voxel axes of each view.
_VIEW_AXES = {"x": (0, 1, 2), "l": (0, 1, 2), "r": (0, 1, 2), "y": (1, 0, 2),
              "z": (2, 0, 1)}
#: Opacity of the schematic's lines (nilearn's ``plot_glass_brain`` default ``alpha``).
_SCHEMATIC_ALPHA = 0.7
#: Below this fraction of its maximum the MNI template is background (white).
_TEMPLATE_FLOOR = 0.07


@dataclass(frozen=True)
class Volume:
    """A 3-D array on an axis-aligned RAS grid: voxel (i, j, k) sits at
    ``origin_mm + (i, j, k) * step_mm``."""

    data: np.ndarray
    origin_mm: np.ndarray
    step_mm: np.ndarray

    def bounds_mm(self, axis: int) -> tuple[float, float]:
        """Outer edges of the grid along ``axis`` (voxel centres ± half a voxel)."""
        lo = self.origin_mm[axis] - self.step_mm[axis] / 2
        return float(lo), float(lo + self.step_mm[axis] * self.data.shape[axis])

    def index(self, axis: int, mm: np.ndarray) -> np.ndarray:
        """Nearest voxel index of each coordinate along ``axis`` (halves to even, as
        nilearn picks its cuts); -1 outside the grid."""
        k = np.rint((np.asarray(mm, float) - self.origin_mm[axis])
                    / self.step_mm[axis]).astype(np.int64)
        return np.where((k >= 0) & (k < self.data.shape[axis]), k, -1)


def volume(data: np.ndarray, affine: np.ndarray) -> Volume:
    """``data`` on ``affine`` reoriented to the closest canonical (RAS) grid; an oblique
    grid is first resampled (nearest neighbour) to an axis-aligned one of the same voxel
    size, as nilearn's plotting does."""
    import nibabel as nib

    img = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(data), affine))
    rotation = img.affine[:3, :3]
    if not np.allclose(rotation, np.diag(np.diag(rotation)), atol=1e-4 * np.abs(rotation).max()):
        from nilearn.image import resample_img

        sizes = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
        img = nib.as_closest_canonical(resample_img(
            nib.Nifti1Image(np.asarray(data, np.float32), affine),
            target_affine=np.diag(sizes), interpolation="nearest", force_resample=True,
            copy_header=True))
    return Volume(np.asarray(img.dataobj), img.affine[:3, 3].copy(),
                  np.diag(img.affine[:3, :3]).copy())


def projection(vol: Volume, shown: np.ndarray, direction: str):
    """The glass-brain view of ``vol`` in ``direction`` ('x', 'l', 'r', 'y', 'z'): the
    signed value of largest magnitude among the ``shown`` voxels of each projection line,
    and whether the line has one, as (n_horizontal, n_vertical) voxel arrays."""
    axis = _VIEW_AXES[direction][0]
    values = np.where(shown, vol.data, 0.0)
    any_shown = shown
    if direction in "lr":
        x_center = int(-vol.origin_mm[0] / vol.step_mm[0])  # nilearn: int() of x = 0's index
        half = slice(None, x_center) if direction == "l" else slice(x_center, None)
        if vol.data[half].shape[0]:
            values, any_shown = values[half], shown[half]
    best = np.expand_dims(np.abs(values).argmax(axis=axis), axis)
    plane = np.take_along_axis(values, best, axis=axis).squeeze(axis)
    return plane, any_shown.any(axis=axis)


@dataclass(frozen=True)
class View:
    """The extent in mm of one picture of a figure: (h0, h1) left to right, (v0, v1)
    bottom to top; h0 > h1 mirrors it."""

    h_mm: tuple[float, float]
    v_mm: tuple[float, float]

    @property
    def size_mm(self) -> tuple[float, float]:
        return abs(self.h_mm[1] - self.h_mm[0]), abs(self.v_mm[1] - self.v_mm[0])


def pixel_centres_mm(view: View, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Millimetre coordinates of the centres of a ``width`` x ``height`` picture of
    ``view``: (width,) horizontal, (height,) vertical from the top row down."""
    (h0, h1), (v0, v1) = view.h_mm, view.v_mm
    h = h0 + (np.arange(width) + 0.5) * (h1 - h0) / width
    v = v1 - (np.arange(height) + 0.5) * (v1 - v0) / height
    return h, v


def sample(plane: np.ndarray, vol: Volume, axes: tuple[int, int], h_mm, v_mm,
           fill=0) -> np.ndarray:
    """(n_horizontal, n_vertical) voxel ``plane`` of ``vol`` (its voxel ``axes``) at the
    pixel centres: a (height, width) picture, ``fill`` outside the grid."""
    ih, iv = vol.index(axes[0], h_mm), vol.index(axes[1], v_mm)
    picture = plane[np.ix_(np.maximum(ih, 0), np.maximum(iv, 0))].T
    outside = (iv[:, None] < 0) | (ih[None, :] < 0)
    if outside.any():
        picture = np.where(outside, fill, picture)
    return picture


def glass_view(direction: str, vol: Volume) -> View:
    """The extent nilearn gives a glass-brain view: the grid and the schematic's bounds."""
    _, h_axis, v_axis = _VIEW_AXES[direction]
    (h0, h1), (v0, v1) = vol.bounds_mm(h_axis), vol.bounds_mm(v_axis)
    bounds = schematic_bounds(direction)
    if bounds is not None:
        h0, h1 = min(h0, bounds[0]), max(h1, bounds[1])
        v0, v1 = min(v0, bounds[2]), max(v1, bounds[3])
    return View((h1, h0) if direction == "l" else (h0, h1), (v0, v1))


def slice_view(vol: Volume, in_view: np.ndarray, margin_mm: float = 4.0) -> View:
    """An axial view cropped to the voxels ``in_view`` (e.g. the brain mask) ± a margin."""
    ii, jj = np.nonzero(in_view.any(axis=2))
    if not len(ii):
        return View(vol.bounds_mm(0), vol.bounds_mm(1))
    x = vol.origin_mm[0] + vol.step_mm[0] * np.array([ii.min(), ii.max()])
    y = vol.origin_mm[1] + vol.step_mm[1] * np.array([jj.min(), jj.max()])
    pad = margin_mm + vol.step_mm[:2] / 2
    return View((x[0] - pad[0], x[1] + pad[0]), (y[0] - pad[1], y[1] + pad[1]))


# --- nilearn's pieces, loaded once per process ------------------------------------------


@functools.cache
def _schematic(direction: str):
    """nilearn's glass-brain schematic of ``direction``, read once per process: its
    outline patches (as ``plot_brain_schematics`` builds them), their transform to mm and
    their bounds with nilearn's margin; None when this nilearn has moved them."""
    import json

    try:
        from nilearn.plotting import glass_brain
        filename, transform = glass_brain._get_json_and_transform(direction)
        content = json.loads(filename.read_text())
        return (glass_brain._get_mpl_patches(content), transform,
                glass_brain._get_object_bounds(content, transform))
    except (ImportError, AttributeError, ValueError, OSError):
        return None


def schematic_bounds(direction: str):
    """(h0, h1, v0, v1) mm of nilearn's schematic of ``direction`` with its margin."""
    found = _schematic(direction)
    return None if found is None else found[2]


@functools.lru_cache(maxsize=64)
def schematic_pixels(direction: str, view: View, width: int, height: int,
                     dpi: float = 100.0):
    """nilearn's glass-brain schematic of ``direction`` on a ``width`` x ``height`` picture
    of ``view``, drawn as nilearn draws it on a figure of ``dpi`` (its patches, colours,
    line widths in points and ``alpha``), but as one collection on a bare canvas:
    premultiplied RGBA float32 (height, width, 4), or None when this nilearn has moved
    its schematics. Cached: a report's figures repeat their views' sizes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import PathCollection
    from matplotlib.figure import Figure

    found = _schematic(direction)
    if found is None:
        return None
    patches, transform, _ = found
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    fig.patch.set_alpha(0)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_axis_off()
    ax.patch.set_alpha(0)
    ax.set_xlim(*view.h_mm)
    ax.set_ylim(*view.v_mm)
    # nilearn's own patches (plot_brain_schematics adds them one artist each), drawn as
    # one collection: the same paths, colours and widths, several times faster
    ax.add_collection(PathCollection(
        [p.get_path() for p in patches], facecolors="none",
        edgecolors=[p.get_edgecolor() for p in patches],
        linewidths=[p.get_linewidth() for p in patches], alpha=_SCHEMATIC_ALPHA,
        transform=transform + ax.transData), autolim=False)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba(), dtype=np.float32) / 255.0
    rgba[..., :3] *= rgba[..., 3:]        # premultiplied, for compositing
    return rgba


@functools.lru_cache(maxsize=1)
def mni_template() -> Volume | None:
    """nilearn's 1 mm MNI152 (ICBM 2009a) template, scaled to [0, 1], or None."""
    try:
        from nilearn.datasets.struct import MNI152_FILE_PATH
    except ImportError:
        return None
    import nibabel as nib

    img = nib.load(MNI152_FILE_PATH)
    template = volume(np.asarray(img.dataobj, np.float32), img.affine)
    data = template.data / max(float(template.data.max()), 1e-12)
    return Volume(data.astype(np.float32), template.origin_mm, template.step_mm)


# --- pictures ---------------------------------------------------------------------------


def edges(inside: np.ndarray) -> np.ndarray:
    """The two-pixel-wide border of the (height, width) bool region ``inside``: pixels
    on either side of its boundary (4-neighbourhood)."""
    padded = np.pad(inside, 1, mode="edge")
    up, down = padded[:-2, 1:-1], padded[2:, 1:-1]
    left, right = padded[1:-1, :-2], padded[1:-1, 2:]
    every = inside & up & down & left & right
    some = inside | up | down | left | right
    return some & ~every


def row_layout(views: list[View], box: tuple[float, float, float, float],
               gap_px: float) -> list[tuple[int, int, int, int]]:
    """Pixel boxes (x, y, width, height; y from the top) of ``views`` side by side in
    ``box`` (x, y, width, height), left-aligned and of one height, as nilearn lays out a
    display's views: each view keeps its own aspect (equal mm on both axes), the row's
    height is the box's or less when the row would be wider than the box."""
    x, y, width, height = box
    sizes = np.array([view.size_mm for view in views])
    aspects = sizes[:, 0] / sizes[:, 1]
    row_height = min(height, (width - gap_px * (len(views) - 1)) / aspects.sum())
    boxes, left = [], x
    top = int(round(y + (height - row_height) / 2))
    for aspect in aspects:
        w = max(int(round(row_height * aspect)), 1)
        boxes.append((int(round(left)), top, w, max(int(round(row_height)), 1)))
        left += row_height * aspect + gap_px
    return boxes


class Picture:
    """A figure's pixels: an RGB canvas (height, width, 3) in [0, 1] that views are
    pasted into, and the labels matplotlib writes over it (pixel coordinates, y from the
    top)."""

    def __init__(self, width: int, height: int, background: float = 1.0):
        self.rgb = np.full((height, width, 3), background, np.float32)
        self.labels: list[tuple[float, float, str, dict]] = []

    def paste(self, box, rgb: np.ndarray) -> None:
        x, y, w, h = box
        self.rgb[y:y + h, x:x + w] = rgb[:self.rgb.shape[0] - y, :self.rgb.shape[1] - x]

    def label(self, x: float, y: float, text: str, **style) -> None:
        self.labels.append((x, y, text, style))

    def draw(self, fig) -> None:
        """The canvas as one image filling ``fig`` (sized to it at the figure's dpi) and
        the labels over it."""
        height, width = self.rgb.shape[:2]
        ax = fig.add_axes([0, 0, 1, 1])
        ax.imshow(np.clip(self.rgb, 0, 1), interpolation="nearest", extent=(0, width, height, 0),
                  aspect="auto")
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
        ax.set_axis_off()
        for x, y, text, style in self.labels:
            ax.text(x, y, text, **style)


@dataclass(frozen=True)
class Overlay:
    """What a map view shows: the volume, which voxels are coloured, and how."""

    vol: Volume
    shown: np.ndarray
    cmap: object
    vmin: float
    vmax: float

    def colours(self, values: np.ndarray) -> np.ndarray:
        scaled = (values - self.vmin) / max(self.vmax - self.vmin, 1e-12)
        return self.cmap(np.clip(scaled, 0, 1))[..., :3].astype(np.float32)


def glass_pixels(overlay: Overlay, direction: str, view: View, width: int, height: int,
                 outline: np.ndarray | None = None, outline_rgb=None,
                 with_schematic: bool = True) -> np.ndarray:
    """(height, width, 3) glass-brain view: the coloured projection under nilearn's
    schematic, and the projected ``outline`` (bool volume) border in ``outline_rgb``."""
    vol = overlay.vol
    _, h_axis, v_axis = _VIEW_AXES[direction]
    h, v = pixel_centres_mm(view, width, height)
    plane, hit = projection(vol, overlay.shown, direction)
    values = sample(plane, vol, (h_axis, v_axis), h, v)
    hits = sample(hit, vol, (h_axis, v_axis), h, v, fill=False)
    rgb = np.ones((height, width, 3), np.float32)
    rgb[hits] = overlay.colours(values[hits])
    schematic = schematic_pixels(direction, view, width, height) if with_schematic else None
    if schematic is not None:
        rgb = schematic[..., :3] + (1 - schematic[..., 3:]) * rgb
    if outline is not None:
        _, region = projection(Volume(outline, vol.origin_mm, vol.step_mm), outline,
                               direction)
        border = edges(sample(region, vol, (h_axis, v_axis), h, v, fill=False))
        rgb[border] = outline_rgb
    return rgb


def slice_pixels(overlay: Overlay | None, z_mm: float, view: View, width: int, height: int,
                 background: Volume | None, *, floor: float = _TEMPLATE_FLOOR,
                 levels=(0.35, 0.95), empty: float = 1.0, outline: np.ndarray | None = None,
                 outline_grid: Volume | None = None, outline_rgb=None) -> np.ndarray:
    """(height, width, 3) axial slice at ``z_mm``: ``background`` (values in [0, 1]) in
    grey between ``levels`` where above ``floor`` (``empty`` elsewhere), the overlay's
    coloured voxels over it, and the border of ``outline`` (bool volume on
    ``outline_grid``, default the overlay's grid)."""
    h, v = pixel_centres_mm(view, width, height)
    rgb = np.full((height, width, 3), empty, np.float32)
    if background is not None:
        k = int(background.index(2, z_mm))
        if k >= 0:
            level = sample(background.data[:, :, k], background, (0, 1), h, v, fill=0.0)
            brain = level > floor
            grey = levels[0] + (levels[1] - levels[0]) * np.clip(level, 0, 1)
            rgb[brain] = grey[brain, None]
    if overlay is not None:
        vol = overlay.vol
        k = int(vol.index(2, z_mm))
        if k >= 0:
            shown = sample(overlay.shown[:, :, k], vol, (0, 1), h, v, fill=False)
            values = sample(vol.data[:, :, k], vol, (0, 1), h, v)
            rgb[shown] = overlay.colours(values[shown])
    if outline is not None:
        grid = outline_grid or overlay.vol
        k = int(grid.index(2, z_mm))
        if k >= 0:
            region = sample(outline[:, :, k], grid, (0, 1), h, v, fill=False)
            rgb[edges(region)] = outline_rgb
    return rgb
