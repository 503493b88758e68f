"""How a figure becomes part of a report: matplotlib off-screen, embedded PNG, colour bars.

The figures themselves live by subject matter: :mod:`.brains` (maps on the brain),
:mod:`.traces` (time series and the design matrix), :mod:`.dictionary` (the atoms and
their coupling to networks).
"""

from __future__ import annotations

import base64
import html
import io

#: Resolution of the embedded PNGs: a 10.5-inch-wide figure fills the 1,050-pixel page.
DPI = 100
#: zlib level of the embedded PNGs: 1 instead of Pillow's 6 saves ~50 ms of a 2 mm brain
#: figure's ~0.2 s for ~7 % more bytes (benchmarks/results/scale.md).
PNG_COMPRESS_LEVEL = 1


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def tight_bbox(fig):
    """The box ``savefig(bbox_inches="tight")`` crops ``fig`` to (matplotlib's default pad
    of 0.1 inch), or ``"tight"`` itself for a figure with a layout engine.

    Measured without drawing the figure: matplotlib's "tight" draws the whole figure once
    (with its output switched off) before it draws it for real; the report's figures are
    laid out by hand, so the box is the same without that pass (the same pixels, tested in
    tests/test_report_figures.py) and each figure is drawn once (~20 % of a 2 mm brain
    figure's time)."""
    if fig.get_layout_engine() is not None:
        return "tight"
    return fig.get_tightbbox(fig.canvas.get_renderer()).padded(0.1)


def png(fig, alt: str, crop: bool = True) -> str:
    """Close ``fig`` and return it as an embedded PNG ``<img>`` tag with ``alt`` text;
    ``crop``: cropped to what is drawn (:func:`tight_bbox`), else the whole figure (one
    laid out to its edges, as :mod:`.brains` lays out its pictures)."""
    plt = pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches=tight_bbox(fig) if crop else None,
                pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL})
    plt.close(fig)
    return (f'<img alt="{html.escape(alt)}" src="data:image/png;base64,'
            + base64.b64encode(buffer.getvalue()).decode() + '"/>')


def colorbar(fig, rect, cmap, vmin: float, vmax: float, label: str,
             threshold: float | None = None) -> None:
    """A vertical colour bar in ``rect`` ([left, bottom, width, height], figure fraction)
    labelled ``label``; with ``threshold``, the band |value| < threshold (or value <
    threshold when vmin >= 0) is greyed out, as nothing there is drawn on the maps."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    cax = fig.add_axes(rect)
    bar = fig.colorbar(ScalarMappable(Normalize(vmin, vmax), cmap), cax=cax)
    bar.set_label(label, fontsize=9)
    bar.ax.tick_params(labelsize=8)
    if threshold is not None:
        low = -threshold if vmin < 0 else vmin
        bar.ax.axhspan(low, threshold, color="0.85", zorder=3)
        for level in {low, threshold} - {vmin}:
            bar.ax.axhline(level, color="k", lw=0.8, zorder=4)
