"""The gzip streams of ``.nii.gz`` images, read and written with ISA-L where it is installed.

ISA-L (Intel's Intelligent Storage Acceleration Library, Python package ``isal``) reads
and writes the same gzip format as zlib: a file it writes is read by nibabel, FSL, AFNI
and every other gzip reader, and it reads every gzip file. It is faster at both ends
(``benchmarks/results/scale.md``: a 233 MB, 300-volume 2 mm BOLD series decompressed in
2.2 s against zlib's 3.9 s; 300 MB of float32 maps compressed at level 1 in 0.5 s against
zlib's 2.2 s, to a file 4 % smaller). Without ``isal`` the standard library's gzip (zlib)
is used, with the same results but slower.

A written file's gzip header carries no name and no time stamp, so the same maps give the
same bytes whenever and wherever they are written.
"""

from __future__ import annotations

import gzip
import zlib
from contextlib import contextmanager
from pathlib import Path

try:
    from isal import igzip as _gzip
    from isal.isal_zlib import error as _IsalError
except ImportError:  # pragma: no cover - isal is a dependency; the fallback is zlib
    _gzip = gzip
    _IsalError = zlib.error

#: Compression level of written ``.nii.gz`` files: ISA-L's level 1 (its range is 0-3),
#: about the size of zlib's level 1 (nibabel's default) at a quarter of its time.
COMPRESS_LEVEL = 1

#: What a damaged gzip stream raises besides the standard library's errors.
GZIP_ERRORS = (zlib.error, _IsalError, EOFError, gzip.BadGzipFile)

#: The gzip implementation in use ("isal" or "zlib"), for the logs and sidecars.
BACKEND = "isal" if _gzip is not gzip else "zlib"


def is_gzip(path: Path) -> bool:
    return str(path).endswith(".gz")


def open_read(path: Path):
    """A binary stream of the decompressed bytes of ``path`` (plain bytes when it is not a
    ``.gz`` file); read to its end, a gzip stream checks its CRC and length."""
    return _gzip.open(str(path), "rb") if is_gzip(path) else open(path, "rb")


@contextmanager
def open_write(path: Path, gz: bool | None = None):
    """``with open_write(path) as stream``: a binary stream that writes ``path``, gzip at
    :data:`COMPRESS_LEVEL` (no name, no time stamp in the header) when it ends in
    ``.gz``, plain bytes otherwise. ``gz`` overrides the choice by name (e.g. for a
    temporary file whose name does not end in ``.gz``)."""
    with open(path, "wb") as raw:
        if not (is_gzip(path) if gz is None else gz):
            yield raw
            return
        with _gzip.GzipFile(filename="", mode="wb", compresslevel=COMPRESS_LEVEL,
                            fileobj=raw, mtime=0) as stream:
            yield stream
