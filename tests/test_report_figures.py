"""Figures of the reports against what the libraries they build on draw."""

from __future__ import annotations

import numpy as np


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
