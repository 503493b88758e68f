"""The files of a run checked before anything is written: every byte of the images the run
will read, their headers and grids, and the lengths of the series that must match.

Reading an image with nibabel only takes the bytes it needs, so a damaged gzip (bad bytes
or a cut end) could otherwise go unseen (nibabel never reaches the CRC at the end of the
stream). :func:`check_run_inputs` decompresses each brain mask once, in blocks of
:data:`GZIP_BLOCK_BYTES`, so the CRC is checked. The BOLD series are read in full, to the
CRC, by the participant level itself (:func:`bids_app.bids.images.read_bold`), inside its
deferred writes (a damaged series met then leaves no output); here only their gzip
trailer is checked against the header, which catches a file cut short before any long
step, without decompressing every run twice.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bids_app.bids.compression import GZIP_ERRORS, open_read
from bids_app.bids.images import AFFINE_ATOL_MM, load_image, unreadable
from bids_app.bids.layout import TR_RTOL, RunFiles
from bids_app.errors import LlmfbnError

__all__ = ["GZIP_BLOCK_BYTES", "check_image_bytes", "check_run_inputs", "check_series_bytes",
           "header_t_r_s"]

#: Bytes decompressed at a time when checking a gzip stream (memory stays flat).
GZIP_BLOCK_BYTES = 1 << 24

#: Seconds per unit of the NIfTI time units.
_SECONDS = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}


def _stated_bytes(img) -> int:
    """Bytes of a NIfTI file (decompressed) as its header states them: where nibabel
    starts reading the data (the file's ``vox_offset``, kept by the image's data object:
    a loaded header's own ``vox_offset`` reads 0) plus the data."""
    header = img.header
    return int(img.dataobj.offset) + int(
        np.prod(header.get_data_shape()) * header.get_data_dtype().itemsize)


def check_image_bytes(path: Path) -> None:
    """Raise a clear :class:`LlmfbnError` naming ``path`` unless every byte can be read.

    ``.nii.gz``: the whole gzip stream is decompressed (CRC and length checked); ``.nii``:
    the file holds at least the header's ``vox_offset`` plus the data the header announces.
    """
    path = Path(path)
    if path.name.endswith(".gz"):
        try:
            with open_read(path) as stream:
                while stream.read(GZIP_BLOCK_BYTES):
                    pass
        except (OSError, *GZIP_ERRORS) as err:
            raise unreadable(path, err) from err
        return
    needed = _stated_bytes(load_image(path))
    size = path.stat().st_size
    if size < needed:
        raise unreadable(path, EOFError(f"{size} bytes, the header announces {needed}"))


def check_series_bytes(path: Path) -> None:
    """:func:`check_image_bytes` for a series that :func:`~bids_app.bids.images.read_bold`
    reads in full later (and checks the CRC of then): a ``.nii.gz`` whose gzip trailer
    states the length the header announces (vox_offset plus the data, modulo 2**32) is not
    decompressed here, so the participant level reads each run once. A file cut short
    fails this test (its last bytes are no trailer); so does a valid file of several gzip
    members (the trailer is the last member's), which is then decompressed in full.
    """
    path = Path(path)
    if path.name.endswith(".gz"):
        needed = _stated_bytes(load_image(path))
        try:
            with path.open("rb") as raw:
                raw.seek(-4, 2)
                stated = int.from_bytes(raw.read(4), "little")
        except OSError as err:
            raise unreadable(path, err) from err
        if stated == needed % 2**32:
            return
    check_image_bytes(path)


def header_t_r_s(path: Path) -> float | None:
    """The volume step of a 4-D image's header in seconds, or None when its time unit is
    not set (``unknown``)."""
    header = load_image(path).header
    unit = header.get_xyzt_units()[1]
    if unit not in _SECONDS or len(header.get_zooms()) < 4:
        return None
    return float(header.get_zooms()[3]) * _SECONDS[unit]


def _confound_rows(path: Path) -> int:
    try:
        return len(pd.read_csv(path, sep="\t", usecols=[0]))
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise unreadable(path, err) from err


def _check_grid(run: RunFiles) -> None:
    bold, mask = load_image(run.bold), load_image(run.mask)
    shape = mask.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise LlmfbnError(f"the brain mask of {run.name} of sub-{run.subject} is not 3-D",
                          expected="a 3-D mask", found=f"{run.mask.name}: shape {mask.shape}",
                          todo="point --derivatives at fMRIPrep's desc-brain_mask files")
    if bold.shape[:3] != shape or not np.allclose(bold.affine, mask.affine,
                                                  atol=AFFINE_ATOL_MM):
        raise LlmfbnError(
            f"the BOLD series and brain mask of {run.name} of sub-{run.subject} are on "
            "different grids", expected="the same voxel grid (shape and affine)",
            found=f"{run.bold.name} {bold.shape[:3]} vs {run.mask.name} {shape}",
            todo="use the mask fMRIPrep wrote with this BOLD series (same space and res)")


def _check_lengths(run: RunFiles) -> None:
    """Volumes of the BOLD series = rows of the confounds = volumes of the raw series."""
    rows = _confound_rows(run.confounds)
    if rows != run.n_volumes:
        raise LlmfbnError(
            f"the confounds of {run.name} of sub-{run.subject} do not match its BOLD series",
            expected=f"one row per volume: {run.n_volumes} rows ({run.bold.name})",
            found=f"{rows} rows in {run.confounds.name}",
            todo="use the confounds fMRIPrep wrote with this BOLD series (re-run fMRIPrep "
            "for this subject if one of the files was cut or replaced)")
    if run.raw_bold is not None:
        raw_shape = load_image(run.raw_bold).shape
        if len(raw_shape) == 4 and raw_shape[3] != run.n_volumes:
            raise LlmfbnError(
                f"the raw and preprocessed BOLD series of {run.name} of sub-{run.subject} "
                "have different lengths",
                expected=f"{raw_shape[3]} volumes, as in {run.raw_bold.name}",
                found=f"{run.n_volumes} volumes in {run.bold.name}",
                todo="re-run fMRIPrep on this dataset, or point --derivatives at its output "
                "for these raw data")


def _check_header_t_r(run: RunFiles) -> None:
    step_s = header_t_r_s(run.bold)
    if step_s is not None and abs(step_s - run.t_r_s) > TR_RTOL * run.t_r_s:
        raise LlmfbnError(
            f"the NIfTI header of {run.bold.name} disagrees with its RepetitionTime",
            expected=f"a volume step of {run.t_r_s:g} s (RepetitionTime of the sidecars)",
            found=f"{step_s:g} s in the header (pixdim[4] and xyzt units)",
            todo="correct the sidecar or the header, whichever is wrong")


def check_run_inputs(run: RunFiles) -> None:
    """Everything a run will read, checked before any output is written.

    The brain mask is read to its last byte (:func:`check_image_bytes`), the BOLD series'
    gzip trailer agrees with its header (:func:`check_series_bytes`; its CRC is checked
    when it is read: damaged bytes inside the stream stop the run then, before its outputs
    are in place; the participant pre-flight reads it to the end when the atoms must be
    computed first), they share one grid, the mask is 3-D, the confounds have
    one row per BOLD volume, the raw series has as many volumes as the preprocessed one,
    and a header that states a time unit agrees with RepetitionTime.

    Raises
    ------
    LlmfbnError
        Naming the file, what was expected and what was found.
    """
    _check_grid(run)
    _check_lengths(run)
    _check_header_t_r(run)
    check_image_bytes(run.mask)
    check_series_bytes(run.bold)
