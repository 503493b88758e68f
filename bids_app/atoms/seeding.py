"""Initial atoms: greedy k-means++ seeding on a seeded subsample of the rows.

Each new atom is, of a few rows drawn with probability proportional to the energy they
have left after projection on the nearest atom so far, the one leaving the least energy
(on |cosine|, as scikit-learn's ``kmeans_plusplus``). Atoms start as real, diverse AN time
courses.
"""

from __future__ import annotations

import numpy as np
import torch

from bids_app.atoms import settings
from bids_app.atoms.rows import Rows
from bids_app.errors import LlmfbnError


def init_sample_size(n_rows: int, n_atoms: int) -> int:
    """Rows drawn for the initialisation (and for the warm-up epochs on a subsample)."""
    return min(n_rows, max(settings.INIT_SAMPLE, 20 * n_atoms))


def seed_atoms(data: Rows, n_atoms: int, rng: np.random.Generator):
    """k-means++-like seeding (on |cosine|) from a subsample of the non-zero rows.

    Parameters
    ----------
    data : Rows, n rows of n_trs values.
    n_atoms : int
    rng : numpy Generator, the fit's (draws the subsample, the seeds and the tuning rows).

    Returns
    -------
    atoms : ndarray (n_atoms, n_trs), float32, unit-norm rows of the subsample.
    tune_rows : ndarray (min(n_sample, settings.TUNE_SAMPLE), n_trs), float32, the rows
        on which alpha is tuned for a target sparsity.
    sample : ndarray (n_sample, n_trs), float32, the subsample (sorted row order).
    """
    n_sample = init_sample_size(data.n, n_atoms)
    index = np.sort(rng.choice(data.n, size=n_sample, replace=False))
    sample = data.take(index).cpu().numpy()                 # float32
    norms = np.linalg.norm(sample, axis=1)
    nonzero = norms > 1e-6 * max(1.0, float(norms.max(initial=0.0)))
    if int(nonzero.sum()) < n_atoms:
        raise LlmfbnError("too few non-zero rows (responding neurons) to learn from",
                          found=f"{int(nonzero.sum())} of {n_sample} sampled rows",
                          todo="check the responses or lower --n-atoms")
    # torch for the products (NumPy's BLAS threads would compete with torch's)
    unit = torch.from_numpy(sample[nonzero] / norms[nonzero, None])
    atoms = _greedy_kmeans_plusplus(unit, n_atoms, rng).numpy()
    del unit
    tune_rows = sample[:settings.TUNE_SAMPLE] if len(sample) <= settings.TUNE_SAMPLE else \
        sample[np.sort(rng.choice(len(sample), size=settings.TUNE_SAMPLE, replace=False))]
    return atoms, tune_rows, sample


def _greedy_kmeans_plusplus(unit: torch.Tensor, n_atoms: int,
                            rng: np.random.Generator) -> torch.Tensor:
    """``n_atoms`` rows of ``unit`` (n_rows, n_trs), unit-norm rows: tensor (n_atoms, n_trs)."""
    atoms = torch.zeros((n_atoms, unit.shape[1]), dtype=torch.float32)
    first = int(rng.integers(len(unit)))
    atoms[0] = unit[first]
    best = (unit @ atoms[0]).abs()
    n_candidates = 2 + int(np.log(n_atoms))
    for k in range(1, n_atoms):
        # greedy k-means++ (as scikit-learn's kmeans_plusplus): of a few rows drawn
        # with probability ~ energy left, keep the one that leaves the least energy
        left = (1.0 - best.double() ** 2).clamp_min(0.0).numpy()
        total = left.sum()
        if total > 1e-12:
            picks = rng.choice(len(unit), size=n_candidates, p=left / total)
        else:
            picks = rng.integers(len(unit), size=n_candidates)
        cos = (unit @ unit[torch.as_tensor(picks)].T).abs()   # (n_sample, n_candidates)
        after = torch.maximum(best[:, None], cos)
        pick = int(picks[int(torch.argmin((1.0 - after.double() ** 2).sum(0)))])
        atoms[k] = unit[pick]
        best = torch.maximum(best, (unit @ atoms[k]).abs())
    return atoms
