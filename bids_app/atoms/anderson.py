"""Anderson acceleration of the batch epochs (``settings.STEPS = "anderson"``, with
``settings.ANDERSON_MEMORY`` = 3 the steps of ``torch-fista-bcd-v4``; since v5 an option,
see :mod:`bids_app.atoms.steps`; benchmarks/results/dictionary.md).

A batch epoch is a fixed-point map on the atoms: code every row against the atoms D, then
block coordinate descent gives U = G(D). Plain epochs take D <- U; near a solution they
creep along directions the objective barely constrains (mostly mixings of the atoms
within their span, where the L1 penalty alone sets the answer), so the objective falls by
a nearly constant factor per epoch for tens of epochs. Anderson acceleration (type II,
Walker & Ni 2011) extrapolates from the last m + 1 pairs (D_i, U_i): with residuals
r_i = U_i - D_i it finds the affine combination of the residuals of least norm,

    gamma = argmin || r_m - sum_j gamma_j (r_{j+1} - r_j) ||,
    D_next = U_m - sum_j gamma_j (U_{j+1} - U_j),

a multisecant quasi-Newton step. The atoms are then scaled back to unit norm. The caller
(:class:`bids_app.atoms.epochs.Phase`) guards it: an extrapolated epoch whose objective is
higher than the last accepted one is rejected, and the plain step is taken instead with
the memory cleared, so the accepted objectives never increase.
"""

from __future__ import annotations

import torch

#: Tikhonov term of the least-squares problem, relative to the mean diagonal of its
#: normal matrix (keeps nearly collinear residual differences from blowing up gamma).
RIDGE = 1e-8


class Anderson:
    """Memory of the last ``memory + 1`` (atoms, update) pairs, float64.

    Parameters
    ----------
    memory : int, m of AA(m); 0 gives plain steps.
    """

    def __init__(self, memory: int):
        self.memory = int(memory)
        self.points: list[torch.Tensor] = []
        self.updates: list[torch.Tensor] = []

    def reset(self):
        """Forget the history (after a restart, a rejected step or a new alpha)."""
        self.points, self.updates = [], []

    def step(self, atoms: torch.Tensor, update: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """Record the plain step ``atoms`` (n_atoms, n_trs) -> ``update``; return the next
        atoms and whether they are extrapolated: ``update`` itself (False) with memory 0
        or no history yet, else the mix (unit-norm rows, float64; True)."""
        if self.memory < 1:
            return update, False
        self.points = (self.points + [atoms.double()])[-(self.memory + 1):]
        self.updates = (self.updates + [update.double()])[-(self.memory + 1):]
        if len(self.points) < 2:
            return update, False
        return unit_rows(anderson_mix(self.points, self.updates)), True


def anderson_mix(points, updates) -> torch.Tensor:
    """The type-II Anderson combination of the pairs (points[i], updates[i]), oldest first:
    ``U_m - dU gamma`` with gamma the least-squares fit of r_m by the residual differences
    (float64, same shape as the points)."""
    shape = updates[-1].shape
    resid = torch.stack([(u - d).reshape(-1) for d, u in zip(points, updates)], 1)
    upd = torch.stack([u.reshape(-1) for u in updates], 1)
    d_resid = resid[:, 1:] - resid[:, :-1]                  # (p, m)
    normal = d_resid.T @ d_resid
    scale = float(torch.diagonal(normal).mean())
    if not scale > 0:
        return updates[-1].clone()
    normal = normal + RIDGE * scale * torch.eye(normal.shape[0], dtype=normal.dtype,
                                                device=normal.device)
    gamma = torch.linalg.solve(normal, d_resid.T @ resid[:, -1])
    return (upd[:, -1] - (upd[:, 1:] - upd[:, :-1]) @ gamma).reshape(shape)


def unit_rows(atoms: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit norm (zero rows stay zero)."""
    norms = atoms.norm(dim=1, keepdim=True)
    return torch.where(norms > 1e-30, atoms / norms.clamp_min(1e-30), atoms)
