"""Image helpers shared by the levels: reading images with clear errors, masks, masking and
unmasking on one voxel grid."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.volumeutils import apply_read_scaling

from bids_app.bids.compression import GZIP_ERRORS, open_read
from bids_app.errors import LlmfbnError

#: Affines closer than this (mm) are the same grid.
AFFINE_ATOL_MM = 1e-3

#: Bytes of a BOLD series decompressed at a time by :func:`read_bold`.
READ_BLOCK_BYTES = 1 << 25

#: What reading a damaged image raises: truncated gzip (EOFError), bad gzip bytes
#: (zlib.error, ISA-L's error, gzip.BadGzipFile is an OSError), a short or unreadable file
#: (OSError, ValueError), a file that is no image (ImageFileError).
READ_ERRORS = (OSError, ValueError, nib.filebasedimages.ImageFileError, *GZIP_ERRORS)
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
    mask check).

    The values are those of ``np.asarray(img.dataobj, dtype=np.float32)[mask].T`` (nibabel's
    scaling) and the mean that of ``.mean(axis=3, dtype=np.float64)``, bit for bit, but the
    series is decompressed :data:`READ_BLOCK_BYTES` at a time: the whole 4-D array is
    never held (1.3 GB for 300 volumes at 2 mm). A ``.nii.gz`` is read to its end, so its
    CRC is checked here (a damaged file raises :func:`unreadable`)."""
    img = load_image(path)
    if not same_grid(img, mask.shape, mask_img.affine):
        raise LlmfbnError(f"{Path(path).name} and its brain mask are on different grids",
                          found=f"{img.shape[:3]} vs {mask.shape}",
                          todo="re-run fMRIPrep or check --space")
    try:
        return _stream_masked(path, img, mask, with_mean=True)
    except READ_ERRORS as err:
        raise unreadable(path, err) from err


def _as_float32(raw: np.ndarray, proxy) -> np.ndarray:
    """``raw`` on-disk values scaled as ``np.asarray(proxy, dtype=np.float32)`` scales them
    (nibabel's ``ArrayProxy``: slope and intercept cast to float32 when that is exact)."""
    slope, inter = np.asanyarray(proxy.slope), np.asanyarray(proxy.inter)
    if np.can_cast(slope, np.float32):
        slope = slope.astype(np.float32)
    if np.can_cast(inter, np.float32):
        inter = inter.astype(np.float32)
    return np.asarray(apply_read_scaling(raw, slope, inter), dtype=np.float32)


def _stream_masked(path: Path, img, mask: np.ndarray, with_mean: bool = False):
    """:func:`read_bold`'s values and (``with_mean``) mean, a block of volumes at a time,
    through :func:`~bids_app.bids.compression.open_read` (ISA-L's gzip where installed)."""
    shape = img.shape
    if len(shape) != 4:
        raise ValueError(f"a 4-D series is expected, found shape {shape}")
    n_xyz, n_volumes = int(np.prod(shape[:3])), int(shape[3])
    dtype = img.get_data_dtype()
    # mask[...] order (C) of the voxels, as positions in a volume stored in F order
    columns = np.ravel_multi_index(np.nonzero(mask), mask.shape, order="F")
    per_volume = n_xyz * dtype.itemsize
    step = max(1, READ_BLOCK_BYTES // per_volume)
    values = np.empty((n_volumes, columns.size), np.float32)
    total = np.zeros(n_xyz) if with_mean else None
    block = bytearray(step * per_volume)
    with open_read(path) as stream:
        stream.seek(int(img.dataobj.offset))
        for start in range(0, n_volumes, step):
            view = memoryview(block)[: min(step, n_volumes - start) * per_volume]
            filled = 0
            while filled < len(view):
                got = stream.readinto(view[filled:])
                if not got:
                    raise EOFError(f"the data end after {start} of {n_volumes} volumes")
                filled += got
            chunk = _as_float32(np.frombuffer(view, dtype).reshape(-1, n_xyz), img.dataobj)
            np.take(chunk, columns, axis=1, out=values[start:start + len(chunk)])
            if with_mean:
                for volume in chunk:       # in order, as numpy's mean over the 4th axis
                    total += volume
        stream.read()                      # to the end: gzip checks its CRC and length
    if not with_mean:
        return values
    mean = (total / n_volumes).astype(np.float32).reshape(shape[:3], order="F")
    return values, mean


def masked_maps(path: Path, mask: np.ndarray) -> np.ndarray:
    """(n_maps, n_voxels) float32 values of a 4-D stack of maps inside ``mask`` (a 3-D map:
    (n_voxels,)), the values of ``np.asarray(img.dataobj, np.float32)[mask].T``; a 4-D
    stack is read a block of maps at a time (never the whole 4-D array)."""
    img = load_image(path)
    if len(img.shape) != 4 or img.shape[:3] != mask.shape:
        return image_data(path)[mask].T
    try:
        return _stream_masked(path, img, mask)
    except READ_ERRORS as err:
        raise unreadable(path, err) from err


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
