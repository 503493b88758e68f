"""The participant level's one read of a BOLD series and its maps written a volume at a time:
the same values and bytes as nibabel's whole-array reading and writing (issue 10, item 2)."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from bids_app.bids import compression, images
from bids_app.bids.derivatives import write_masked_nifti, write_nifti
from bids_app.bids.images import read_bold, unmask_img
from bids_app.bids.inputs import check_series_bytes
from bids_app.errors import LlmfbnError

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


@pytest.fixture
def mask():
    return np.random.default_rng(0).random((7, 9, 5)) > 0.4


@pytest.mark.parametrize("dtype, scaling", [("float32", None), ("int16", (0.37, 5.0)),
                                            ("float64", None), ("uint8", (2.0, -1.0))])
def test_read_bold_matches_nibabel_bit_for_bit(tmp_path, mask, monkeypatch, dtype, scaling):
    """Values inside the mask and the whole-field temporal mean equal nibabel's float32
    reading (``dataobj``, its scaling) and NumPy's float64 mean, over several blocks."""
    rng = np.random.default_rng(1)
    img = nib.Nifti1Image((rng.standard_normal(mask.shape + (23,)) * 100).astype(dtype),
                          AFFINE)
    if scaling:
        img.header.set_slope_inter(*scaling)
    path = tmp_path / "bold.nii.gz"
    nib.save(img, path)
    img = nib.load(path)
    data = np.asarray(img.dataobj, dtype=np.float32)
    monkeypatch.setattr(images, "READ_BLOCK_BYTES", mask.size * np.dtype(dtype).itemsize * 3)
    values, mean = read_bold(path, mask, nib.Nifti1Image(mask.astype(np.uint8), AFFINE))
    assert values.dtype == np.float32 and values.flags.c_contiguous
    assert np.array_equal(values, data[mask].T)
    assert np.array_equal(mean, data.mean(axis=3, dtype=np.float64).astype(np.float32))


def test_read_bold_checks_the_crc(tmp_path, mask):
    """Damaged bytes are met by the one read (to the end of the gzip stream)."""
    path = tmp_path / "bold.nii.gz"
    nib.save(nib.Nifti1Image(np.ones(mask.shape + (40,), np.float32), AFFINE), path)
    raw = bytearray(path.read_bytes())
    raw[-6] ^= 0xFF                                    # the CRC / length trailer
    path.write_bytes(bytes(raw))
    with pytest.raises(LlmfbnError, match="damaged, incomplete"):
        read_bold(path, mask, nib.Nifti1Image(mask.astype(np.uint8), AFFINE))


@pytest.mark.parametrize("backend", ["isal", "zlib"])
@pytest.mark.parametrize("shape", [(4,), ()])
def test_masked_maps_written_as_nibabel_writes_them(tmp_path, mask, shape, backend,
                                                    monkeypatch):
    """The same decompressed bytes (header and data) as unmasking the whole 4-D (or 3-D)
    array and saving it with nibabel, with ISA-L or the standard library's zlib; the gzip
    header has no name and no time stamp, so writing again gives the same file."""
    if backend == "zlib":
        monkeypatch.setattr(compression, "_gzip", gzip)
    rng = np.random.default_rng(2)
    values = rng.standard_normal(shape + (int(mask.sum()),))
    values[..., :3] = np.nan
    write_nifti(tmp_path / "a.nii.gz", unmask_img(values, mask, AFFINE))
    write_masked_nifti(tmp_path / "b.nii.gz", values, mask, AFFINE)
    a, b = (tmp_path / "a.nii.gz").read_bytes(), (tmp_path / "b.nii.gz").read_bytes()
    assert gzip.decompress(a) == gzip.decompress(b)
    assert b[3] == 0 and b[4:8] == bytes(4)          # FLG: no FNAME; MTIME 0
    write_masked_nifti(tmp_path / "c.nii.gz", values, mask, AFFINE)
    assert (tmp_path / "c.nii.gz").read_bytes() == b
    assert np.array_equal(nib.load(tmp_path / "b.nii.gz").get_fdata(),
                          nib.load(tmp_path / "a.nii.gz").get_fdata(), equal_nan=True)


@pytest.mark.parametrize("dtype, scaling", [("float32", None), ("int16", (0.5, 1.0))])
def test_masked_maps_reads_as_nibabel_in_blocks(tmp_path, mask, monkeypatch, dtype, scaling):
    """A 4-D stack of maps read a few maps at a time: nibabel's float32 values inside the
    mask, bit for bit; a damaged stream is an :func:`unreadable` error."""
    rng = np.random.default_rng(3)
    img = nib.Nifti1Image((rng.standard_normal(mask.shape + (11,)) * 50).astype(dtype), AFFINE)
    if scaling:
        img.header.set_slope_inter(*scaling)
    path = tmp_path / "maps.nii.gz"
    nib.save(img, path)
    expected = np.asarray(nib.load(path).dataobj, dtype=np.float32)[mask].T
    monkeypatch.setattr(images, "READ_BLOCK_BYTES", mask.size * np.dtype(dtype).itemsize * 2)
    assert np.array_equal(images.masked_maps(path, mask), expected)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(LlmfbnError, match="damaged, incomplete"):
        images.masked_maps(path, mask)


def test_series_bytes_trailer(tmp_path, mask):
    """A series cut short fails the trailer check; a valid file of two gzip members (whose
    trailer is not the whole stream's) passes after a full decompression."""
    path = tmp_path / "bold.nii.gz"
    nib.save(nib.Nifti1Image(np.ones(mask.shape + (40,), np.float32), AFFINE), path)
    check_series_bytes(path)
    whole = gzip.decompress(path.read_bytes())
    two = tmp_path / "two.nii.gz"
    two.write_bytes(gzip.compress(whole[:1000]) + gzip.compress(whole[1000:]))
    check_series_bytes(two)
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(LlmfbnError, match="damaged, incomplete"):
        check_series_bytes(cut)


def test_series_trailer_checked_without_decompressing(tmp_path, mask, monkeypatch):
    """An intact series passes the trailer check without being decompressed: the length
    stated is the data offset nibabel reads from (352 for a file nibabel or fMRIPrep
    writes; a loaded header's ``vox_offset`` reads 0, which made every series fall back to
    a full decompression in the pre-flight until 2026-12-02) plus the data."""
    from bids_app.bids import inputs

    path = tmp_path / "bold.nii.gz"
    nib.save(nib.Nifti1Image(np.ones(mask.shape + (6,), np.float32), AFFINE), path)
    assert nib.load(path).dataobj.offset == 352

    def full_read(_):
        raise AssertionError("decompressed in full")

    monkeypatch.setattr(inputs, "check_image_bytes", full_read)
    check_series_bytes(path)
