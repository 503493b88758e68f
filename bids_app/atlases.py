"""Functional brain network (FBN) templates on the analysis grid.

The group level compares thresholded atom maps with FBN templates. This module turns an
atlas specification (``--fbn-atlas``) into boolean network masks over the voxels of the
analysis brain mask:

- ``"seitzman"``: Seitzman et al. (2018), 300 ROIs in 13 assigned networks, shipped with
  nilearn and usable offline. Each ROI is rasterised as a sphere of its published radius.
- ``"yeo7"`` / ``"yeo17"``: Yeo et al. (2011) networks through the Schaefer et al. (2018)
  400-parcel parcellation from TemplateFlow (needs the TemplateFlow files).
- a path: a user atlas, either a 3-D integer label image with a TSV (``index``, ``name``) next
  to it, or a 4-D image with one network per volume.

Every mask is a row of :attr:`FBNAtlas.masks`, of shape (n_networks, n_voxels), whose columns
follow ``np.flatnonzero(brain_mask)`` (C order), the order nilearn's maskers use.

An atlas on another grid is resampled (nearest neighbour) with a warning, as is one whose file
name declares another space (``tpl-``/``space-`` entity) than the data's. Its *coverage*, the
share of its network volume that lands inside the analysis brain mask (for Seitzman's ROIs:
the share of ROI centres inside it), must reach :data:`MIN_ATLAS_COVERAGE`
(:func:`check_coverage`, run by the group level before it writes): an atlas in another space
or field of view lands mostly outside the brain and would give every atom an IoU of 0.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from bids_app.errors import LlmfbnError

__all__ = ["FBNAtlas", "check_coverage", "load_fbn_atlas", "seitzman_network_names",
           "BUILTIN_ATLASES", "MIN_ATLAS_COVERAGE"]

#: Atlas names understood by :func:`load_fbn_atlas` besides a path.
BUILTIN_ATLASES = ("seitzman", "yeo7", "yeo17")

#: Smallest share of an atlas's network volume inside the analysis brain mask (ours).
MIN_ATLAS_COVERAGE = 0.5

# The 13 assigned Seitzman networks, largest (most ROIs) first; "unassigned" is dropped.
_SEITZMAN_NETWORKS = (
    "DefaultMode", "SomatomotorDorsal", "Visual", "FrontoParietal", "CinguloOpercular",
    "DorsalAttention", "Auditory", "Salience", "VentralAttention", "Reward",
    "ParietoMedial", "SomatomotorLateral", "MedialTemporalLobe",
)


@dataclass(frozen=True)
class FBNAtlas:
    """Functional brain networks as boolean masks over the analysis brain mask.

    Attributes
    ----------
    name : str
        ``"seitzman"``, ``"yeo7"``, ``"yeo17"`` or the stem of the user's file.
    network_names : tuple of str, length n_networks
        Network names, in the order of the rows of ``masks``.
    masks : ndarray of bool, shape (n_networks, n_voxels)
        ``masks[i, v]`` is True when voxel ``v`` of the brain mask (in
        ``np.flatnonzero(mask)`` order) belongs to network ``i``.
    source : str
        Where the atlas came from (file paths, citation), for sidecars and the report.
    coverage : float
        Share (0-1) of the atlas's network volume inside the brain mask (Seitzman: share
        of the ROI centres).
    """

    name: str
    network_names: tuple[str, ...]
    masks: np.ndarray
    source: str
    coverage: float = 1.0

    @property
    def n_networks(self) -> int:
        """Number of networks (rows of ``masks``)."""
        return len(self.network_names)

    @property
    def n_voxels(self) -> int:
        """Number of brain-mask voxels (columns of ``masks``)."""
        return int(self.masks.shape[1])

    @property
    def network_sizes(self) -> np.ndarray:
        """Voxel count of each network, shape (n_networks,)."""
        return self.masks.sum(axis=1)


def seitzman_network_names() -> tuple[str, ...]:
    """Return the 13 assigned networks of the Seitzman et al. (2018) ROI set.

    Returns
    -------
    tuple of str, length 13
        Network names as nilearn spells them, largest network (most ROIs) first;
        the "unassigned" label is not a network and is left out.
    """
    return _SEITZMAN_NETWORKS


def load_fbn_atlas(spec: str | os.PathLike, brain_mask_img,
                   space: str | None = None) -> FBNAtlas:
    """Load FBN templates as boolean masks over the voxels of a brain mask.

    Parameters
    ----------
    spec : str or path-like
        ``"seitzman"``, ``"yeo7"``, ``"yeo17"`` (case-insensitive) or the path of a user
        atlas: a 3-D integer label NIfTI with a TSV of the same name (``.tsv`` instead of
        ``.nii``/``.nii.gz``; columns ``index`` and ``name``, several labels may share a
        network name and are then merged), or a 4-D NIfTI with one network per volume (a
        voxel belongs to a network where the value is > 0; names from the TSV's ``name``
        column if present, else ``net01``, ``net02``, ...).
    brain_mask_img : nibabel image or path
        3-D brain mask defining the analysis grid; voxels with a value > 0 are in the brain.
    space : str or None
        The data's space (e.g. ``"MNI152NLin2009cAsym"``); an atlas whose file name declares
        another one is used with a warning.

    Returns
    -------
    FBNAtlas
        Masks of shape (n_networks, n_voxels). Image atlases on another grid are resampled
        to the mask's grid with nearest-neighbour interpolation (with a warning). Networks
        with no voxel inside the mask are dropped with a warning.

    Raises
    ------
    LlmfbnError
        Unknown name or missing file, a 3-D atlas without its TSV, TSV labels absent from
        the image, Yeo atlases whose TemplateFlow files are not available, an atlas
        with no network inside the brain mask (see also :func:`check_coverage`).
    """
    mask_img, mask = _load_mask(brain_mask_img)
    key = str(spec).strip()
    if key.lower() == "seitzman":
        return _seitzman_atlas(mask_img, mask)
    if key.lower() in ("yeo7", "yeo17"):
        _check_space("MNI152NLin2009cAsym", space, key.lower())
        return _yeo_atlas(int(key[3:]), mask_img, mask)
    path = Path(key).expanduser()
    declared = re.search(r"(?:^|_)(?:tpl|space)-([A-Za-z0-9]+)", path.name)
    if declared:
        _check_space(declared.group(1), space, str(path))
    return _user_atlas(path, mask_img, mask)


def check_coverage(atlas: FBNAtlas, min_coverage: float = MIN_ATLAS_COVERAGE) -> None:
    """Raise unless ``atlas.coverage`` reaches ``min_coverage`` (the group level's check).

    Raises
    ------
    LlmfbnError
        The atlas lies mostly outside the analysed brain mask (another space or field of
        view).
    """
    if atlas.coverage < min_coverage:
        raise LlmfbnError(
            f"FBN atlas {atlas.name!r} lies mostly outside the analysed brain mask",
            expected=f"at least {min_coverage:.0%} of the atlas's networks inside the brain "
            "mask", found=f"{atlas.coverage:.1%} inside",
            todo="give an atlas in the data's space and field of view (check --space and the "
            "atlas's affine, e.g. by overlaying it on a subject's mask)")


def _check_space(atlas_space: str, data_space: str | None, name: str) -> None:
    if data_space and atlas_space != data_space:
        _warn(f"FBN atlas {name!r} is in space {atlas_space}, the data in {data_space}: it "
              "is resampled onto the data's grid as if the spaces were the same; give an "
              f"atlas in {data_space} for exact network borders")


def _voxel_mm3(affine: np.ndarray) -> float:
    return float(abs(np.linalg.det(np.asarray(affine)[:3, :3])))


def _coverage(n_native: int, native_affine, n_inside: int, mask_img) -> float:
    """Share of an image atlas's network volume (``n_native`` voxels on its own grid) that
    the ``n_inside`` brain-mask voxels it covers on the analysis grid represent."""
    native_mm3 = n_native * _voxel_mm3(native_affine)
    return min(1.0, n_inside * _voxel_mm3(mask_img.affine) / native_mm3) if native_mm3 else 0.0


# --------------------------------------------------------------------------- helpers


def _warn(message: str) -> None:
    """UserWarning attributed to the first caller outside this module."""
    frame, level = sys._getframe(1), 2
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)


def _load_mask(brain_mask_img) -> tuple[nib.Nifti1Image, np.ndarray]:
    if isinstance(brain_mask_img, (str, os.PathLike)):
        brain_mask_img = nib.load(str(brain_mask_img))
    data = np.asanyarray(brain_mask_img.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise LlmfbnError(
            "The brain mask must be a 3-D image",
            expected="a 3-D NIfTI brain mask (the analysis grid)",
            found=f"an image of shape {data.shape}",
            todo="pass the subject's or the group's 3-D brain mask",
        )
    mask = data > 0
    if not mask.any():
        raise LlmfbnError("The brain mask is empty", expected="at least one voxel > 0",
                          found="no voxel > 0", todo="check the brain mask file")
    img = nib.Nifti1Image(mask.astype(np.uint8), brain_mask_img.affine)
    return img, mask


def _finish(name, network_names, masks, source, coverage: float) -> FBNAtlas:
    """Drop empty networks (warning) and build the atlas."""
    masks = np.asarray(masks, dtype=bool)
    sizes = masks.sum(axis=1)
    empty = [n for n, s in zip(network_names, sizes) if s == 0]
    if empty:
        _warn(f"FBN atlas {name!r}: networks with no voxel inside the brain mask on this "
              f"grid are dropped: {', '.join(empty)}")
    keep = sizes > 0
    if not keep.any():
        found = f"{len(network_names)} networks, all empty on the analysis grid"
        raise LlmfbnError(f"FBN atlas {name!r} has no network inside the brain mask",
                          expected="networks that overlap the brain mask", found=found,
                          todo="check that the atlas and the data are in the same space "
                          "(e.g. MNI152)")
    names = tuple(n for n, k in zip(network_names, keep) if k)
    masks = np.ascontiguousarray(masks[keep])
    masks.setflags(write=False)
    return FBNAtlas(name=name, network_names=names, masks=masks, source=source,
                    coverage=float(coverage))


def _mask_world_coords(mask_img, mask) -> np.ndarray:
    """World (mm) coordinates of the mask voxels, shape (n_voxels, 3), flatnonzero order."""
    ijk = np.column_stack(np.nonzero(mask))  # C order, same as np.flatnonzero
    return nib.affines.apply_affine(mask_img.affine, ijk)


_SEITZMAN_SOURCE = (
    "Seitzman et al. (2018) NeuroImage 206:116290, 300 ROIs via "
    "nilearn.datasets.fetch_coords_seitzman_2018; spheres of each ROI's radius (mm) "
    "rasterised on the analysis grid, overlaps resolved to the nearest ROI centre"
)


def _seitzman_atlas(mask_img, mask) -> FBNAtlas:
    from nilearn import datasets
    from scipy.spatial import cKDTree

    bunch = datasets.fetch_coords_seitzman_2018()
    centres_mm = bunch.rois[["x", "y", "z"]].to_numpy(dtype=float)
    radii_mm = np.asarray(bunch.radius, dtype=float)
    roi_networks = np.asarray(bunch.networks).astype(str)
    assigned = roi_networks != "unassigned"
    centres_mm, radii_mm, roi_networks = (
        centres_mm[assigned], radii_mm[assigned], roi_networks[assigned])

    coords_mm = _mask_world_coords(mask_img, mask)
    tree = cKDTree(coords_mm)
    # One ball query per ROI (300, not per voxel); a tiny tolerance keeps voxels lying
    # exactly on a sphere's surface despite rounding in the affine.
    hits = tree.query_ball_point(centres_mm, r=radii_mm + 1e-6)
    roi_idx = np.repeat(np.arange(len(hits)), [len(h) for h in hits])
    vox_idx = (np.concatenate([np.asarray(h, dtype=np.intp) for h in hits])
               if roi_idx.size else np.zeros(0, dtype=np.intp))
    dist_mm = np.linalg.norm(coords_mm[vox_idx] - centres_mm[roi_idx], axis=1)
    # A voxel inside several spheres goes to the nearest centre: sort by (voxel, distance)
    # and keep the first row of each voxel.
    order = np.lexsort((dist_mm, vox_idx))
    vox_sorted = vox_idx[order]
    first = np.ones(vox_sorted.size, dtype=bool)
    first[1:] = vox_sorted[1:] != vox_sorted[:-1]
    vox_won = vox_sorted[first]
    net_won = roi_networks[roi_idx[order][first]]

    names = seitzman_network_names()
    net_index = {n: i for i, n in enumerate(names)}
    masks = np.zeros((len(names), coords_mm.shape[0]), dtype=bool)
    masks[np.array([net_index[n] for n in net_won], dtype=np.intp), vox_won] = True
    return _finish("seitzman", names, masks, _SEITZMAN_SOURCE,
                   _centres_inside(centres_mm, mask_img, mask))


def _centres_inside(centres_mm: np.ndarray, mask_img, mask) -> float:
    """Share of the points ``centres_mm`` (n, 3) whose nearest voxel is in the mask."""
    ijk = np.rint(nib.affines.apply_affine(np.linalg.inv(mask_img.affine),
                                           centres_mm)).astype(int)
    ok = np.all((ijk >= 0) & (ijk < np.array(mask.shape)), axis=1)
    inside = np.zeros(len(ijk), dtype=bool)
    inside[ok] = mask[tuple(ijk[ok].T)]
    return float(inside.mean()) if len(inside) else 0.0


_YEO_TODO = (
    "set TEMPLATEFLOW_HOME to a folder pre-filled with these TemplateFlow files (as "
    "fMRIPrep's container does), or run once with internet access so TemplateFlow can "
    "download them, or use `--fbn-atlas seitzman` (works offline) or `--fbn-atlas PATH` "
    "with your own atlas"
)


def _templateflow_file(n_networks: int, **query) -> Path:
    label = f"Schaefer2018 desc-400Parcels{n_networks}Networks {query.get('extension')}"
    try:
        import templateflow.api as tflow
        found = tflow.get("MNI152NLin2009cAsym", atlas="Schaefer2018",
                          desc=f"400Parcels{n_networks}Networks", suffix="dseg", **query)
    except Exception as exc:  # no network, read-only home, ...: all mean "not available"
        raise LlmfbnError(
            f"Yeo {n_networks}-network atlas needs TemplateFlow files that are not available "
            "here", expected=f"the TemplateFlow file MNI152NLin2009cAsym {label}",
            found=f"TemplateFlow could not provide it ({type(exc).__name__}: {exc})",
            todo=_YEO_TODO) from exc
    if isinstance(found, (list, tuple)):
        found = found[0] if len(found) == 1 else None
    path = Path(found) if found else None
    if path is None or not path.is_file() or path.stat().st_size == 0:
        raise LlmfbnError(
            f"Yeo {n_networks}-network atlas needs TemplateFlow files that are not available "
            "here", expected=f"the TemplateFlow file MNI152NLin2009cAsym {label}",
            found=("no matching file" if path is None else
                   f"{path} is missing or a 0-byte placeholder (not downloaded)"),
            todo=_YEO_TODO)
    return path


def _yeo_atlas(n_networks: int, mask_img, mask) -> FBNAtlas:
    dseg_path = _templateflow_file(n_networks, resolution=2, extension=".nii.gz")
    tsv_path = _templateflow_file(n_networks, extension=".tsv")
    table = _read_label_tsv(tsv_path, need_index=True)
    parts = table["name"].astype(str).str.split("_")
    if not (parts.str.len() >= 3).all():
        raise LlmfbnError(f"Unexpected Schaefer2018 label names in {tsv_path}",
                          expected="names like '7Networks_LH_Vis_1'",
                          found=f"e.g. {table['name'].iloc[0]!r}",
                          todo="re-download the TemplateFlow files")
    table = table.assign(name=parts.str[2])
    source = (f"Yeo et al. (2011) {n_networks} networks via the Schaefer et al. (2018) "
              f"400-parcel parcellation, TemplateFlow: {dseg_path}")
    return _label_atlas(f"yeo{n_networks}", nib.load(str(dseg_path)), table, mask_img, mask,
                        source, tsv_path)


def _atlas_tsv_path(path: Path) -> Path:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return path.with_name(name[: -len(suffix)] + ".tsv")
    return path.with_suffix(".tsv")


def _atlas_stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _read_label_tsv(tsv_path: Path, need_index: bool) -> pd.DataFrame:
    try:
        table = pd.read_csv(tsv_path, sep="\t")
    except Exception as exc:
        raise LlmfbnError(f"Cannot read the atlas label table {tsv_path}",
                          expected="a tab-separated file with a header row",
                          found=f"{type(exc).__name__}: {exc}",
                          todo="fix or replace the TSV") from exc
    needed = ["index", "name"] if need_index else ["name"]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise LlmfbnError(f"The atlas label table {tsv_path} lacks columns {missing}",
                          expected=f"columns {needed}", found=f"columns {list(table.columns)}",
                          todo="add the missing columns (tab-separated, header row)")
    if table["name"].isna().any():
        raise LlmfbnError(f"The atlas label table {tsv_path} has rows without a name",
                          expected="a network name on every row",
                          found=f"{int(table['name'].isna().sum())} empty names",
                          todo="fill in the names")
    if need_index:
        index = pd.to_numeric(table["index"], errors="coerce")
        if index.isna().any() or not np.all(np.mod(index, 1) == 0):
            raise LlmfbnError(f"The atlas label table {tsv_path} has non-integer indices",
                              expected="integer label values in column 'index'",
                              found=f"{table['index'].tolist()[:10]}",
                              todo="use the integer values of the label image")
        table = table.assign(index=index.astype(np.int64))
    return table


def _on_grid(img, mask_img, name: str) -> np.ndarray:
    """Image data on the mask's grid (nearest neighbour, with a warning), unchanged when the
    grids match."""
    same = (img.shape[:3] == mask_img.shape[:3]
            and np.allclose(img.affine, mask_img.affine, atol=1e-4))
    if not same:
        from nilearn.image import resample_to_img

        _warn(f"FBN atlas {name!r} is on another grid than the data (shape {img.shape[:3]} "
              f"vs {mask_img.shape[:3]}, voxel {_voxel_mm3(img.affine):.3g} vs "
              f"{_voxel_mm3(mask_img.affine):.3g} mm3, first voxel at "
              f"{np.round(img.affine[:3, 3], 1).tolist()} vs "
              f"{np.round(mask_img.affine[:3, 3], 1).tolist()} mm): resampled with nearest "
              "neighbour")
        img = resample_to_img(img, mask_img, interpolation="nearest",
                              force_resample=True, copy_header=True)
    return np.asanyarray(img.dataobj)


def _label_atlas(name, label_img, table, mask_img, mask, source, tsv_path) -> FBNAtlas:
    labels = np.asanyarray(label_img.dataobj)
    if labels.ndim == 4 and labels.shape[3] == 1:
        labels = labels[..., 0]
        label_img = nib.Nifti1Image(labels, label_img.affine)
    if not np.all(np.isfinite(labels)) or not np.all(np.mod(labels, 1) == 0):
        raise LlmfbnError(f"The label atlas {name!r} is not an integer label image",
                          expected="integer label values (0 = background)",
                          found="non-integer values", todo="pass a label (dseg) image")
    if (table["index"] < 0).any():
        raise LlmfbnError(f"The atlas label table {tsv_path} has negative indices",
                          expected="label values >= 1 (0 = background)",
                          found=f"{sorted(table.loc[table['index'] < 0, 'index'])[:10]}",
                          todo="use the label values of the image")
    table = table[table["index"] != 0]  # 0 is background by convention, never a network
    present = np.unique(labels.astype(np.int64))
    absent = sorted(set(table["index"]) - set(present.tolist()))
    if absent:
        raise LlmfbnError(f"Labels listed in {tsv_path} are not in the atlas image",
                          expected="every 'index' of the TSV to occur in the image",
                          found=f"missing labels {absent[:20]}",
                          todo="check that the TSV belongs to this image")
    unnamed = sorted(set(present.tolist()) - set(table["index"]) - {0})
    if unnamed:
        _warn(f"FBN atlas {name!r}: labels {unnamed[:20]} have no row in {tsv_path} and "
              "are ignored")
    n_native = int(np.isin(labels, table["index"].to_numpy()).sum())
    grid_labels = _on_grid(label_img, mask_img, name).astype(np.int64)[mask]  # (n_voxels,)
    network_names = tuple(dict.fromkeys(table["name"].astype(str)))  # first-appearance order
    # Labels of one network are merged: label value -> network row, via a lookup table.
    lut = np.full(int(max(present.max(), table["index"].max())) + 2, -1, dtype=np.intp)
    net_of = {n: i for i, n in enumerate(network_names)}
    lut[table["index"].to_numpy()] = [net_of[n] for n in table["name"].astype(str)]
    voxel_net = lut[np.clip(grid_labels, -1, lut.size - 1)]
    voxel_net[grid_labels < 0] = -1
    masks = np.zeros((len(network_names), grid_labels.size), dtype=bool)
    inside = np.flatnonzero(voxel_net >= 0)
    masks[voxel_net[inside], inside] = True
    return _finish(name, network_names, masks, source,
                   _coverage(n_native, label_img.affine, inside.size, mask_img))


def _user_atlas(path: Path, mask_img, mask) -> FBNAtlas:
    if not path.is_file():
        raise LlmfbnError(
            f"FBN atlas {str(path)!r} is neither a known atlas name nor an existing file",
            expected=f"one of {', '.join(BUILTIN_ATLASES)} or the path of a NIfTI atlas",
            found=f"{str(path)!r}" + (" (a folder)" if path.exists() else " (does not exist)"),
            todo="check the spelling of --fbn-atlas")
    try:
        img = nib.load(str(path))
        data_shape = img.shape
    except Exception as exc:
        raise LlmfbnError(f"Cannot read the FBN atlas {path}",
                          expected="a NIfTI image (.nii or .nii.gz)",
                          found=f"{type(exc).__name__}: {exc}",
                          todo="pass a 3-D label or 4-D network NIfTI") from exc
    name = _atlas_stem(path)
    tsv_path = _atlas_tsv_path(path)
    is_4d = len(data_shape) == 4 and data_shape[3] > 1
    if len(data_shape) not in (3, 4):
        raise LlmfbnError(f"The FBN atlas {path} has an unexpected shape",
                          expected="a 3-D label image or a 4-D image (one network per volume)",
                          found=f"shape {data_shape}", todo="pass a 3-D or 4-D NIfTI")
    if not is_4d:
        if not tsv_path.is_file():
            raise LlmfbnError(
                f"The 3-D label atlas {path} has no label table next to it",
                expected=f"a TSV {tsv_path} with columns 'index' and 'name'",
                found="no such file",
                todo="write the TSV (one row per label value; rows sharing a name are merged)")
        table = _read_label_tsv(tsv_path, need_index=True)
        return _label_atlas(name, img, table, mask_img, mask, f"user atlas {path}", tsv_path)

    n_volumes = data_shape[3]
    if tsv_path.is_file():
        names = tuple(_read_label_tsv(tsv_path, need_index=False)["name"].astype(str))
        if len(names) != n_volumes:
            raise LlmfbnError(f"The label table {tsv_path} does not match the 4-D atlas {path}",
                              expected=f"{n_volumes} rows (one per volume)",
                              found=f"{len(names)} rows", todo="one name per volume, in order")
        if len(set(names)) != len(names):
            raise LlmfbnError(f"The label table {tsv_path} repeats network names",
                              expected="one distinct name per volume",
                              found=f"names {list(names)}", todo="make the names unique")
    else:
        names = tuple(f"net{i + 1:02d}" for i in range(n_volumes))
    native = np.nan_to_num(np.asanyarray(img.dataobj)) > 0
    maps = _on_grid(img, mask_img, name)  # (x, y, z, n_networks)
    masks = np.stack([np.nan_to_num(maps[..., i][mask]) > 0 for i in range(n_volumes)])
    coverage = _coverage(int(native.any(axis=3).sum()), img.affine,
                         int(masks.any(axis=0).sum()), mask_img)
    return _finish(name, names, masks, f"user atlas {path}", coverage)
