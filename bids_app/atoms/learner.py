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
   Atoms start as real, diverse AN time courses. Then FastICA, whitened on the span of
   those atoms, rotates them within it (``settings.SEEDING = "span-ica"``), which sets
   the mixing within the span that the epochs would otherwise creep towards, while a
   pattern few rows hold keeps its atom; see :mod:`~bids_app.atoms.seeding` (and its
   other options). When X has at least twice as many rows as that
   subsample, steps 2-3 first run on the subsample alone (cheap epochs while the atoms
   are far off), then step 3 continues on all rows from the atoms found.
2. *Online epochs* (``online_epochs``, Mairal's algorithm 1 with mini-batches and the
   forgetting factor of scikit-learn's ``MiniBatchDictionaryLearning``): mini-batches of
   ``batch_size`` rows are coded, the sufficient statistics A = sum(a a^T) and B = sum(a x^T)
   are updated, then one pass of block coordinate descent (BCD) updates the atoms.
3. *Batch epochs* (until the relative objective change over ``settings.STOP_WINDOW`` (4)
   accepted batch epochs is below that many times ``tol``, or over 2 below 2e-4 when the
   fit has settled): one streaming pass over all rows codes them against the current
   atoms (warm-started) and accumulates the exact statistics, whose objective is logged;
   BCD then minimises over the atoms exactly (the plain step), and the next atoms are
   searched along a quasi-Newton (L-BFGS) direction built from the plain steps, the step
   length chosen on a subsample of the rows (``settings.STEPS``,
   :mod:`~bids_app.atoms.steps`); an epoch whose objective is
   higher than the last accepted one is rejected and the plain step coded instead. The
   accepted epochs' objective therefore never increases (up to the coding tolerance),
   except right after a restart (below). (``settings.V3_LEARNER``, ``V4_LEARNER`` and
   ``V5_LEARNER`` give the plain epochs of the v3 learner, the Anderson-accelerated ones
   of v4 and the searched conjugate ones of v5: benchmarks/results/dictionary.md.)
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

The steps live in the modules of :mod:`bids_app.atoms`: :mod:`~bids_app.atoms.seeding`
(1), :mod:`~bids_app.atoms.epochs` (2-3), :mod:`~bids_app.atoms.update` (BCD),
:mod:`~bids_app.atoms.anderson` (acceleration),
:mod:`~bids_app.atoms.restarts`, :mod:`~bids_app.atoms.lasso` (sparse coding, 4),
:mod:`~bids_app.atoms.rows` (streaming) and :mod:`~bids_app.atoms.resources` (memory,
threads); their fixed constants are in :mod:`~bids_app.atoms.settings`.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp
import torch

from bids_app.atoms import settings
from bids_app.atoms.epochs import Epochs
from bids_app.atoms.lasso import final_codes
from bids_app.atoms.resources import (
    deterministic_algorithms,
    plan_memory,
    thread_count,
    torch_threads,
)
from bids_app.atoms.rows import Rows, check_matrix
from bids_app.atoms.seeding import seed_atoms
from bids_app.devices import torch_device
from bids_app.errors import LlmfbnError

LOGGER = logging.getLogger("llmfbn")


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
    device : {"cpu", "cuda", "cuda:N", "auto"} or torch.device, default="cpu"
        Where the fit runs (resolved by :func:`bids_app.devices.torch_device`).
    random_state : int, default=0
        Seed of the initialisation subsample and of the mini-batch order.
    batch_size : int, default=1024
        Rows per mini-batch in the online epochs.
    online_epochs : int, default=1
        Passes of Mairal's online algorithm before the batch epochs (0 for none).
    max_epochs : int, default=100
        Maximum number of epochs (online + batch).
    tol : float or None, default=None
        Stop when the relative change of the objective over ``settings.STOP_WINDOW``
        accepted batch epochs (same alpha) is below ``STOP_WINDOW * tol``, i.e. below
        ``tol`` per epoch on average, or below min(tol, 1e-4) per epoch over
        ``settings.SETTLED_WINDOW`` (2) epochs. ``None``: ``settings.STOP_TOL`` (3.5e-4 over
        4 epochs since ``torch-fista-bcd-v5``).
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
        fixed over accepted epochs, except in the epoch after atoms were restarted),
        ``accepted`` (only present, and False, on a searched or Anderson-accelerated
        epoch that raised the objective and was replaced by the plain step),
        ``step_length`` and ``searched_rows`` (on an epoch whose next atoms were searched:
        the length chosen, in plain steps, and the rows the search coded), ``restarted``
        (only present: the atoms re-initialised or split after this epoch), ``alpha``,
        ``mean_nonzero`` (per row), ``coding_iter`` (max FISTA iterations over the rows
        that ran FISTA; 0 when every row was solved exactly on the support of its warm
        start).
    n_iter_ : int
        Epochs run.
    converged_ : bool
        Whether ``tol`` was reached before ``max_epochs``.
    """

    def __init__(self, n_atoms: int = 64, alpha: float = 0.1, target_sparsity=None,
                 device="cpu", random_state: int = 0, batch_size: int = 1024,
                 online_epochs: int = 1, max_epochs: int = 100, tol: float | None = None,
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

    # ------------------------------------------------------------------ checks
    def _check_params(self, n_rows, n_trs):
        """Raise :class:`LlmfbnError` for parameters that do not suit X (n_rows, n_trs)."""
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
        if self.online_epochs < 0 or (self.tol is not None and not self.tol >= 0):
            raise LlmfbnError("online_epochs and tol must be >= 0")
        if self.mem_gb is not None and not self.mem_gb > 0:
            raise LlmfbnError("mem_gb must be positive", found=repr(self.mem_gb))

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
        X = check_matrix(X)
        if rows is not None:
            rows = np.sort(np.asarray(rows, dtype=np.int64))
            if rows.size and (rows[0] < 0 or rows[-1] >= X.shape[0]):
                raise LlmfbnError("rows index outside X", found=f"{rows[0]}..{rows[-1]}")
        n_rows = X.shape[0] if rows is None else len(rows)
        self._check_params(n_rows, X.shape[1])
        device = torch_device(self.device)
        resident, chunk_rows = plan_memory(X, n_rows, rows, self.n_atoms, self.mem_gb, device)
        with deterministic_algorithms(device), \
                torch_threads(thread_count(device, n_rows, self.n_atoms, self.n_threads)):
            self._fit(X, rows, device, resident, chunk_rows)
        return self

    def _fit(self, X, rows, device, resident, chunk_rows):
        """Seed the atoms, run the epochs (a warm-up on a subsample first when X has at
        least twice as many rows), then the final atoms and codes."""
        rng = np.random.default_rng(self.random_state)
        data = Rows(X, rows, device, resident, chunk_rows)
        n, n_trs, k = data.n, data.n_trs, self.n_atoms
        atoms_np, tune_np, sample = seed_atoms(
            data, self.n_atoms, rng, float(self.alpha) if self.target_sparsity is None else 0.1)
        atoms = torch.from_numpy(atoms_np.astype(np.float32)).to(device)
        tune_x = torch.from_numpy(tune_np.astype(np.float32)).to(device)
        epochs = Epochs(self, tune_x)
        alpha = float(self.alpha) if not epochs.tuning else 0.1
        if epochs.tuning:
            alpha = epochs.tune(atoms, alpha)
        self.history_ = epochs.history
        LOGGER.info("Dictionary learning: %d rows x %d TRs -> %d atoms on %s, alpha=%.4g%s",
                    n, n_trs, k, device, alpha, "" if resident else
                    f" (streaming X in chunks of {chunk_rows} rows)")
        online_epochs = self.online_epochs
        if n >= 2 * len(sample):
            # Most epochs are spent while the atoms are still far off: run them on a
            # subsample of rows, then refine on all rows from there.
            # (the seeded rows drawn for the initialisation)
            sub = Rows(sample, None, device, True, settings.DEFAULT_CHUNK)
            atoms, alpha, _ = epochs.run(sub, atoms, alpha, rng, online_epochs, "subsample ")
            online_epochs = 0
            del sub
        del sample
        atoms, alpha, store = epochs.run(data, atoms, alpha, rng, online_epochs, "")
        self.converged_ = epochs.converged
        self.n_iter_ = len(self.history_)
        self.alpha_ = float(alpha)
        self._finish(data, atoms, store, device)

    def _finish(self, data, atoms, store, device):
        """Final atoms (unit norm, most used first, summed code >= 0) and accurate codes."""
        n = data.n
        norms = atoms.double().norm(dim=1)
        atoms = (atoms.double() / norms.clamp_min(1e-30)[:, None]).float()
        atoms[norms <= 1e-30] = 0
        self.components_ = atoms.cpu().numpy()
        codes, objective = final_codes(data, self.components_, self.alpha_, store, device)
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
        X = check_matrix(X)
        if X.shape[1] != self.components_.shape[1]:
            raise LlmfbnError("X has a different number of TRs than the atoms",
                              expected=f"{self.components_.shape[1]} columns",
                              found=f"{X.shape[1]}")
        device = torch_device(self.device)
        n_rows = X.shape[0]
        _, chunk_rows = plan_memory(X, n_rows, None, self.n_atoms, self.mem_gb, device)
        with deterministic_algorithms(device), \
                torch_threads(thread_count(device, n_rows, self.n_atoms, self.n_threads)):
            data = Rows(X, None, device, resident=False, chunk_rows=chunk_rows)
            return final_codes(data, self.components_, self.alpha_, None, device)[0].toarray()

    def fit_transform(self, X, y=None):
        """Fit, then return ``codes_`` as a dense array (n_neurons, n_atoms)."""
        return self.fit(X).codes_.toarray()
