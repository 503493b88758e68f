"""Figures of the atoms as a whole: their coupling to networks, their stability, the
dictionary's convergence."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bids_app.bids.naming import atom_names
from bids_app.report.figures import png, pyplot


def significant_pairs(coupling: pd.DataFrame, n_atoms: int, alpha: float = 0.05,
                      min_iou: float = 0.0) -> set:
    """{(atom, network)} whose coupling test passes (either sign): Bonferroni-corrected p
    (:func:`bids_app.group.coupling_p_fwe`: the surrogate null when fitted, else the
    hypergeometric test) below ``alpha`` and IoU at least ``min_iou``."""
    from bids_app.group.coupling import coupling_p_fwe

    if coupling.empty:
        return set()
    passing = coupling[(coupling_p_fwe(coupling, n_atoms) < alpha)
                       & (coupling["iou"].to_numpy(float) >= min_iou)]
    return {(int(a), str(n)) for a, n in zip(passing["atom"], passing["network"])}


def coupling_test_name(coupling: pd.DataFrame) -> str:
    """The test behind :func:`significant_pairs`, in words."""
    return ("surrogate null (phase-randomised atoms)" if "p_null" in coupling.columns
            else "hypergeometric voxel-count test")


def coupling_figure(coupling: pd.DataFrame, n_atoms: int, networks, atlas_name: str,
                    assigned: pd.DataFrame | None = None, min_iou: float = 0.0) -> str:
    """Network x atom matrix of the best IoU (``coupling``: atom, network, iou); pairs whose
    coupling test passes (:func:`significant_pairs`) are dotted, the pairs of ``assigned``
    (atom, network) boxed."""
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
    marks = [(a - 1, networks.index(n)) for a, n in significant_pairs(
        coupling, n_atoms, min_iou=min_iou) if n in networks]
    if marks:
        x, y = np.asarray(marks).T
        ax.scatter(x, y, s=9, color="white", edgecolors="black", linewidths=0.4, zorder=3)
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
                    f"networks of {atlas_name}; dots: {len(marks)} pairs significant "
                    f"({coupling_test_name(coupling)}, Bonferroni p < 0.05, IoU ≥ {min_iou:g}); "
                    "assigned pairs boxed in red")


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
    kept = [h for h in batch if h.get("accepted", True)]
    rejected = [h for h in batch if not h.get("accepted", True)]
    ax.plot([h["epoch"] for h in kept], [h["objective"] for h in kept], "o-", ms=3,
            label="accepted")
    if rejected:
        ax.plot([h["epoch"] for h in rejected], [h["objective"] for h in rejected], "x",
                color="tab:red", ms=5, label="rejected step")
        ax.legend(fontsize=7, frameon=False)
    ax.set_xlabel("epoch")
    ax.set_ylabel("objective")
    ax.set_title("Dictionary learning convergence (batch epochs)", fontsize=9)
    crosses = " (crosses: searched or accelerated epochs rejected for raising it)"
    return png(fig, "Dictionary learning objective per batch epoch"
               + (crosses if rejected else ""))
