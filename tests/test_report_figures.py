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


def _pngs(text: str) -> list:
    """The pixels of every PNG embedded in a report's HTML."""
    import base64
    import io
    import re

    from PIL import Image

    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))
            for data in re.findall(r'src="data:image/png;base64,([^"]+)"', text)]


def test_figures_cropped_without_the_extra_draw_as_tight_crops_them(tmp_path, toy_reports,
                                                                    monkeypatch):
    """Every figure of the subject, group and models reports: the box of
    :func:`bids_app.report.figures.tight_bbox` (measured without matplotlib's extra draw)
    gives the very pixels of ``bbox_inches="tight"``."""
    from bids_app.report import figures, write_group_report, write_subject_report
    from bids_app.report.models import write_models_report
    from tests.report_toys import group_result, model_summaries, subject_result

    monkeypatch.setattr(figures, "tight_bbox", lambda fig: "tight")
    theirs = {"subject": write_subject_report(subject_result(tmp_path), n_best_atoms=1),
              "group": write_group_report(group_result(tmp_path, n_atoms=6, n_coupled=2)),
              "models": write_models_report(model_summaries(tmp_path), tmp_path, "toyatlas",
                                            ["01", "02", "03"])}
    for name, path in theirs.items():
        mine, reference = _pngs(toy_reports[name].read_text()), _pngs(path.read_text())
        assert len(mine) == len(reference) > 0, name
        for k, (a, b) in enumerate(zip(mine, reference)):
            assert a.shape == b.shape and np.array_equal(a, b), (name, k)
