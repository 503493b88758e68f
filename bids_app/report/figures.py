"""Figures of the reports, each returned as an embedded ``<img>`` tag."""

from __future__ import annotations

import base64
import html
import io

import numpy as np
import pandas as pd

from bids_app.bids.images import unmask_img
from bids_app.bids.naming import atom_name, atom_names


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(fig, alt: str) -> str:
    """Close ``fig`` and return it as an embedded PNG ``<img>`` tag with ``alt`` text."""
    plt = pyplot()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return (f'<img alt="{html.escape(alt)}" src="data:image/png;base64,'
            + base64.b64encode(buffer.getvalue()).decode() + '"/>')


def coupling_figure(coupling: pd.DataFrame, n_atoms: int, networks) -> str:
    """Atom x network matrix of the best IoU."""
    plt = pyplot()
    best = coupling.groupby(["atom", "network"])["iou"].max().unstack(fill_value=0.0)
    best = best.reindex(index=range(1, n_atoms + 1), columns=list(networks), fill_value=0.0)
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * len(networks), 1.5 + 0.16 * n_atoms))
    image = ax.imshow(best.to_numpy(), aspect="auto", cmap="viridis", vmin=0)
    ax.set_xticks(range(len(networks)), list(networks), rotation=60, ha="right")
    ax.set_yticks(range(n_atoms), atom_names(n_atoms), fontsize=6)
    ax.set_title("Atom x network coupling (IoU)")
    fig.colorbar(image, ax=ax, fraction=0.04)
    names = atom_names(n_atoms)
    return png(fig, f"Atom x network coupling (IoU): {names[0]} to {names[-1]} x "
                    f"{len(networks)} networks")


def coupled_atom_figure(result, row) -> str:
    """Group map, time course and AN sub-group layers of one coupled atom (a row of the
    assignments table)."""
    from nilearn import plotting

    plt = pyplot()
    k, n_atoms = int(row.atom) - 1, result.n_atoms
    inputs = result.inputs
    img = unmask_img(np.where(result.significant[k], result.t_map[k], 0.0), inputs.mask,
                     inputs.mask_img.affine)
    fig = plt.figure(figsize=(11, 2.6))
    ax_brain = fig.add_axes([0.0, 0.0, 0.5, 1.0])
    plotting.plot_glass_brain(img, axes=ax_brain, colorbar=True, plot_abs=False,
                              title=f"{atom_name(k, n_atoms)} -> {row.network} ({row.sign})")
    ax_time = fig.add_axes([0.55, 0.15, 0.28, 0.7])
    ax_time.plot(result.atoms.table[atom_name(k, n_atoms)].to_numpy(), lw=0.8)
    ax_time.set_title("time course (all stories)", fontsize=8)
    ax_time.set_xlabel("TR", fontsize=8)
    ax_layers = fig.add_axes([0.87, 0.15, 0.12, 0.7])
    groups = result.atom_groups
    layer_cols = [c for c in groups.columns if c.startswith("layer")]
    counts = groups.loc[groups["atom"] == row.atom, layer_cols].to_numpy().ravel()
    ax_layers.bar(range(len(layer_cols)), counts)
    ax_layers.set_title("AN sub-group by layer", fontsize=8)
    return png(fig, f"{atom_name(k, n_atoms)} -> {row.network} ({row.sign}): group t map, "
                    f"time course from {result.atoms.source.name}, AN sub-group by layer")


def stability_figure(stability: dict) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 2.6))
    bins = np.linspace(0, 1, 41)
    ax.hist(stability["seed_vs_seed"], bins=bins, alpha=0.6, label="seed vs seed")
    ax.hist(stability["half_vs_half"], bins=bins, alpha=0.6, label="half vs half of the ANs")
    ax.set_xlabel("matched |r| between atoms")
    ax.set_ylabel("atoms")
    ax.legend(fontsize=8)
    return png(fig, "Atom stability: matched |r| between seeds and between halves of the ANs")


def convergence_figure(history: list) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 2.4))
    batch = [h for h in history if h.get("phase") == "batch"]
    ax.plot([h["epoch"] for h in batch], [h["objective"] for h in batch], "o-", ms=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel("objective")
    ax.set_title("Dictionary learning convergence (batch epochs)", fontsize=9)
    return png(fig, "Dictionary learning objective per batch epoch")


def glass_brain(values: np.ndarray, mask: np.ndarray, affine, title: str, **kwargs) -> str:
    """A glass-brain view of one (n_voxels,) map."""
    from nilearn import plotting

    plt = pyplot()
    fig = plt.figure(figsize=(9, 2.6))
    plotting.plot_glass_brain(unmask_img(values, mask, affine), figure=fig, colorbar=True,
                              title=title, **kwargs)
    return png(fig, title)


def design_figure(design: pd.DataFrame) -> str:
    from nilearn import plotting

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4))
    plotting.plot_design_matrix(design.reset_index(drop=True), axes=ax)
    ax.set_xticks([])
    return png(fig, "Design matrix: " + ", ".join(map(str, design.columns)))
