"""The group level's one pass over the subjects, in bounded memory.

Each subject's maps are read once, one subject at a time, and reduced to what the group
level needs of them:

- its effect maps, written to a :class:`bids_app.group.disk.DiskStack` (an unlinked
  temporary file, so nothing is left behind even if the run is killed) that the later steps
  read one atom at a time (the group t maps, :func:`bids_app.group.stats.one_sample_t`) or
  one block of atoms at a time (the bootstrap,
  :func:`bids_app.group.metrics.resampled_networks`);
- the mean effect of each atom over each network's voxels
  (:func:`bids_app.group.subgroups.network_effects`);
- its own assignment of atoms to networks, from its t maps
  (:func:`bids_app.group.coupling.subject_assignments`), for the consistency metrics.

Peak memory therefore does not grow with the number of subjects except by the small
per-subject tables above and, in the bootstrap, one atom's maps of every subject (n_subjects
x n_voxels float32, about three copies): 345 subjects at 2 mm (235,375 voxels) hold ~1 GB
there. Disk: n_subjects x n_atoms x n_voxels float32 in the scratch folder (20.8 GB for 345
subjects x 64 atoms at 2 mm), freed when the run ends.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bids_app.bids.naming import given_column
from bids_app.bids.readers import GroupInputs, subject_maps
from bids_app.errors import LlmfbnError
from bids_app.group.coupling import subject_assignments
from bids_app.group.disk import DiskStack
from bids_app.group.subgroups import network_effects

LOGGER = logging.getLogger("llmfbn")


@dataclass
class SubjectSummaries:
    """What the group level keeps of the subjects' maps (see the module docstring)."""

    effects: DiskStack                        # (n_subjects, n_atoms, n_voxels) on disk
    network_means: np.ndarray                 # (n_subjects, n_atoms, n_networks)
    subject_assign: pd.DataFrame              # subject, atom, network, sign
    #: the coupling null (participant level's tables, :func:`null_network_arrays`): the
    #: atoms' and the surrogate atoms' effects on each network's mean signal
    # (n_subjects, n_atoms | n_surrogates, n_statistics * n_networks), null_network_arrays
    null_atom_means: np.ndarray | None = None
    null_network_means: np.ndarray | None = None


def scratch_folder(work_dir: Path | None) -> Path:
    """Where the disk-backed arrays go: the work directory when it exists, else the system's
    temporary folder (``$TMPDIR``)."""
    if work_dir is not None and Path(work_dir).is_dir() and os.access(work_dir, os.W_OK):
        return Path(work_dir)
    return Path(tempfile.gettempdir())


def stream_subjects(inputs: GroupInputs, atlas, q: float, min_iou: float,
                    folder: Path) -> SubjectSummaries:
    """Read every subject's maps once (effect, t) and keep the summaries of
    :class:`SubjectSummaries`; a damaged file raises here, before anything is written."""
    n_subjects, n_voxels = len(inputs.subjects), int(inputs.mask.sum())
    n_networks = len(atlas.network_names)
    null_atoms, null_means = null_network_arrays(inputs, atlas)
    effects = DiskStack((n_subjects, inputs.n_atoms, n_voxels), folder)
    means = np.empty((n_subjects, inputs.n_atoms, n_networks))
    tables = []
    started = last = time.monotonic()
    for i, subject in enumerate(inputs.subjects):
        effect = subject_maps(inputs, subject, "effect")
        effects.write(i, effect)
        means[i] = network_effects(effect[None], atlas.masks)[0]
        tables.append(subject_assignments(
            subject_maps(inputs, subject, "t")[None], inputs.dof[i], atlas, q=q,
            min_iou=min_iou, subject_labels=[subject]))
        if time.monotonic() - last > 30 or i + 1 == n_subjects:
            last = time.monotonic()
            LOGGER.info("Group level: read %d of %d subjects' maps (%.0f s)", i + 1,
                        n_subjects, last - started)
    return SubjectSummaries(effects=effects, network_means=means,
                            subject_assign=pd.concat(tables, ignore_index=True),
                            null_atom_means=null_atoms, null_network_means=null_means)


def null_network_arrays(inputs: GroupInputs, atlas):
    """(n_subjects, n_atoms, n_statistics * n_networks) and (n_subjects, n_surrogates,
    same): the atoms' and the surrogate atoms' standardised effects on each network of
    ``atlas`` from the participant level's coupling-null tables (alone, then given the
    other atoms when every table has the ``<network>_given`` columns), or ``(None, None)``
    without the null.

    The participant level fitted them on the networks of its own ``--fbn-atlas``; a table
    of another atlas, or without one of ``atlas``'s networks, is an error.
    """
    if not inputs.network_effects:
        return None, None
    names = list(atlas.network_names)
    # the statistic alone with the confounds, then (tables since 2026-12-02) given the other
    # atoms, when every subject's table has it: the group combines both tests
    # (bids_app.group.null.null_table)
    given = [given_column(n) for n in names]
    columns = names + given if all(c in table.columns for c in given
                                   for table in inputs.network_effects) else names
    if columns == names:
        LOGGER.warning("The coupling null's tables of some subjects have no '<network>_given' "
                       "columns (participant outputs of an llmfbn before 2026-12-02): each "
                       "atom is tested alone only. Re-run the participant level for both "
                       "tests (docs/metrics.md).")
    atoms, nulls = [], []
    for subject, table in zip(inputs.subjects, inputs.network_effects):
        _check_atlas(table, atlas, f"the coupling null of sub-{subject}")
        values = table[columns].to_numpy(np.float64)
        atoms.append(values[:inputs.n_atoms])
        nulls.append(values[inputs.n_atoms:])
    return np.stack(atoms), np.stack(nulls)


def _check_atlas(table: pd.DataFrame, atlas, what: str) -> None:
    """A participant table fitted on each network of ``atlas`` (its columns) and on that
    atlas (``attrs["atlas"]``, from its sidecar), else a clear error."""
    names = list(atlas.network_names)
    missing = [n for n in names if n not in table.columns]
    used = table.attrs.get("atlas")
    if missing or (used is not None and used != atlas.name):
        raise LlmfbnError(
            f"{what} was fitted on other networks than the group level's atlas {atlas.name}",
            expected="networks " + ", ".join(names),
            found=f"atlas {used}, networks " + ", ".join(map(str, table.columns)),
            todo="run both levels with the same --fbn-atlas (the participant level fits "
            "the null on the atlas's networks)")


def prediction_arrays(inputs: GroupInputs, atlas):
    """(n_subjects, n_networks) and (n_subjects, n_blocks, n_networks): the split-half
    prediction correlation of each network of ``atlas`` by the atoms and by each surrogate
    block, from the participant level's network-prediction tables, or ``(None, None)``
    without them. A table of another atlas is an error, as in
    :func:`null_network_arrays`."""
    if not inputs.network_predictions:
        return None, None
    names = list(atlas.network_names)
    atoms, nulls = [], []
    for subject, table in zip(inputs.subjects, inputs.network_predictions):
        _check_atlas(table, atlas, f"the network-prediction table of sub-{subject}")
        values = table[names].to_numpy(np.float64)
        atoms.append(values[0])
        nulls.append(values[1:])
    return np.stack(atoms), np.stack(nulls)


def scratch_bytes(inputs: GroupInputs) -> int:
    """Disk the disk-backed effect maps take (for the free-space check)."""
    return len(inputs.subjects) * inputs.n_atoms * int(inputs.mask.sum()) * 4
