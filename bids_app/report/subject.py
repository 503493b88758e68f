"""The subject report: ``sub-<label>.html``."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from bids_app.bids import derivatives as out
from bids_app.bids.naming import atom_name, subject_report
from bids_app.report.figures import design_figure, glass_brain
from bids_app.report.html import methods, page
from bids_app.report.methods import citation_text


def write_subject_report(result, n_best_atoms: int = 4) -> Path:
    """R² map, the best-expressed atoms' t maps, the design matrix (a :class:`SubjectResult`)."""
    config, spec, fit, mask = result.config, result.spec, result.fit, result.mask
    affine = result.mask_img.affine
    subject = result.subject
    parts = [f"<h1>llmfbn: sub-{html.escape(subject)}, model {html.escape(spec.name)}</h1>",
             f"<p>{fit.n_volumes_used} volumes used; {int(mask.sum())} voxels; GLM "
             f"'{html.escape(config.glm)}' with {fit.dof} residual degrees of freedom; "
             f"median R2 {float(np.median(fit.r2)):.3f}.</p>",
             glass_brain(fit.r2, mask, affine, f"sub-{subject}: partial R2 of the atoms",
                         cmap="viridis")]
    n_atoms = fit.t.shape[0]
    strength = np.abs(fit.t).max(axis=1)
    best = np.argsort(-strength)[:n_best_atoms]
    parts.append(f"<h2>The {len(best)} atoms with the largest |t|</h2>")
    for k in best:
        parts.append(glass_brain(
            fit.t[k], mask, affine,
            f"{atom_name(k, n_atoms)}: t (max |t| {strength[k]:.1f})", plot_abs=False))
    parts += ["<h2>Design matrix (atoms, then each run's confounds and intercept)</h2>",
              design_figure(fit.design),
              *methods(citation_text(config, spec, config.fbn_atlas))]
    path = subject_report(config.output_dir, subject)
    out.write_text(path, page(f"llmfbn sub-{subject}", parts))
    return path
