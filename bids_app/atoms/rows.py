"""Rows of X, one artificial neuron (AN) per row, read chunk by chunk.

X (n_neurons, n_trs) may be a NumPy array or a memory-mapped ``.npy`` file
(``np.load(path, mmap_mode="r")``) larger than memory: :class:`Rows` converts it to float32
chunk by chunk, keeps a float32 copy only when asked to (``resident``), and releases the
pages of a memory map after each chunk.
"""

from __future__ import annotations

import mmap

import numpy as np
import scipy.sparse as sp
import torch

from bids_app.errors import LlmfbnError


def check_matrix(X, name="X"):
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


def mmap_of(array):
    """The ``mmap.mmap`` behind a NumPy array (a memmap or a view of one), else None."""
    base = array
    while base is not None:
        if isinstance(base, mmap.mmap):
            return base
        base = getattr(base, "base", None)
    return None


def _not_finite() -> LlmfbnError:
    return LlmfbnError("X holds NaN or infinite values", expected="finite responses",
                       todo="check the AN responses (silent ANs must be zero, not NaN)")


class Rows:
    """Chunked float reader of the rows ``rows`` of X (all rows when ``rows`` is None).

    X is an array (n_neurons, n_trs); the reader holds ``n`` rows of ``n_trs`` values.

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
        self._mm = mmap_of(X)
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

    def chunks(self, size=None) -> list[tuple[int, int]]:
        """(start, stop) of consecutive chunks of ``size`` (default ``chunk_rows``) rows."""
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
        """Rows ``start:stop`` read from X: tensor (stop - start, n_trs), float32."""
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
            raise _not_finite()
        return tensor

    def get(self, start, stop) -> torch.Tensor:
        """Rows ``start:stop`` of this reader: tensor (stop - start, n_trs), float32."""
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
            raise _not_finite()
        return torch.from_numpy(out).to(self.device)
