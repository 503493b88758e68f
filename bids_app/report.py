"""HTML reports with pictures (self-contained: figures are embedded PNGs)."""

from __future__ import annotations

import base64
import html
import io
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from bids_app import __version__
from bids_app.bids import derivatives as out

LOGGER = logging.getLogger("llmfbn")
MAX_BRAINS = 12

CITATION = """\
Artificial-neuron sub-groups were analysed with llmfbn {version}, which implements the method
of Sun et al. (2024), "Brain-like Functional Organization within Large Language Models"
(arXiv:2410.19542). The language model {model} was run over each story's transcript; the
activation of every artificial neuron (input of the second linear layer of each feed-forward
block) was averaged over each word's sub-word tokens, placed at the word onsets, convolved with
the {hrf} haemodynamic response (nilearn) and sampled at the BOLD frame times. {n_atoms}
representative temporal patterns (atoms) were learned by sparse dictionary learning
(online and batch block-coordinate descent with FISTA lasso coding, PyTorch; lambda = {lam}). Each participant's preprocessed BOLD (fMRIPrep) was regressed
voxel-wise on the atoms with confounds ({confounds}) by ordinary least squares. Group maps were
one-sample t-tests across participants thresholded at FDR q < {q}; each map was compared with
the functional networks of the {atlas} atlas by intersection-over-union and assigned to the best
network passing IoU >= {min_iou} and a Bonferroni-corrected hypergeometric overlap test.
Software: {software}.
"""


def software_versions() -> str:
    """"name version" of every library llmfbn relies on, for the methods text."""
    from importlib.metadata import PackageNotFoundError, version

    names = [("nilearn", "nilearn"), ("nibabel", "nibabel"), ("pybids", "pybids"),
             ("scikit-learn", "scikit-learn"), ("PyTorch", "torch"),
             ("transformers", "transformers"), ("NumPy", "numpy"), ("SciPy", "scipy")]
    parts = []
    for label, dist in names:
        try:
            parts.append(f"{label} {version(dist)}")
        except PackageNotFoundError:
            parts.append(label)
    return ", ".join(parts)


def citation_text(config, spec, atlas_name: str) -> str:
    return CITATION.format(version=__version__, model=spec.name, hrf=config.hrf_model.upper(),
                           n_atoms=config.n_atoms, lam=(config.sparsity_lambda if config.target_sparsity is None else
                                f"chosen for {config.target_sparsity:g} non-zero codes per AN"),
                           confounds=config.confound_strategy, q=config.fdr_q,
                           atlas=atlas_name, min_iou=config.min_iou,
                           software=software_versions())


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return ('<img src="data:image/png;base64,'
            + base64.b64encode(buffer.getvalue()).decode() + '"/>')


def _coupling_figure(coupling: pd.DataFrame, n_atoms: int, networks) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = coupling.groupby(["atom", "network"])["iou"].max().unstack(fill_value=0.0)
    best = best.reindex(index=range(1, n_atoms + 1), columns=list(networks), fill_value=0.0)
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * len(networks), 1.5 + 0.16 * n_atoms))
    image = ax.imshow(best.to_numpy(), aspect="auto", cmap="viridis", vmin=0)
    ax.set_xticks(range(len(networks)), list(networks), rotation=60, ha="right")
    ax.set_yticks(range(n_atoms), [f"atom{a:02d}" for a in best.index], fontsize=6)
    ax.set_title("Atom x network coupling (IoU)")
    fig.colorbar(image, ax=ax, fraction=0.04)
    return _png(fig)


def _atom_figures(config, inputs, t_map, significant, coupled: pd.DataFrame,
                  atom_groups: pd.DataFrame) -> list[str]:
    import matplotlib.pyplot as plt
    import nibabel as nib
    from nilearn import plotting

    atoms_tsv = inputs.atoms_folder / next(
        p.name for p in inputs.atoms_folder.glob("*_atoms.tsv"))
    atoms = pd.read_csv(atoms_tsv, sep="\t")
    layer_cols = [c for c in atom_groups.columns if c.startswith("layer")]
    blocks = []
    for row in coupled.head(MAX_BRAINS).itertuples():
        k = int(row.atom) - 1
        vol = np.zeros(inputs.mask.shape, np.float32)
        vol[inputs.mask] = np.where(significant[k], t_map[k], 0.0)
        img = nib.Nifti1Image(vol, inputs.mask_img.affine)
        fig = plt.figure(figsize=(11, 2.6))
        ax_brain = fig.add_axes([0.0, 0.0, 0.5, 1.0])
        plotting.plot_glass_brain(img, axes=ax_brain, colorbar=True, plot_abs=False,
                                  title=f"atom{k + 1:02d} -> {row.network} ({row.sign})")
        ax_time = fig.add_axes([0.55, 0.15, 0.28, 0.7])
        ax_time.plot(atoms[f"atom{k + 1:02d}"].to_numpy(), lw=0.8)
        ax_time.set_title("time course (all stories)", fontsize=8)
        ax_time.set_xlabel("TR", fontsize=8)
        ax_layers = fig.add_axes([0.87, 0.15, 0.12, 0.7])
        counts = atom_groups.loc[atom_groups["atom"] == row.atom, layer_cols].to_numpy().ravel()
        ax_layers.bar(range(len(layer_cols)), counts)
        ax_layers.set_title("AN sub-group by layer", fontsize=8)
        blocks.append(_png(fig))
    return blocks


def _stability_figure(stability: dict) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 2.6))
    bins = np.linspace(0, 1, 41)
    ax.hist(stability["seed_vs_seed"], bins=bins, alpha=0.6, label="seed vs seed")
    ax.hist(stability["half_vs_half"], bins=bins, alpha=0.6, label="half vs half of the ANs")
    ax.set_xlabel("matched |r| between atoms")
    ax.set_ylabel("atoms")
    ax.legend(fontsize=8)
    return _png(fig)


def _convergence_figure(history: list) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 2.4))
    batch = [h for h in history if h.get("phase") == "batch"]
    ax.plot([h["epoch"] for h in batch], [h["objective"] for h in batch], "o-", ms=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel("objective")
    ax.set_title("Dictionary learning convergence (batch epochs)", fontsize=9)
    return _png(fig)


def _files_section(config, spec) -> list[str]:
    stem = f"desc-{spec.label}"
    folder = config.output_dir / "atoms"
    items = []
    for name, what in ((f"{stem}_atoms.tsv", "atom time courses (+ .json sidecar)"),
                       (f"{stem}_codes.npz", "sparse codes, neurons x atoms (scipy.sparse)"),
                       (f"{stem}_neurons.tsv", "code row -> layer, unit"),
                       (f"{stem}_stability.json", "matched atom correlations")):
        if (folder / name).is_file():
            items.append(f"<li><a href='../atoms/{name}'>atoms/{name}</a>: {what}</li>")
    return ["<h2>Stimulus-level files</h2>", "<ul>" + "".join(items) + "</ul>"]


def _atoms_sections(config, spec) -> list[str]:
    """Stability and convergence of the dictionary, when recorded."""
    import json

    folder = config.output_dir / "atoms"
    parts = []
    stability = folder / f"desc-{spec.label}_stability.json"
    if stability.is_file():
        data = json.loads(stability.read_text())
        parts += ["<h2>Atom stability</h2>",
                  f"<p>Median matched |r|: {data['median_seed_vs_seed']:.3f} between seeds, "
                  f"{data['median_half_vs_half']:.3f} between split halves of the ANs. Atoms "
                  "with low values are not reproducible: interpret them with care.</p>",
                  _stability_figure(data)]
    sidecar = folder / f"desc-{spec.label}_atoms.json"
    if sidecar.is_file():
        history = json.loads(sidecar.read_text()).get("DictionaryLearning", {}).get(
            "ConvergenceLog", [])
        if any(h.get("phase") == "batch" for h in history):
            parts.append(_convergence_figure(history))
    return parts


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, float_format=lambda v: f"{v:.3g}", border=0,
                         classes="table")


def _page(title: str, parts: list[str]) -> str:
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>" + html.escape(title)
            + "</title><style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
            ".table td,.table th{padding:2px 8px}img{max-width:100%}</style></head><body>"
            + "\n".join(parts) + "</body></html>")


def write_subject_report(config, spec, subject: str, fit, mask_img, mask,
                         n_best_atoms: int = 4) -> Path:
    """``sub-<label>.html``: R² map, the best-expressed atoms' t maps, the design matrix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib
    from nilearn import plotting

    def volume(values):
        vol = np.zeros(mask.shape, np.float32)
        vol[mask] = values
        return nib.Nifti1Image(vol, mask_img.affine)

    fig = plt.figure(figsize=(9, 2.6))
    plotting.plot_glass_brain(volume(fit.r2), figure=fig, colorbar=True, cmap="viridis",
                              title=f"sub-{subject}: partial R2 of the atoms")
    parts = [f"<h1>llmfbn: sub-{html.escape(subject)}, model {html.escape(spec.name)}</h1>",
             f"<p>{fit.n_volumes_used} volumes used; {int(mask.sum())} voxels; GLM "
             f"'{html.escape(config.glm)}' with {fit.dof} residual degrees of freedom; "
             f"median R2 {float(np.median(fit.r2)):.3f}.</p>", _png(fig)]
    strength = np.abs(fit.t).max(axis=1)
    best = np.argsort(-strength)[:n_best_atoms]
    parts.append(f"<h2>The {len(best)} atoms with the largest |t|</h2>")
    for k in best:
        fig = plt.figure(figsize=(9, 2.6))
        plotting.plot_glass_brain(volume(fit.t[k]), figure=fig, colorbar=True, plot_abs=False,
                                  title=f"atom{k + 1:02d}: t (max |t| {strength[k]:.1f})")
        parts.append(_png(fig))
    design = fit.design.reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(9, 4))
    plotting.plot_design_matrix(design, axes=ax)
    ax.set_xticks([])
    parts += ["<h2>Design matrix (atoms, then each run's confounds and intercept)</h2>", _png(fig),
              "<h2>Methods</h2>",
              f"<p>{html.escape(citation_text(config, spec, config.fbn_atlas))}</p>"]
    path = config.output_dir / f"sub-{subject}.html"
    out.write_text(path, _page(f"llmfbn sub-{subject}", parts))
    return path


def write_group_report(config, spec, folder: Path, atlas, assignments, coupling, atom_groups,
                       metrics, t_map, significant, inputs) -> Path:
    """``group/desc-<model>_report.html``: coupling matrix, atom maps, tables, methods."""
    coupled = assignments[assignments["network"] != "none"]
    parts = [
        f"<h1>llmfbn group report: model {html.escape(spec.name)}</h1>",
        f"<p>{len(inputs.subjects)} subjects; atlas {html.escape(atlas.name)}; "
        f"{len(coupled)} of {len(assignments)} atoms coupled to a network.</p>",
        "<h2>Organisation metrics</h2>",
        _table(pd.DataFrame([{k: v for k, v in metrics.get(section, {}).items()
                              if not isinstance(v, (list, dict))}
                             for section in ("diversity", "consistency")],
                            index=["diversity", "consistency"]).reset_index(names="metric")),
        "<h2>Atoms coupled to networks</h2>", _table(coupled),
        "<h2>Coupling matrix</h2>", _coupling_figure(coupling, t_map.shape[0], atlas.network_names),
        "<h2>Coupled atoms: group maps, time courses, AN sub-groups</h2>",
        *_atom_figures(config, inputs, t_map, significant, coupled, atom_groups),
        *_atoms_sections(config, spec),
        *_files_section(config, spec),
        "<h2>Methods</h2>", f"<p>{html.escape(citation_text(config, spec, atlas.name))}</p>",
    ]
    page = _page("llmfbn group", parts)
    path = folder / f"desc-{spec.label}_report.html"
    out.write_text(path, page)
    out.write_text(config.output_dir / "logs" / "CITATION.md",
                   citation_text(config, spec, atlas.name))
    LOGGER.info("Group report: %s", path)
    return path
