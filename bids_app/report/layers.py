"""Where in a language model an AN sub-group lies: its layer profile on relative depth.

Absolute layer indices cannot compare a 6-layer model with a 32- or 80-layer one, and raw
counts mirror the layers' sizes. A profile therefore puts layer ``l`` of ``L`` at relative
depth ``l / (L - 1)`` (0 = first recorded layer, 1 = last) and gives, for each layer, the
share of the layer's ANs that belong to the sub-group (in percent).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bids_app.report.figures import png, pyplot

DEPTH_LABEL = "relative depth (0 = first layer, 1 = last)"
SHARE_LABEL = "ANs of the layer in the sub-group (%)"


def layer_sizes(neurons: pd.DataFrame) -> np.ndarray:
    """(n_layers,) number of distinct ANs (layer, unit) of each layer in the atoms stage's
    neuron table (layers numbered 0..L-1; a layer without AN has size 0)."""
    ans = neurons[["layer", "unit"]].drop_duplicates() if "unit" in neurons else neurons
    layers = ans["layer"].to_numpy(np.int64)
    return np.bincount(layers, minlength=int(layers.max()) + 1 if layers.size else 0)


def relative_depth(n_layers: int) -> np.ndarray:
    """(n_layers,) ``l / (L - 1)``; a single layer is at depth 0."""
    return np.arange(n_layers) / max(n_layers - 1, 1)


def layer_profile(counts, sizes) -> tuple[np.ndarray, np.ndarray]:
    """Relative depth and percent of each layer's ANs in the sub-group.

    Parameters
    ----------
    counts : array-like of shape (n_layers,)
        Sub-group members per layer (the ``layerNN`` columns of the sub-group tables).
    sizes : array-like of shape (n_layers,)
        ANs per layer (:func:`layer_sizes`).

    Returns
    -------
    depth, percent : numpy.ndarray of shape (n_layers,)
        ``percent`` is 0 for a layer without AN.
    """
    counts = np.asarray(counts, dtype=np.float64)
    sizes = np.asarray(sizes, dtype=np.float64)
    if counts.shape != sizes.shape:
        raise ValueError(f"{counts.size} layer counts for {sizes.size} layers")
    if np.any(counts > sizes):
        raise ValueError("a layer has more sub-group members than ANs")
    percent = np.divide(100.0 * counts, sizes, out=np.zeros_like(counts), where=sizes > 0)
    return relative_depth(sizes.size), percent


def layer_counts_of(table: pd.DataFrame, key: str, value, n_layers: int) -> np.ndarray:
    """(n_layers,) the ``layerNN`` counts of the row of ``table`` whose ``key`` is ``value``
    (zeros when there is none)."""
    columns = [f"layer{i:02d}" for i in range(n_layers)]
    rows = table.loc[table[key] == value]
    if rows.empty:
        return np.zeros(n_layers)
    return rows.reindex(columns=columns, fill_value=0).iloc[0].to_numpy(np.float64)


def layer_figure(counts, sizes, title: str) -> str:
    """One sub-group's profile: percent of each layer's ANs against relative depth."""
    depth, percent = layer_profile(counts, sizes)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 2.4))
    width = 0.8 / max(len(depth) - 1, 1)
    ax.bar(depth, percent, width=width, color="#4a7bb7")
    ax.set_xlim(-0.6 * width, 1 + 0.6 * width)
    ax.set_xlabel(DEPTH_LABEL, fontsize=8)
    ax.set_ylabel(SHARE_LABEL, fontsize=8)
    ax.set_title(f"{title}: {int(np.sum(counts)):,} ANs in {len(depth)} layers", fontsize=8)
    ax.tick_params(labelsize=7)
    return png(fig, f"{title}: AN sub-group as a share of each layer's ANs, by relative depth")


def profiles_figure(profiles: dict, title: str) -> str:
    """Several profiles overlaid: ``{label: (counts, sizes)}``, one line per label."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 3.0))
    for label, (counts, sizes) in profiles.items():
        depth, percent = layer_profile(counts, sizes)
        ax.plot(depth, percent, "o-", ms=3, lw=1.4,
                label=f"{label} ({len(depth)} layers, {int(np.sum(counts)):,} ANs)")
    ax.set_xlim(-0.03, 1.03)
    ax.set_xlabel(DEPTH_LABEL, fontsize=9)
    ax.set_ylabel(SHARE_LABEL, fontsize=9)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, frameon=False)
    ax.tick_params(labelsize=8)
    return png(fig, f"{title}: one line per model, by relative depth")
