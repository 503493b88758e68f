"""Sparse dictionary learning of AN time courses in torch (CPU or CUDA, same code).

X (n_neurons, n_trs) holds one artificial neuron (AN) per row. :class:`DictionaryLearner`
minimises (Mairal et al. 2010)::

    0.5 * ||X - A D||_F^2 + alpha * ||A||_1     subject to ||d_k||_2 <= 1,

with D (n_atoms, n_trs) the atoms and A (n_neurons, n_atoms) the sparse codes: exactly the
objective and penalty scale of scikit-learn's ``DictionaryLearning`` (``_dict_learning``) and
of ``sparse_encode(algorithm="lasso_cd", alpha=alpha)``.

Algorithm
---------
1. *Initialisation*: greedy k-means++ seeding on a seeded subsample of (up to 20,000) rows:
   each new atom is, of a few rows drawn with probability proportional to their energy
   left after projection on the nearest atom so far, the one leaving the least energy.
   Atoms start as real, diverse AN time courses. When X has at least twice as many rows
   as that subsample, steps 2-3 first run on the subsample alone (cheap epochs while the
   atoms are far off), then step 3 continues on all rows from the atoms found.
2. *Online epochs* (``online_epochs``, Mairal's algorithm 1 with mini-batches and the
   forgetting factor of scikit-learn's ``MiniBatchDictionaryLearning``): mini-batches of
   ``batch_size`` rows are coded, the sufficient statistics A = sum(a a^T) and B = sum(a x^T)
   are updated, then one pass of block coordinate descent (BCD) updates the atoms.
3. *Batch epochs* (until the relative objective change is below ``tol``): one streaming pass
   over all rows codes them against the current atoms (warm-started) and accumulates the
   exact statistics, whose objective is logged; BCD then minimises over the atoms exactly.
   Each epoch therefore cannot increase the objective (up to the coding tolerance),
   except right after a restart (below).
   Atoms that no AN uses are re-initialised. So are, in at most three epochs per phase,
   the marks of the usual local minima: an atom nearly duplicating another (|cos| > 0.9)
   or barely used (code energy < 5 % of the median atom's) while some pattern stays
   unexplained restarts from the leading principal directions of the coding residuals of
   a seeded subset of 16,384 rows; and two atoms that code nearly the same ANs (> 60 % of
   the less used one's ANs use both: a rotated pair, such as s1 + s2 and s1 - s2 for two
   patterns) are split along the two directions those ANs follow in their plane.
   Convergence is only accepted without such atoms; if a restart does not pay off, the
   atoms of the best epoch are kept.
4. *Final codes*: exact lasso solutions to a duality gap of ``1e-11 * ||x||^2`` per row in
   float64: scikit-learn's ``sparse_encode(algorithm="lasso_cd")`` solution within 1e-4.

Sparse coding is FISTA with adaptive restart on the Gram matrix G = D D^T (n_atoms^2) and
C = X D^T, stopped per row on the lasso duality gap; converged rows leave the working set.
With a warm start (every batch epoch, and the final codes), each row's lasso is first
solved exactly on the support and signs of its previous codes, a small linear system
G_SS a_S = c_S - alpha sign(a_S) per row, solved in batches in float64; the duality gap
certifies the result, and only the rows whose support changed run FISTA.
Rows are processed in chunks, so X may be a memory-mapped ``.npy`` file
(``np.load(path, mmap_mode="r")``) larger than memory: with ``mem_gb`` set, no float copy
of X is kept beyond that budget, and pages of a memory map are released after each chunk.

All linear algebra during a fit goes through torch (none through NumPy's BLAS, whose
threads would compete with torch's spinning OpenMP threads on the same cores).
"""

from __future__ import annotations

import contextlib
import logging
import math
import mmap
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from bids_app.errors import LlmfbnError

LOGGER = logging.getLogger("llmfbn")

#: Identifies the algorithm and its fixed settings (for cache keys): change it with them.
ALGORITHM_ID = "torch-fista-bcd-v3"

_GAP_TOL_FIT = 1e-6      # per-row duality gap / ||x||^2 in batch epochs (float32)
_GAP_TOL_ONLINE = 1e-4   # ... in online epochs (the atoms move after every mini-batch)
_MAX_ITER_ONLINE = 100
_GAP_TOL_FINAL = 1e-11   # final codes and transform (float64)
_MAX_ITER_FIT = 300      # FISTA iterations per chunk while learning
_MAX_ITER_FINAL = 20000
_CHECK_EVERY = 5         # FISTA iterations between duality-gap checks
_BCD_PASSES = 20         # max passes of block coordinate descent per batch epoch
_INIT_SAMPLE = 20000     # rows drawn for the initialisation (and the warm-up epochs when
                         # X has at least twice as many)
_TUNE_SAMPLE = 4000      # rows used to pick alpha from target_sparsity
_DEFAULT_CHUNK = 32768    # rows per chunk (fewer, larger operations)
_MAX_RETUNES = 5         # re-tunings of alpha (target_sparsity) before it is kept fixed
_SMALL_PROBLEM = 2 ** 20  # n_rows * n_atoms below which one CPU thread is used
_DUPLICATE_CORR = 0.9    # |cos| above which the weaker of two atoms is re-initialised
_MAX_RESTART_ROUNDS = 3    # batch epochs (per phase) that may restart wasted atoms
_RARE_ENERGY = 0.05      # code energy, relative to the median atom's, of a rarely used atom
_N_PROBE = 16384         # rows whose coding residuals re-initialise atoms
_COACTIVE_FRACTION = 0.6  # of a pair's ANs coded by both: a rotated pair
_MIN_PAIR_ROWS = 10      # ANs the less used atom of a rotated pair needs


@contextlib.contextmanager
def _deterministic_algorithms(device: torch.device):
    """On CUDA, turn on torch's deterministic algorithms for the block, then restore them.

    The CPU kernels used here (matmul, reductions, indexing) are deterministic for a given
    number of threads already, and switching the flag costs an import of ~2 s.
    """
    if device.type != "cuda":
        yield
        return
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


@contextlib.contextmanager
def _torch_threads(n_threads):
    """Use ``n_threads`` torch CPU threads for the block (None: leave as is), then restore."""
    previous = torch.get_num_threads()
    if n_threads is None or n_threads == previous:
        yield
        return
    torch.set_num_threads(int(n_threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _resolve_device(device) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise LlmfbnError(f"unknown device {device!r}", expected="'cpu', 'cuda' or 'auto'",
                          found=str(device), todo="pass --device cpu|cuda|auto") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise LlmfbnError("CUDA was asked for but is not available", found=str(device),
                          todo="use --device cpu (or auto), or run on a machine with a GPU")
    if resolved.type not in ("cpu", "cuda"):
        raise LlmfbnError(f"unsupported device {device!r}", expected="'cpu' or 'cuda'",
                          found=str(device))
    return resolved


def _check_matrix(X, name="X"):
    """The 2-D numeric array behind ``X`` (memory maps are kept as they are)."""
    if not isinstance(X, np.ndarray):
        if sp.issparse(X):
            raise LlmfbnError(f"{name} is a sparse matrix", expected="a dense array "
                              "(n_neurons, n_trs)", todo="pass X.toarray() or a .npy memory map")
        X = np.asarray(X)
    if X.ndim != 2:
        raise LlmfbnError(f"{name} must be 2-D (n_neurons, n_trs)", found=f"shape {X.shape}")
    if not (np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer)):
        raise LlmfbnError(f"{name} must hold real numbers", found=f"dtype {X.dtype}")
    return X


def _mmap_of(array):
    """The ``mmap.mmap`` behind a NumPy array (a memmap or a view of one), else None."""
    base = array
    while base is not None:
        if isinstance(base, mmap.mmap):
            return base
        base = getattr(base, "base", None)
    return None


class _Rows:
    """Chunked float reader of the rows ``rows`` of X (all rows when ``rows`` is None).

    When ``resident`` a float32 copy (or a view, if X already is an in-memory C-contiguous
    float32 array) lives on ``device``; otherwise every chunk is read from X and converted,
    and the pages of a memory-mapped X are released after each chunk.
    """

    def __init__(self, X, rows, device, resident: bool, chunk_rows: int):
        self.X = X
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self.n = X.shape[0] if rows is None else len(self.rows)
        self.n_trs = X.shape[1]
        self.device = device
        self.chunk_rows = max(1, int(chunk_rows))
        self._mm = _mmap_of(X)
        self.data = None
        in_place = (rows is None and self._mm is None and X.dtype == np.float32
                    and X.flags.c_contiguous and device.type == "cpu")
        if resident and in_place:
            for start, stop in self.chunks():
                self._read(start, stop)         # checks that the values are finite
            self.data = torch.from_numpy(X) if X.flags.writeable else \
                torch.from_numpy(X.copy())
        elif resident:
            self.data = torch.empty((self.n, self.n_trs), dtype=torch.float32, device=device)
            for start, stop in self.chunks():
                self.data[start:stop] = self._read(start, stop)

    def chunks(self, size=None):
        size = size or self.chunk_rows
        return [(s, min(s + size, self.n)) for s in range(0, self.n, size)]

    def _release(self, block):
        """Drop the pages of ``block`` (a view of a memory map) from this process's RSS."""
        if self._mm is None or not hasattr(self._mm, "madvise"):
            return
        try:
            view = np.frombuffer(self._mm, dtype=np.uint8)
            base = view.ctypes.data
            lo = block.ctypes.data - base
            hi = lo + block.nbytes
            del view
            page = mmap.PAGESIZE
            lo = (lo // page) * page
            hi = min(-(-hi // page) * page, len(self._mm))
            if hi > lo >= 0:
                self._mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
        except (ValueError, OSError, BufferError, TypeError):
            pass  # best effort: the kernel reclaims file pages under pressure anyway

    def _read(self, start, stop) -> torch.Tensor:
        if self.rows is None:
            block = self.X[start:stop]
            array = np.array(block, dtype=np.float32, order="C", copy=True) \
                if (self._mm is not None or block.dtype != np.float32
                    or not block.flags.c_contiguous or not block.flags.writeable) else block
            if self._mm is not None:
                self._release(block)
        else:
            idx = self.rows[start:stop]
            array = np.ascontiguousarray(self.X[idx], dtype=np.float32)
            if self._mm is not None and len(idx):
                self._release(self.X[idx.min():idx.max() + 1])
        tensor = torch.from_numpy(array).to(self.device)
        if not torch.isfinite(tensor).all():
            raise LlmfbnError("X holds NaN or infinite values", expected="finite responses",
                              todo="check the AN responses (silent ANs must be zero, not NaN)")
        return tensor

    def get(self, start, stop) -> torch.Tensor:
        if self.data is not None:
            return self.data[start:stop]
        return self._read(start, stop)

    def take(self, index) -> torch.Tensor:
        """Rows at positions ``index`` (sorted int array) of this reader, float32."""
        index = np.asarray(index, dtype=np.int64)
        if self.data is not None:
            return self.data[torch.as_tensor(index, device=self.device)]
        source = index if self.rows is None else self.rows[index]
        out = np.empty((len(source), self.n_trs), dtype=np.float32)
        for start in range(0, len(source), self.chunk_rows):    # no float64 temporaries
            part = source[start:start + self.chunk_rows]
            out[start:start + len(part)] = self.X[part]
            if self._mm is not None:
                self._release(self.X[part.min():part.max() + 1])
        if not np.isfinite(out).all():
            raise LlmfbnError("X holds NaN or infinite values", expected="finite responses",
                              todo="check the AN responses (silent ANs must be zero, not NaN)")
        return torch.from_numpy(out).to(self.device)


def _lipschitz(gram: torch.Tensor) -> float:
    """Largest eigenvalue of the Gram matrix (host LAPACK: identical on every device)."""
    # torch's LAPACK on the host, not NumPy's: NumPy's BLAS threads would compete with
    # torch's spinning OpenMP threads (4 ms instead of 0.1 ms for 64 x 64)
    values = torch.linalg.eigvalsh(gram.detach().cpu().double())
    return max(float(values[-1]) * (1 + 1e-6), 1e-12)   # margin for float32 rounding


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise dot products (n_rows,) of two (n_rows, n) tensors (one fused kernel)."""
    return torch.einsum("ij,ij->i", a, b)


def _gap(codes, gram, cross, x_sq, alpha):
    """Per-row lasso duality gap and squared residual from K-sized quantities only.

    primal = 0.5 ||x - a D||^2 + alpha ||a||_1; the dual point is the residual scaled into
    {||D r||_inf <= alpha}; D r = c - a G, so no (n_trs)-sized work is needed.
    """
    q = codes @ gram
    a_c = _rowdot(codes, cross)
    resid_sq = (x_sq - 2 * a_c + _rowdot(codes, q)).clamp_min(0)
    primal = 0.5 * resid_sq + alpha * codes.abs().sum(1)
    corr_max = (cross - q).abs().amax(1)
    scale = torch.where(corr_max > alpha, alpha / corr_max.clamp_min(1e-30),
                        torch.ones_like(corr_max))
    dual = scale * (x_sq - a_c) - 0.5 * scale ** 2 * resid_sq
    return primal - dual, resid_sq


def _lasso_gram(gram, cross, x_sq, alpha, init, gap_tol, max_iter, lipschitz):
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
        if n_iter % _CHECK_EVERY == 0 or n_iter >= max_iter:
            gap, rsq = _gap(a, gram, c, xs, alpha)
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
        restart = _rowdot(y - a_new, diff) > 0
        t = torch.where(restart, torch.ones_like(t), t)
        t_new = 0.5 * (1 + torch.sqrt(1 + 4 * t * t))
        y = torch.addcmul(a_new, ((t - 1) / t_new)[:, None], diff)
        a, t = a_new, t_new
        n_iter += 1
    return codes, resid_sq, n_iter


def _polish(codes, gram, cross, alpha):
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


def _exact_codes(gram, cross, x_sq, alpha, init, lipschitz):
    """Lasso codes with a duality gap <= ``_GAP_TOL_FINAL * ||x||^2`` on every row.

    ``init`` (e.g. float32 FISTA codes) is polished on its support (:func:`_polish`); the
    rows whose gap then stays above the tolerance (support not yet identified) run FISTA
    in ``gram``'s precision from ``init``, and are polished again when that helps.

    Parameters
    ----------
    gram : tensor (n_atoms, n_atoms); cross : tensor (n_rows, n_atoms); x_sq : (n_rows,),
        in the working precision (float64 for final codes).
    init : tensor (n_rows, n_atoms).
    """
    init = init.to(gram.dtype)
    codes = _polish(init, gram, cross, alpha)
    tol = _GAP_TOL_FINAL * x_sq
    gap, _ = _gap(codes, gram, cross, x_sq, alpha)
    bad = torch.nonzero(gap > tol).squeeze(1)
    if len(bad):
        fista, _, _ = _lasso_gram(gram, cross[bad], x_sq[bad], alpha, init[bad],
                                  _GAP_TOL_FINAL, _MAX_ITER_FINAL, lipschitz)
        again = _polish(fista, gram, cross[bad], alpha)
        gap_fista, _ = _gap(fista, gram, cross[bad], x_sq[bad], alpha)
        gap_again, _ = _gap(again, gram, cross[bad], x_sq[bad], alpha)
        codes[bad] = torch.where((gap_again < gap_fista)[:, None], again, fista)
    return codes


def _bcd(atoms64, stat_a, stat_b, passes, tol=1e-7):
    """Block coordinate descent on the atoms (Mairal 2010, algorithm 2), in place.

    Minimises 0.5 tr(D^T A D) - tr(D^T B) over ||d_k|| <= 1, with A = sum a^T a
    (n_atoms, n_atoms) and B = sum a^T x (n_atoms, n_trs). Returns the unused atoms.
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


def _top_directions(resid, n_directions, n_iter=8):
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


def _coactive_pairs(coactive, skip=()):
    """Disjoint atom pairs (i, j) that code nearly the same ANs: of the ANs using the less
    used of the two, more than ``_COACTIVE_FRACTION`` use the other too.

    Two atoms that split two patterns between them (a rotated pair, such as (s1 + s2) and
    (s1 - s2) for patterns s1, s2) show this way: every AN with either pattern needs both.
    ``coactive`` (n_atoms, n_atoms): counts of ANs with both codes non-zero.
    """
    counts = np.asarray(coactive, dtype=np.float64)
    used = np.diag(counts)
    fraction = counts / np.maximum(np.minimum(used[:, None], used[None, :]), 1.0)
    rows, cols = np.nonzero(np.triu(fraction, 1) > _COACTIVE_FRACTION)
    taken = set(int(u) for u in skip)
    pairs = []
    for k in np.argsort(-fraction[rows, cols], kind="stable"):
        i, j = int(rows[k]), int(cols[k])
        if i not in taken and j not in taken and min(used[i], used[j]) >= _MIN_PAIR_ROWS:
            pairs.append((i, j))
            taken.update((i, j))
    return pairs


def _split_pair(atom_i, atom_j, codes_ij):
    """Two unit atoms along the two directions that the ANs using both atoms follow.

    Every such AN's component in the plane of the two atoms, ``a_i d_i + a_j d_j``, is
    taken as an angle in [0, pi) (sign-free), weighted by its squared length; the two
    highest modes of the smoothed angle histogram, at least 20 degrees apart, are the
    new atoms. A rotated pair is undone; two atoms that are already the right ones
    come back almost unchanged.

    Parameters
    ----------
    atom_i, atom_j : tensors (n_trs,), float64; codes_ij : tensor (n_rows, 2).
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


def _wasted_atoms(atoms64, stat_a):
    """Atoms that waste their slot: near-duplicates and rarely used atoms.

    Of each pair with |cos| > ``_DUPLICATE_CORR`` the one with less code energy (diagonal
    of ``stat_a``, the sum of its squared codes) is returned, and every atom whose code
    energy is below ``_RARE_ENERGY`` times the median of the used atoms'. Both are the
    marks of the usual local minima of dictionary learning: two atoms sharing a pattern,
    or an atom fitting a few rows' noise, while some pattern stays unexplained.
    Unused atoms (zero energy) are left to the caller.
    """
    energy = torch.diagonal(stat_a).cpu().numpy()
    used = energy > 1e-12 * max(float(energy.max()), 1e-300)
    norms = atoms64.norm(dim=1).clamp_min(1e-30)
    cos = ((atoms64 @ atoms64.T) / norms[:, None] / norms[None, :]).abs().cpu().numpy()
    chosen = set()
    if used.any():
        chosen |= set(np.flatnonzero(used & (energy < _RARE_ENERGY
                                             * np.median(energy[used]))).tolist())
    rows, cols = np.nonzero(np.triu(cos, 1) > _DUPLICATE_CORR)
    for i in np.argsort(-cos[rows, cols], kind="stable"):
        a, b = int(rows[i]), int(cols[i])
        if a in chosen or b in chosen or not (used[a] and used[b]):
            continue
        chosen.add(a if energy[a] < energy[b] else b)
    return np.array(sorted(chosen), dtype=np.int64)


@dataclass
class _Solver:
    atoms: torch.Tensor          # (n_atoms, n_trs) float32, on device
    gram: torch.Tensor
    lipschitz: float

    @classmethod
    def of(cls, atoms):
        gram = atoms @ atoms.T
        return cls(atoms, gram, _lipschitz(gram))

    def code(self, x, alpha, init=None, gap_tol=_GAP_TOL_FIT, max_iter=_MAX_ITER_FIT,
             dtype=torch.float32):
        atoms = self.atoms.to(dtype)
        x = x.to(dtype)
        gram = self.gram.to(dtype) if dtype == torch.float32 else atoms @ atoms.T
        cross = x @ atoms.T
        x_sq = _rowdot(x, x)
        if init is None or not bool((init != 0).any()):
            return _lasso_gram(gram, cross, x_sq, alpha, init, gap_tol, max_iter,
                               self.lipschitz)
        # Warm start: the support of most rows has not changed since their last coding,
        # so solving the lasso on it (float64 for the small systems) usually meets the
        # tolerance at once; FISTA runs from the warm start on the other rows only.
        init = init.to(dtype)
        codes = _polish(init, gram.double(), cross.double(), alpha).to(dtype)
        gap, resid_sq = _gap(codes, gram, cross, x_sq, alpha)
        redo = torch.nonzero(gap > gap_tol * x_sq).squeeze(1)
        n_iter = 0
        if len(redo):
            redone, redo_sq, n_iter = _lasso_gram(gram, cross[redo], x_sq[redo], alpha,
                                                  init[redo], gap_tol, max_iter,
                                                  self.lipschitz)
            codes[redo] = redone
            resid_sq[redo] = redo_sq
        return codes, resid_sq, n_iter


class DictionaryLearner:
    """Sparse dictionary learning with torch, scikit-learn style.

    Minimises ``0.5 * ||X - A D||_F^2 + alpha * ||A||_1`` with ``||d_k||_2 <= 1`` over the
    atoms D (n_atoms, n_trs) and codes A (n_neurons, n_atoms), the objective and ``alpha``
    scale of scikit-learn's ``DictionaryLearning``. See the module docstring for the
    algorithm. Deterministic: with the same ``random_state``, input and number of torch
    threads, two CPU fits give bit-identical results.

    Parameters
    ----------
    n_atoms : int, default=64
        Number of atoms K.
    alpha : float, default=0.1
        Sparsity penalty lambda. X is used as given; for unit-norm rows (the pipeline's
        input) it is on a correlation scale: an atom enters an AN's code only when the AN's
        residual correlates with it by more than ``alpha``. Ignored when ``target_sparsity``
        is given.
    target_sparsity : float or None, default=None
        Wanted mean number of non-zero codes per (non-zero) row. ``alpha`` is then chosen by
        bisection on log(alpha) so that the lasso codes of a seeded subsample of rows
        against the current atoms have this mean; it is re-tuned after the online epochs
        and the first batch epochs until it moves by less than 2 %, then kept fixed
        (tuning resumes after atoms are re-initialised).
    device : {"cpu", "cuda", "auto"} or torch.device, default="cpu"
    random_state : int, default=0
        Seed of the initialisation subsample and of the mini-batch order.
    batch_size : int, default=1024
        Rows per mini-batch in the online epochs.
    online_epochs : int, default=1
        Passes of Mairal's online algorithm before the batch epochs (0 for none).
    max_epochs : int, default=100
        Maximum number of epochs (online + batch).
    tol : float, default=1e-4
        Stop when the relative change of the objective between two batch epochs (same
        alpha) is below ``tol``.
    mem_gb : float or None, default=None
        Memory budget in GiB for the copies this learner makes (float32 copy of X, codes,
        working chunks). ``None``: X is copied once as float32 (if it is not already) and
        kept. When the copy does not fit, X is streamed chunk by chunk on every epoch.
    n_threads : int or None, default=None
        Torch CPU threads during ``fit``/``transform`` (restored afterwards). ``None``: one
        thread when n_neurons * n_atoms < 2**20, else torch's current setting. Results
        are bit-identical for the same number of threads.

    Attributes
    ----------
    components_ : ndarray (n_atoms, n_trs), float32
        Unit-norm atoms, most used first (by sum of absolute codes), signed so that their
        summed code is >= 0. Unused atoms (if any) are zero rows.
    codes_ : scipy.sparse.csr_matrix (n_neurons, n_atoms), float32
        Lasso codes of the training rows with ``components_`` (duality gap <= 1e-11 ||x||^2).
    objective_ : float
        ``0.5 * ||X - codes_ @ components_||_F^2 + alpha_ * ||codes_||_1`` (float64).
    alpha_ : float
        The penalty used.
    history_ : list of dict
        One entry per epoch: ``epoch``, ``phase`` ("online", "batch", or "subsample
        online"/"subsample batch" for the warm-up on a subsample), ``n_rows`` (rows the
        epoch ran on), ``objective`` (for online epochs the sum of the mini-batch
        objectives as they were coded; for batch epochs the exact objective of the epoch's
        codes and the atoms they were coded with, which cannot increase while ``alpha`` is
        fixed, except in the epoch after atoms were restarted), ``alpha``, ``mean_nonzero`` (per row), ``coding_iter`` (max FISTA
        iterations over the rows that ran FISTA; 0 when every row was solved exactly on
        the support of its warm start).
    n_iter_ : int
        Epochs run.
    converged_ : bool
        Whether ``tol`` was reached before ``max_epochs``.
    """

    def __init__(self, n_atoms: int = 64, alpha: float = 0.1, target_sparsity=None,
                 device="cpu", random_state: int = 0, batch_size: int = 1024,
                 online_epochs: int = 1, max_epochs: int = 100, tol: float = 1e-4,
                 mem_gb=None, n_threads=None):
        self.n_atoms = n_atoms
        self.alpha = alpha
        self.target_sparsity = target_sparsity
        self.device = device
        self.random_state = random_state
        self.batch_size = batch_size
        self.online_epochs = online_epochs
        self.max_epochs = max_epochs
        self.tol = tol
        self.mem_gb = mem_gb
        self.n_threads = n_threads

    # ------------------------------------------------------------------ checks and memory
    def _check_params(self, n_rows, n_trs):
        if not isinstance(self.n_atoms, (int, np.integer)) or self.n_atoms < 1:
            raise LlmfbnError("n_atoms must be a positive integer", found=repr(self.n_atoms))
        if n_rows < self.n_atoms:
            raise LlmfbnError(f"only {n_rows} artificial neurons for {self.n_atoms} atoms",
                              expected="at least as many neurons (rows) as atoms",
                              todo="lower --n-atoms or add neurons")
        if n_trs < 2:
            raise LlmfbnError("the responses have fewer than 2 TRs", found=f"{n_trs} TRs")
        if self.target_sparsity is None:
            if not (np.isfinite(self.alpha) and self.alpha > 0):
                raise LlmfbnError("alpha must be a positive number", found=repr(self.alpha))
        elif not (0 < self.target_sparsity < self.n_atoms):
            raise LlmfbnError("target_sparsity must lie between 0 and n_atoms",
                              found=repr(self.target_sparsity),
                              expected=f"a mean number of non-zero codes in (0, {self.n_atoms})")
        for name in ("batch_size", "max_epochs"):
            if int(getattr(self, name)) < 1:
                raise LlmfbnError(f"{name} must be >= 1", found=repr(getattr(self, name)))
        if self.online_epochs < 0 or self.tol < 0:
            raise LlmfbnError("online_epochs and tol must be >= 0")
        if self.mem_gb is not None and not self.mem_gb > 0:
            raise LlmfbnError("mem_gb must be positive", found=repr(self.mem_gb))

    def _plan(self, X, n_rows, rows):
        """(resident, chunk_rows): whether a float32 copy of X is kept, and the chunk size."""
        n_trs, k = X.shape[1], self.n_atoms
        per_row_work = n_trs * (4 + 8 + X.dtype.itemsize) + 16 * k * 8
        codes_bytes = n_rows * k * 4 * 2            # warm-start store + final codes
        n_sample = min(n_rows, max(_INIT_SAMPLE, 20 * k))   # initialisation / warm-up rows
        codes_bytes += n_sample * (2 * n_trs + k) * 4
        view_ok = (rows is None and _mmap_of(X) is None and X.dtype == np.float32
                   and X.flags.c_contiguous and _resolve_device(self.device).type == "cpu")
        copy_bytes = 0 if view_ok else n_rows * n_trs * 4
        if self.mem_gb is None:
            return True, _DEFAULT_CHUNK
        budget = float(self.mem_gb) * 2 ** 30
        resident = copy_bytes + codes_bytes + _DEFAULT_CHUNK * per_row_work <= 0.8 * budget
        left = 0.8 * budget - codes_bytes - (copy_bytes if resident else 0)
        chunk = int(left // per_row_work)
        if chunk < min(256, n_rows):
            need = (codes_bytes + 256 * per_row_work) / 0.8 / 2 ** 30
            raise LlmfbnError(f"mem_gb={self.mem_gb} is too small for {n_rows} neurons x "
                              f"{n_trs} TRs with {k} atoms", expected=f"at least {need:.3g} GiB",
                              todo="raise --mem-gb")
        return resident, min(chunk, 65536 if resident else 32768)

    def _threads(self, device, n_rows):
        """Torch CPU threads: ``n_threads``, or 1 for small problems, else unchanged.

        On small problems the per-operation work is too small to share, and when the
        cores are busy with other processes, OpenMP threads waiting for each other made
        such fits up to 50x slower than one thread.
        """
        if device.type != "cpu":
            return None
        if self.n_threads is not None:
            return int(self.n_threads)
        return 1 if n_rows * self.n_atoms < _SMALL_PROBLEM else None

    # ------------------------------------------------------------------ initialisation
    def _init_atoms(self, data: _Rows, rng):
        """k-means++-like seeding (on |cosine|) from a subsample of the non-zero rows."""
        n_sample = min(data.n, max(_INIT_SAMPLE, 20 * self.n_atoms))
        index = np.sort(rng.choice(data.n, size=n_sample, replace=False))
        sample = data.take(index).cpu().numpy()                 # float32
        norms = np.linalg.norm(sample, axis=1)
        nonzero = norms > 1e-6 * max(1.0, float(norms.max(initial=0.0)))
        if int(nonzero.sum()) < self.n_atoms:
            raise LlmfbnError("too few non-zero rows (responding neurons) to learn from",
                              found=f"{int(nonzero.sum())} of {n_sample} sampled rows",
                              todo="check the responses or lower --n-atoms")
        # torch for the products (NumPy's BLAS threads would compete with torch's)
        unit = torch.from_numpy(sample[nonzero] / norms[nonzero, None])
        atoms = torch.zeros((self.n_atoms, unit.shape[1]), dtype=torch.float32)
        first = int(rng.integers(len(unit)))
        atoms[0] = unit[first]
        best = (unit @ atoms[0]).abs()
        n_candidates = 2 + int(np.log(self.n_atoms))
        for k in range(1, self.n_atoms):
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
        atoms = atoms.numpy()
        del unit
        tune_rows = sample[:_TUNE_SAMPLE] if len(sample) <= _TUNE_SAMPLE else \
            sample[np.sort(rng.choice(len(sample), size=_TUNE_SAMPLE, replace=False))]
        return atoms, tune_rows, sample

    # ------------------------------------------------------------------ alpha from sparsity
    def _tune_alpha(self, solver: _Solver, tune_x: torch.Tensor, start: float) -> float:
        """Bisection on log(alpha): mean non-zeros of the subsample's lasso codes = target."""
        target = float(self.target_sparsity)
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

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y=None, rows=None):
        """Learn the atoms and codes from X.

        Parameters
        ----------
        X : array (n_neurons, n_trs)
            One AN time course per row (the pipeline passes unit-norm rows). A NumPy array
            or a memory map (``np.load(path, mmap_mode="r")``); it is read chunk by chunk.
        y : ignored
        rows : array of int or None
            Fit on these rows of X only (read in place, no copy of X beyond ``mem_gb``).

        Returns
        -------
        self
        """
        X = _check_matrix(X)
        if rows is not None:
            rows = np.sort(np.asarray(rows, dtype=np.int64))
            if rows.size and (rows[0] < 0 or rows[-1] >= X.shape[0]):
                raise LlmfbnError("rows index outside X", found=f"{rows[0]}..{rows[-1]}")
        n_rows = X.shape[0] if rows is None else len(rows)
        self._check_params(n_rows, X.shape[1])
        device = _resolve_device(self.device)
        resident, chunk_rows = self._plan(X, n_rows, rows)
        with _deterministic_algorithms(device), \
                _torch_threads(self._threads(device, n_rows)):
            self._fit(X, rows, device, resident, chunk_rows)
        return self

    def _fit(self, X, rows, device, resident, chunk_rows):
        rng = np.random.default_rng(self.random_state)
        data = _Rows(X, rows, device, resident, chunk_rows)
        n, n_trs, k = data.n, data.n_trs, self.n_atoms
        atoms_np, tune_np, sample = self._init_atoms(data, rng)
        atoms = torch.from_numpy(atoms_np.astype(np.float32)).to(device)
        tune_x = torch.from_numpy(tune_np.astype(np.float32)).to(device)
        tuning = self.target_sparsity is not None
        alpha = float(self.alpha) if not tuning else 0.1
        if tuning:
            alpha = self._tune_alpha(_Solver.of(atoms), tune_x, alpha)
        self.history_ = []
        self._retunes = 0 if tuning else _MAX_RETUNES
        LOGGER.info("Dictionary learning: %d rows x %d TRs -> %d atoms on %s, alpha=%.4g%s",
                    n, n_trs, k, device, alpha, "" if resident else
                    f" (streaming X in chunks of {chunk_rows} rows)")
        online_epochs = self.online_epochs
        if n >= 2 * len(sample):
            # Most epochs are spent while the atoms are still far off: run them on a
            # subsample of rows, then refine on all rows from there.
            # (the seeded rows drawn for the initialisation)
            sub = _Rows(sample, None, device, True, _DEFAULT_CHUNK)
            atoms, alpha, _ = self._learn(sub, atoms, alpha, tune_x, rng, online_epochs,
                                          "subsample ")
            online_epochs = 0
            del sub
        del sample
        atoms, alpha, store = self._learn(data, atoms, alpha, tune_x, rng, online_epochs, "")
        self.n_iter_ = len(self.history_)
        self.alpha_ = float(alpha)
        del self._retunes
        self._finish(data, atoms, store, device)

    def _learn(self, data, atoms, alpha, tune_x, rng, online_epochs, phase):
        """Online then batch epochs on ``data`` from ``atoms``; appends to ``history_``."""
        device = atoms.device
        n, n_trs, k = data.n, data.n_trs, self.n_atoms
        store = torch.zeros((n, k), dtype=torch.float32,
                            device=device if data.data is not None else "cpu")
        tuning = self.target_sparsity is not None

        # -- online epochs (Mairal 2010, algorithm 1 with mini-batches)
        stat_a = torch.zeros((k, k), dtype=torch.float64, device=device)
        stat_b = torch.zeros((k, n_trs), dtype=torch.float64, device=device)
        step = 0
        epoch = 0
        bsize = int(min(self.batch_size, n))
        for _ in range(min(online_epochs, self.max_epochs)):
            total, nnz, max_it = 0.0, 0, 0
            chunk_list = data.chunks()
            for ci in rng.permutation(len(chunk_list)):
                start, stop = chunk_list[ci]
                x_chunk = data.get(start, stop)
                order = rng.permutation(stop - start)
                for b0 in range(0, stop - start, bsize):
                    local = np.sort(order[b0:b0 + bsize])
                    local_t = torch.as_tensor(local, device=device)
                    xb = x_chunk[local_t]
                    solver = _Solver.of(atoms)
                    init = store[torch.as_tensor(local + start, device=store.device)]
                    codes, resid_sq, it = solver.code(xb, alpha, init=init.to(device),
                                                      gap_tol=_GAP_TOL_ONLINE,
                                                      max_iter=_MAX_ITER_ONLINE)
                    store[torch.as_tensor(local + start, device=store.device)] = \
                        codes.to(store.device)
                    total += float(0.5 * resid_sq.double().sum()
                                   + alpha * codes.abs().double().sum())
                    nnz += int((codes != 0).sum())
                    max_it = max(max_it, it)
                    m = xb.shape[0]
                    theta = (step + 1) * m if step < m - 1 else m * m + step + 1 - m
                    beta = (theta + 1 - m) / (theta + 1)
                    codes64 = codes.double()
                    stat_a.mul_(beta).add_(codes64.T @ codes64 / m)
                    stat_b.mul_(beta).add_((codes.T @ xb).double() / m)
                    atoms64 = atoms.double()
                    unused = _bcd(atoms64, stat_a, stat_b, passes=1)
                    if len(unused) and step > 0:
                        worst = torch.argsort(resid_sq, descending=True, stable=True)
                        for j, u in enumerate(unused[:m]):
                            row = xb[worst[j]].double()
                            atoms64[u] = row / row.norm().clamp_min(1e-30)
                    atoms = atoms64.float()
                    step += 1
            epoch += 1
            self._log_epoch(phase + "online", total, alpha, nnz / n, max_it, n)
        if tuning and online_epochs and self._retunes < _MAX_RETUNES:
            alpha = self._tune_alpha(_Solver.of(atoms), tune_x, alpha)

        # -- batch epochs: exact coding pass + exact block coordinate descent
        previous = None
        self.converged_ = False
        best = None                      # (objective, alpha, atoms) of the best epoch
        probe = None                     # rows whose residuals re-initialise atoms
        restart_rounds = 0
        while epoch < self.max_epochs:
            solver = _Solver.of(atoms)
            stat_a.zero_()
            stat_b.zero_()
            coactive = torch.zeros((k, k), dtype=torch.float64, device=device)
            total, nnz, max_it = 0.0, 0, 0
            for start, stop in data.chunks():
                x_chunk = data.get(start, stop)
                init = store[start:stop].to(device)
                codes, resid_sq, it = solver.code(x_chunk, alpha, init=init)
                store[start:stop] = codes.to(store.device)
                total += float(0.5 * resid_sq.double().sum()
                               + alpha * codes.abs().double().sum())
                nnz += int((codes != 0).sum())
                max_it = max(max_it, it)
                codes64 = codes.double()
                stat_a += codes64.T @ codes64
                stat_b += (codes.T @ x_chunk).double()
                active = (codes != 0).double()
                coactive += active.T @ active
            epoch += 1
            self._log_epoch(phase + "batch", total, alpha, nnz / n, max_it, n)
            if best is None or best[1] != alpha or total < best[0]:
                best = (total, alpha, atoms)
            converged = (previous is not None and previous[1] == alpha
                         and abs(previous[0] - total) <= self.tol * abs(previous[0]))
            atoms64 = atoms.double()
            wasted, pairs = [], []
            if restart_rounds < _MAX_RESTART_ROUNDS:
                # an atom that duplicates another or is barely used leaves a pattern
                # unexplained, and two atoms can split two patterns between them (local
                # minima): restart or split them, at most a few times
                wasted = _wasted_atoms(atoms64, stat_a)
                pairs = _coactive_pairs(coactive.cpu().numpy(), skip=wasted)
                restart_rounds += bool(len(wasted) or len(pairs))
            if converged and not len(wasted) and not pairs:
                self.converged_ = True
                break
            previous = (total, alpha)
            unused = _bcd(atoms64, stat_a, stat_b, passes=_BCD_PASSES)
            for i, j in pairs:
                both = torch.nonzero((store[:, i] != 0) & (store[:, j] != 0)).squeeze(1)
                codes_ij = store[both][:, [i, j]].to(device).double()
                split = _split_pair(atoms[i].double(), atoms[j].double(), codes_ij)
                if split is not None:
                    atoms64[i], atoms64[j] = split
            if pairs:
                LOGGER.info("split %d pairs of atoms that code the same ANs", len(pairs))
            wasted = np.setdiff1d(wasted, unused)
            replace = np.union1d(unused, wasted).astype(np.int64)
            if len(replace):
                # restart them from what the current atoms leave unexplained: the
                # leading principal directions of the coding residuals of a seeded
                # subset of rows (a pattern missing from the atoms dominates them)
                if probe is None:
                    probe_rng = np.random.default_rng([int(self.random_state), 1])
                    probe = np.sort(probe_rng.choice(n, min(n, _N_PROBE), replace=False))
                index = torch.as_tensor(probe, device=store.device)
                resid = (data.take(probe) - store[index].to(device) @ atoms).double()
                directions = _top_directions(resid, len(replace))
                for u, row in zip(replace, directions):
                    atoms64[u] = row / row.norm().clamp_min(1e-30)
                if tuning:
                    self._retunes = 0          # the codes' sparsity moves with the atoms
                LOGGER.info("re-initialised %d unused and %d duplicate or rarely used "
                            "atoms from the principal directions of the residuals",
                            len(unused), len(replace) - len(unused))
            atoms = atoms64.float()
            if tuning and self._retunes < _MAX_RETUNES:
                new_alpha = self._tune_alpha(_Solver.of(atoms), tune_x, alpha)
                self._retunes += 1
                if abs(new_alpha - alpha) <= 0.02 * alpha:
                    self._retunes = _MAX_RETUNES     # settled: keep alpha fixed from now on
                else:
                    alpha = new_alpha
        if best is not None and best[1] == alpha and best[0] < total:
            atoms = best[2]       # a re-initialisation did not pay off: keep the best atoms
        return atoms, alpha, store

    def _log_epoch(self, phase, total, alpha, mean_nonzero, coding_iter, n_rows):
        self.history_.append(dict(epoch=len(self.history_) + 1, phase=phase,
                                  objective=total, alpha=alpha, mean_nonzero=mean_nonzero,
                                  coding_iter=coding_iter, n_rows=n_rows))
        LOGGER.info("epoch %d (%s, %d rows): objective %.6g, %.2f non-zeros per row, "
                    "%d FISTA iterations", len(self.history_), phase, n_rows, total,
                    mean_nonzero, coding_iter)

    def _finish(self, data, atoms, store, device):
        n = data.n

        # -- final atoms (unit norm, ordered by use) and accurate codes
        norms = atoms.double().norm(dim=1)
        atoms = (atoms.double() / norms.clamp_min(1e-30)[:, None]).float()
        atoms[norms <= 1e-30] = 0
        self.components_ = atoms.cpu().numpy()
        codes, objective = self._encode(data, store, device)
        usage = np.asarray(abs(codes).sum(axis=0)).ravel()
        order = np.argsort(-usage, kind="stable")
        signs = np.where(np.asarray(codes.sum(axis=0)).ravel()[order] < 0, -1, 1)
        signs = signs.astype(np.float32)
        self.components_ = np.ascontiguousarray(self.components_[order] * signs[:, None])
        codes = codes[:, order] @ sp.diags(signs).tocsr()
        self.codes_ = sp.csr_matrix(codes, dtype=np.float32)
        self.codes_.sort_indices()
        self.objective_ = objective      # reordering and signs leave it unchanged
        LOGGER.info("Atoms learned in %d epochs: objective %.6g, alpha %.4g, %.2f non-zeros "
                    "per row", self.n_iter_, self.objective_, self.alpha_,
                    self.codes_.nnz / max(n, 1))
        del store

    def _encode(self, data: _Rows, store, device):
        """Accurate lasso codes of every row of ``data`` (duality gap <= 1e-11 ||x||^2).

        Each chunk starts from ``store`` (the codes of the last batch epoch, made with the
        same atoms) or, without it, from float32 FISTA codes; :func:`_exact_codes` then
        solves the lasso exactly on each row's support in float64.

        Returns the codes (CSR, float32) and the objective of these float32 codes with
        ``components_``, in float64 from K-sized quantities (no second pass over X).
        """
        atoms = torch.from_numpy(self.components_).to(device)
        solver = _Solver.of(atoms)
        atoms64 = atoms.double()
        gram64 = atoms64 @ atoms64.T
        blocks, total = [], 0.0
        for start, stop in data.chunks():
            x32 = data.get(start, stop)
            if store is None:
                init, _, _ = solver.code(x32, self.alpha_)
            else:
                init = store[start:stop].to(device)
            x64 = x32.double()
            del x32
            cross = x64 @ atoms64.T
            x_sq = _rowdot(x64, x64)
            del x64
            codes = _exact_codes(gram64, cross, x_sq, self.alpha_, init, solver.lipschitz)
            codes32 = codes.float()
            rounded = codes32.double()
            resid_sq = (x_sq - 2 * _rowdot(rounded, cross)
                        + _rowdot(rounded, rounded @ gram64))
            total += float(0.5 * resid_sq.sum() + self.alpha_ * rounded.abs().sum())
            blocks.append(sp.csr_matrix(codes32.cpu().numpy()))
        codes = sp.vstack(blocks, format="csr") if blocks else \
            sp.csr_matrix((0, self.n_atoms), dtype=np.float32)
        return codes, total

    def transform(self, X):
        """Lasso codes of the rows of X with the fitted atoms.

        Same solution as ``sklearn.decomposition.sparse_encode(X, components_,
        algorithm="lasso_cd", alpha=alpha_)`` (duality gap <= 1e-11 ||x||^2 per row).

        Parameters
        ----------
        X : array (n_rows, n_trs), NumPy array or memory map.

        Returns
        -------
        codes : ndarray (n_rows, n_atoms), float32
        """
        if not hasattr(self, "components_"):
            raise LlmfbnError("this DictionaryLearner is not fitted yet", todo="call fit first")
        X = _check_matrix(X)
        if X.shape[1] != self.components_.shape[1]:
            raise LlmfbnError("X has a different number of TRs than the atoms",
                              expected=f"{self.components_.shape[1]} columns",
                              found=f"{X.shape[1]}")
        device = _resolve_device(self.device)
        _, chunk_rows = self._plan(X, X.shape[0], None)
        with _deterministic_algorithms(device), \
                _torch_threads(self._threads(device, X.shape[0])):
            data = _Rows(X, None, device, resident=False, chunk_rows=chunk_rows)
            return self._encode(data, None, device)[0].toarray()

    def fit_transform(self, X, y=None):
        """Fit, then return ``codes_`` as a dense array (n_neurons, n_atoms)."""
        return self.fit(X).codes_.toarray()


def _objective_chunks(data: _Rows, codes, atoms, alpha) -> float:
    atoms64 = np.asarray(atoms, dtype=np.float64)
    total = 0.0
    for start, stop in data.chunks():
        block = codes[start:stop]
        x = data.get(start, stop).cpu().double().numpy()
        resid = x - block @ atoms64
        total += 0.5 * float(np.sum(resid * resid))
    return total + alpha * float(abs(codes).sum())


def dictionary_objective(X, codes, atoms, alpha, chunk_rows: int = 4096) -> float:
    """``0.5 * ||X - codes @ atoms||_F^2 + alpha * ||codes||_1`` in float64, by chunks.

    Parameters
    ----------
    X : array (n_neurons, n_trs), NumPy array or memory map.
    codes : array or scipy.sparse matrix (n_neurons, n_atoms).
    atoms : array (n_atoms, n_trs).
    alpha : float, the penalty (scikit-learn's ``alpha``).
    """
    X = _check_matrix(X)
    codes = sp.csr_matrix(codes) if not sp.issparse(codes) else codes.tocsr()
    data = _Rows(X, None, torch.device("cpu"), resident=False, chunk_rows=chunk_rows)
    return _objective_chunks(data, codes, atoms, float(alpha))


def match_atoms(atoms_a, atoms_b) -> np.ndarray:
    """|Pearson correlation| of the atoms paired by the Hungarian algorithm.

    Parameters
    ----------
    atoms_a, atoms_b : arrays (n_atoms, n_trs)

    Returns
    -------
    ndarray (n_atoms,): the matched |correlations|, in the order of ``atoms_a``'s rows.
    """
    from scipy.optimize import linear_sum_assignment

    a = np.asarray(atoms_a, dtype=np.float64)
    b = np.asarray(atoms_b, dtype=np.float64)
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    corr = np.abs((a @ b.T) / np.maximum(np.outer(na, nb), 1e-30))
    corr[(na == 0)[:, None] | (nb == 0)[None, :]] = 0.0
    rows, cols = linear_sum_assignment(-corr)
    matched = np.zeros(a.shape[0])
    matched[rows] = corr[rows, cols]
    return matched

