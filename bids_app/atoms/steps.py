"""Searched conjugate steps of the batch epochs (``settings.STEPS = "conjugate-search"``, the
default since ``torch-fista-bcd-v5``; benchmarks/results/dictionary.md, "v5").

A batch epoch codes every row against the atoms D, then block coordinate descent on the
codes' statistics gives U: the plain step is D <- U. Near a solution plain steps creep:
along U - D the objective keeps falling far beyond U, because the rows' supports follow
the atoms (the demo's problem at epoch 10: 1, 2, 4, 8 times the step gained 2.0, 3.9,
7.0, 9.2; benchmarks/results/dictionary.md, "over-relaxed atom steps"). So the next
atoms are searched along a direction P built from the plain steps:

- **direction**: g = U - D (the steepest descent of the objective for fixed codes,
  preconditioned by the codes' Gram matrix, as BCD solves it), made conjugate to the last
  direction by Polak-Ribiere+ (Nocedal & Wright 2006, eq. 5.45):
  P = g + beta P_prev, beta = max(0, <g, g - g_prev> / <g_prev, g_prev>), and P = g if
  that is not a descent direction for the fixed codes (<P, g> <= 0);
- **length**: the rows of a seeded subsample (``settings.SEARCH_FRACTION`` of the rows,
  between ``SEARCH_MIN_ROWS`` and ``SEARCH_MAX_ROWS``; their codes warm-started from the
  last epoch) are coded against unit_rows(D + t P) for t = 1, then each of
  ``settings.SEARCH_LENGTHS`` (2, 4, 8, 16) while the subsample's objective keeps falling;
  the best t is taken.

The caller (:class:`bids_app.atoms.epochs.Phase`) guards the step as the Anderson steps
are guarded: a searched epoch whose objective (all rows) is higher than the last accepted
one is rejected and the plain step U is coded next, with the direction's memory cleared.
The subsample's coding is extra work: the ``searched_rows`` of each epoch's log entry, in
rows coded (one candidate = one row per subsample row).
"""

from __future__ import annotations

import numpy as np
import torch

from bids_app.atoms import settings
from bids_app.atoms.anderson import unit_rows
from bids_app.atoms.lasso import Solver, lasso_cost


class ConjugateDirections:
    """Polak-Ribiere+ directions from successive plain steps (float64)."""

    def __init__(self):
        self.last = None                  # (g, P) of the last step
        self.conjugated = False           # whether the last direction is not g itself

    def reset(self):
        """Forget the last direction (after a restart, a rejected step or a new alpha)."""
        self.last = None

    def direction(self, atoms64: torch.Tensor, plain64: torch.Tensor) -> torch.Tensor:
        """The search direction P (n_atoms, n_trs) from the atoms and their plain step."""
        g = plain64 - atoms64
        p = g
        self.conjugated = False
        if self.last is not None:
            g_prev, p_prev = self.last
            norm_prev = float((g_prev * g_prev).sum())
            if norm_prev > 0:
                beta = max(0.0, float((g * (g - g_prev)).sum()) / norm_prev)
                if beta > 0:
                    p = g + beta * p_prev
                    self.conjugated = float((p * g).sum()) > 0
                    if not self.conjugated:
                        p = g
        self.last = (g, p)
        return p


def search_rows(n: int, rng: np.random.Generator) -> np.ndarray:
    """A sorted random subsample of the n rows for one search (all of them if n is small)."""
    m = int(min(n, max(settings.SEARCH_MIN_ROWS,
                       min(settings.SEARCH_FRACTION * n, settings.SEARCH_MAX_ROWS))))
    return np.sort(rng.choice(n, m, replace=False)) if m < n else np.arange(n)


def search_length(x: torch.Tensor, init: torch.Tensor, atoms64: torch.Tensor,
                  direction: torch.Tensor, alpha: float):
    """The step along ``direction`` (n_atoms, n_trs) from ``atoms64`` (float64) that gives
    the rows ``x`` (m, n_trs), float32, the lowest objective, among t = 1 and the
    ``settings.SEARCH_LENGTHS`` tried in order while the objective falls.

    ``init`` (m, n_atoms) warm-starts their codes. Returns (t, atoms float32 with unit
    rows, rows coded)."""
    def objective(t):
        candidate = unit_rows(atoms64 + t * direction).float()
        codes, resid_sq, _ = Solver.of(candidate).code(x, alpha, init=init,
                                                         gap_tol=settings.SEARCH_GAP_TOL)
        return lasso_cost(codes, resid_sq, alpha), candidate

    best_t = 1.0
    best, best_atoms = objective(best_t)
    coded = 1
    for t in settings.SEARCH_LENGTHS:
        value, candidate = objective(float(t))
        coded += 1
        if not value < best:
            break
        best_t, best, best_atoms = float(t), value, candidate
    return best_t, best_atoms, coded * x.shape[0]
