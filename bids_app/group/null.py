"""A null for atom-network coupling from surrogate atoms **(ours)**.

Voxels of smooth group maps are not independent, so a voxel-count (hypergeometric) test of
an atom map's overlap with a network is far too liberal. The null here keeps the smoothness:

1. **Surrogate atoms** (:func:`phase_randomised`): each is an atom's time course with the
   phases of its Fourier components randomised within each run (same power spectrum, no
   relation to the story). Each participant's GLM fits them exactly like the atoms (same
   design, same GLM) on the mean signal of each network (no maps: OLS is linear in its
   targets, so this is the network mean of the map a surrogate would get).
2. **Statistic**: the group mean of an atom's standardised effect on a network's mean
   signal: the OLS effect divided by its standard error per unit noise (for the separate
   GLM, times the atom's norm after the confounds are projected out;
   :func:`bids_app.encoding.network_effects_of`). The raw effect's spread under the null
   grows as the confounds explain more of the regressor: on a null dataset, atoms that the
   drifts and the word rate nearly span (residual norm 0.04-0.1 against ~0.5) beat their
   surrogates with |z| up to 7; standardised, the largest |z| of 832 tests was 3.2. A
   spatial statistic of the maps (e.g. their correlation with the network mask) saturates:
   a surrogate that correlates by chance with a network's shared signal already draws a
   network-shaped map.
3. **p value** (:func:`null_p_values`): for each network, the surrogates' statistics give
   the null's mean and standard deviation; an atom's standardised statistic is referred to a
   Student t with n_surrogates - 1 degrees of freedom (the prediction interval of a new
   draw from the null), one-sided for each sign. ``p_fwe`` is Bonferroni over atoms x networks
   x signs.
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


def null_p_values(r_atoms: np.ndarray, r_null: np.ndarray) -> np.ndarray:
    """(2, n_atoms, n_networks) one-sided p of each sign (``+`` then ``-``).

    ``r_atoms`` (n_atoms, n_networks) and ``r_null`` (n_surrogates, n_networks): the
    statistic of the atoms and of the surrogate atoms.
    """
    r_null = np.asarray(r_null, dtype=np.float64)
    n = r_null.shape[0]
    mean, sd = r_null.mean(axis=0), r_null.std(axis=0, ddof=1)
    scale = np.where(sd > 0, sd, np.inf) * np.sqrt(1.0 + 1.0 / n)
    z = (np.asarray(r_atoms, dtype=np.float64) - mean) / scale
    return np.stack([stats.t.sf(z, df=n - 1), stats.t.cdf(z, df=n - 1)])


def null_table(mean_effects: np.ndarray,
               null_mean_effects: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The statistic of each atom and network, and its null p values.

    ``mean_effects`` (n_atoms, n_networks) and ``null_mean_effects`` (n_surrogates,
    n_networks): group-mean effects over each network's voxels
    (:func:`bids_app.group.subgroups.network_effects` averaged over subjects). Returns the
    statistic (n_atoms, n_networks) and ``p`` (2, n_atoms, n_networks), signs + then -.
    """
    return mean_effects, null_p_values(mean_effects, null_mean_effects)
