"""Writing the BIDS-Derivatives dataset.

Every file is written atomically: to a hidden temporary name in the same folder, then
``os.replace``d onto its final name, so a killed run never leaves a half-written file under a
final name. Names use standard BIDS entities only; the rest goes into JSON sidecars.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from bids_app import __version__

ENTITY_ORDER = ("sub", "ses", "task", "run", "space", "res", "desc", "stat")
BIDSIGNORE = ["logs/", "atoms/", "group/", "*.html", "figures/", "*_design.tsv"]


@contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside ``path``; move it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        # mkstemp makes the file private (0600); final outputs follow the user's umask
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


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


def write_nifti(path: Path, img: nib.Nifti1Image) -> Path:
    with atomic_path(path) as tmp:
        nib.save(img, tmp)
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


def bids_name(suffix: str, extension: str, **entities) -> str:
    """``sub-01_space-X_desc-y_stat-t_statmap.nii.gz`` from entities in BIDS order."""
    unknown = set(entities) - set(ENTITY_ORDER)
    if unknown:
        raise ValueError(f"non-standard entities {sorted(unknown)}")
    parts = [f"{k}-{entities[k]}" for k in ENTITY_ORDER if entities.get(k) not in (None, "")]
    return "_".join(parts + [suffix]) + extension


def write_dataset_description(output_dir: Path, bids_dir: Path, fmriprep_dir: Path,
                              raw_description: dict, fmriprep_description: dict) -> Path:
    """``dataset_description.json`` of the derivatives (DatasetType, GeneratedBy, SourceDatasets)."""
    generated = {"Name": "llmfbn", "Version": __version__,
                 "Description": "Artificial-neuron sub-groups of language models coupled to "
                                "functional brain networks (arXiv 2410.19542)"}
    container = os.environ.get("LLMFBN_CONTAINER")
    if container:
        generated["Container"] = {"Type": container.split(":", 1)[0],
                                  "Tag": container.split(":", 1)[-1]}
    sources = []
    for folder, desc in ((bids_dir, raw_description), (fmriprep_dir, fmriprep_description)):
        entry = {"URL": Path(folder).absolute().as_uri()}
        if desc.get("DatasetDOI"):
            entry["DOI"] = desc["DatasetDOI"]
        if desc.get("Name"):
            entry["Name"] = desc["Name"]
        sources.append(entry)
    description = {
        "Name": "llmfbn derivatives"
                + (f" of {raw_description['Name']}" if raw_description.get("Name") else ""),
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [generated],
        "SourceDatasets": sources,
    }
    path = Path(output_dir) / "dataset_description.json"
    if path.exists():
        # parallel participant jobs write the same description; keep the file stable
        try:
            if json.loads(path.read_text()).get("GeneratedBy") == [generated]:
                return path
        except ValueError:
            pass
    write_json(path, description)
    ignore = Path(output_dir) / ".bidsignore"
    if not ignore.exists():
        write_text(ignore, "\n".join(BIDSIGNORE) + "\n")
    return path
