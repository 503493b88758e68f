"""A null for atom-network coupling from surrogate atoms **(ours)**.

Voxels of smooth group maps are not independent, so a voxel-count (hypergeometric) test of
an atom map's overlap with a network is far too liberal. The null here keeps the smoothness:

1. **Surrogate atoms** (:func:`phase_randomised`): each is an atom's time course with the
   phases of its Fourier components randomised within each run (same power spectrum, no
   relation to the story). Each participant's model is fitted on the mean signal of each
   network (no maps: OLS is linear in its targets, so this is the network mean of what a
   map would hold).
2. **Statistics**: the group mean of an atom's standardised effect on a network's mean
   signal (the OLS effect divided by its standard error per unit noise), **alone** with the
   confounds (:func:`bids_app.encoding.network_effects_of`) and **given the other atoms**
   (:func:`bids_app.encoding.partial_network_effects`); for a surrogate, alone and in
   place of its own atom. Standardised, because the raw effect's spread under the null
   grows as the confounds explain more of the regressor (on a null dataset, atoms that the
   drifts and the word rate nearly span beat their surrogates with |z| up to 7). Both,
   because each misses what the other finds: alone, a network signal shared by several
   atoms makes the null as wide as the signal is strong (one 202-frame run: a planted
   DefaultMode signal carried by five atoms, none coupled, null p 7e-4 against a
   Bonferroni 3e-5; given the others, 9e-8); given the others, collinear atoms that share a
   network's signal each add little (demo seed 2: FrontoParietal lost). A spatial
   statistic of the maps (e.g. their correlation with the network mask) saturates: a
   surrogate that correlates by chance with a network's shared signal already draws a
   network-shaped map.
3. **p value** (:func:`null_p_values`): for each network, the surrogates' statistics give
   the null's mean and standard deviation; an atom's standardised statistic is referred to a
   Student t with n_surrogates - 1 degrees of freedom (the prediction interval of a new
   draw from the null), one-sided for each sign; the two statistics' p are combined by
   Bonferroni, ``min(1, 2 min(p_alone, p_given))`` (:func:`combined_null_p`). ``p_fwe`` is
   Bonferroni over atoms x networks x signs.

The network-level test beside it, all atoms together against blocks of multivariate
surrogates (:func:`phase_randomised_blocks`, :func:`prediction_table`), is described in
:mod:`bids_app.encoding.prediction`.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

#: Surrogate atoms per model (``--null-surrogates``).
DEFAULT_N_SURROGATES = 32


def phase_randomised(atoms: np.ndarray, segments: np.ndarray, n_surrogates: int,
                     seed: int) -> np.ndarray:
    """(n_surrogates, n_frames) surrogates of ``atoms`` (n_atoms, n_frames).

    Surrogate ``s`` is atom ``s mod n_atoms`` with uniformly random Fourier phases within
    each segment (``segments`` (n_frames,) labels the run of each frame; the mean and the
    Nyquist component are kept), scaled to unit norm like the atoms.
    """
    atoms = np.asarray(atoms, dtype=np.float64)
    segments = np.asarray(segments)
    rng = np.random.default_rng([int(seed), 0x5EED])
    out = np.empty((n_surrogates, atoms.shape[1]))
    for s in range(n_surrogates):
        course = atoms[s % len(atoms)]
        for label in dict.fromkeys(segments):
            cols = np.flatnonzero(segments == label)
            spectrum = np.fft.rfft(course[cols])
            phases = rng.uniform(0, 2 * np.pi, spectrum.size)
            phases[0] = 0.0
            if cols.size % 2 == 0:
                phases[-1] = 0.0
            out[s, cols] = np.fft.irfft(np.abs(spectrum) * np.exp(1j * phases), n=cols.size)
        norm = np.linalg.norm(out[s])
        out[s] /= norm if norm > 0 else 1.0
    return out


def null_z(r_atoms: np.ndarray, r_null: np.ndarray):
    """``(z, mean, sd)``: the atoms' statistic against the null draws' mean and standard
    deviation (per column), ``z = (r - mean) / (sd sqrt(1 + 1/n))``, the prediction interval
    of a new draw (0 where the null has no spread). ``r_atoms`` (..., n_columns), ``r_null``
    (n_draws, n_columns)."""
    r_null = np.asarray(r_null, dtype=np.float64)
    n = r_null.shape[0]
    mean, sd = r_null.mean(axis=0), r_null.std(axis=0, ddof=1)
    scale = np.where(sd > 0, sd, np.inf) * np.sqrt(1.0 + 1.0 / n)
    return (np.asarray(r_atoms, dtype=np.float64) - mean) / scale, mean, sd


def null_p_values(r_atoms: np.ndarray, r_null: np.ndarray) -> np.ndarray:
    """(2, n_atoms, n_networks) one-sided p of each sign (``+`` then ``-``).

    ``r_atoms`` (n_atoms, n_networks) and ``r_null`` (n_surrogates, n_networks): the
    statistic of the atoms and of the surrogate atoms, referred by :func:`null_z` to a
    Student t with n_surrogates - 1 degrees of freedom.
    """
    z, _, _ = null_z(r_atoms, r_null)
    df = np.shape(r_null)[0] - 1
    return np.stack([stats.t.sf(z, df=df), stats.t.cdf(z, df=df)])


def null_table(mean_effects: np.ndarray, null_mean_effects: np.ndarray,
               n_networks: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The statistics of each atom and network, and its null p values.

    ``mean_effects`` (n_atoms, n_statistics * n_networks) and ``null_mean_effects``
    (n_surrogates, same): group-mean statistics of the atoms and the surrogate atoms on each
    network, one block of ``n_networks`` columns per statistic (the participant level's
    tables: separate, then given the other atoms). Returns the statistics unchanged and
    ``p`` (2, n_atoms, n_networks), signs + then -: with two statistics, the Bonferroni
    combination ``min(1, 2 min(p_separate, p_given))`` (an atom passes when either test
    does, the family-wise error still bounded). ``n_networks`` defaults to all columns (one
    statistic).
    """
    return mean_effects, combined_null_p(mean_effects, null_mean_effects, n_networks)


def combined_null_p(mean_effects: np.ndarray, null_mean_effects: np.ndarray,
                    n_networks: int | None = None) -> np.ndarray:
    """(2, n_atoms, n_networks) the null p of each sign, combined over the statistics'
    column blocks by Bonferroni (see :func:`null_table`)."""
    p = null_p_values(mean_effects, null_mean_effects)
    n_networks = p.shape[-1] if n_networks is None else int(n_networks)
    n_statistics = p.shape[-1] // n_networks
    if n_statistics * n_networks != p.shape[-1]:
        raise ValueError(f"{p.shape[-1]} null columns are not a whole number of blocks of "
                         f"{n_networks} networks")
    if n_statistics == 1:
        return p
    blocks = p.reshape(p.shape[:-1] + (n_statistics, n_networks))
    return np.minimum(1.0, n_statistics * blocks.min(axis=-2))


#: Surrogate blocks of the network-prediction gate (:mod:`bids_app.encoding.prediction`).
DEFAULT_N_BLOCKS = 100


def phase_randomised_blocks(atoms: np.ndarray, segments: np.ndarray, n_blocks: int,
                            seed: int) -> np.ndarray:
    """(n_blocks, n_atoms, n_frames) multivariate surrogates of ``atoms`` (n_atoms, n_frames).

    In block ``b`` every atom gets the **same** random Fourier phases within each segment
    (``segments`` (n_frames,) the run of each frame; the mean and the Nyquist component
    kept), so a block keeps each atom's power spectrum and the atoms' cross-spectra (their
    correlations with one another: a ridge fitted on a block behaves as on the atoms) but
    has no relation to the story (Prichard & Theiler, Phys. Rev. Lett. 73, 1994). Each
    surrogate is scaled to unit norm like the atoms. Seeded apart from
    :func:`phase_randomised`.
    """
    atoms = np.asarray(atoms, dtype=np.float64)
    segments = np.asarray(segments)
    rng = np.random.default_rng([int(seed), 0xB10C])
    out = np.empty((n_blocks,) + atoms.shape)
    for label in dict.fromkeys(segments):
        cols = np.flatnonzero(segments == label)
        spectrum = np.fft.rfft(atoms[:, cols], axis=1)          # (n_atoms, n_freq)
        for b in range(n_blocks):
            phases = rng.uniform(0, 2 * np.pi, spectrum.shape[1])
            phases[0] = 0.0
            if cols.size % 2 == 0:
                phases[-1] = 0.0
            out[b][:, cols] = np.fft.irfft(spectrum * np.exp(1j * phases), n=cols.size,
                                           axis=1)
    norms = np.linalg.norm(out, axis=2, keepdims=True)
    return out / np.where(norms > 0, norms, 1.0)


#: Family-wise error rate of the network-prediction test (Bonferroni over networks): half
#: of 0.05, since a network is coupled when either route passes (an atom's test, at 0.05 and
#: gated by the IoU: no coupled atom on 40 null datasets, ``docs/metrics.md``, or this one),
#: and the union's family-wise error is bounded by the sum of the routes'.
PREDICTION_ALPHA = 0.025


def prediction_table(atom_r: np.ndarray, null_r: np.ndarray, network_names,
                     alpha: float = PREDICTION_ALPHA):
    """The network-level coupling test: one row per network.

    ``atom_r`` (n_subjects, n_networks) each subject's split-half prediction correlation of
    each network's mean signal by the atoms, ``null_r`` (n_subjects, n_blocks, n_networks)
    the same by each surrogate block (:mod:`bids_app.encoding.prediction`; block ``b`` is
    the same surrogate time courses in every subject, as the atoms are). The correlations
    are averaged over subjects as **Fisher z** (``arctanh r``, the usual way to average
    correlations): a planted signal that the surrogate blocks also predict fairly well
    (r near 0.5, a slow signal) has a null that r's bound at 1 squeezes and skews, and in
    z the atoms' lead over it is measured on the scale where the spread does not depend on
    the level (docs/metrics.md: the demo's Auditory network, p_fwe 0.10 in r, 0.001 in z).
    The statistic is that group mean; the blocks' group means give the null's mean and
    spread, and the atoms' is referred to a Student t with n_blocks - 1 degrees of freedom,
    one-sided (a better prediction), as :func:`null_p_values` does. ``p_fwe`` is Bonferroni
    over networks; ``coupled`` is ``p_fwe < alpha`` (:data:`PREDICTION_ALPHA`). Columns:
    ``network``, ``r`` (group mean r, for reading), ``r_null_mean``, ``r_null_sd`` (of the
    blocks' group means), ``fisher_z`` (group mean z), ``fisher_z_null_mean``,
    ``fisher_z_null_sd``, ``z``, ``p``, ``p_fwe``, ``coupled``.
    """
    import pandas as pd

    atom_r = np.asarray(atom_r, dtype=np.float64)
    null_r = np.asarray(null_r, dtype=np.float64)
    atom_z = fisher_z(atom_r).mean(axis=0)                                   # (n_networks,)
    null_z_means = fisher_z(null_r).mean(axis=0)                       # (n_blocks, n_net)
    z, centre, sd = null_z(atom_z, null_z_means)
    p = stats.t.sf(z, df=null_z_means.shape[0] - 1)
    p_fwe = np.minimum(1.0, p * len(atom_z))
    null_r_means = null_r.mean(axis=0)
    return pd.DataFrame({"network": list(map(str, network_names)), "r": atom_r.mean(axis=0),
                         "r_null_mean": null_r_means.mean(axis=0),
                         "r_null_sd": null_r_means.std(axis=0, ddof=1),
                         "fisher_z": atom_z, "fisher_z_null_mean": centre,
                         "fisher_z_null_sd": sd, "z": z, "p": p, "p_fwe": p_fwe,
                         "coupled": p_fwe < alpha})


#: Largest |r| the Fisher transform is taken of (|r| of 1 would give an infinite z).
MAX_ABS_R = 1.0 - 1e-7


def fisher_z(r: np.ndarray) -> np.ndarray:
    """``arctanh(r)``, r clipped to +-:data:`MAX_ABS_R` (float64)."""
    return np.arctanh(np.clip(np.asarray(r, dtype=np.float64), -MAX_ABS_R, MAX_ABS_R))
