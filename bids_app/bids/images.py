"""Image helpers shared by the levels: reading images with clear errors, masks, masking and
unmasking on one voxel grid."""

from __future__ import annotations

import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_app.errors import LlmfbnError

#: Affines closer than this (mm) are the same grid.
AFFINE_ATOL_MM = 1e-3

#: What reading a damaged image raises: truncated gzip (EOFError), bad gzip bytes
#: (zlib.error, gzip.BadGzipFile is an OSError), a short or unreadable file (OSError,
#: ValueError), a file that is no image (ImageFileError).
READ_ERRORS = (OSError, EOFError, zlib.error, ValueError, nib.filebasedimages.ImageFileError)
_REREAD = "replace the file with an intact copy (re-copy or re-download it, or re-run " \
          "the tool that made it, e.g. fMRIPrep)"


def unreadable(path: Path, err: BaseException) -> LlmfbnError:
    """The error for an image or table that cannot be read: names the file and the cause."""
    return LlmfbnError(f"cannot read {path}: the file is damaged, incomplete or not an image",
                       found=f"{type(err).__name__}: {err}", todo=_REREAD)


def load_image(path: Path):
    """``nibabel.load(path)`` (header only), with :func:`unreadable` errors."""
    try:
        return nib.load(str(path))
    except READ_ERRORS as err:
        raise unreadable(path, err) from err


def image_data(path: Path, dtype=np.float32) -> np.ndarray:
    """The voxel values of the image at ``path``, with :func:`unreadable` errors."""
    img = load_image(path)
    try:
        return np.asarray(img.dataobj, dtype=dtype)
    except READ_ERRORS as err:
        raise unreadable(path, err) from err


def bold_volumes(path: Path) -> int:
    """Number of volumes of a 4-D BOLD series (from its header)."""
    shape = load_image(path).shape
    if len(shape) != 4 or shape[3] < 1:
        raise LlmfbnError(f"{Path(path).name} is not a 4-D BOLD series",
                          expected="a 4-D image (x, y, z, volumes)", found=f"shape {shape}",
                          todo="point --derivatives at fMRIPrep's preprocessed BOLD series")
    return int(shape[3])


def same_grid(img, shape: tuple, affine: np.ndarray) -> bool:
    """Whether ``img`` has the 3-D ``shape`` and ``affine`` (within ``AFFINE_ATOL_MM``)."""
    return img.shape[:3] == tuple(shape[:3]) and np.allclose(img.affine, affine,
                                                             atol=AFFINE_ATOL_MM)


def intersect_masks(paths: list[Path], names: list[str], problem: str,
                    todo: str) -> tuple[nib.Nifti1Image, np.ndarray]:
    """Voxels inside every mask in ``paths`` (all on one grid).

    Returns the intersection as a uint8 image and as a 3-D boolean array. Masks on different
    grids raise :class:`LlmfbnError` with ``problem`` and ``todo``; ``names`` label the masks
    in the message.
    """
    ref = load_image(paths[0])
    mask = image_data(paths[0]) > 0
    for path, name in zip(paths[1:], names[1:]):
        img = load_image(path)
        if img.shape != ref.shape or not np.allclose(img.affine, ref.affine,
                                                     atol=AFFINE_ATOL_MM):
            raise LlmfbnError(problem, found=f"{names[0]} {ref.shape} vs {name} {img.shape}",
                              todo=todo)
        mask &= image_data(path) > 0
    return nib.Nifti1Image(mask.astype(np.uint8), ref.affine), mask


def masked_series(path: Path, mask: np.ndarray, mask_img) -> np.ndarray:
    """(n_volumes, n_voxels) float32 values of a 4-D image inside ``mask``."""
    return read_bold(path, mask, mask_img)[0]


def read_bold(path: Path, mask: np.ndarray, mask_img) -> tuple[np.ndarray, np.ndarray]:
    """A 4-D BOLD image read once: its (n_volumes, n_voxels) float32 values inside ``mask``
    and its (x, y, z) float32 temporal mean over the whole field of view (for the report's
    mask check)."""
    img = load_image(path)
    if not same_grid(img, mask.shape, mask_img.affine):
        raise LlmfbnError(f"{Path(path).name} and its brain mask are on different grids",
                          found=f"{img.shape[:3]} vs {mask.shape}",
                          todo="re-run fMRIPrep or check --space")
    try:
        data = np.asarray(img.dataobj, dtype=np.float32)
    except READ_ERRORS as err:
        raise unreadable(path, err) from err
    return np.ascontiguousarray(data[mask].T), data.mean(axis=3, dtype=np.float64).astype(
        np.float32)


def masked_maps(path: Path, mask: np.ndarray) -> np.ndarray:
    """(n_maps, n_voxels) float32 values of a 4-D stack of maps inside ``mask``."""
    return image_data(path)[mask].T


def unmask(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(n_maps, n_voxels) or (n_voxels,) -> 4-D (x, y, z, n_maps) or 3-D float32 volume."""
    values = np.asarray(values, dtype=np.float32)
    if values.ndim == 1:
        vol = np.zeros(mask.shape, np.float32)
        vol[mask] = values
        return vol
    vol = np.zeros(mask.shape + (values.shape[0],), np.float32)
    vol[mask] = values.T
    return vol


def unmask_img(values: np.ndarray, mask: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    """:func:`unmask` as a NIfTI image on ``affine``."""
    return nib.Nifti1Image(unmask(values, mask), affine)
