"""How a fit uses the machine: memory plan, torch CPU threads, deterministic kernels."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from bids_app.atoms import settings
from bids_app.atoms.rows import mmap_of
from bids_app.atoms.seeding import init_sample_size
from bids_app.errors import LlmfbnError


@contextlib.contextmanager
def deterministic_algorithms(device: torch.device):
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
def torch_threads(n_threads):
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


def _row_bytes(n_trs: int, n_atoms: int, itemsize: int) -> int:
    """Working bytes of one row of X in a chunk (float32 + float64 copies, codes)."""
    return n_trs * (4 + 8 + itemsize) + 16 * n_atoms * 8


def _codes_bytes(n_rows: int, n_trs: int, n_atoms: int) -> int:
    """Bytes of the codes (warm-start store + final) and of the initialisation sample."""
    n_sample = init_sample_size(n_rows, n_atoms)      # initialisation / warm-up rows
    return n_rows * n_atoms * 4 * 2 + n_sample * (2 * n_trs + n_atoms) * 4


def minimum_memory_gib(n_rows: int, n_trs: int, n_atoms: int, itemsize: int = 4) -> float:
    """The smallest ``mem_gb`` (GiB) with which :func:`plan_memory` can fit ``n_rows`` rows
    of ``n_trs`` TRs (``itemsize`` bytes each) with ``n_atoms`` atoms."""
    need = _codes_bytes(n_rows, n_trs, n_atoms) + 256 * _row_bytes(n_trs, n_atoms, itemsize)
    return need / 0.8 / 2 ** 30


def plan_memory(X, n_rows: int, rows, n_atoms: int, mem_gb, device: torch.device):
    """(resident, chunk_rows): whether a float32 copy of X is kept, and the chunk size.

    Parameters
    ----------
    X : array (n_neurons, n_trs), NumPy array or memory map.
    n_rows : int, rows to fit on (``len(rows)``, or n_neurons when ``rows`` is None).
    rows : array of int or None, the rows of X to fit on.
    n_atoms : int
    mem_gb : float or None, the budget in GiB for the copies of a fit (None: no limit).
    device : torch.device, where the fit runs.
    """
    n_trs, k = X.shape[1], n_atoms
    per_row_work = _row_bytes(n_trs, k, X.dtype.itemsize)
    codes_bytes = _codes_bytes(n_rows, n_trs, k)
    view_ok = (rows is None and mmap_of(X) is None and X.dtype == np.float32
               and X.flags.c_contiguous and device.type == "cpu")
    copy_bytes = 0 if view_ok else n_rows * n_trs * 4
    if mem_gb is None:
        return True, settings.DEFAULT_CHUNK
    budget = float(mem_gb) * 2 ** 30
    resident = copy_bytes + codes_bytes + settings.DEFAULT_CHUNK * per_row_work <= 0.8 * budget
    left = 0.8 * budget - codes_bytes - (copy_bytes if resident else 0)
    chunk = int(left // per_row_work)
    if chunk < min(256, n_rows):
        need = minimum_memory_gib(n_rows, n_trs, k, X.dtype.itemsize)
        raise LlmfbnError(f"mem_gb={mem_gb} is too small for {n_rows} neurons x "
                          f"{n_trs} TRs with {k} atoms", expected=f"at least {need:.3g} GiB",
                          todo="raise --mem-gb")
    return resident, min(chunk, 65536 if resident else 32768)


def thread_count(device: torch.device, n_rows: int, n_atoms: int, n_threads):
    """Torch CPU threads: ``n_threads``, or 1 for small problems, else None (unchanged).

    On small problems the per-operation work is too small to share, and when the
    cores are busy with other processes, OpenMP threads waiting for each other made
    such fits up to 50x slower than one thread.
    """
    if device.type != "cpu":
        return None
    if n_threads is not None:
        return int(n_threads)
    return 1 if n_rows * n_atoms < settings.SMALL_PROBLEM else None
