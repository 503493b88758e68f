"""Tests for bids_app.atlases: FBN templates as masks over the analysis brain mask."""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_app.atlases import (
    MIN_ATLAS_COVERAGE,
    FBNAtlas,
    check_coverage,
    load_fbn_atlas,
    seitzman_network_names,
)
from bids_app.errors import LlmfbnError

AFFINE_3MM = np.array([[3.0, 0, 0, -30], [0, 3.0, 0, -30], [0, 0, 3.0, -30], [0, 0, 0, 1]])


@pytest.fixture(scope="module")
def mni_mask_4mm():
    from nilearn import datasets, image

    mask_2mm = datasets.load_mni152_brain_mask(resolution=2)
    return image.resample_img(mask_2mm, target_affine=np.diag([4.0, 4.0, 4.0]),
                              interpolation="nearest", force_resample=True, copy_header=True)


@pytest.fixture(scope="module")
def seitzman_4mm(mni_mask_4mm):
    return load_fbn_atlas("seitzman", mni_mask_4mm)


def _box_mask(shape=(20, 20, 20), margin=2):
    data = np.zeros(shape, dtype=np.uint8)
    data[margin:-margin, margin:-margin, margin:-margin] = 1
    return nib.Nifti1Image(data, AFFINE_3MM)


def _label_volume(shape=(20, 20, 20)):
    """Labels 1..5 in slabs along x; labels 1 and 2 will share a network name."""
    labels = np.zeros(shape, dtype=np.int16)
    for value, (lo, hi) in enumerate([(0, 4), (4, 8), (8, 12), (12, 16), (16, 20)], start=1):
        labels[lo:hi, 5:15, 5:15] = value
    return labels


def _write_label_atlas(tmp_path, labels, rows, name="myatlas", affine=AFFINE_3MM):
    path = tmp_path / f"{name}.nii.gz"
    nib.save(nib.Nifti1Image(labels, affine), path)
    if rows is not None:
        pd.DataFrame(rows, columns=["index", "name"]).to_csv(
            tmp_path / f"{name}.tsv", sep="\t", index=False)
    return path


# --------------------------------------------------------------------------- seitzman


def test_seitzman_network_names():
    names = seitzman_network_names()
    assert len(names) == 13 and "unassigned" not in names
    from nilearn import datasets

    assert set(names) == set(datasets.fetch_coords_seitzman_2018().networks) - {"unassigned"}


def test_seitzman_on_4mm_mni_grid(mni_mask_4mm, seitzman_4mm):
    atlas = seitzman_4mm
    mask = np.asarray(mni_mask_4mm.dataobj) > 0
    assert isinstance(atlas, FBNAtlas) and atlas.name == "seitzman"
    assert atlas.network_names == seitzman_network_names()
    assert atlas.masks.shape == (13, int(mask.sum())) and atlas.masks.dtype == bool
    sizes = atlas.masks.sum(axis=1)
    assert np.all(sizes > 0)
    assert atlas.network_names[int(np.argmax(sizes))] == "DefaultMode"
    # Networks are disjoint: overlapping spheres go to one (the nearest) ROI.
    assert atlas.masks.sum(axis=0).max() == 1
    # Each ROI sphere holds roughly (4/3)pi r^3 / 64 voxels at 4 mm: the total is bounded.
    assert sizes.sum() <= 285 * (4 / 3) * np.pi * 6.0 ** 3 / 64


def test_seitzman_voxels_only_inside_mask(mni_mask_4mm):
    """Shrinking the mask removes exactly the voxels outside it."""
    data = (np.asarray(mni_mask_4mm.dataobj) > 0)
    half = data.copy()
    half[: data.shape[0] // 2] = False  # keep one hemisphere (x < 0 is the first half)
    half_img = nib.Nifti1Image(half.astype(np.uint8), mni_mask_4mm.affine)
    full = load_fbn_atlas("seitzman", mni_mask_4mm)
    part = load_fbn_atlas("seitzman", half_img)
    assert part.masks.shape[1] == int(half.sum())
    # The same voxels, looked up in the full-mask atlas, carry the same networks.
    keep_in_full = half[data]  # positions of half-mask voxels among full-mask voxels
    assert part.network_names == full.network_names
    np.testing.assert_array_equal(part.masks, full.masks[:, keep_in_full])


@pytest.mark.filterwarnings("ignore:FBN atlas 'seitzman'")
def test_seitzman_voxel_at_roi_centre():
    """A grid voxel lying exactly at an ROI centre belongs to that ROI's network."""
    from nilearn import datasets

    bunch = datasets.fetch_coords_seitzman_2018()
    rois = bunch.rois[["x", "y", "z"]].to_numpy(float)
    networks = np.asarray(bunch.networks).astype(str)
    for roi in np.flatnonzero(networks != "unassigned")[::37]:
        centre = rois[roi]
        # 3 mm grid whose voxel (10, 10, 10) sits exactly on the centre.
        affine = np.diag([3.0, 3.0, 3.0, 1.0])
        affine[:3, 3] = centre - 30.0
        mask = nib.Nifti1Image(np.ones((21, 21, 21), dtype=np.uint8), affine)
        atlas = load_fbn_atlas("seitzman", mask)
        centre_voxel = np.ravel_multi_index((10, 10, 10), (21, 21, 21))
        owners = [n for n, m in zip(atlas.network_names, atlas.masks) if m[centre_voxel]]
        assert owners == [networks[roi]]


def test_sphere_overlap_goes_to_nearest_centre(monkeypatch):
    """Rasterisation vs a brute-force reference on ROIs whose spheres overlap.

    The real Seitzman spheres of different networks never overlap (centres are >= 10 mm
    apart), so synthetic ROIs exercise the nearest-centre rule.
    """
    from nilearn import datasets
    from sklearn.utils import Bunch

    centres = np.array([[0.0, 0.0, 0.0], [7.0, 0.0, 0.0], [3.0, 6.0, 0.0], [30.0, 30.0, 30.0]])
    radii = np.array([5, 4, 5, 5])
    networks = np.array(["DefaultMode", "Visual", "Auditory", "unassigned"])
    fake = Bunch(rois=pd.DataFrame(centres, columns=["x", "y", "z"]), radius=radii,
                 networks=networks, regions=None, description="")
    monkeypatch.setattr(datasets, "fetch_coords_seitzman_2018", lambda **kw: fake)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = -10.0
    mask = np.ones((25, 25, 20), dtype=bool)
    mask[:, :, 15:] = False  # part of the grid is outside the brain
    with pytest.warns(UserWarning, match="dropped"):
        atlas = load_fbn_atlas("seitzman", nib.Nifti1Image(mask.astype(np.uint8), affine))
    assert atlas.network_names == ("DefaultMode", "Visual", "Auditory")
    # Brute force: all voxel-to-centre distances, nearest centre among containing spheres.
    ijk = np.argwhere(mask)
    xyz = ijk + affine[:3, 3]
    dist = np.linalg.norm(xyz[:, None, :] - centres[None, :3], axis=2)[:, :3]
    inside = dist <= radii[None, :3]
    assert (inside.sum(axis=1) >= 2).sum() > 10  # the test really covers overlaps
    nearest = np.where(inside, dist, np.inf).argmin(axis=1)
    for name, net_mask in zip(atlas.network_names, atlas.masks):
        roi = int(np.flatnonzero(networks == name)[0])
        np.testing.assert_array_equal(net_mask, inside.any(axis=1) & (nearest == roi))


def test_seitzman_drops_networks_off_grid():
    """A small mask far from most ROIs keeps few networks and warns about the rest."""
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-10.0, 40.0, -10.0]  # medial prefrontal
    mask = nib.Nifti1Image(np.ones((10, 10, 10), dtype=np.uint8), affine)
    with pytest.warns(UserWarning, match="dropped"):
        atlas = load_fbn_atlas("seitzman", mask)
    assert 0 < atlas.n_networks < 13
    assert np.all(atlas.network_sizes > 0)


# --------------------------------------------------------------------------- user atlases


def test_user_3d_atlas_merges_labels(tmp_path):
    labels = _label_volume()
    rows = [(1, "A"), (2, "A"), (3, "B"), (4, "C"), (5, "D")]
    path = _write_label_atlas(tmp_path, labels, rows)
    mask_img = _box_mask()
    mask = np.asarray(mask_img.dataobj) > 0
    atlas = load_fbn_atlas(str(path), mask_img)
    assert atlas.name == "myatlas" and atlas.network_names == ("A", "B", "C", "D")
    in_mask = labels[mask]
    np.testing.assert_array_equal(atlas.masks[0], np.isin(in_mask, [1, 2]))
    np.testing.assert_array_equal(atlas.masks[1], in_mask == 3)
    np.testing.assert_array_equal(atlas.masks[3], in_mask == 5)
    assert str(path) in atlas.source


def test_user_3d_atlas_resampled_nearest(tmp_path):
    """An atlas on a 1.5 mm grid is resampled to the 3 mm mask grid by nearest neighbour."""
    from nilearn.image import resample_to_img

    fine_affine = np.diag([1.5, 1.5, 1.5, 1.0])
    fine_affine[:3, 3] = -30.0
    labels = np.zeros((40, 40, 40), dtype=np.int16)
    labels[4:20, 8:32, 8:32] = 1
    labels[20:36, 8:32, 8:32] = 2
    path = _write_label_atlas(tmp_path, labels, [(1, "left"), (2, "right")], affine=fine_affine)
    mask_img = _box_mask()
    with pytest.warns(UserWarning, match="on another grid than the data"):
        atlas = load_fbn_atlas(path, mask_img)
    reference = np.asarray(resample_to_img(nib.Nifti1Image(labels, fine_affine), mask_img,
                                           interpolation="nearest").dataobj)
    mask = np.asarray(mask_img.dataobj) > 0
    np.testing.assert_array_equal(atlas.masks[0], reference[mask] == 1)
    np.testing.assert_array_equal(atlas.masks[1], reference[mask] == 2)
    assert atlas.masks.sum() > 0


def test_user_4d_atlas_with_and_without_tsv(tmp_path):
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(20, 20, 20, 3)).astype(np.float32)
    path = tmp_path / "rsn.nii.gz"
    nib.save(nib.Nifti1Image(maps, AFFINE_3MM), path)
    mask_img = _box_mask()
    mask = np.asarray(mask_img.dataobj) > 0
    atlas = load_fbn_atlas(path, mask_img)
    assert atlas.network_names == ("net01", "net02", "net03") and atlas.name == "rsn"
    for i in range(3):
        np.testing.assert_array_equal(atlas.masks[i], maps[..., i][mask] > 0)
    pd.DataFrame({"name": ["Visual", "Motor", "DMN"]}).to_csv(tmp_path / "rsn.tsv", sep="\t",
                                                              index=False)
    atlas = load_fbn_atlas(path, mask_img)
    assert atlas.network_names == ("Visual", "Motor", "DMN")


def test_user_atlas_errors(tmp_path):
    mask_img = _box_mask()
    with pytest.raises(LlmfbnError, match="neither a known atlas"):
        load_fbn_atlas(tmp_path / "missing.nii.gz", mask_img)
    with pytest.raises(LlmfbnError, match="neither a known atlas"):
        load_fbn_atlas("yeo8", mask_img)
    labels = _label_volume()
    path = _write_label_atlas(tmp_path, labels, None, name="notsv")
    with pytest.raises(LlmfbnError, match="no label table"):
        load_fbn_atlas(path, mask_img)
    path = _write_label_atlas(tmp_path, labels, [(1, "A"), (7, "B")], name="badlabel")
    with pytest.raises(LlmfbnError, match=r"not in the atlas image(.|\n)*\[7\]"):
        load_fbn_atlas(path, mask_img)
    path = _write_label_atlas(tmp_path, labels, None, name="badcols")
    pd.DataFrame({"label": [1], "network": ["A"]}).to_csv(tmp_path / "badcols.tsv", sep="\t",
                                                         index=False)
    with pytest.raises(LlmfbnError, match="lacks columns"):
        load_fbn_atlas(path, mask_img)
    # 4-D with a TSV of the wrong length.
    nib.save(nib.Nifti1Image(np.ones((20, 20, 20, 2), np.float32), AFFINE_3MM),
             tmp_path / "four.nii.gz")
    pd.DataFrame({"name": ["x"]}).to_csv(tmp_path / "four.tsv", sep="\t", index=False)
    with pytest.raises(LlmfbnError, match="does not match"):
        load_fbn_atlas(tmp_path / "four.nii.gz", mask_img)
    # A file that is not a NIfTI.
    (tmp_path / "junk.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(LlmfbnError, match="Cannot read"):
        load_fbn_atlas(tmp_path / "junk.nii.gz", mask_img)
    # An atlas entirely outside the brain mask.
    outside = np.zeros((20, 20, 20), dtype=np.int16)
    outside[0, 0, 0] = 1
    path = _write_label_atlas(tmp_path, outside, [(1, "A")], name="outside")
    with pytest.raises(LlmfbnError, match="no network inside"), pytest.warns(UserWarning):
        load_fbn_atlas(path, mask_img)
    # A TSV with non-integer indices.
    path = _write_label_atlas(tmp_path, labels, None, name="floatidx")
    pd.DataFrame({"index": [1.5], "name": ["A"]}).to_csv(tmp_path / "floatidx.tsv", sep="\t",
                                                        index=False)
    with pytest.raises(LlmfbnError, match="non-integer"):
        load_fbn_atlas(path, mask_img)
    # A 4-D brain mask is not an analysis grid.
    with pytest.raises(LlmfbnError, match="3-D"):
        load_fbn_atlas("seitzman", nib.Nifti1Image(np.ones((4, 4, 4, 2), np.uint8),
                                                   AFFINE_3MM))


# --------------------------------------------------------------------------- yeo


def _fake_templateflow(tmp_path, n_networks):
    """Synthetic Schaefer-like dseg + tsv: 4 parcels, 2 networks per hemisphere."""
    labels = np.zeros((20, 20, 20), dtype=np.int16)
    labels[2:10, 2:10, 2:18] = 1
    labels[2:10, 10:18, 2:18] = 2
    labels[10:18, 2:10, 2:18] = 3
    labels[10:18, 10:18, 2:18] = 4
    dseg = tmp_path / f"tpl_desc-400Parcels{n_networks}Networks_dseg.nii.gz"
    nib.save(nib.Nifti1Image(labels, AFFINE_3MM), dseg)
    tsv = tmp_path / f"tpl_desc-400Parcels{n_networks}Networks_dseg.tsv"
    pd.DataFrame({"index": [1, 2, 3, 4],
                  "name": [f"{n_networks}Networks_LH_Vis_1", f"{n_networks}Networks_LH_Default_1",
                           f"{n_networks}Networks_RH_Vis_1",
                           f"{n_networks}Networks_RH_Default_1"]}).to_csv(tsv, sep="\t",
                                                                           index=False)
    return labels, dseg, tsv


@pytest.mark.parametrize("n_networks", [7, 17])
def test_yeo_from_templateflow(tmp_path, monkeypatch, n_networks):
    import templateflow.api

    labels, dseg, tsv = _fake_templateflow(tmp_path, n_networks)
    calls = []

    def fake_get(template, **query):
        calls.append((template, query))
        return dseg if query["extension"] == ".nii.gz" else tsv

    monkeypatch.setattr(templateflow.api, "get", fake_get)
    mask_img = _box_mask()
    mask = np.asarray(mask_img.dataobj) > 0
    atlas = load_fbn_atlas(f"yeo{n_networks}", mask_img)
    assert atlas.name == f"yeo{n_networks}"
    assert atlas.network_names == ("Vis", "Default")
    np.testing.assert_array_equal(atlas.masks[0], np.isin(labels[mask], [1, 3]))
    np.testing.assert_array_equal(atlas.masks[1], np.isin(labels[mask], [2, 4]))
    template, query = calls[0]
    assert template == "MNI152NLin2009cAsym" and query["resolution"] == 2
    assert query["atlas"] == "Schaefer2018" and query["suffix"] == "dseg"
    assert query["desc"] == f"400Parcels{n_networks}Networks"


def test_yeo_missing_templateflow_files(tmp_path, monkeypatch):
    import requests
    import templateflow.api

    placeholder = tmp_path / "placeholder_dseg.nii.gz"
    placeholder.write_bytes(b"")

    def offline(template, **query):
        raise requests.exceptions.ConnectionError("Failed to resolve 'templateflow.s3'")

    for fake in (offline, lambda template, **q: placeholder, lambda template, **q: []):
        monkeypatch.setattr(templateflow.api, "get", fake)
        with pytest.raises(LlmfbnError) as info:
            load_fbn_atlas("yeo7", _box_mask())
        message = str(info.value)
        assert "TemplateFlow" in message and "TEMPLATEFLOW_HOME" in message
        assert "--fbn-atlas seitzman" in message and "PATH" in message


# --------------------------------------------------------------------------- coverage
def test_coverage_of_an_atlas_in_the_data_space(tmp_path, seitzman_4mm):
    """An atlas on the data's grid inside the brain covers it fully: no warning."""
    labels = _label_volume()
    path = _write_label_atlas(tmp_path, labels, [(i, f"n{i}") for i in range(1, 6)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        atlas = load_fbn_atlas(path, _box_mask())
    assert atlas.coverage == pytest.approx(0.8)     # x slabs 0-1 and 18-19 lie outside
    check_coverage(atlas)
    assert seitzman_4mm.coverage > 0.95
    check_coverage(seitzman_4mm)


def test_atlas_in_another_field_of_view_is_refused(tmp_path):
    """Shifted by 24 mm on each axis, most of the atlas lies outside the mask: the coverage
    falls below MIN_ATLAS_COVERAGE and the group level stops (before: resampled silently)."""
    shifted = AFFINE_3MM.copy()
    shifted[:3, 3] += 24.0
    path = _write_label_atlas(tmp_path, _label_volume(), [(i, f"n{i}") for i in range(1, 6)],
                              affine=shifted)
    with pytest.warns(UserWarning, match="resampled with nearest neighbour"):
        atlas = load_fbn_atlas(path, _box_mask())
    assert atlas.coverage < MIN_ATLAS_COVERAGE
    with pytest.raises(LlmfbnError, match="lies mostly outside the analysed brain mask"):
        check_coverage(atlas)


def test_atlas_declaring_another_space_warns(tmp_path):
    path = _write_label_atlas(tmp_path, _label_volume(), [(i, f"n{i}") for i in range(1, 6)],
                              name="tpl-MNI152NLin6Asym_atlas-x_dseg")
    with pytest.warns(UserWarning, match="is in space MNI152NLin6Asym, the data in "
                                         "MNI152NLin2009cAsym"):
        load_fbn_atlas(path, _box_mask(), space="MNI152NLin2009cAsym")
