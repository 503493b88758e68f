"""Figures of the atoms as a whole: their coupling to networks, their stability, the
dictionary's convergence, and an atom's AN sub-group by layer."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bids_app.bids.naming import atom_names
from bids_app.report.figures import png, pyplot


def coupling_figure(coupling: pd.DataFrame, n_atoms: int, networks, atlas_name: str,
                    assigned: pd.DataFrame | None = None) -> str:
    """Network x atom matrix of the best IoU (``coupling``: atom, network, iou); the pairs
    of ``assigned`` (atom, network) are boxed."""
    from matplotlib.patches import Rectangle

    plt = pyplot()
    networks = list(networks)
    best = coupling.groupby(["atom", "network"])["iou"].max().unstack(fill_value=0.0)
    best = best.reindex(index=range(1, n_atoms + 1), columns=networks, fill_value=0.0)
    names = atom_names(n_atoms)
    fig, ax = plt.subplots(figsize=(min(10.5, 2.5 + 0.13 * n_atoms),
                                    1.2 + 0.22 * len(networks)))
    image = ax.imshow(best.to_numpy().T, aspect="auto", cmap="viridis", vmin=0,
                      interpolation="nearest")
    ax.set_yticks(range(len(networks)), networks, fontsize=8)
    ax.set_xticks(range(n_atoms), names, rotation=90, fontsize=7)
    ax.set_xlabel("atom", fontsize=9)
    ax.set_ylabel(f"functional network ({atlas_name})", fontsize=9)
    if assigned is not None:
        for atom, network in zip(assigned["atom"], assigned["network"]):
            if network in networks:
                ax.add_patch(Rectangle((int(atom) - 1.5, networks.index(network) - 0.5), 1,
                                       1, fill=False, edgecolor="#ff3030", lw=1.2))
    bar = fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01)
    bar.set_label("IoU, thresholded atom map vs network", fontsize=8)
    return png(fig, f"Coupling (IoU) of {names[0]} to {names[-1]} with {len(networks)} "
                    f"networks of {atlas_name}; assigned pairs boxed in red")


def stability_figure(stability: dict, coupled_atoms) -> str:
    """Left: each atom's matched |r| with the fit of another seed, the coupled atoms (1-based
    ``coupled_atoms``) in orange; right: distributions across seeds and split halves."""
    plt = pyplot()
    per_atom = np.asarray(stability["seed_vs_seed"], dtype=np.float64)
    coupled = np.isin(np.arange(1, per_atom.size + 1), list(coupled_atoms))
    fig, (ax, ax_hist) = plt.subplots(1, 2, figsize=(10.5, 2.8),
                                      gridspec_kw={"width_ratios": [2, 1]})
    x = np.arange(1, per_atom.size + 1)
    ax.scatter(x[~coupled], per_atom[~coupled], s=12, color="0.6", label="not coupled")
    ax.scatter(x[coupled], per_atom[coupled], s=18, color="#e67e22",
               label="coupled to a network")
    ax.set_xlabel("atom number", fontsize=9)
    ax.set_ylabel("matched |r|, seed vs seed", fontsize=9)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, loc="lower left", frameon=False)
    bins = np.linspace(0, 1, 41)
    ax_hist.hist(stability["seed_vs_seed"], bins=bins, alpha=0.6, label="seed vs seed")
    ax_hist.hist(stability["half_vs_half"], bins=bins, alpha=0.6, label="half vs half")
    ax_hist.set_xlabel("matched |r| between atoms", fontsize=9)
    ax_hist.set_ylabel("atoms", fontsize=9)
    ax_hist.legend(fontsize=8, frameon=False)
    for axis in (ax, ax_hist):
        axis.tick_params(labelsize=8)
    return png(fig, "Atom stability: each atom's matched |r| with another seed's fit (coupled "
                    "atoms in orange), and its distribution across seeds and split halves")


def convergence_figure(history: list) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 2.4))
    batch = [h for h in history if h.get("phase") == "batch"]
    ax.plot([h["epoch"] for h in batch], [h["objective"] for h in batch], "o-", ms=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel("objective")
    ax.set_title("Dictionary learning convergence (batch epochs)", fontsize=9)
    return png(fig, "Dictionary learning objective per batch epoch")


def layer_figure(atom_groups: pd.DataFrame, atom: int, title: str) -> str:
    """ANs of the sub-group of ``atom`` (1-based) per layer (``layerN`` columns)."""
    plt = pyplot()
    layer_cols = [c for c in atom_groups.columns if c.startswith("layer")]
    counts = atom_groups.loc[atom_groups["atom"] == atom, layer_cols].to_numpy().ravel()
    fig, ax = plt.subplots(figsize=(3.5, 2.2))
    ax.bar(range(len(layer_cols)), counts)
    ax.set_title("AN sub-group by layer", fontsize=8)
    return png(fig, f"{title}: AN sub-group by layer")
