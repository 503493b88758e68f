"""Figures of the reports against what the libraries they build on draw."""

from __future__ import annotations

import numpy as np


def test_fast_glass_brain_draws_the_same_pixels_as_nilearn():
    """bids_app.report.brains.fast_glass_brains (the outline patches added without a data
    limits update) gives the very PNG that nilearn's own plot_brain_schematics gives, for
    every display mode the reports use, and is installed once."""
    import io

    import nibabel as nib
    from nilearn import plotting
    from nilearn.plotting.displays import _axes

    from bids_app.report.brains import fast_glass_brains
    from bids_app.report.figures import pyplot

    plt = pyplot()
    rng = np.random.default_rng(3)
    data = np.zeros((20, 24, 20), dtype=np.float32)
    data[4:16, 5:19, 4:16] = rng.standard_normal((12, 14, 12))
    affine = np.diag([8.0, 8.0, 8.0, 1.0])
    affine[:3, 3] = [-80, -112, -70]
    img = nib.Nifti1Image(data, affine)

    def draw(mode):
        fig = plt.figure(figsize=(8, 3))
        plotting.plot_glass_brain(img, figure=fig, display_mode=mode, plot_abs=False,
                                  threshold=0.5, colorbar=False)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=60)
        plt.close(fig)
        return buffer.getvalue()

    fast_glass_brains()
    fast = _axes.plot_brain_schematics
    assert hasattr(fast, "original")
    fast_glass_brains()
    assert _axes.plot_brain_schematics is fast            # installed once, not wrapped twice
    for mode in ("lzry", "ortho", "z"):
        mine = draw(mode)
        _axes.plot_brain_schematics = fast.original
        try:
            theirs = draw(mode)
        finally:
            _axes.plot_brain_schematics = fast
        assert mine == theirs, mode
