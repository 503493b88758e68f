"""Representative temporal patterns ("atoms") of all artificial neurons.

Sparse dictionary learning (Mairal et al. 2010) on X (n_neurons, n_trs), one AN per row:
minimise ``0.5 * ||X - A D||_F^2 + lambda * ||A||_1`` with ``||d_k||_2 <= 1``, the objective
and penalty scale of scikit-learn's ``DictionaryLearning``, solved by
:class:`bids_app.atoms.learner.DictionaryLearner` (torch; CPU or CUDA; streams X from disk).

The rows of X are AN responses at the used frames (``--frames``: by default those that carry a
story), z-scored within each run and scaled to unit L2 norm over those frames (ours; done by
the responses stage), so ``lambda`` acts on a correlation scale whatever the number of TRs.
ANs whose response is constant (silent) are all-zero rows: they are left out of the fit and
get all-zero codes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from bids_app.atoms.learner import DictionaryLearner
from bids_app.atoms.scores import match_atoms
from bids_app.atoms.settings import ALGORITHM_ID
from bids_app.errors import LlmfbnError
from bids_app.parallel import forked_map

LOGGER = logging.getLogger("llmfbn")
#: Rows read at a time to find the responding ANs.
CHUNK_ROWS = 65536


@dataclass
class Atoms:
    """Learned atoms and codes.

    atoms : array (n_atoms, n_trs) float32, unit-norm temporal patterns, most used first.
    codes : scipy.sparse CSR (n_neurons, n_atoms), sparse code of every AN (silent: empty).
    objective : float, ``0.5 * ||X - A D||^2 + lambda * ||A||_1`` over the responding ANs.
    sparsity_lambda : float, the penalty used; n_silent : int, ANs left out (all-zero rows).
    seed : int; history : list of dict, the learner's convergence log (one entry per epoch).
    stability : dict or None, see :func:`atom_stability` (None: not measured).
    fit_seconds : float, wall time of the fit (without the stability refits).
    """

    atoms: np.ndarray
    codes: sp.csr_matrix
    objective: float
    sparsity_lambda: float
    n_silent: int
    seed: int
    history: list = field(default_factory=list)
    stability: dict | None = None
    fit_seconds: float = 0.0

    def meta(self) -> dict:
        """JSON-ready description (sidecar ``DictionaryLearning`` entry)."""
        nnz = np.diff(self.codes.indptr)
        responding = nnz[nnz > 0] if (nnz > 0).any() else nnz
        out = {"Algorithm": ALGORITHM_ID, "Objective": self.objective,
               "SparsityLambda": self.sparsity_lambda, "Seed": self.seed,
               "SilentNeurons": self.n_silent,
               "MeanNonZeroCodesPerNeuron": float(responding.mean()) if nnz.size else 0.0,
               "FitSeconds": round(float(self.fit_seconds), 1),
               "ConvergenceLog": self.history}
        if self.stability is not None:
            out["stability"] = self.stability
        return out


def responding_rows(x: np.ndarray, chunk_rows: int = CHUNK_ROWS) -> np.ndarray:
    """Indices of the non-zero rows of ``x`` (n_neurons, n_trs), read chunk by chunk."""
    keep = np.zeros(x.shape[0], bool)
    for start in range(0, x.shape[0], chunk_rows):
        block = np.asarray(x[start:start + chunk_rows], dtype=np.float32)
        keep[start:start + len(block)] = np.any(block != 0, axis=1)
    return np.flatnonzero(keep)


def learn_atoms(x: np.ndarray, n_atoms: int = 64, sparsity_lambda: float = 0.1,
                target_sparsity: float | None = None, seed: int = 0, device: str = "cpu",
                mem_gb: float | None = None, stability: bool = True,
                n_threads: int | None = None) -> Atoms:
    """Learn ``n_atoms`` atoms from ``x`` (n_neurons, n_trs): unit-norm (or zero) rows.

    ``x`` may be a memory map. With ``target_sparsity`` (mean non-zero codes per AN) the
    penalty is chosen for the user. With ``stability``, two more seeds and split halves of
    the ANs are fitted and matched (see :func:`atom_stability`; about three times the
    fit's cost, logged and recorded as ``stability["seconds"]``). ``device``, ``mem_gb``
    and ``n_threads`` are passed to :class:`DictionaryLearner`.

    Returns
    -------
    Atoms: atoms (n_atoms, n_trs) and codes (n_neurons, n_atoms).
    """
    rows = responding_rows(x)
    n_silent = x.shape[0] - rows.size
    if rows.size < n_atoms:
        raise LlmfbnError(
            f"only {rows.size} artificial neurons respond (vary over time), fewer than "
            f"--n-atoms {n_atoms}", todo="lower --n-atoms or use longer stories")
    LOGGER.info("Dictionary learning: %d neurons (%d silent) x %d TRs -> %d atoms, %s",
                rows.size, n_silent, x.shape[1], n_atoms,
                f"target {target_sparsity:g} non-zero codes per AN" if target_sparsity
                else f"lambda={sparsity_lambda:g}")
    started = time.monotonic()
    learner = DictionaryLearner(n_atoms=n_atoms, alpha=sparsity_lambda,
                                target_sparsity=target_sparsity, device=device,
                                random_state=seed, mem_gb=mem_gb,
                                n_threads=n_threads).fit(x, rows=rows)
    fitted = learner.codes_.tocoo()
    codes = sp.csr_matrix((fitted.data, (rows[fitted.row], fitted.col)),
                          shape=(x.shape[0], n_atoms), dtype=np.float32)
    result = Atoms(atoms=learner.components_.astype(np.float32), codes=codes,
                   objective=float(learner.objective_), sparsity_lambda=float(learner.alpha_),
                   n_silent=int(n_silent), seed=seed,
                   history=[{k: (float(v) if isinstance(v, (float, np.floating)) else v)
                             for k, v in h.items()} for h in learner.history_],
                   fit_seconds=time.monotonic() - started)
    LOGGER.info("Dictionary learning took %.1f s", result.fit_seconds)
    if stability:
        result.stability = atom_stability(x, rows, result.atoms, n_atoms,
                                          result.sparsity_lambda, seed, device, mem_gb,
                                          n_threads)
    return result


def atom_stability(x, rows: np.ndarray, atoms: np.ndarray, n_atoms: int, alpha: float,
                   seed: int, device: str = "cpu", mem_gb: float | None = None,
                   n_threads: int | None = None) -> dict:
    """How reproducible the atoms are: three more fits, matched by the Hungarian algorithm.

    ``seed_vs_seed``: the fitted ``atoms`` (n_atoms, n_trs) against a fit with seed + 1
    (same ANs, same lambda); ``half_vs_half``: fits on two random halves of the responding
    ANs (``rows``, indices into ``x`` (n_neurons, n_trs)) against each other. Each is a
    list of matched |r|, one per atom. ``seconds``: the wall time of the three fits.
    """
    LOGGER.info("Atom stability: one fit with another seed, two on split halves of the ANs "
                "(--no-atom-stability skips them)")
    started = time.monotonic()

    order = np.random.default_rng(seed).permutation(rows)
    half = order.size // 2
    fits = [(rows, seed + 1), (np.sort(order[:half]), seed), (np.sort(order[half:]), seed)]
    # On the CPU the three fits run side by side in forked processes of one thread each
    # (--nprocs of them at most, sharing --mem-gb): separate processes lose only their own
    # share when another program takes a core, where threads of one fit wait for each other
    # at every step (measured: docs in benchmarks/results/dictionary.md); and one-thread fits
    # give the same bits whatever --nprocs.
    cuda = str(device).startswith("cuda")
    n_workers = 1 if cuda else min(len(fits), int(n_threads or 1))
    share = None if mem_gb is None else mem_gb / n_workers

    def fit(job):
        subset, random_state = job
        return DictionaryLearner(n_atoms=n_atoms, alpha=alpha, device=device,
                                 random_state=random_state, mem_gb=share,
                                 n_threads=n_threads if cuda else 1).fit(
                                     x, rows=subset).components_

    other, first, second = forked_map(fit, fits, n_workers)
    out = {"seed_vs_seed": match_atoms(atoms, other).tolist(),
           "half_vs_half": match_atoms(first, second).tolist(),
           "seeds": [seed, seed + 1], "split_seed": seed}
    out["median_seed_vs_seed"] = float(np.median(out["seed_vs_seed"]))
    out["median_half_vs_half"] = float(np.median(out["half_vs_half"]))
    out["seconds"] = round(time.monotonic() - started, 1)
    LOGGER.info("Atom stability: median matched |r| %.3f across seeds, %.3f across halves; "
                "the 3 extra fits took %.1f s", out["median_seed_vs_seed"],
                out["median_half_vs_half"], out["seconds"])
    return out


def response_projections(x: np.ndarray, atoms: np.ndarray,
                         chunk_rows: int = CHUNK_ROWS) -> np.ndarray:
    """(n_rows, n_atoms) float32 inner products ``X D^T`` of every response with every atom.

    ``x`` (n_rows, n_frames), possibly a memory map, is read chunk by chunk. With unit-norm,
    per-run z-scored responses, ``P_i w / ||c - mean(c)||`` is the exact correlation of
    response ``i`` with any composite ``c = w D`` of atoms (the AN sub-groups' scores).
    """
    atoms64 = np.asarray(atoms, dtype=np.float64).T
    out = np.empty((x.shape[0], atoms64.shape[1]), dtype=np.float32)
    for start in range(0, x.shape[0], chunk_rows):
        block = np.asarray(x[start:start + chunk_rows], dtype=np.float64)
        out[start:start + len(block)] = block @ atoms64
    return out
