"""Writers of the BIDS-Derivatives files: text, JSON, TSV and NIfTI.

Every file is written atomically (:mod:`bids_app.atomic`), so a killed run never leaves a
half-written file under a final name. Names come from :mod:`bids_app.bids.naming`: standard
BIDS entities only; the rest goes into JSON sidecars. The files that describe the dataset
as a whole are written by :mod:`bids_app.bids.describe`.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nibabel.arraywriters import get_slope_inter, make_array_writer

from bids_app.atomic import atomic_path
from bids_app.bids.compression import open_write
from bids_app.bids.naming import bids_name

__all__ = ["atomic_path", "bids_name", "set_units", "write_json", "write_masked_nifti",
           "write_nifti", "write_text", "write_tsv"]


def write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: Path, data: dict) -> Path:
    return write_text(path, json.dumps(_plain(data), indent=2, sort_keys=False) + "\n")


def write_tsv(path: Path, table: pd.DataFrame) -> Path:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, na_rep="n/a", float_format="%.6g")
    return Path(path)


def set_units(img: nib.Nifti1Image) -> nib.Nifti1Image:
    """Set the header's spatial unit to mm and, on 4-D images, the 4th axis' unit to s.

    llmfbn's 4-D maps stack one volume per atom; their 4th axis keeps nibabel's step of 1,
    and the unit is set only because BIDS tools expect xyzt units on every image.
    """
    img.header.set_xyzt_units("mm", "sec" if len(img.shape) == 4 else "unknown")
    return img


def write_nifti(path: Path, img: nib.Nifti1Image) -> Path:
    """``img`` with :func:`set_units`, atomically at ``path``."""
    with atomic_path(path) as tmp:
        nib.save(set_units(img), tmp)
    return Path(path)


def write_masked_nifti(path: Path, values: np.ndarray, mask: np.ndarray,
                       affine: np.ndarray) -> Path:
    """``write_nifti(path, unmask_img(values, mask, affine))``, the same bytes, written one
    volume at a time: (n_maps, n_voxels) or (n_voxels,) ``values`` never become a whole 4-D
    array in memory (277 MB for 64 maps at 2 mm).

    The header is the one nibabel writes for a float32 image (``set_units``, no scaling);
    the volumes follow in the file's (Fortran) order, gzip-compressed by
    :func:`~bids_app.bids.compression.open_write` (ISA-L where installed: the same
    decompressed bytes as ``nib.save``, a different, faster compressor).
    """
    values = np.asarray(values, dtype=np.float32)
    maps = values[None] if values.ndim == 1 else values
    shape = mask.shape if values.ndim == 1 else mask.shape + (maps.shape[0],)
    img = set_units(nib.Nifti1Image(np.broadcast_to(np.float32(0), shape), affine))
    img.update_header()
    header = img.header
    header.set_slope_inter(*get_slope_inter(make_array_writer(
        np.zeros(1, np.float32), header.get_data_dtype(), header.has_data_slope,
        header.has_data_intercept)))
    volume = np.zeros(mask.shape, np.float32, order="F")
    with atomic_path(path) as tmp, open_write(tmp, gz=str(path).endswith(".gz")) as stream:
        header.write_to(stream)
        stream.write(b"\0" * (int(header.get_data_offset()) - stream.tell()))
        for row in maps:
            volume[mask] = row
            stream.write(memoryview(volume.T).cast("B"))
    return Path(path)


def _plain(value):
    """Numpy scalars/arrays and paths to JSON-friendly Python objects."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value
