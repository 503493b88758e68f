"""Sparse coding: the lasso codes of rows of X against fixed atoms, in torch.

For atoms D (n_atoms, n_trs) and a row x, the code a (n_atoms,) minimises
``0.5 * ||x - a D||^2 + alpha * ||a||_1``. Everything is computed from the Gram matrix
G = D D^T (n_atoms, n_atoms), the cross products c = x D^T and ||x||^2, so no
(n_trs)-sized work is needed once c is known:

- :func:`lasso_fista`: FISTA with adaptive restart, stopped per row on the duality gap
  (:func:`duality_gap`); converged rows leave the working set.
- :func:`polish`: the exact solution on a row's support and signs (a small linear system).
- :func:`exact_codes`: polish, then FISTA where the support was wrong, to a gap of
  ``settings.GAP_TOL_FINAL * ||x||^2``.
- :class:`Solver`: coding of chunks against one set of atoms while learning (warm starts).
- :func:`final_codes`: the accurate codes (CSR) of every row of a :class:`~.rows.Rows`.
- :func:`tune_alpha`: the penalty that gives a wanted mean number of non-zero codes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from bids_app.atoms import settings
from bids_app.atoms.rows import Rows


def lasso_cost(codes, resid_sq, alpha) -> float:
    """Objective of coded rows: 0.5 * sum ||x - a D||^2 + alpha * sum ||a||_1 (float64)."""
    return float(0.5 * resid_sq.double().sum() + alpha * codes.abs().double().sum())


def lipschitz_constant(gram: torch.Tensor) -> float:
    """Largest eigenvalue of the Gram matrix (host LAPACK: identical on every device)."""
    # torch's LAPACK on the host, not NumPy's: NumPy's BLAS threads would compete with
    # torch's spinning OpenMP threads (4 ms instead of 0.1 ms for 64 x 64)
    values = torch.linalg.eigvalsh(gram.detach().cpu().double())
    return max(float(values[-1]) * (1 + 1e-6), 1e-12)   # margin for float32 rounding


def rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise dot products (n_rows,) of two (n_rows, n) tensors (one fused kernel)."""
    return torch.einsum("ij,ij->i", a, b)


def duality_gap(codes, gram, cross, x_sq, alpha):
    """Per-row lasso duality gap and squared residual from K-sized quantities only.

    primal = 0.5 ||x - a D||^2 + alpha ||a||_1; the dual point is the residual scaled into
    {||D r||_inf <= alpha}; D r = c - a G, so no (n_trs)-sized work is needed.
    """
    q = codes @ gram
    a_c = rowdot(codes, cross)
    resid_sq = (x_sq - 2 * a_c + rowdot(codes, q)).clamp_min(0)
    primal = 0.5 * resid_sq + alpha * codes.abs().sum(1)
    corr_max = (cross - q).abs().amax(1)
    scale = torch.where(corr_max > alpha, alpha / corr_max.clamp_min(1e-30),
                        torch.ones_like(corr_max))
    dual = scale * (x_sq - a_c) - 0.5 * scale ** 2 * resid_sq
    return primal - dual, resid_sq


def lasso_fista(gram, cross, x_sq, alpha, init, gap_tol, max_iter, lipschitz):
    """Lasso codes of a batch: argmin_a 0.5 a G a^T - a c + alpha ||a||_1 for every row.

    FISTA with adaptive (gradient) restart, per row; rows whose duality gap falls below
    ``gap_tol * ||x||^2`` are frozen and leave the working set.

    Parameters
    ----------
    gram : tensor (n_atoms, n_atoms), D D^T.
    cross : tensor (n_rows, n_atoms), X D^T.
    x_sq : tensor (n_rows,), squared norms of the rows of X.
    init : tensor (n_rows, n_atoms) or None, warm start.

    Returns
    -------
    codes : tensor (n_rows, n_atoms); resid_sq : tensor (n_rows,), ||x - a D||^2;
    n_iter : int, FISTA iterations done on the slowest row.
    """
    n_rows, n_atoms = cross.shape
    codes = torch.zeros_like(cross) if init is None else init.to(cross.dtype).clone()
    resid_sq = torch.empty_like(x_sq)
    step = 1.0 / lipschitz
    threshold = alpha * step
    active = torch.arange(n_rows, device=cross.device)
    a = codes
    y = a.clone()
    t = torch.ones(n_rows, dtype=cross.dtype, device=cross.device)
    c, xs = cross, x_sq
    tol = gap_tol * x_sq
    n_iter = 0
    while True:
        if n_iter % settings.CHECK_EVERY == 0 or n_iter >= max_iter:
            gap, rsq = duality_gap(a, gram, c, xs, alpha)
            done = gap <= tol
            if n_iter >= max_iter:
                done = torch.ones_like(done)
            if bool(done.any()):
                rows = active[done]
                codes[rows] = a[done]
                resid_sq[rows] = rsq[done]
                keep = ~done
                if not bool(keep.any()):
                    break
                active, a, y, t = active[keep], a[keep], y[keep], t[keep]
                c, xs, tol = c[keep], xs[keep], tol[keep]
        # few, fused (n_rows, n_atoms) operations: each is a parallel region, and on
        # busy cores every region can cost a scheduler time slice
        z = torch.addmm(torch.add(y, c, alpha=step), y, gram, alpha=-step)
        a_new = torch.nn.functional.softshrink(z, threshold)   # soft-thresholding
        diff = a_new - a
        restart = rowdot(y - a_new, diff) > 0
        t = torch.where(restart, torch.ones_like(t), t)
        t_new = 0.5 * (1 + torch.sqrt(1 + 4 * t * t))
        y = torch.addcmul(a_new, ((t - 1) / t_new)[:, None], diff)
        a, t = a_new, t_new
        n_iter += 1
    return codes, resid_sq, n_iter


def polish(codes, gram, cross, alpha):
    """Exact lasso solution of each row on the support (and signs) of ``codes``.

    On the right support S with signs s, the lasso optimum solves the linear system
    G_SS a_S = c_S - alpha s_S. Rows are grouped by support size and solved as batches of
    small systems; a singular system leaves that row's ``codes`` as they were. Whether the
    support was right is for the caller to check (the duality gap certifies it).

    Parameters
    ----------
    codes : tensor (n_rows, n_atoms), approximate lasso codes (e.g. from FISTA).
    gram : tensor (n_atoms, n_atoms), D D^T; cross : tensor (n_rows, n_atoms), X D^T.

    Returns
    -------
    tensor (n_rows, n_atoms), same dtype as ``gram``.
    """
    codes = codes.to(gram.dtype)
    support = codes != 0
    sizes = support.sum(1)
    out = codes.clone()
    for size in torch.unique(sizes).tolist():
        if size == 0:
            continue
        rows = torch.nonzero(sizes == size).squeeze(1)
        idx = torch.nonzero(support[rows])[:, 1].reshape(-1, size)  # row-major: per row
        sub = gram[idx[:, :, None], idx[:, None, :]]
        signs = torch.sign(codes[rows].gather(1, idx))
        rhs = cross[rows].gather(1, idx) - alpha * signs
        solution, info = torch.linalg.solve_ex(sub, rhs)
        solved = (info == 0) & torch.isfinite(solution).all(1)
        exact = torch.zeros((len(rows), codes.shape[1]), dtype=gram.dtype,
                            device=gram.device).scatter_(1, idx, solution)
        out[rows[solved]] = exact[solved]
    return out


def exact_codes(gram, cross, x_sq, alpha, init, lipschitz):
    """Lasso codes with a duality gap <= ``settings.GAP_TOL_FINAL * ||x||^2`` on every row.

    ``init`` (e.g. float32 FISTA codes) is polished on its support (:func:`polish`); the
    rows whose gap then stays above the tolerance (support not yet identified) run FISTA
    in ``gram``'s precision from ``init``, and are polished again when that helps.

    Parameters
    ----------
    gram : tensor (n_atoms, n_atoms); cross : tensor (n_rows, n_atoms); x_sq : (n_rows,),
        in the working precision (float64 for final codes).
    init : tensor (n_rows, n_atoms).
    """
    init = init.to(gram.dtype)
    codes = polish(init, gram, cross, alpha)
    tol = settings.GAP_TOL_FINAL * x_sq
    gap, _ = duality_gap(codes, gram, cross, x_sq, alpha)
    bad = torch.nonzero(gap > tol).squeeze(1)
    if len(bad):
        fista, _, _ = lasso_fista(gram, cross[bad], x_sq[bad], alpha, init[bad],
                                  settings.GAP_TOL_FINAL, settings.MAX_ITER_FINAL, lipschitz)
        again = polish(fista, gram, cross[bad], alpha)
        gap_fista, _ = duality_gap(fista, gram, cross[bad], x_sq[bad], alpha)
        gap_again, _ = duality_gap(again, gram, cross[bad], x_sq[bad], alpha)
        codes[bad] = torch.where((gap_again < gap_fista)[:, None], again, fista)
    return codes



@dataclass
class Solver:
    """Lasso coding of rows against one set of atoms (the atoms of one learning step)."""

    atoms: torch.Tensor          # (n_atoms, n_trs) float32, on device
    gram: torch.Tensor           # (n_atoms, n_atoms), atoms @ atoms.T
    lipschitz: float             # lipschitz_constant(gram)

    @classmethod
    def of(cls, atoms):
        """The solver of ``atoms`` (n_atoms, n_trs)."""
        gram = atoms @ atoms.T
        return cls(atoms, gram, lipschitz_constant(gram))

    def code(self, x, alpha, init=None, gap_tol=settings.GAP_TOL_FIT,
             max_iter=settings.MAX_ITER_FIT, dtype=torch.float32):
        """Lasso codes of the rows of ``x`` (n_rows, n_trs), to a gap of ``gap_tol * ||x||^2``.

        With a warm start ``init`` (n_rows, n_atoms), each row is first solved exactly on
        the support and signs of its ``init`` (:func:`polish`); only the rows that this
        leaves above the tolerance run FISTA (:func:`lasso_fista`) from ``init``.

        Returns
        -------
        codes : tensor (n_rows, n_atoms); resid_sq : tensor (n_rows,), ||x - a D||^2;
        n_iter : int, FISTA iterations of the slowest row (0 when no row ran FISTA).
        """
        atoms = self.atoms.to(dtype)
        x = x.to(dtype)
        gram = self.gram.to(dtype) if dtype == torch.float32 else atoms @ atoms.T
        cross = x @ atoms.T
        x_sq = rowdot(x, x)
        if init is None or not bool((init != 0).any()):
            return lasso_fista(gram, cross, x_sq, alpha, init, gap_tol, max_iter,
                               self.lipschitz)
        # Warm start: the support of most rows has not changed since their last coding,
        # so solving the lasso on it (float64 for the small systems) usually meets the
        # tolerance at once; FISTA runs from the warm start on the other rows only.
        init = init.to(dtype)
        codes = polish(init, gram.double(), cross.double(), alpha).to(dtype)
        gap, resid_sq = duality_gap(codes, gram, cross, x_sq, alpha)
        redo = torch.nonzero(gap > gap_tol * x_sq).squeeze(1)
        n_iter = 0
        if len(redo):
            redone, redo_sq, n_iter = lasso_fista(gram, cross[redo], x_sq[redo], alpha,
                                                  init[redo], gap_tol, max_iter,
                                                  self.lipschitz)
            codes[redo] = redone
            resid_sq[redo] = redo_sq
        return codes, resid_sq, n_iter


def final_codes(data: Rows, components: np.ndarray, alpha: float, store, device):
    """Accurate lasso codes of every row of ``data`` (duality gap <= 1e-11 ||x||^2).

    Each chunk starts from ``store`` (the codes of the last batch epoch, made with the
    same atoms) or, without it, from float32 FISTA codes; :func:`exact_codes` then
    solves the lasso exactly on each row's support in float64.

    Parameters
    ----------
    data : Rows, n rows of n_trs values.
    components : ndarray (n_atoms, n_trs), float32, the atoms.
    alpha : float, the penalty.
    store : tensor (n, n_atoms) or None, warm-start codes.
    device : torch.device

    Returns
    -------
    codes : scipy.sparse.csr_matrix (n, n_atoms), float32.
    objective : float, of these float32 codes with ``components``, in float64 from
        K-sized quantities (no second pass over X).
    """
    atoms = torch.from_numpy(components).to(device)
    solver = Solver.of(atoms)
    atoms64 = atoms.double()
    gram64 = atoms64 @ atoms64.T
    blocks, total = [], 0.0
    for start, stop in data.chunks():
        x32 = data.get(start, stop)
        if store is None:
            init, _, _ = solver.code(x32, alpha)
        else:
            init = store[start:stop].to(device)
        x64 = x32.double()
        del x32
        cross = x64 @ atoms64.T
        x_sq = rowdot(x64, x64)
        del x64
        codes = exact_codes(gram64, cross, x_sq, alpha, init, solver.lipschitz)
        codes32 = codes.float()
        rounded = codes32.double()
        resid_sq = (x_sq - 2 * rowdot(rounded, cross)
                    + rowdot(rounded, rounded @ gram64))
        total += float(0.5 * resid_sq.sum() + alpha * rounded.abs().sum())
        blocks.append(sp.csr_matrix(codes32.cpu().numpy()))
    codes = sp.vstack(blocks, format="csr") if blocks else \
        sp.csr_matrix((0, components.shape[0]), dtype=np.float32)
    return codes, total


def tune_alpha(solver: Solver, tune_x: torch.Tensor, start: float, target: float) -> float:
    """Bisection on log(alpha): mean non-zeros of the subsample's lasso codes = target.

    Parameters
    ----------
    solver : Solver of the current atoms.
    tune_x : tensor (n_rows, n_trs), float32, the seeded subsample of rows.
    start : float, the first alpha tried; target : float, the wanted mean non-zeros per row.
    """
    target = float(target)
    cross_max = float((tune_x @ solver.atoms.T).abs().amax())

    def mean_nnz(alpha, init):
        codes, _, _ = solver.code(tune_x, alpha, init=init, gap_tol=1e-5)
        return float((codes != 0).sum(1).double().mean()), codes

    lo, hi = cross_max * 1e-4, cross_max        # nnz(lo) large, nnz(hi) = 0
    alpha = min(max(start, lo), hi)
    codes = None
    for _ in range(40):
        nnz, codes = mean_nnz(alpha, codes)
        if abs(nnz - target) <= 0.02 * target or hi / lo < 1.001:
            break
        if nnz > target:
            lo = alpha
        else:
            hi = alpha
        alpha = math.sqrt(lo * hi)
    return float(alpha)
