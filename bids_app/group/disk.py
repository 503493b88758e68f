"""A stack of every subject's maps on disk, read back one block of atoms at a time.

The group level needs each subject's effect maps twice after reading them (the group t
maps, atom by atom, and the bootstrap, block by block). Holding them for 345 subjects at
2 mm would take 20 GB; :class:`DiskStack` keeps them in an unlinked temporary file instead and
reads with plain file I/O (not a memory map, whose touched pages would count in the process's
resident memory and in a SLURM job's memory limit until the kernel needed them back).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np


class DiskStack:
    """(n_subjects, n_atoms, n_voxels) float32 on disk, written one subject at a time.

    ``stack[:, atoms, :]`` (``atoms`` an int or a step-1 slice) reads every subject's maps of
    those atoms into memory; nothing else is held. The file has no name (``O_TMPFILE`` or
    unlinked at once): it disappears with the object or the process, whatever happens, and
    forked workers share it.
    """

    ndim = 3
    dtype = np.dtype(np.float32)

    def __init__(self, shape: tuple, folder: Path):
        self.shape = tuple(int(n) for n in shape)
        self._file = tempfile.TemporaryFile(dir=folder, prefix=".llmfbn-group-")
        self._fd = self._file.fileno()
        self._subject_bytes = self.shape[1] * self.shape[2] * 4

    def write(self, subject: int, maps: np.ndarray) -> None:
        """Store one subject's (n_atoms, n_voxels) maps."""
        data = np.ascontiguousarray(maps, dtype=np.float32)
        if data.shape != self.shape[1:]:
            raise ValueError(f"maps of shape {data.shape}, expected {self.shape[1:]}")
        view = memoryview(data).cast("B")
        offset = subject * self._subject_bytes
        while view:
            written = os.pwrite(self._fd, view, offset)
            view, offset = view[written:], offset + written

    def __getitem__(self, key) -> np.ndarray:
        if not (isinstance(key, tuple) and len(key) == 3 and key[0] == slice(None)
                and key[2] == slice(None)):
            raise IndexError("a DiskStack is read as stack[:, atoms, :]")
        atoms = key[1]
        single = isinstance(atoms, (int, np.integer))
        start, stop, step = (slice(int(atoms), int(atoms) + 1) if single else atoms).indices(
            self.shape[1])
        if step != 1:
            raise IndexError("a DiskStack reads contiguous atoms")
        n_voxels = self.shape[2]
        out = np.empty((self.shape[0], max(stop - start, 0), n_voxels), np.float32)
        for subject in range(self.shape[0]):
            target = memoryview(out[subject]).cast("B")
            offset = subject * self._subject_bytes + start * n_voxels * 4
            while target:
                n_read = os.preadv(self._fd, [target], offset)
                if n_read <= 0:
                    raise OSError(f"short read from the group's scratch file at {offset}")
                target, offset = target[n_read:], offset + n_read
        return out[:, 0] if single else out

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self._subject_bytes

    def close(self) -> None:
        self._file.close()
