"""Pre-flight: every input a level will touch is checked before it writes anything.

Both levels call their pre-flight first; it reads (never writes) and raises
:class:`~bids_app.errors.LlmfbnError` on the first problem. The checks themselves live with
what they check; this module puts them in order:

participant level
    folders (where OUTPUT_DIR and the work directory lie, writable), the dataset (pybids
    discovery, fMRIPrep files, RepetitionTime with BIDS inheritance), every run's brain
    mask to its last byte and BOLD series' gzip trailer (the BOLD itself is read once, by
    the participant level, which checks its CRC), grids and volume counts (BOLD =
    confounds rows = raw series), story timings inside their runs, models and device,
    confounds, the atom count (against the model's ANs and the volumes the GLM needs), the
    memory budget, and free disk space for the work directory and the outputs;
group level
    folders, the participant level's settings and outputs of every model, the atlas on
    the group grid (coverage), and free disk space for the group outputs.

Checks that need the stimulus-level results (the number of ANs that respond, the learner's
memory plan) run when those are computed, in the work directory, before the participant
level writes any output.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from bids_app.atlases import check_coverage, load_fbn_atlas
from bids_app.bids.acquisitions import plan_acquisitions
from bids_app.bids.folders import check_folders, check_free_space
from bids_app.bids.images import image_data
from bids_app.bids.inputs import check_image_bytes, check_run_inputs
from bids_app.bids.layout import DatasetFiles, discover
from bids_app.bids.readers import read_atom_outputs, read_group_inputs
from bids_app.config import Config, carry_participant_settings, read_participant_settings
from bids_app.devices import resolve_device
from bids_app.errors import LlmfbnError
from bids_app.features import expected_neurons, resolve_model
from bids_app.group.metrics import bootstrap_block_bytes
from bids_app.group.streaming import scratch_bytes, scratch_folder, stream_subjects
from bids_app.workflow.stimulus import atoms_cached

__all__ = ["GroupPlan", "ParticipantPlan", "preflight_group", "preflight_participant"]

LOGGER = logging.getLogger("llmfbn")


@dataclass
class ParticipantPlan:
    """Everything the participant level needs, checked."""

    dataset: DatasetFiles
    plan: dict          # {acquisition key: Acquisition}
    specs: list         # ModelSpec per --model
    device: str
    confounds: dict     # {bold path: (confounds DataFrame, sample mask)}


@dataclass
class GroupPlan:
    """Everything the group level needs, checked: per model label, its atoms, maps and
    atlas."""

    specs: list
    atoms: dict
    inputs: dict
    atlases: dict
    summaries: dict          # per label: bids_app.group.streaming.SubjectSummaries


def _models(config: Config) -> list:
    specs = [resolve_model(name) for name in config.model]
    labels = [spec.label for spec in specs]
    if len(set(labels)) != len(labels):
        raise LlmfbnError("two --model entries have the same file label",
                          found=", ".join(f"{s.name} -> {s.label}" for s in specs),
                          todo="pass each model once")
    return specs


def _response_rows(config: Config, spec) -> int | None:
    from bids_app.responses import n_response_columns

    n_neurons = expected_neurons(spec)
    return None if n_neurons is None else n_neurons * n_response_columns(1, config.hrf_model)


def _check_atom_count(config: Config, specs, dataset: DatasetFiles, confounds) -> None:
    """K against each model's ANs, and against the volumes each subject's GLM needs."""
    from bids_app.encoding import minimum_volumes

    for spec in specs:
        rows = _response_rows(config, spec)
        if rows is not None and config.n_atoms > rows:
            raise LlmfbnError(f"--n-atoms {config.n_atoms} exceeds the number of artificial "
                              f"neurons of {spec.name}", found=f"{rows} ANs",
                              todo="lower --n-atoms")
    for subject in dataset.subjects:
        runs = dataset.runs[subject]
        kept = sum(len(confounds[r.bold][1]) for r in runs)
        need = minimum_volumes(config.n_atoms, [confounds[r.bold][0].shape[1] for r in runs])
        if kept < need:
            raise LlmfbnError(
                f"--n-atoms {config.n_atoms} is too many for the volumes of sub-{subject}",
                expected=f"at least {need} kept volumes (one per atom, confound and run "
                "intercept, plus 10)", found=f"{kept} kept volumes in {len(runs)} run(s)",
                todo="lower --n-atoms (or add runs)")


def _check_memory(config: Config, specs, plan) -> None:
    """The learner's smallest budget for every AN of each model (known from its
    configuration; the exact plan follows once the responding ANs are known)."""
    from bids_app.atoms.resources import minimum_memory_gib

    n_trs = sum(a.n_frames for a in plan.values())
    for spec in specs:
        rows = _response_rows(config, spec)
        if rows is None:
            continue
        need = minimum_memory_gib(rows, n_trs, config.n_atoms)
        if need > config.mem_gb:
            raise LlmfbnError(
                f"--mem-gb {config.mem_gb:g} is too small for {spec.name}",
                expected=f"at least {need:.3g} GiB for {rows} ANs x {n_trs} TRs with "
                f"{config.n_atoms} atoms", found=f"--mem-gb {config.mem_gb:g}",
                todo="raise --mem-gb")


def _estimated_bytes(config: Config, specs, plan, dataset: DatasetFiles) -> dict:
    """{folder: (bytes, what)}: what the participant level writes in the work directory
    (responses not cached yet, codes) and in OUTPUT_DIR (maps, uncompressed values)."""
    from bids_app.workflow.stimulus import responses_cached

    n_trs = sum(a.n_frames for a in plan.values())
    work = 0
    for spec in specs:
        rows = _response_rows(config, spec) or 0
        if not responses_cached(config, spec, plan):
            work += rows * n_trs * 4
        work += rows * config.n_atoms * 8 + config.n_atoms * n_trs * 4
    voxels = sum(int(np.count_nonzero(image_data(dataset.runs[s][0].mask)))
                 for s in dataset.subjects)
    maps = voxels * (2 * config.n_atoms + 2) * 4 * len(specs)
    return {config.work_dir: (work, "AN responses and atoms"),
            config.output_dir: (maps, "subject maps")}


def preflight_participant(config: Config) -> ParticipantPlan:
    """Check everything the participant level touches; nothing is written."""
    from bids_app.encoding import load_run_confounds

    check_folders(config, work=True)
    dataset = discover(config)
    for run in dataset.all_runs:
        check_run_inputs(run)
    plan = plan_acquisitions(dataset)
    specs = _models(config)
    # damaged bytes inside a BOLD series are met when it is read, seconds after the start
    # when the atoms are cached; otherwise the stimulus level (minutes to hours) runs
    # first, so every series is read to its end (CRC) here
    if not all(atoms_cached(config, spec, plan) for spec in specs):
        LOGGER.info("Pre-flight: reading %d BOLD series to the end (the atoms are not "
                    "cached yet: a damaged file must stop the run before they are "
                    "computed)", len(dataset.all_runs))
        for run in dataset.all_runs:
            check_image_bytes(run.bold)
    device = resolve_device(config.device)
    confounds = {r.bold: load_run_confounds(r.bold) for r in dataset.all_runs}
    _check_atom_count(config, specs, dataset, confounds)
    _check_memory(config, specs, plan)
    check_free_space(_estimated_bytes(config, specs, plan, dataset))
    LOGGER.info("Pre-flight checks passed: %d subject(s), %d run(s), %d model(s)",
                len(dataset.subjects), len(dataset.all_runs), len(specs))
    return ParticipantPlan(dataset=dataset, plan=plan, specs=specs, device=device,
                             confounds=confounds)


def preflight_group(config: Config) -> GroupPlan:
    """Check everything the group level touches; nothing is written."""
    check_folders(config, work=False)
    carry_participant_settings(config, read_participant_settings(config.output_dir))
    specs = _models(config)
    atoms, inputs, atlases, summaries = {}, {}, {}, {}
    for spec in specs:
        atoms[spec.label] = read_atom_outputs(config.output_dir, spec.label)
        inputs[spec.label] = read_group_inputs(config.output_dir, config.space_entities,
                                               spec.label, config.participant_label,
                                               config.null_surrogates)
        atlases[spec.label] = atlas = load_fbn_atlas(config.fbn_atlas,
                                                     inputs[spec.label].mask_img,
                                                     space=config.space)
        check_coverage(atlas)
    for label, i in inputs.items():      # the bootstrap's block: one atom of every subject
        need = bootstrap_block_bytes(len(i.subjects), int(i.mask.sum()))
        if need > config.mem_gb * 2 ** 30 / 4:       # more than the quarter it may take
            raise LlmfbnError(
                f"--mem-gb {config.mem_gb:g} is too small for the group level of {label}",
                expected=f"at least {4 * need / 2 ** 30:.2f} GB: the bootstrap holds one "
                "atom's maps of every subject (and their temporaries) in a quarter of --mem-gb",
                found=f"{len(i.subjects)} subjects x {int(i.mask.sum())} voxels",
                todo=f"pass --mem-gb {max(1, int(np.ceil(4 * need / 2 ** 30)))} or more")
    n_bytes = sum(int(i.mask.sum()) * i.n_atoms * 2 * 4 for i in inputs.values())
    scratch = scratch_folder(config.work_dir)
    check_free_space({config.output_dir: (n_bytes, "group maps"),
                      scratch: (sum(scratch_bytes(i) for i in inputs.values()),
                                "every subject's effect maps, disk-backed while the group "
                                "level runs (--work-dir, else $TMPDIR)")})
    # every map is read (and so checked) here, one subject at a time, before any write
    for spec in specs:
        summaries[spec.label] = stream_subjects(inputs[spec.label], atlases[spec.label],
                                                config.fdr_q, config.min_iou, scratch)
    LOGGER.info("Pre-flight checks passed: %d model(s), atlas %s (%.0f%% inside the mask)",
                len(specs), config.fbn_atlas,
                100 * min(a.coverage for a in atlases.values()))
    return GroupPlan(specs=specs, atoms=atoms, inputs=inputs, atlases=atlases,
                     summaries=summaries)
