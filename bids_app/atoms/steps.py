"""Searched steps of the batch epochs: quasi-Newton (L-BFGS) directions, the default since
``torch-fista-bcd-v6`` (``settings.STEPS = "quasi-newton-search"``), or conjugate ones
(``"conjugate-search"``, v5); benchmarks/results/dictionary.md, "v6" and "v5".

A batch epoch codes every row against the atoms D, then block coordinate descent on the
codes' statistics gives U: the plain step is D <- U. Near a solution plain steps creep:
along U - D the objective keeps falling far beyond U, because the rows' supports follow
the atoms (the demo's problem at epoch 10: 1, 2, 4, 8 times the step gained 2.0, 3.9,
7.0, 9.2; benchmarks/results/dictionary.md, "over-relaxed atom steps"). So the next
atoms are searched along a direction P built from the plain steps:

- g = U - D is the steepest descent of the objective for fixed codes, preconditioned by
  the codes' Gram matrix (as BCD solves it): with the codes following the atoms, the
  objective's curvature along g is smaller than the fixed codes' curvature that scales
  g, by a factor that differs from one direction to the next;
- **quasi-Newton direction** (v6): the L-BFGS two-loop recursion (Nocedal & Wright 2006,
  algorithm 7.4) applied to g, with the pairs s = D_k+1 - D_k (the atoms' accepted
  moves) and y = g_k - g_k+1 of the last ``settings.LBFGS_MEMORY`` epochs that meet the
  curvature condition <s, y> > 0, and the initial scaling <s, y> / <y, y> of the newest
  pair: it learns how far each direction may go. P = g when there is no pair yet, and
  (a numerical guard only: with every pair meeting the curvature condition the implied
  inverse Hessian is positive definite) when the result is no descent direction for the
  fixed codes (<P, g> <= 0);
- **conjugate direction** (v5): g made conjugate to the last direction by
  Polak-Ribiere+ (Nocedal & Wright 2006, eq. 5.45): P = g + beta P_prev,
  beta = max(0, <g, g - g_prev> / <g_prev, g_prev>), and P = g if that is not a descent
  direction;
- **length**: the rows of a seeded subsample (``settings.SEARCH_FRACTION`` of the rows,
  between ``SEARCH_MIN_ROWS`` and ``SEARCH_MAX_ROWS``; their codes warm-started from the
  last epoch) are coded against unit_rows(D + t P) for t = 1, then each of
  ``settings.SEARCH_LENGTHS`` (2, 4, 8, 16) while the subsample's objective keeps falling;
  the best t is taken (mostly t = 1 for the quasi-Newton direction, 2-4 for the
  conjugate one).

The caller (:class:`bids_app.atoms.epochs.Phase`) guards the step as the Anderson steps
are guarded: a searched epoch whose objective (all rows) is higher than the last accepted
one is rejected and the plain step U is coded next, with the directions' memory cleared.
The subsample's coding is extra work: the ``searched_rows`` of each epoch's log entry, in
rows coded (one candidate = one row per subsample row).
"""

from __future__ import annotations

import numpy as np
import torch

from bids_app.atoms import settings
from bids_app.atoms.anderson import unit_rows
from bids_app.atoms.lasso import Solver, lasso_cost


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    """<a, b> over all entries."""
    return float((a * b).sum())


class QuasiNewtonDirections:
    """L-BFGS directions from successive plain steps (float64).

    Parameters
    ----------
    memory : int, the (s, y) pairs kept (``settings.LBFGS_MEMORY``).
    """

    def __init__(self, memory: int):
        self.memory = int(memory)
        self.pairs = []                   # (s, y, 1 / <s, y>), oldest first
        self.last = None                  # (atoms, g) of the last step
        self.turned = False               # whether the last direction is not g itself

    def reset(self):
        """Forget the pairs (after a restart, a rejected step or a new alpha)."""
        self.pairs = []
        self.last = None

    def direction(self, atoms64: torch.Tensor, plain64: torch.Tensor) -> torch.Tensor:
        """The search direction P (n_atoms, n_trs) from the atoms and their plain step."""
        g = plain64 - atoms64
        if self.last is not None:
            s, y = atoms64 - self.last[0], self.last[1] - g
            sy = _dot(s, y)
            if sy > 1e-12 * (_dot(s, s) * _dot(y, y)) ** 0.5:   # curvature condition
                self.pairs = (self.pairs + [(s, y, 1.0 / sy)])[-self.memory:]
        self.last = (atoms64, g)
        self.turned = False
        if not self.pairs:
            return g
        q = g.clone()
        coefficients = []
        for s, y, rho in reversed(self.pairs):
            coefficient = rho * _dot(s, q)
            coefficients.append(coefficient)
            q -= coefficient * y
        s, y, _ = self.pairs[-1]
        q *= _dot(s, y) / _dot(y, y)
        for (s, y, rho), coefficient in zip(self.pairs, reversed(coefficients)):
            q += (coefficient - rho * _dot(y, q)) * s
        if not _dot(q, g) > 0:
            return g                      # no descent direction for the fixed codes
        self.turned = True
        return q


class ConjugateDirections:
    """Polak-Ribiere+ directions from successive plain steps (float64)."""

    def __init__(self):
        self.last = None                  # (g, P) of the last step
        self.turned = False               # whether the last direction is not g itself

    def reset(self):
        """Forget the last direction (after a restart, a rejected step or a new alpha)."""
        self.last = None

    def direction(self, atoms64: torch.Tensor, plain64: torch.Tensor) -> torch.Tensor:
        """The search direction P (n_atoms, n_trs) from the atoms and their plain step."""
        g = plain64 - atoms64
        p = g
        self.turned = False
        if self.last is not None:
            g_prev, p_prev = self.last
            norm_prev = _dot(g_prev, g_prev)
            if norm_prev > 0:
                beta = max(0.0, _dot(g, g - g_prev) / norm_prev)
                if beta > 0:
                    p = g + beta * p_prev
                    self.turned = _dot(p, g) > 0
                    if not self.turned:
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
