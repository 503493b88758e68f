"""Dictionary update: the codes' sufficient statistics, and the atoms that best fit them.

The atoms D (n_atoms, n_trs) minimising ``0.5 * ||X - A D||_F^2`` over ||d_k|| <= 1 for fixed
codes A depend on X and A through A^T A and A^T X only (Mairal et al. 2010):
:class:`Statistics` accumulates them, :func:`bcd` minimises over the atoms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Statistics:
    """Sufficient statistics of the codes, float64 on the fit's device.

    a : tensor (n_atoms, n_atoms), sum of a^T a over the rows' codes a.
    b : tensor (n_atoms, n_trs), sum of a^T x over the rows x and their codes a.
    """

    a: torch.Tensor
    b: torch.Tensor

    @classmethod
    def zeros(cls, n_atoms: int, n_trs: int, device) -> Statistics:
        return cls(torch.zeros((n_atoms, n_atoms), dtype=torch.float64, device=device),
                   torch.zeros((n_atoms, n_trs), dtype=torch.float64, device=device))

    def reset(self):
        """Back to zero (a new batch epoch)."""
        self.a.zero_()
        self.b.zero_()

    def add(self, codes: torch.Tensor, x: torch.Tensor):
        """Add the codes (n_rows, n_atoms) of the rows x (n_rows, n_trs), float32."""
        codes64 = codes.double()
        self.a += codes64.T @ codes64
        self.b += (codes.T @ x).double()

    def forget_and_add(self, codes: torch.Tensor, x: torch.Tensor, step: int):
        """Online update after mini-batch ``step`` (0, 1, ...): the mean statistics of the
        mini-batch's codes (n_rows, n_atoms) and rows x (n_rows, n_trs) are added to the old
        ones scaled down by the forgetting factor of scikit-learn's
        ``MiniBatchDictionaryLearning``."""
        m = x.shape[0]
        theta = (step + 1) * m if step < m - 1 else m * m + step + 1 - m
        beta = (theta + 1 - m) / (theta + 1)
        codes64 = codes.double()
        self.a.mul_(beta).add_(codes64.T @ codes64 / m)
        self.b.mul_(beta).add_((codes.T @ x).double() / m)


def bcd(atoms64, stat_a, stat_b, passes, tol=1e-7):
    """Block coordinate descent on the atoms (Mairal 2010, algorithm 2), in place.

    Minimises 0.5 tr(D^T A D) - tr(D^T B) over ||d_k|| <= 1, with A = sum a^T a
    (n_atoms, n_atoms) and B = sum a^T x (n_atoms, n_trs). Stops after ``passes`` passes
    over the atoms, or when no entry of an atom moved by more than ``tol`` in a pass.

    Parameters
    ----------
    atoms64 : tensor (n_atoms, n_trs), float64, updated in place.
    stat_a : tensor (n_atoms, n_atoms), float64; stat_b : tensor (n_atoms, n_trs), float64.
    passes : int

    Returns
    -------
    ndarray of int: the unused atoms (no code energy), left as they were.
    """
    n_atoms = atoms64.shape[0]
    diag = torch.diagonal(stat_a)
    unused = (diag <= 1e-12 * max(float(diag.max()), 1e-300)).cpu().numpy()
    for _ in range(passes):
        change = 0.0
        for k in range(n_atoms):
            if unused[k]:
                continue
            update = (stat_b[k] - stat_a[k] @ atoms64) / stat_a[k, k]
            new = atoms64[k] + update
            new = new / max(1.0, float(torch.linalg.vector_norm(new)))
            change = max(change, float((new - atoms64[k]).abs().max()))
            atoms64[k] = new
        if change < tol:
            break
    return np.flatnonzero(unused)
