"""The group report's section of each coupled atom: its thresholded group map with the
assigned network outlined, its clusters, its time course, its stability.

Each part is a function ``part(result, row) -> list of HTML strings`` of a
:class:`~bids_app.report.GroupResult` and a row of its assignments table; a new part (e.g.
the AN sub-group's layer profile) is one more function in :data:`ATOM_PARTS`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bids_app.bids.naming import atom_name
from bids_app.report.brains import stat_map_figure
from bids_app.report.html import details, note, table
from bids_app.report.layers import layer_counts_of, layer_figure, layer_sizes
from bids_app.report.tables import PEAK_MIN_DISTANCE_MM, cluster_table
from bids_app.report.traces import atom_timecourse_figure


def fdr_threshold(t_values: np.ndarray, significant: np.ndarray) -> float | None:
    """The |t| above which a (n_voxels,) map is significant: the smallest |t| among the
    ``significant`` voxels (FDR on two-sided p is monotone in |t|); None if there are none."""
    if not significant.any():
        return None
    return float(np.abs(t_values[significant]).min())


def atom_stability(stability: dict | None, k: int) -> float | None:
    """Matched |r| of atom ``k`` (0-based) with the fit of another seed, when recorded."""
    if stability is None or k >= len(stability.get("seed_vs_seed", [])):
        return None
    return float(stability["seed_vs_seed"][k])


def coupled_overview(result, coupled: pd.DataFrame) -> pd.DataFrame:
    """One row per coupled atom: network, sign, IoU, voxels, FDR threshold, stability."""
    stability = result.atoms.stability
    sizes = result.atom_groups.set_index("atom")["n_neurons"]
    rows = []
    for row in coupled.itertuples():
        k = int(row.atom) - 1
        rows.append({
            "atom": atom_name(k, result.n_atoms), "network": row.network, "sign": row.sign,
            "IoU": float(row.iou), "voxels (FDR)": int(row.n_atom_voxels),
            "|t| threshold": fdr_threshold(result.t_map[k], result.significant[k]),
            "stability |r|": atom_stability(stability, k),
            "AN sub-group": int(sizes.get(row.atom, 0)),
        })
    return pd.DataFrame(rows)


def map_part(result, row) -> list[str]:
    """Glass brain and slices of the atom's FDR-thresholded group t map, the assigned
    network outlined, and its cluster table."""
    k, name = int(row.atom) - 1, atom_name(int(row.atom) - 1, result.n_atoms)
    atlas, inputs = result.atlas, result.inputs
    threshold = fdr_threshold(result.t_map[k], result.significant[k])
    if threshold is None:
        return [note(f"No voxel of {name} passes FDR q < {result.config.fdr_q}.", "warn")]
    outline = atlas.masks[list(atlas.network_names).index(row.network)]
    q = result.config.fdr_q
    parts = [stat_map_figure(
        result.t_map[k], inputs.mask, inputs.mask_img.affine, threshold=threshold,
        label=f"t (df = {result.dof})", outline=outline,
        outline_label=f"{row.network} ({atlas.name})",
        title=f"{name}: group t, FDR q < {q} (|t| ≥ {threshold:.2f}), "
              f"{len(inputs.subjects)} subjects")]
    clusters = cluster_table(result.t_map[k], inputs.mask, inputs.mask_img.affine,
                             threshold, atlas.masks, atlas.network_names)
    parts += [f"<h3>Clusters of {name}</h3>",
              note(f"{len(clusters)} peaks (at least {PEAK_MIN_DISTANCE_MM:g} mm apart; "
                   "sub-peaks have no size) in clusters of |t| ≥ "
                   f"{threshold:.2f}; MNI coordinates. Every peak is listed."),
              table(clusters, scroll=len(clusters) > 10)]
    return parts


def timecourse_part(result, row) -> list[str]:
    """The atom's time course in seconds, run boundaries marked, story frames shaded."""
    k = int(row.atom) - 1
    name = atom_name(k, result.n_atoms)
    return [atom_timecourse_figure(result.atoms.table, name,
                                   f"{name}: time course (from {result.atoms.source.name})")]


def stability_part(result, row) -> list[str]:
    """The atom's matched |r| with another seed's fit, against the median over atoms."""
    stability = result.atoms.stability
    value = atom_stability(stability, int(row.atom) - 1)
    if value is None:
        return [note("Stability: not recorded for this dictionary.")]
    return [note(f"Stability: matched |r| = {value:.3f} with the atoms of seed "
                 f"{stability['seeds'][1]} (median over all atoms "
                 f"{stability['median_seed_vs_seed']:.3f}); low values mean the atom is "
                 "not reproducible.")]


def layers_part(result, row) -> list[str]:
    """The atom's AN sub-group (the ANs whose score for the atom passes the membership
    threshold) as a share of each layer's ANs, on relative depth."""
    name = atom_name(int(row.atom) - 1, result.n_atoms)
    sizes = layer_sizes(result.atoms.neurons)
    counts = layer_counts_of(result.atom_groups, "atom", int(row.atom), sizes.size)
    return [layer_figure(counts, sizes, f"{name} sub-group")]


#: The parts of a coupled atom's section, in order.
ATOM_PARTS = (map_part, timecourse_part, stability_part, layers_part)


def coupled_atom_section(result, row, parts=ATOM_PARTS, open_: bool = False) -> str:
    """One coupled atom (a row of the assignments table) as a collapsible section."""
    k = int(row.atom) - 1
    stability = atom_stability(result.atoms.stability, k)
    detail = (f"IoU {row.iou:.2f} · {int(row.n_atom_voxels):,} voxels"
              + (f" · stability |r| {stability:.2f}" if stability is not None else ""))
    return details(f"{atom_name(k, result.n_atoms)} → {row.network} ({row.sign})",
                   *[html for part in parts for html in part(result, row)],
                   open_=open_, detail=detail)
