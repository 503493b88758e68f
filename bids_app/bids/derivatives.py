"""Writing the BIDS-Derivatives dataset.

Every file is written atomically (:mod:`bids_app.atomic`), so a killed run never leaves a
half-written file under a final name. Names come from :mod:`bids_app.bids.naming`: standard
BIDS entities only; the rest goes into JSON sidecars.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from bids_app import __version__
from bids_app.atomic import atomic_path
from bids_app.bids.naming import ATOMS_DIR, GROUP_DIR, LOGS_DIR, bids_name

__all__ = ["BIDSIGNORE", "atomic_path", "bids_name", "write_dataset_description",
           "write_json", "write_nifti", "write_text", "write_tsv"]

BIDSIGNORE = [f"{LOGS_DIR}/", f"{ATOMS_DIR}/", f"{GROUP_DIR}/", "*.html", "figures/",
              "*_design.tsv"]


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


def write_dataset_description(output_dir: Path, bids_dir: Path, fmriprep_dir: Path,
                              raw_description: dict, fmriprep_description: dict) -> Path:
    """``dataset_description.json`` of the derivatives (DatasetType, GeneratedBy,
    SourceDatasets)."""
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
