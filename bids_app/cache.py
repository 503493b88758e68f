"""Work-directory cache shared by parallel participant jobs.

A result is a folder ``<work_dir>/llmfbn/<kind>/<key>/``. It is computed under an exclusive
file lock (``fcntl.flock``), written into a temporary folder and renamed into place
(:func:`bids_app.atomic.atomic_folder`), so concurrent jobs compute it once and never read a
half-written result.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from bids_app.atomic import atomic_folder

LOGGER = logging.getLogger("llmfbn")

#: The cache's folder in the work directory, and the marker of a complete result.
CACHE_DIR = "llmfbn"
COMPLETE = ".complete"


def cache_key(payload: dict) -> str:
    """A short stable hash of a JSON-serialisable description of the inputs."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def _locked(lock_path: Path):
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def is_cached(work_dir: Path, kind: str, key: str) -> bool:
    """Whether the result ``kind/key`` is complete in ``work_dir``."""
    return (Path(work_dir) / CACHE_DIR / kind / key / COMPLETE).exists()


def cached_folder(work_dir: Path, kind: str, key: str, compute: Callable[[Path], None],
                  description: str) -> Path:
    """Return the folder holding the result ``kind/key``, computing it once if needed.

    ``compute(tmp_folder)`` writes the result files into ``tmp_folder``.
    """
    root = Path(work_dir) / CACHE_DIR / kind
    final = root / key
    if (final / COMPLETE).exists():
        LOGGER.info("%s: reusing cached result %s", description, final)
        return final
    with _locked(root / f"{key}.lock"):
        if (final / COMPLETE).exists():
            LOGGER.info("%s: computed by another job, reusing %s", description, final)
            return final
        with atomic_folder(final) as tmp:     # an incomplete leftover at final is replaced
            compute(tmp)
            (tmp / COMPLETE).write_text("")
    return final
