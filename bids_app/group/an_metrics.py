"""AN-side organisation metrics **(ours)**: how many distinct behaviours the coupled ANs show,
and how specialised each member is to its network; bootstrap intervals over subjects.

Definitions (``docs/metrics.md`` gives the rationale):

- **an_diversity**: the participation ratio ``(sum l)^2 / sum l^2`` of the eigenvalues ``l``
  of the correlation matrix between the sub-groups' mean member responses (taken in the span
  of the atoms, where they are exact from the projections ``P = X D^T``: the mean response
  ``m_n`` has coordinates ``G^+ p_n``, ``G = D D^T``, ``p_n`` the members' mean row of P).
  It is 1 for one behaviour (one sub-group, or sub-groups that all respond alike) and the
  number of sub-groups when their mean responses are uncorrelated.
- **an_specialisation**: the mean, over member ANs and their networks, of the share of the
  AN's positive scores that falls on that network: 1 when every member follows only its own
  network, 1/n_coupled when members follow all networks alike.
- **an_overlap**: the mean Jaccard overlap between pairs of sub-groups.
- Bootstrap: subjects resampled with replacement ``n_boot`` times; the networks' composite
  weights (mean joint effects) recomputed, the assignment of atoms and each network's ridge
  kept; 95 % percentile intervals. They say how much the metrics depend on which subjects
  were scanned.
"""

from __future__ import annotations

import numpy as np

from bids_app.group.metrics import N_BOOTSTRAP
from bids_app.group.subgroups import network_members


def participation_ratio(correlation: np.ndarray) -> float:
    """``(sum l)^2 / sum l^2`` of the eigenvalues of a correlation matrix."""
    eig = np.clip(np.linalg.eigvalsh(np.asarray(correlation, dtype=np.float64)), 0, None)
    return float(eig.sum() ** 2 / (eig ** 2).sum()) if eig.sum() > 0 else float("nan")


def _mean_response_correlation(projections, atoms, sets, neuron_of_row) -> np.ndarray:
    gram_inv = np.linalg.pinv(atoms @ atoms.T, rcond=1e-8, hermitian=True)
    means = []
    for members in sets.values():
        rows = np.flatnonzero(np.isin(neuron_of_row, members))
        means.append(np.asarray(projections[rows], dtype=np.float64).mean(axis=0))
    means = np.asarray(means)
    cov = means @ gram_inv @ means.T
    sd = np.sqrt(np.clip(np.diag(cov), 1e-300, None))
    return cov / sd[:, None] / sd[None, :]


def an_metrics(projections, atoms, scores, sets, neuron_of_row) -> dict:
    """Diversity, specialisation and overlap of the sub-groups ``sets`` {network: ANs}.

    ``scores`` (n_neurons, n_coupled) DataFrame of every AN's score per coupled network.
    Values are None, with a ``reason``, when no sub-group has a member.
    """
    nonempty = {n: s for n, s in sets.items() if len(s)}
    if not nonempty:
        return {"an_diversity": None, "an_specialisation": None, "an_overlap": None,
                "n_subgroups": 0, "reason": "no coupled network has a member AN"}
    atoms = np.asarray(atoms, dtype=np.float64)
    corr = _mean_response_correlation(projections, atoms, nonempty, neuron_of_row)
    positive = np.clip(scores[list(nonempty)].to_numpy(np.float64), 0, None)
    shares = []
    for j, members in enumerate(nonempty.values()):
        total = positive[members].sum(axis=1)
        shares.append(positive[members, j] / np.where(total > 0, total, 1.0))
    names = list(nonempty)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    overlap = [len(np.intersect1d(nonempty[a], nonempty[b]))
               / len(np.union1d(nonempty[a], nonempty[b])) for a, b in pairs]
    return {"an_diversity": participation_ratio(corr),
            "an_specialisation": float(np.concatenate(shares).mean()),
            "an_overlap": float(np.mean(overlap)) if overlap else 0.0,
            "n_subgroups": len(nonempty)}


def bootstrap_an_metrics(projections, atoms, neurons, assignments, subject_effects,
                         network_names, threshold, n_boot: int = N_BOOTSTRAP,
                         seed: int = 0, extra_networks=()) -> dict:
    """95 % percentile intervals of :func:`an_metrics` over subjects resampled.

    ``subject_effects`` (n_subjects, n_atoms, n_networks): each subject's weights of the
    atoms in each network's composite (its joint effects,
    :func:`bids_app.group.subgroups.joint_network_effects`); a resample's composites use
    their mean over the resampled subjects; the coupled networks are the point estimate's
    (``assignments`` and ``extra_networks``). Returns ``{metric: [low, high]}`` (None when undefined
    in more than half of the resamples).
    """
    rng = np.random.default_rng([int(seed), 0xB007])
    n_subjects = subject_effects.shape[0]
    draws: dict[str, list] = {"an_diversity": [], "an_specialisation": [], "an_overlap": []}
    for _ in range(n_boot):
        sample = rng.integers(0, n_subjects, n_subjects)
        _, scores, _, sets, rows = network_members(
            projections, atoms, neurons, assignments, subject_effects[sample].mean(axis=0),
            network_names, threshold, extra_networks)
        values = an_metrics(projections, atoms, scores, sets, rows)
        for key in draws:
            draws[key].append(np.nan if values[key] is None else values[key])
    out = {}
    for key, values in draws.items():
        values = np.asarray(values, dtype=np.float64)
        ok = values[np.isfinite(values)]
        out[key] = ([float(np.percentile(ok, 2.5)), float(np.percentile(ok, 97.5))]
                    if ok.size > n_boot / 2 else None)
    return out
