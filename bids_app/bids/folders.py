"""The folders of a run, checked before anything is written: where they lie, whether they
can be written, and whether their file systems have room for what the run will write."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from bids_app.atomic import owner_prefix
from bids_app.errors import LlmfbnError

__all__ = ["check_folders", "check_free_space", "check_writable", "inside"]

GIB = 2 ** 30


def inside(path: Path, parent: Path) -> bool:
    """Whether ``path`` is ``parent`` or lies below it (symbolic links resolved)."""
    try:
        Path(path).resolve().relative_to(Path(parent).resolve())
    except ValueError:
        return False
    return True


def _nearest_existing(path: Path) -> Path:
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(folder: Path, what: str, option: str) -> None:
    """Raise unless ``folder`` can be created (if missing) and written into.

    Nothing is created: a missing folder is judged by its nearest existing parent; an
    existing one by creating and removing a hidden temporary file in it.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise LlmfbnError(f"the {what} path exists and is not a folder", found=str(folder),
                          todo=f"choose a folder path for {option}")
    base = _nearest_existing(folder)
    problem = None
    if not os.access(base, os.W_OK | os.X_OK):
        problem = f"no write permission on {base}"
    elif folder.is_dir():
        try:
            fd, probe = tempfile.mkstemp(prefix=owner_prefix("write-check"), dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            problem = f"{type(err).__name__}: {err.strerror or err}"
    if problem:
        raise LlmfbnError(f"the {what} cannot be written", expected=f"a writable {option}",
                          found=f"{folder}: {problem}",
                          todo=f"choose a writable {option} (or fix its permissions; inside "
                          "a container, check that the bind mount is not read-only)")


def check_folders(config, *, work: bool) -> None:
    """Where OUTPUT_DIR (and with ``work`` the work directory) lie, and that they can be
    written. OUTPUT_DIR may lie inside BIDS_DIR only under ``BIDS_DIR/derivatives/``."""
    bids_dir, output_dir = config.bids_dir, config.output_dir
    if not bids_dir.is_dir():
        raise LlmfbnError(
            "the BIDS dataset folder does not exist",
            expected="BIDS_DIR to be the root folder of a BIDS dataset (with "
            "dataset_description.json and sub-*/ folders)",
            found=f"no folder at {bids_dir}",
            todo="check the first argument (inside a container, check the -v/-B bind mount)")
    suggestion = bids_dir / "derivatives" / "llmfbn"
    if output_dir.resolve() == bids_dir.resolve():
        raise LlmfbnError(
            "the output folder is the input BIDS folder; llmfbn never writes into the raw data",
            found=f"OUTPUT_DIR = BIDS_DIR = {bids_dir}",
            todo=f"use a separate folder, e.g. {suggestion}")
    if inside(bids_dir, output_dir):
        raise LlmfbnError(
            "the BIDS folder lies inside the output folder",
            found=f"BIDS_DIR {bids_dir} inside OUTPUT_DIR {output_dir}",
            todo="choose an output folder outside the input dataset or under its derivatives/")
    if inside(output_dir, bids_dir) and not inside(output_dir, bids_dir / "derivatives"):
        raise LlmfbnError(
            "the output folder lies inside the raw BIDS dataset; llmfbn never writes into "
            "the raw data", expected="OUTPUT_DIR outside BIDS_DIR or under BIDS_DIR/derivatives/",
            found=f"OUTPUT_DIR {output_dir}", todo=f"use e.g. {suggestion}")
    check_writable(output_dir, "output folder", "OUTPUT_DIR")
    if not work:
        return
    if inside(config.work_dir, bids_dir) and not inside(config.work_dir,
                                                        bids_dir / "derivatives"):
        raise LlmfbnError(
            "the work directory is inside the input BIDS folder",
            found=f"--work-dir {config.work_dir}",
            todo="pass --work-dir outside the dataset (e.g. a scratch folder)")
    check_writable(config.work_dir, "work directory", "--work-dir")


def check_free_space(needs: dict[Path, tuple[int, str]]) -> None:
    """Raise unless each file system has room for what will be written on it.

    Parameters
    ----------
    needs : dict
        {folder: (bytes, what)}: the estimated bytes a run writes under each folder, and
        what they are (for the message). Folders on one file system add up.
    """
    by_device: dict[int, list] = {}
    for folder, (n_bytes, what) in needs.items():
        base = _nearest_existing(folder)
        by_device.setdefault(base.stat().st_dev, []).append((base, folder, n_bytes, what))
    for entries in by_device.values():
        need = sum(e[2] for e in entries)
        free = shutil.disk_usage(entries[0][0]).free
        if need > free:
            raise LlmfbnError(
                "not enough free disk space for this run",
                expected=f"about {need / GIB:.2f} GiB free: "
                + "; ".join(f"{what} under {folder} ({n / GIB:.2f} GiB)"
                            for _, folder, n, what in entries),
                found=f"{free / GIB:.2f} GiB free on the file system of {entries[0][0]}",
                todo="free some space, or choose OUTPUT_DIR / --work-dir on a larger disk")
