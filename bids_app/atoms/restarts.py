"""Restarts: find the atoms that waste their slot and give them a pattern to explain.

Dictionary learning has two usual local minima: an atom duplicating another or fitting a
few rows' noise (:func:`wasted_atoms`) while some pattern stays unexplained, and two atoms
splitting two patterns between them (a rotated pair, :func:`coactive_pairs`). Wasted atoms
restart from the leading principal directions of the coding residuals
(:func:`top_directions`); a rotated pair is split along the two directions its ANs follow
(:func:`split_pair`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from bids_app.atoms import settings


def wasted_atoms(atoms64, stat_a):
    """Atoms that waste their slot: near-duplicates and rarely used atoms.

    Of each pair with |cos| > ``settings.DUPLICATE_CORR`` the one with less code energy
    (diagonal of ``stat_a``, the sum of its squared codes) is returned, and every atom
    whose code energy is below ``settings.RARE_ENERGY`` times the median of the used
    atoms'. Both are the marks of the usual local minima of dictionary learning: two atoms
    sharing a pattern, or an atom fitting a few rows' noise, while some pattern stays
    unexplained. Unused atoms (zero energy) are left to the caller.

    Parameters
    ----------
    atoms64 : tensor (n_atoms, n_trs), float64.
    stat_a : tensor (n_atoms, n_atoms), sum of a^T a over the rows' codes a.

    Returns
    -------
    ndarray of int64, sorted: the wasted atoms.
    """
    energy = torch.diagonal(stat_a).cpu().numpy()
    used = energy > 1e-12 * max(float(energy.max()), 1e-300)
    norms = atoms64.norm(dim=1).clamp_min(1e-30)
    cos = ((atoms64 @ atoms64.T) / norms[:, None] / norms[None, :]).abs().cpu().numpy()
    chosen = set()
    if used.any():
        chosen |= set(np.flatnonzero(used & (energy < settings.RARE_ENERGY
                                             * np.median(energy[used]))).tolist())
    rows, cols = np.nonzero(np.triu(cos, 1) > settings.DUPLICATE_CORR)
    for i in np.argsort(-cos[rows, cols], kind="stable"):
        a, b = int(rows[i]), int(cols[i])
        if a in chosen or b in chosen or not (used[a] and used[b]):
            continue
        chosen.add(a if energy[a] < energy[b] else b)
    return np.array(sorted(chosen), dtype=np.int64)


def top_directions(resid, n_directions, n_iter=8):
    """Leading right singular vectors (n_directions, n_trs) of ``resid`` (n_rows, n_trs).

    Deterministic subspace iteration (fixed start, QR each step, Rayleigh-Ritz at the
    end): a few matrix products, also for thousands of TRs.
    """
    n_rows, n_trs = resid.shape
    width = min(n_trs, n_directions + 8)
    start = torch.arange(n_trs * width, dtype=resid.dtype, device=resid.device)
    basis = torch.cos(start.reshape(n_trs, width) * 0.7071)    # fixed, full-rank start
    basis = torch.linalg.qr(basis)[0]
    for _ in range(n_iter):
        basis = torch.linalg.qr(resid.T @ (resid @ basis))[0]
    _, _, vt = torch.linalg.svd(resid @ basis, full_matrices=False)
    return (vt[:n_directions] @ basis.T)


def coactive_pairs(coactive, skip=()):
    """Disjoint atom pairs (i, j) that code nearly the same ANs: of the ANs using the less
    used of the two, more than ``settings.COACTIVE_FRACTION`` use the other too.

    Two atoms that split two patterns between them (a rotated pair, such as (s1 + s2) and
    (s1 - s2) for patterns s1, s2) show this way: every AN with either pattern needs both.
    ``coactive`` (n_atoms, n_atoms): counts of ANs with both codes non-zero; ``skip``:
    atoms to leave out (e.g. those about to be restarted). Returns a list of (i, j), i < j,
    most coactive first.
    """
    counts = np.asarray(coactive, dtype=np.float64)
    used = np.diag(counts)
    fraction = counts / np.maximum(np.minimum(used[:, None], used[None, :]), 1.0)
    rows, cols = np.nonzero(np.triu(fraction, 1) > settings.COACTIVE_FRACTION)
    taken = set(int(u) for u in skip)
    pairs = []
    for k in np.argsort(-fraction[rows, cols], kind="stable"):
        i, j = int(rows[k]), int(cols[k])
        if (i not in taken and j not in taken
                and min(used[i], used[j]) >= settings.MIN_PAIR_ROWS):
            pairs.append((i, j))
            taken.update((i, j))
    return pairs


def split_pair(atom_i, atom_j, codes_ij):
    """Two unit atoms along the two directions that the ANs using both atoms follow.

    Every such AN's component in the plane of the two atoms, ``a_i d_i + a_j d_j``, is
    taken as an angle in [0, pi) (sign-free), weighted by its squared length; the two
    highest modes of the smoothed angle histogram, at least 20 degrees apart, are the
    new atoms. A rotated pair is undone; two atoms that are already the right ones
    come back almost unchanged.

    Parameters
    ----------
    atom_i, atom_j : tensors (n_trs,), float64; codes_ij : tensor (n_rows, 2).

    Returns
    -------
    list of two tensors (n_trs,), or None when the two atoms are parallel.
    """
    e1 = atom_i / atom_i.norm().clamp_min(1e-30)
    e2 = atom_j - (atom_j @ e1) * e1
    if float(e2.norm()) < 1e-6:
        return None
    e2 = e2 / e2.norm()
    plane = codes_ij[:, :1] * atom_i + codes_ij[:, 1:] * atom_j     # (n_rows, n_trs)
    x, y = plane @ e1, plane @ e2
    angles = torch.remainder(torch.atan2(y, x), math.pi).cpu().numpy()
    weights = (x * x + y * y).cpu().numpy()
    n_bins = 180
    histogram = np.bincount(np.minimum((angles / math.pi * n_bins).astype(int), n_bins - 1),
                            weights=weights, minlength=n_bins)
    kernel = np.exp(-0.5 * (np.arange(-6, 7) / 2.0) ** 2)
    smooth = np.array([np.dot(kernel, np.take(histogram, np.arange(b - 6, b + 7),
                                              mode="wrap")) for b in range(n_bins)])
    first = int(np.argmax(smooth))
    distance = np.abs((np.arange(n_bins) - first + n_bins // 2) % n_bins - n_bins // 2)
    second = int(np.argmax(np.where(distance >= 20, smooth, -np.inf)))
    new = []
    for b in (first, second):
        theta = (b + 0.5) * math.pi / n_bins
        new.append(math.cos(theta) * e1 + math.sin(theta) * e2)
    return new
