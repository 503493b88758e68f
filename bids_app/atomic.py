"""Atomic writes: the one rule for every file and folder llmfbn leaves behind.

A result is written under a hidden temporary name in the folder of its final name, then
``os.replace``d onto that name, so a killed run never leaves a half-written file or folder
under a final name. Temporary names record their owner:
``.<final name>.tmp-<host>-<pid>-<random>[<extension>]``, so that a later run can tell the
leftovers of a killed run (owner process gone) from the work of a run still going
(:func:`remove_stale_temporaries`). Final files and folders follow the user's umask
(``mkstemp``/``mkdtemp`` make them private).

Inside :func:`deferred_replace` the files of :func:`atomic_path` are not moved onto their
final names when written but all together when the block ends without an error: a run
that fails half-way (a corrupt input met late, a full disk) leaves no new file under a
final name, only its temporaries, which it removes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOGGER = logging.getLogger("llmfbn")

TMP_MARK = ".tmp"

#: ``.<name>.tmp-<host>-<pid>-<random>...``: the owner of a temporary file or folder.
_OWNED = re.compile(r"^\..+\.tmp-(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-")
#: Temporary names of llmfbn < 0.2 (no owner recorded): ``.<name>.<random>.tmp<ext>``
#: and ``.<name>.tmp-<random>``.
_UNOWNED = re.compile(r"^\..+(\.[A-Za-z0-9_]{8}\.tmp(\.\w+)*|\.tmp-[A-Za-z0-9_]{8})$")

#: (temporary, final) pairs waiting for the end of the deferred_replace block, and the
#: folders created for them (removed again, when empty, if the block fails).
_DEFERRED: list[list[tuple[Path, Path]]] = []
_CREATED: list[list[Path]] = []


def host_label() -> str:
    """This machine's name, letters and digits only (at most 24), as written in temporary
    names."""
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:24] or "host"


def owner_prefix(name: str) -> str:
    """``.<name>.tmp-<host>-<pid>-``: the start of this process's temporary names."""
    return f".{name}{TMP_MARK}-{host_label()}-{os.getpid()}-"


def current_umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _follow_umask(path: Path) -> None:
    mode = 0o777 if path.is_dir() else 0o666
    os.chmod(path, mode & ~current_umask())


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` only on success.

    Inside :func:`deferred_replace` the move waits for the end of that block.
    """
    path = Path(path)
    if _CREATED:
        missing = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
        _CREATED[-1].extend(missing)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    fd, tmp = tempfile.mkstemp(prefix=owner_prefix(path.name), suffix=suffix,
                               dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        _follow_umask(tmp)
        if _DEFERRED:
            _DEFERRED[-1].append((tmp, path))
            tmp = None
        else:
            os.replace(tmp, path)
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()


@contextmanager
def deferred_replace() -> Iterator[None]:
    """Hold back the final moves of :func:`atomic_path` until the block ends.

    On success every file written in the block is moved onto its final name (in the order
    written); on any exception (including ``KeyboardInterrupt`` and ``SystemExit``) every
    temporary is removed, so are the folders the block created if they are empty, and no
    final name is touched. A nested block belongs to the outermost one.
    """
    if _DEFERRED:           # nested: the outermost block moves everything at its end
        yield
        return
    pending: list[tuple[Path, Path]] = []
    created: list[Path] = []
    _DEFERRED.append(pending)
    _CREATED.append(created)
    done = False
    try:
        yield
        _DEFERRED.pop()                         # later writes are not deferred
        for tmp, final in pending:
            os.replace(tmp, final)
        done = True
    finally:
        if _DEFERRED and _DEFERRED[-1] is pending:
            _DEFERRED.pop()
        _CREATED.pop()
        for tmp, _ in pending:
            tmp.unlink(missing_ok=True)
        if not done:
            _remove_empty_folders(created)


@contextmanager
def handed_back_writes() -> Iterator[tuple[list, list]]:
    """In a worker process forked inside :func:`deferred_replace`: collect the block's
    deferred writes for the parent, whose own block must move them.

    Yields ``(pairs, folders)``, filled when the block ends without an error with the
    (temporary, final) pairs the block wrote and the folders it created; the parent passes
    them to :func:`adopt_writes`. On any exception (a failed subject, SIGTERM from the
    parent after another worker failed) the block's temporaries are removed before it
    propagates. Outside :func:`deferred_replace` writes are moved at once and nothing is
    handed back.
    """
    handed: tuple[list, list] = ([], [])
    if not _DEFERRED:
        yield handed
        return
    pending, created = _DEFERRED[-1], _CREATED[-1]
    first, first_folder = len(pending), len(created)
    try:
        yield handed
    except BaseException:
        for tmp, _ in pending[first:]:
            tmp.unlink(missing_ok=True)
        raise
    handed[0].extend(pending[first:])
    handed[1].extend(created[first_folder:])


def adopt_writes(pairs: list[tuple[Path, Path]], folders: list[Path]) -> None:
    """Take over the writes a worker handed back (:func:`handed_back_writes`): they are
    moved at the end of this process's :func:`deferred_replace` block. (A worker forked
    outside such a block hands nothing back: its writes were moved at once.)"""
    if _DEFERRED:
        _DEFERRED[-1].extend(pairs)
        _CREATED[-1].extend(folders)


def discard_writes(pairs: list[tuple[Path, Path]], folders: list[Path]) -> None:
    """Remove the temporaries of writes a worker handed back that no block will adopt (the
    parent gave up before it read them), and the folders created for them if empty."""
    for tmp, _ in pairs:
        Path(tmp).unlink(missing_ok=True)
    _remove_empty_folders(folders)


def _remove_empty_folders(folders) -> None:
    """Remove the folders that are empty, deepest first (a parent emptied by its child's
    removal goes too)."""
    for folder in sorted(set(map(Path, folders)), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()                      # only when empty


@contextmanager
def atomic_folder(folder: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``folder``; on success, move it onto ``folder``.

    A folder already at the final name is an incomplete leftover and is removed first.
    ``os.replace`` raises ``OSError`` when another process put a folder there in between;
    callers that race (shared caches) check whether that folder is a valid result.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=owner_prefix(folder.name), dir=folder.parent))
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


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (one of another user counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temporary_owner(path: Path) -> tuple[str, int] | None:
    """``(host, pid)`` recorded in a temporary name of :func:`atomic_path` or
    :func:`atomic_folder`; None for any other name."""
    match = _OWNED.match(Path(path).name)
    return (match["host"], int(match["pid"])) if match else None


def _temporaries(root: Path) -> Iterator[Path]:
    """Hidden temporary files and folders under ``root`` (not inside temporary folders)."""
    for folder, dirs, files in os.walk(root):
        for name in [*files, *dirs]:
            if name.startswith(".") and (_OWNED.match(name) or _UNOWNED.match(name)):
                yield Path(folder) / name
        dirs[:] = [d for d in dirs if not (d.startswith(".") and TMP_MARK in d)]


def remove_stale_temporaries(root: Path) -> list[Path]:
    """Remove the temporaries under ``root`` whose owning process is gone.

    A temporary is removed when its name records this machine and a process id that no
    longer runs. Temporaries of live processes are left alone; so are those of other
    machines (their processes cannot be seen from here) and those of older llmfbn
    versions (no owner recorded): the log lists them.

    Returns
    -------
    removed : list of pathlib.Path
        The temporaries removed.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    host, removed, unknown = host_label(), [], []
    for path in _temporaries(root):
        owner = temporary_owner(path)
        if owner is None or owner[0] != host:
            unknown.append(path)
        elif not process_alive(owner[1]):
            _remove(path)
            removed.append(path)
    if removed:
        LOGGER.info("Removed %d temporary file(s) of killed runs under %s", len(removed), root)
    if unknown:
        # info, not a warning: parallel jobs on other nodes of a cluster write there now
        LOGGER.info("%d temporary file(s) under %s belong to runs on other machines or to "
                    "older llmfbn versions and were left in place (e.g. %s); remove them by "
                    "hand once those runs are over", len(unknown), root, unknown[0])
    return removed
