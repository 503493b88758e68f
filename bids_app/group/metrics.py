"""Organisation metrics of a model's brain-like organisation **(ours)**."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bids_app.bids.naming import NO_NETWORK
from bids_app.group.coupling import best_networks, hypergeometric_p, signed_overlaps
from bids_app.group.disk import DiskStack
from bids_app.group.null import combined_null_p
from bids_app.group.stats import fdr_critical_t, fdr_mask_from_t

#: Bootstrap resamples of the subjects for the confidence intervals.
N_BOOTSTRAP = 200

#: Brain-side metrics that get a bootstrap interval (:func:`bootstrap_diversity`).
DIVERSITY_INTERVALS = ("n_coupled_atoms", "n_networks_covered", "fraction_networks_covered",
                       "normalised_entropy")

_DEFINITIONS = {
    "n_coupled_atoms": "Number of atoms assigned to some FBN (network other than 'none').",
    "n_networks_covered": "Number of distinct FBNs with at least one assigned atom.",
    "fraction_networks_covered": "n_networks_covered divided by the number of FBNs in "
                                 "the atlas.",
    "normalised_entropy": "Shannon entropy of the distribution of coupled atoms over the "
                          "atlas's FBNs divided by log(number of FBNs), 0 for one or no "
                          "coupled atom (1 = atoms spread evenly over all FBNs).",
    "ci95": "95 % percentile intervals over subjects resampled with replacement (200 "
            "draws): for the diversity metrics the whole group chain is redone on each "
            "resample (group t, FDR, coupling with its null, assignment), so they say how "
            "much coverage and entropy depend on which subjects were scanned.",
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


def diversity_metrics(assignments: pd.DataFrame, network_names) -> dict:
    """Brain-side diversity of one assignment table: atoms coupled, networks covered (count
    and fraction of the atlas), normalised entropy of the coupled atoms over the networks and
    the atoms per network (definitions in ``_DEFINITIONS``)."""
    network_names = [str(n) for n in network_names]
    n_networks = len(network_names)
    networks = assignments["network"].astype(str)
    counts = networks[networks != NO_NETWORK].value_counts()
    n_coupled = int(counts.sum())
    if n_coupled <= 1 or n_networks <= 1:
        entropy = 0.0
    else:
        share = counts.to_numpy(np.float64) / n_coupled
        # + 0.0: all atoms on one network give -0.0, shown as "-0" in tables
        entropy = float(-(share * np.log(share)).sum() / math.log(n_networks)) + 0.0
    return {
        "n_atoms": int(len(assignments)),
        "n_networks": int(n_networks),
        "n_coupled_atoms": n_coupled,
        "n_networks_covered": int(counts.size),
        "fraction_networks_covered": float(counts.size / n_networks) if n_networks else 0.0,
        "normalised_entropy": entropy,
        "atoms_per_network": {n: int(counts.get(n, 0)) for n in network_names},
    }


def bootstrap_samples(n_subjects: int, n_boot: int, seed: int, stream: int) -> list[np.ndarray]:
    """``n_boot`` resamples (with replacement) of ``range(n_subjects)``, seeded by ``seed``
    and ``stream`` (one stream per kind of interval). A resample made of a single subject
    repeated has no variance across subjects (its t maps are all zero) and is drawn again."""
    rng = np.random.default_rng([int(seed), int(stream)])
    samples = []
    while len(samples) < n_boot and n_subjects > 1:
        sample = rng.integers(0, n_subjects, n_subjects)
        if np.unique(sample).size > 1:
            samples.append(sample)
    return samples


#: float32 copies of a block of atoms the bootstrap holds (the maps, centred, squared, and
#: the per-draw temporaries).
BLOCK_COPIES = 4
#: Default memory for the bootstrap's block of atoms (the group level passes --mem-gb's).
BLOCK_BYTES = 64 * 2 ** 20


def bootstrap_block_bytes(n_subjects: int, n_voxels: int) -> int:
    """Memory the bootstrap needs at least: one atom's maps of every subject and their
    float32 temporaries (the group level's only memory term that grows with the subjects)."""
    return BLOCK_COPIES * 4 * int(n_subjects) * int(n_voxels)


def resampled_networks(effects, atlas, samples, q: float = 0.05, min_iou: float = 0.1,
                       network_means=None, null_network_means=None,
                       alpha: float = 0.05, n_workers: int = 1,
                       block_bytes: int = BLOCK_BYTES) -> np.ndarray:
    """(n_draws, n_atoms) the network index each atom is assigned to (-1 for none) when the
    group chain runs on each resample of the subjects.

    The same chain as :func:`bids_app.group.coupling.group_coupling` (one-sample t, FDR
    within each map, overlap with each network, the hypergeometric test or the surrogate
    null, Bonferroni over atoms x networks x signs, best passing network), in array form so
    that hundreds of resamples take seconds: a resample's mean and variance come from
    weighted sums of the subjects' effects (float32, centred on the all-subject mean) and
    their squares, Benjamini-Hochberg from critical |t| values instead of a p value per
    voxel, and the hypergeometric p only where the IoU can pass. A voxel whose variance
    across the resample is below 1e-6 of its mean square about the centre (all subjects
    equal, up to rounding) gets t = 0, as in :func:`bids_app.group.stats.one_sample_t`.
    The t values agree with that function's to float32 precision (~1e-6 relative), so a
    voxel can only change side where its |t| is that close to an FDR critical value.

    ``effects`` (n_subjects, n_atoms, n_voxels), possibly disk-backed: it is read one block
    of atoms at a time (every subject's maps of at least one atom, the only memory term that
    grows with the subjects; blocks within ``block_bytes``, see :func:`bootstrap_block_bytes`);
    ``samples`` a list of index arrays into the subjects; the
    network means as in :func:`group_coupling`. ``n_workers`` >= 2 splits the
    resamples over forked processes (:func:`bids_app.parallel.forked_map`); every resample
    runs with one BLAS thread, so the result is the same for any number of workers.
    """
    from threadpoolctl import threadpool_limits

    from bids_app.parallel import forked_map

    if not isinstance(effects, DiskStack):    # a DiskStack is read block by block
        effects = np.asarray(effects)
    n_subjects, n_atoms, n_voxels = effects.shape
    critical = fdr_critical_t(n_voxels, n_subjects - 1, q)
    masks = np.asarray(atlas.masks, dtype=bool)
    n_networks = masks.shape[0]
    n_tests = n_atoms * n_networks * 2
    # atoms per block: every subject's maps of the block and its float32 temporaries
    # (BLOCK_COPIES of them) within block_bytes; one atom at least (n_subjects x n_voxels:
    # the only term that grows with the subjects)
    per_block = max(1, int(block_bytes) // max(BLOCK_COPIES * 4 * n_voxels * n_subjects, 1))
    network_size = masks.sum(axis=1)
    scale = np.float32(n_subjects - 1)        # var / n = (E[c^2] - E[c]^2) / (n - 1)
    shape = (2, n_atoms, n_networks)

    def block_draws(block: np.ndarray, weights: np.ndarray):
        """(n_draws, 2, n_block_atoms, n_networks) overlap, atom size and IoU of one block
        of atoms (``block`` (n_subjects, n_block_atoms, n_voxels)) in every resample."""
        n_block = block.shape[1]
        flat = block.reshape(n_subjects, -1)
        finite = np.isfinite(flat).all(axis=0)
        # float32, centred on the all-subject mean: a resample's variance E[c^2] - E[c]^2
        # then loses no precision to cancellation (its mean is ~sd/sqrt(n) from the centre)
        centred = np.where(finite, flat, 0).astype(np.float32)
        centre = centred.mean(axis=0, dtype=np.float64).astype(np.float32)
        centred -= centre
        squares = centred ** 2
        out = [np.zeros((len(weights), 2, n_block, n_networks), np.int64),
               np.zeros((len(weights), 2, n_block, n_networks), np.int64),
               np.zeros((len(weights), 2, n_block, n_networks))]
        # the resamples' weighted sums by matrix products over several draws at once: the
        # block is read once per group of draws instead of once per draw (memory-bound with
        # many subjects, where a block is one atom); groups of draws of at most ~2 M values
        # (larger fresh arrays cost more in page faults than they save)
        step = int(min(64, max(1, 2_000_000 // max(flat.shape[1], 1))))
        for draw in range(len(weights)):
            if draw % step == 0:
                sums = weights[draw:draw + step] @ centred
                sums_sq = weights[draw:draw + step] @ squares
            mean = sums[draw % step]
            var_n = sums_sq[draw % step]                     # E[c^2], then var / n
            bad = ~finite
            bad |= var_n <= 1e-6 * var_n + mean * mean       # var <= 1e-6 E[c^2]
            var_n -= mean * mean
            np.maximum(var_n, 0.0, out=var_n)                # rounding below zero
            var_n /= scale
            mean += centre
            t = np.divide(mean, np.sqrt(var_n, out=var_n), out=mean, where=~bad)
            t[bad] = 0.0
            t = t.reshape(n_block, n_voxels)
            significant = fdr_mask_from_t(t, critical)
            out[0][draw], out[1][draw], out[2][draw] = signed_overlaps(
                t, significant, masks, network_size)
        return out

    def run(indices) -> np.ndarray:
        chosen = [samples[i] for i in indices]
        weights = np.stack([np.bincount(s, minlength=n_subjects) / n_subjects
                            for s in chosen]).astype(np.float32)
        overlap = np.zeros((len(chosen),) + shape, np.int64)
        atom_size = np.zeros((len(chosen),) + shape, np.int64)
        iou = np.zeros((len(chosen),) + shape)
        with threadpool_limits(1):
            for first in range(0, n_atoms, per_block):
                atoms = slice(first, min(first + per_block, n_atoms))
                overlap[:, :, atoms], atom_size[:, :, atoms], iou[:, :, atoms] = \
                    block_draws(effects[:, atoms, :], weights)
            networks = np.full((len(chosen), n_atoms), -1, dtype=np.int64)
            for draw, sample in enumerate(chosen):
                if null_network_means is not None:
                    p = combined_null_p(np.mean(network_means[sample], axis=0),
                                        np.mean(null_network_means[sample], axis=0),
                                        shape[-1])
                else:
                    p = np.ones(shape)
                    can_pass = iou[draw] >= min_iou
                    p[can_pass] = hypergeometric_p(
                        overlap[draw][can_pass], atom_size[draw][can_pass],
                        network_size[np.nonzero(can_pass)[2]], n_voxels)
                networks[draw] = best_networks(iou[draw], np.minimum(1.0, p * n_tests),
                                               min_iou, alpha,
                                               by_p=null_network_means is not None)
        return networks

    chunks = [c for c in np.array_split(np.arange(len(samples)), max(int(n_workers), 1))
              if c.size]
    if not chunks:
        return np.full((0, n_atoms), -1, dtype=np.int64)
    return np.concatenate(list(forked_map(run, chunks, n_workers)))


def bootstrap_diversity(effects, atlas, q: float, min_iou: float, network_means=None,
                        null_network_means=None, n_boot: int = N_BOOTSTRAP,
                        seed: int = 0, n_workers: int = 1,
                        block_bytes: int = BLOCK_BYTES) -> dict:
    """95 % percentile intervals of the brain-side diversity metrics over subjects.

    Each draw resamples the subjects with replacement and redoes the whole group chain on
    them (:func:`resampled_networks`: one-sample t, FDR, coupling with the surrogate null
    when ``null_network_means`` is given, assignment), then :func:`diversity_metrics`.
    Returns ``{metric: [low, high]}`` for the metrics of :data:`DIVERSITY_INTERVALS` (None
    without two distinct subjects). ``n_workers``: forked processes sharing the resamples
    (same result for any number).
    """
    samples = bootstrap_samples(effects.shape[0], n_boot, seed, 0xD1E5)
    names = np.asarray([str(n) for n in atlas.network_names] + [NO_NETWORK], dtype=object)
    draws = {name: [] for name in DIVERSITY_INTERVALS}
    for row in resampled_networks(effects, atlas, samples, q, min_iou, network_means,
                                  null_network_means, n_workers=n_workers,
                                  block_bytes=block_bytes):
        values = diversity_metrics(pd.DataFrame({"network": names[row]}), atlas.network_names)
        for name in draws:
            draws[name].append(values[name])
    return {name: ([float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if v else None)
            for name, v in draws.items()}


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
    diversity = diversity_metrics(assignments, network_names)
    coupled = assignments[assignments["network"].astype(str) != NO_NETWORK]

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
