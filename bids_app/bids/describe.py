"""The files that describe the derivatives dataset as a whole.

``dataset_description.json`` (DatasetType, GeneratedBy, SourceDatasets, DatasetLinks),
``.bidsignore`` (what the BIDS schema has no rule for), ``README.md`` (what each file is and
how to query it) and ``code/llmfbn_pybids_config.json`` (the pybids configuration that adds
the ``stat`` entity). Every one is written atomically; parallel participant jobs write the
same content.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

from bids_app import __version__
from bids_app.bids import naming
from bids_app.bids.derivatives import write_text

__all__ = ["DATASET_LINKS", "derivatives_layout", "pybids_config", "readme_text",
           "write_dataset_files"]

#: Names of the input datasets in BIDS URIs (``bids:<name>:<path>``) of the sidecars.
DATASET_LINKS = ("raw", "fmriprep")


def pybids_config() -> Path:
    """The pybids configuration shipped with llmfbn: the ``stat`` entity (a copy is written
    to ``OUTPUT_DIR/code/``)."""
    return Path(str(resources.files("bids_app.data").joinpath(naming.PYBIDS_CONFIG_FILE)))


def derivatives_layout(output_dir: Path):
    """A pybids ``BIDSLayout`` of llmfbn's outputs that knows the ``stat`` entity.

    ``layout.get(subject="001", desc="minilm", stat="t", suffix="statmap",
    extension=".nii.gz")`` selects one statistic; ``layout.get_metadata(path)`` returns
    that file's own sidecar.
    """
    from bids import BIDSLayout

    return BIDSLayout(output_dir, validate=False,
                      config=["bids", "derivatives", str(pybids_config())])


_README = """\
# llmfbn derivatives

Artificial-neuron (AN) sub-groups of language models coupled to functional brain networks
(llmfbn {version}; Sun et al. 2024, arXiv:2410.19542). `<model>` below is the model's
label (the `desc` entity), `<space>` the space of the analysed BOLD series.

## Files

- `dataset_description.json`: `SourceDatasets` and `DatasetLinks` name the raw data and
  the fMRIPrep outputs (`bids:raw:...`, `bids:fmriprep:...` in the sidecars' `Sources`).
- `{atoms}/desc-<model>_atoms.tsv` (+ `.json`): atom time courses, one column per atom
  (`atom01` ...), one row per frame; `_codes.npz`: sparse codes, n_neurons x n_atoms
  (scipy.sparse CSR); `_neurons.tsv`: code row -> (layer, unit) of each AN.
- `sub-<label>/func/sub-<label>_space-<space>_desc-<model>_stat-<stat>_statmap.nii.gz`:
  subject maps, `<stat>` one of {subject_stats}; `effect` and `t` are 4-D, volume k =
  atom k+1.
- `sub-<label>/func/sub-<label>_task-<task>_space-<space>_desc-<model>_mask.nii.gz`:
  voxels analysed (one mask for all the subject's runs, written once per task).
- `sub-<label>/func/sub-<label>_desc-<model>_design.tsv`: the subject's design matrix.
- `sub-<label>/func/sub-<label>_desc-<model>_networkeffects.tsv`: the coupling null's table:
  each atom's and each surrogate atom's standardised effect on the mean signal of each
  network, alone with the confounds (`<network>`) and given the other atoms
  (`<network>_given`).
- `sub-<label>/func/sub-<label>_desc-<model>_networkprediction.tsv`: the network-prediction
  test's table: the split-half prediction correlation of each network's mean signal by all
  atoms together (row `atoms`) and by each block of surrogate atoms (`null0001`, ...).
- `{group}/space-<space>_desc-<model>_stat-<stat>_statmap.nii.gz`: group maps, `<stat>`
  one of {group_stats}; `{group}/desc-<model>_*.tsv`, `_metrics.json`, `_report.html`:
  coupling, assignments, AN sub-groups, metrics, report.
- `{logs}/config_<level>_<run-id>.json`: every setting of each run; `{logs}/CITATION.md`:
  methods text.

Every map has a JSON sidecar (model, AN definition, number of atoms, lambda, HRF, GLM,
confound strategy, seed, `Statistic`). NIfTI headers give spatial units in mm; the 4th
axis of a 4-D map indexes atoms (its nominal step is 1).

## Reading the outputs with pybids

`stat` is not an entity pybids knows; the configuration in `{config}` adds it:

```python
from bids import BIDSLayout
layout = BIDSLayout("OUTPUT_DIR", validate=False,
                    config=["bids", "derivatives", "OUTPUT_DIR/{config}"])
layout.get(subject="001", desc="<model>", stat="t", suffix="statmap", extension=".nii.gz")
layout.get(desc="<model>", stat="tfdr", suffix="statmap", extension=".nii.gz")  # group
layout.get_metadata(path)   # the file's own sidecar
```

With llmfbn installed, `bids_app.bids.describe.derivatives_layout("OUTPUT_DIR")` does the
same.

## BIDS validation

Statistical maps (`*_statmap`) follow the BIDS-Stats-Models naming, which the BIDS schema
does not cover yet; they, `{atoms}/`, `{group}/`, `{logs}/`, the reports and the design
matrices are listed in `.bidsignore`.
"""


def readme_text() -> str:
    """The derivatives' ``README.md``."""
    return _README.format(
        version=__version__, atoms=naming.ATOMS_DIR, group=naming.GROUP_DIR,
        logs=naming.LOGS_DIR, config=f"{naming.CODE_DIR}/{naming.PYBIDS_CONFIG_FILE}",
        subject_stats=", ".join(f"`{s}`" for s in naming.SUBJECT_STATS),
        group_stats=", ".join(f"`{s}`" for s in naming.GROUP_STATS))


def _description(bids_dir: Path, fmriprep_dir: Path, raw_description: dict,
                 fmriprep_description: dict) -> dict:
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
    return {
        "Name": "llmfbn derivatives"
                + (f" of {raw_description['Name']}" if raw_description.get("Name") else ""),
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [generated],
        "SourceDatasets": sources,
        "DatasetLinks": {name: Path(folder).absolute().as_uri()
                         for name, folder in zip(DATASET_LINKS, (bids_dir, fmriprep_dir))},
    }


def _write_if_changed(path: Path, text: str) -> None:
    """Parallel participant jobs write the same text: leave an identical file alone."""
    try:
        if path.read_text() == text:
            return
    except OSError:
        pass
    write_text(path, text)


def _bidsignore_text(path: Path) -> str:
    """llmfbn's patterns, after any line a user added to an existing ``.bidsignore``."""
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except OSError:
        lines = []
    old_style = {f"{p}/" for p in naming.BIDSIGNORE} | {"figures/"}   # llmfbn <= 0.1.0
    lines = [line for line in lines if line not in old_style]
    return "\n".join(lines + [p for p in naming.BIDSIGNORE if p not in lines]) + "\n"


def write_dataset_files(output_dir: Path, bids_dir: Path, fmriprep_dir: Path,
                        raw_description: dict, fmriprep_description: dict) -> Path:
    """``dataset_description.json``, ``.bidsignore``, ``README.md`` and the pybids
    configuration of the derivatives in ``output_dir``; returns the description's path."""
    output_dir = Path(output_dir)
    description = _description(bids_dir, fmriprep_dir, raw_description, fmriprep_description)
    path = output_dir / "dataset_description.json"
    _write_if_changed(path, json.dumps(description, indent=2) + "\n")
    _write_if_changed(output_dir / ".bidsignore", _bidsignore_text(output_dir / ".bidsignore"))
    _write_if_changed(naming.readme_file(output_dir), readme_text())
    _write_if_changed(naming.pybids_config_copy(output_dir), pybids_config().read_text())
    return path
