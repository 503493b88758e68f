"""Organisation metrics of a model's brain-like organisation **(ours)**."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bids_app.bids.naming import NO_NETWORK

_DEFINITIONS = {
    "n_coupled_atoms": "Number of atoms assigned to some FBN (network other than 'none').",
    "n_networks_covered": "Number of distinct FBNs with at least one assigned atom.",
    "fraction_networks_covered": "n_networks_covered divided by the number of FBNs in "
                                 "the atlas.",
    "normalised_entropy": "Shannon entropy of the distribution of coupled atoms over the "
                          "atlas's FBNs divided by log(number of FBNs), 0 for one or no "
                          "coupled atom (1 = atoms spread evenly over all FBNs).",
    "consistency_per_atom": "For a coupled atom, the fraction of subjects whose own "
                            "assignment (FBN, and sign when both tables carry it) equals "
                            "the group's; a subject without an assignment counts as a "
                            "mismatch.",
    "mean_consistency": "Mean of consistency_per_atom over coupled atoms (None when no "
                        "atom is coupled or no subject is given); its 95 % interval "
                        "resamples the subjects (200 bootstrap draws).",
    "note": "These metrics are defined by llmfbn (ours): the formulas of Sun et al. "
            "(arXiv 2410.19542) are not public.",
}


def _bootstrap_mean(match: np.ndarray, n_boot: int, seed: int) -> list[float] | None:
    """95 % percentile interval of ``match.mean()`` over subjects (columns) resampled with
    replacement ``n_boot`` times; None without resamples."""
    if n_boot < 1 or match.size == 0:
        return None
    rng = np.random.default_rng([int(seed), 0xC0A5])
    n_subjects = match.shape[1]
    draws = [match[:, rng.integers(0, n_subjects, n_subjects)].mean() for _ in range(n_boot)]
    return [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))]


def organisation_metrics(assignments: pd.DataFrame, subject_assign: pd.DataFrame | None,
                         network_names, n_boot: int = 200, seed: int = 0) -> dict:
    """Diversity and consistency of the atoms' coupling to FBNs **(ours)**.

    Parameters
    ----------
    assignments : pandas.DataFrame
        Group assignments, output of :func:`assign_atoms` (``atom``, ``network``, and
        optionally ``sign``).
    subject_assign : pandas.DataFrame or None
        Output of :func:`subject_assignments` (``subject``, ``atom``, ``network``,
        optionally ``sign``); None or empty skips consistency.
    network_names : sequence of str
        All FBNs of the atlas (the denominator of coverage and entropy).
    n_boot, seed : int
        Subjects resampled ``n_boot`` times (generator seeded with ``seed``) for the 95 %
        interval of ``mean_consistency`` (``consistency["ci95"]``); 0 skips it.

    Returns
    -------
    dict
        JSON-serialisable: ``{"diversity": {...}, "consistency": {...},
        "definitions": {...}}`` with plain ints, floats, strings and None.
    """
    network_names = [str(n) for n in network_names]
    n_networks = len(network_names)
    networks = assignments["network"].astype(str)
    coupled = assignments[networks != NO_NETWORK]
    counts = coupled["network"].astype(str).value_counts()
    n_coupled = int(len(coupled))
    if n_coupled <= 1 or n_networks <= 1:
        entropy = 0.0
    else:
        share = counts.to_numpy(np.float64) / n_coupled
        entropy = float(-(share * np.log(share)).sum() / math.log(n_networks))
    diversity = {
        "n_atoms": int(len(assignments)),
        "n_networks": int(n_networks),
        "n_coupled_atoms": n_coupled,
        "n_networks_covered": int(counts.size),
        "fraction_networks_covered": float(counts.size / n_networks) if n_networks else 0.0,
        "normalised_entropy": entropy,
        "atoms_per_network": {n: int(counts.get(n, 0)) for n in network_names},
    }

    per_atom = []
    n_subjects = 0
    if subject_assign is not None and len(subject_assign):
        subjects = pd.unique(subject_assign["subject"])
        n_subjects = int(len(subjects))
        use_sign = "sign" in coupled.columns and "sign" in subject_assign.columns
        keys = ["network", "sign"] if use_sign else ["network"]
        merged = subject_assign.merge(coupled[["atom"] + keys], on="atom",
                                      suffixes=("_subject", "_group"))
        same = np.ones(len(merged), dtype=bool)
        for key in keys:
            same &= (merged[f"{key}_subject"].astype(str).to_numpy()
                     == merged[f"{key}_group"].astype(str).to_numpy())
        # (n_coupled, n_subjects) 1 where the subject's assignment equals the group's (one
        # vote per subject and atom; a subject without an assignment counts as a mismatch)
        match = np.zeros((len(coupled), n_subjects))
        row_of = {int(a): i for i, a in enumerate(coupled["atom"].astype(int))}
        col_of = {s: j for j, s in enumerate(subjects)}
        for atom, subject in merged.loc[same, ["atom", "subject"]].itertuples(index=False):
            match[row_of[int(atom)], col_of[subject]] = 1.0
        for row, (atom, network) in enumerate(zip(coupled["atom"].astype(int),
                                                  coupled["network"].astype(str))):
            per_atom.append({"atom": int(atom), "network": network,
                             "consistency": float(match[row].mean())})
    mean = (float(np.mean([a["consistency"] for a in per_atom])) if per_atom else None)
    consistency = {"n_subjects": n_subjects, "per_atom": per_atom, "mean_consistency": mean,
                   "ci95": {"mean_consistency": (_bootstrap_mean(match, n_boot, seed)
                                                 if per_atom else None)}}
    return {"diversity": diversity, "consistency": consistency,
            "definitions": dict(_DEFINITIONS)}
