"""Tables of the group report: clusters of a map with the network at each peak, and the
organisation metrics with what each means and why a value is missing."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from bids_app.bids.images import unmask_img

#: Peaks closer than this (mm) are one peak (nilearn's default ``min_distance``).
PEAK_MIN_DISTANCE_MM = 8.0

#: What the counts that the metrics carry without a definition are.
COUNT_MEANINGS = {"n_atoms": "Atoms in the dictionary.",
                  "n_networks": "Networks in the atlas.",
                  "n_subjects": "Subjects in the group analysis.",
                  "atoms_per_network": "Coupled atoms of each network (networks with none "
                                       "left out)."}

#: Why a metric can be missing, by metric name; anything else: "not computed".
MISSING_REASONS = {
    "mean_consistency": "no atom is coupled to a network, or no subject-level assignments",
    "normalised_entropy": "fewer than two coupled atoms or networks",
}


def peak_networks(xyz_mm: np.ndarray, mask: np.ndarray, affine, network_masks: np.ndarray,
                  network_names) -> list[str]:
    """The networks (``network_masks`` (n_networks, n_voxels) over ``mask``) holding each
    (n_peaks, 3) coordinate in mm; ``"(no network)"`` or ``"(outside the mask)"``."""
    index = np.full(mask.shape, -1)
    index[mask] = np.arange(int(mask.sum()))
    ijk = np.rint(np.c_[xyz_mm, np.ones(len(xyz_mm))] @ np.linalg.inv(affine).T)[:, :3]
    inside = np.all((ijk >= 0) & (ijk < mask.shape), axis=1)
    labels = []
    for i, point in enumerate(ijk.astype(int)):
        voxel = index[tuple(point)] if inside[i] else -1
        if voxel < 0:
            labels.append("(outside the mask)")
            continue
        held = [str(n) for n, m in zip(network_names, network_masks[:, voxel]) if m]
        labels.append(", ".join(held) or "(no network)")
    return labels


def cluster_table(values: np.ndarray, mask: np.ndarray, affine, threshold: float,
                  network_masks: np.ndarray, network_names) -> pd.DataFrame:
    """Clusters and peaks of the (n_voxels,) map where |value| >= ``threshold`` (nilearn's
    ``get_clusters_table``, two-sided, peaks at least 8 mm apart), with the network at each
    peak. Columns: cluster, x, y, z (mm), peak t, size (mm³; blank for sub-peaks), network
    at peak."""
    from nilearn.reporting import get_clusters_table

    img = unmask_img(np.where(np.abs(values) >= threshold, values, 0.0), mask, affine)
    with warnings.catch_warnings():     # "no clusters found" for a sign with none: expected
        warnings.simplefilter("ignore", UserWarning)
        found = get_clusters_table(img, stat_threshold=threshold * (1 - 1e-6),
                                   cluster_threshold=0, two_sided=True,
                                   min_distance=PEAK_MIN_DISTANCE_MM)
    if found.empty:
        return pd.DataFrame(columns=["cluster", "x (mm)", "y (mm)", "z (mm)", "peak t",
                                     "size (mm³)", "network at peak"])
    xyz = found[["X", "Y", "Z"]].to_numpy(np.float64)
    size = pd.to_numeric(found["Cluster Size (mm3)"], errors="coerce")
    return pd.DataFrame({
        "cluster": found["Cluster ID"].astype(str),
        "x (mm)": xyz[:, 0].round(1), "y (mm)": xyz[:, 1].round(1),
        "z (mm)": xyz[:, 2].round(1),
        "peak t": found["Peak Stat"].astype(float).round(2),
        "size (mm³)": [("" if np.isnan(s) else int(s)) for s in size],
        "network at peak": peak_networks(xyz, mask, affine, network_masks, network_names),
    })


def _shown(value) -> str | float | int | None:
    if isinstance(value, dict):
        kept = {k: v for k, v in value.items() if v}
        return ", ".join(f"{k} {v}" for k, v in kept.items()) or "(none)"
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


def interval_text(interval) -> str | None:
    """``[low, high]`` as ``"low – high"`` (3 significant digits); None when missing."""
    if not interval or any(v is None or not np.isfinite(v) for v in interval):
        return None
    return f"{interval[0]:.3g} – {interval[1]:.3g}"


#: Keys of a metrics section that are not metrics: the intervals and why values are missing.
_NOT_METRICS = ("ci95", "reason")


def metrics_table(metrics: dict) -> pd.DataFrame:
    """One row per metric (section, metric, value, 95 % CI, meaning); a missing value (None,
    NaN) is left blank and its meaning says why; the interval is the section's ``ci95``
    entry (bootstrap over subjects), blank when the metric has none; per-atom lists are left
    to the atoms' own sections."""
    definitions = metrics.get("definitions", {})
    rows = []
    for section, values in metrics.items():
        if section == "definitions" or not isinstance(values, dict):
            continue
        intervals = values.get("ci95") or {}
        for name, value in values.items():
            if isinstance(value, list) or name in _NOT_METRICS:
                continue
            shown = _shown(value)
            meaning = definitions.get(name, COUNT_MEANINGS.get(name, ""))
            if shown is None:
                reason = values.get("reason") or MISSING_REASONS.get(name, "not computed")
                meaning = f"missing: {reason}. {meaning}".strip()
            rows.append({"section": section, "metric": name.replace("_", " "),
                         "value": shown, "95% CI": interval_text(intervals.get(name)),
                         "meaning": meaning})
    return pd.DataFrame(rows, columns=["section", "metric", "value", "95% CI", "meaning"])
