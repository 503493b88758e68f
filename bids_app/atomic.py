"""Atomic writes: the one rule for every file and folder llmfbn leaves behind.

A result is written under a hidden temporary name in the folder of its final name, then
``os.replace``d onto that name, so a killed run never leaves a half-written file or folder
under a final name. Temporary names start with ``.<final name>.tmp`` so that they are easy to
recognise. Final files and folders follow the user's umask (``mkstemp``/``mkdtemp`` make
them private).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TMP_MARK = ".tmp"


def current_umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _follow_umask(path: Path) -> None:
    mode = 0o777 if path.is_dir() else 0o666
    os.chmod(path, mode & ~current_umask())


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f"{TMP_MARK}{suffix}",
                               dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        _follow_umask(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_folder(folder: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``folder``; on success, move it onto ``folder``.

    A folder already at the final name is an incomplete leftover and is removed first.
    ``os.replace`` raises ``OSError`` when another process put a folder there in between;
    callers that race (shared caches) check whether that folder is a valid result.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}{TMP_MARK}-", dir=folder.parent))
    try:
        yield tmp
        for path in (tmp, *tmp.iterdir()):
            _follow_umask(path)
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
