"""Participant level: pre-flight checks, stimulus-level results per model (cached in the
work directory), then one encoding model per subject, its maps and its report.

Nothing is written to OUTPUT_DIR before the pre-flight checks pass and the atoms of every
model exist; the outputs are then written inside :func:`bids_app.atomic.deferred_replace`,
so a run that fails on the way (a damaged file met late, a full disk) leaves no new file
under a final name."""

from __future__ import annotations

import logging
import time
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from bids_app.atomic import deferred_replace, remove_stale_temporaries
from bids_app.bids import naming
from bids_app.bids.describe import write_dataset_files
from bids_app.bids.images import intersect_masks, read_bold
from bids_app.bids.layout import RunFiles
from bids_app.bids.outputs import (
    write_atom_outputs,
    write_nuisance_outputs,
    write_participant_outputs,
    write_run_config,
)
from bids_app.bids.sidecars import image_sidecar, model_sidecar, nuisance_sidecar, volumes_used
from bids_app.cache import CACHE_DIR
from bids_app.config import Config
from bids_app.encoding import (
    PREDICTION_RIDGE,
    RunData,
    cross_validated_r,
    fit_participant,
    load_run_motion,
    network_effects_of,
    partial_network_effects,
    split_half_prediction,
    used_volumes,
)
from bids_app.group.null import DEFAULT_N_BLOCKS, phase_randomised, phase_randomised_blocks
from bids_app.parallel import forked_map
from bids_app.report import RunCheck, SubjectResult, collect_warnings, write_subject_report
from bids_app.report.subject import DrawingSetup
from bids_app.workflow.preflight import preflight_participant
from bids_app.workflow.stimulus import compute_atoms, nuisance_regressors

LOGGER = logging.getLogger("llmfbn")

#: Peak memory of one subject's participant maps, in units of its BOLD runs as float32 on
#: the whole grid: the runs are read streamed and masked, so measured 993 MB for one 2 mm,
#: 300-volume run of 1.32 GB (0.75; it was 2.96 GB before streaming,
#: benchmarks/results/scale.md); 1.0 keeps a margin.
SUBJECT_MEMORY_FACTOR = 1.0


def run_participant(config: Config) -> None:
    """Pre-flight, stimulus features and atoms (cached, per model), then one encoding model
    per subject."""
    import torch  # imported when used: the checks at the door answer in well under a second

    checked = preflight_participant(config)
    torch.set_num_threads(config.nprocs)
    dataset, plan, specs = checked.dataset, checked.plan, checked.specs
    nuisance = nuisance_regressors(config, plan)      # reads the audio before any long step
    remove_stale_temporaries(config.output_dir)
    remove_stale_temporaries(config.work_dir / CACHE_DIR)
    LOGGER.info("Participant level: %d subject(s) [%s], %d task/run clock(s) [%s], model(s) %s",
                len(dataset.subjects), ", ".join(dataset.subjects), len(plan),
                ", ".join(plan), ", ".join(s.name for s in specs))
    atoms_dirs = {spec.label: compute_atoms(config, spec, plan, checked.device)
                  for spec in specs}
    n_workers = subject_workers(config, dataset)      # the same for every model
    with deferred_replace():
        write_dataset_files(config.output_dir, config.bids_dir, config.derivatives,
                            dataset.raw_description, dataset.fmriprep_description)
        write_run_config(config)
        for index, spec in enumerate(specs):
            write_atom_outputs(config.output_dir, spec.label, atoms_dirs[spec.label],
                               model_sidecar(config, spec))
            # the nuisance maps do not depend on the model: written with the first one
            _participant_maps(config, spec, dataset, atoms_dirs[spec.label],
                              (checked.confounds, nuisance), write_nuisance=index == 0,
                              n_workers=n_workers)
    if not config.reports:
        LOGGER.info("HTML reports not written (--no-reports)")
    LOGGER.info("Participant level done: outputs in %s", config.output_dir)


def _atoms_by_acquisition(config: Config, atoms_dir: Path) -> dict[str, tuple]:
    """{acquisition: (atoms (n_frames, n_atoms), used (n_frames,) bool, surrogates
    (n_frames, n_surrogates) or None, blocks (n_frames, n_blocks * n_atoms) or None)}:
    atom time courses on each acquisition's clock (0 on unused frames), the frames used,
    the coupling null's surrogate atoms (phase-randomised atoms,
    :func:`bids_app.group.null.phase_randomised`) and the network-prediction test's
    surrogate blocks (:func:`bids_app.group.null.phase_randomised_blocks`, block ``b`` in
    columns ``b * n_atoms ...``) likewise."""
    atoms = np.load(atoms_dir / "atoms.npy")              # (n_atoms, n_used_frames)
    frames = pd.read_csv(atoms_dir / "frames.tsv", sep="\t")
    used = frames["used"].to_numpy(bool)
    courses = [atoms]
    if config.null_surrogates:
        segments = frames.loc[used, "acquisition"].to_numpy()
        courses.append(phase_randomised(atoms, segments, config.null_surrogates, config.seed))
        blocks = phase_randomised_blocks(atoms, segments, DEFAULT_N_BLOCKS, config.seed)
        courses.append(blocks.reshape(-1, blocks.shape[2]))
    full = []
    for values in courses:
        on_clock = np.zeros((len(frames), values.shape[0]), dtype=atoms.dtype)
        on_clock[used] = values.T
        full.append(on_clock)
    null, blocks = (full[1], full[2]) if len(full) > 1 else (None, None)
    return {key: (full[0][rows], used[rows], None if null is None else null[rows],
                  None if blocks is None else blocks[rows])
            for key in frames["acquisition"].unique()
            for rows in [(frames["acquisition"] == key).to_numpy()]}


def subject_mask(runs: list[RunFiles]):
    """Intersection of the subject's fMRIPrep brain masks (all runs on one grid)."""
    return intersect_masks([r.mask for r in runs], [r.mask.name for r in runs],
                           f"the runs of sub-{runs[0].subject} are on different grids",
                           "use one --space/res for all runs")


def _fit_subject(config: Config, runs: list[RunFiles], atoms_by_acq: dict, regressors,
                 seconds: dict | None = None, after_reading=None):
    """The subject's encoding model on the volumes that are steady-state and used frames,
    with confounds and stimulus nuisance regressors; its CV r, mask, and what the report's
    data checks show (each run's checks and the mean BOLD, from the BOLD read for the fit).
    ``seconds["read"]`` (when given) adds up the time spent reading the BOLD series;
    ``after_reading`` (when given) is called once every series is read."""
    confounds, nuisance = regressors
    mask_img, mask = subject_mask(runs)
    run_data, checks, mean_bold = [], [], 0.0
    for run in runs:
        conf, steady = confounds[run.bold]
        atoms, used = atoms_by_acq[run.acquisition][:2]
        volumes = used_volumes(steady, used[: run.n_volumes])
        extra = nuisance[run.acquisition].iloc[: run.n_volumes]
        reading = time.monotonic()
        bold, mean = read_bold(run.bold, mask, mask_img)
        if seconds is not None:
            seconds["read"] = seconds.get("read", 0.0) + time.monotonic() - reading
        mean_bold = mean_bold + mean * (run.n_volumes / sum(r.n_volumes for r in runs))
        run_data.append(RunData(bold=bold, confounds=conf.loc[volumes], sample_mask=volumes,
                                atoms=atoms[: run.n_volumes], name=run.name,
                                nuisance=extra if extra.shape[1] else None))
        checks.append(RunCheck(name=run.name, t_r_s=run.t_r_s, n_volumes=run.n_volumes,
                               kept=volumes, confounds=conf.loc[volumes],
                               motion=load_run_motion(run.confounds)))
    if after_reading is not None:
        after_reading()
    atlas = pools = None
    if config.null_surrogates:
        from bids_app.atlases import load_fbn_atlas

        atlas = load_fbn_atlas(config.fbn_atlas, mask_img, space=config.space)
        masks = np.asarray(atlas.masks, dtype=np.float64)
        pools = masks / np.maximum(masks.sum(axis=1, keepdims=True), 1.0)
    fit = fit_participant(run_data, glm=config.glm, pools=pools)
    cv_r = cross_validated_r(run_data) if len(run_data) > 1 else None
    if atlas is not None:
        fit.network_effect = _network_effects(config, fit, run_data, runs, atoms_by_acq, atlas)
        fit.network_prediction = _network_prediction(fit, run_data, runs, atoms_by_acq, atlas)
    return fit, cv_r, mask_img, mask, checks, mean_bold


def _network_effects(config: Config, fit, run_data, runs, atoms_by_acq, atlas):
    """The coupling null's table: on each network's mean signal (voxels of the subject's
    mask in the network), the standardised effect of each atom and surrogate atom alone
    with the confounds, as the maps fit them (columns ``<network>``,
    :func:`bids_app.encoding.network_effects_of`), and given the other atoms, a surrogate in
    place of its own atom (columns ``<network>_given``,
    :func:`bids_app.encoding.partial_network_effects`)."""
    n_atoms = np.shape(run_data[0].atoms)[1]
    surrogates = np.concatenate([
        np.asarray(atoms_by_acq[run.acquisition][2][: run.n_volumes],
                   dtype=np.float64)[np.asarray(data.sample_mask)]
        for data, run in zip(run_data, runs)])
    design = fit.design
    separate = np.vstack([
        network_effects_of(design, n_atoms, design.iloc[:, :n_atoms], fit.network_signals,
                           config.glm, standardised=True),
        network_effects_of(design, n_atoms, surrogates, fit.network_signals, config.glm,
                           standardised=True)])
    given = np.vstack(partial_network_effects(design, n_atoms, surrogates,
                                              fit.network_signals))
    names = list(atlas.network_names)
    table = pd.DataFrame(np.hstack([separate, given]),
                         columns=names + [naming.given_column(n) for n in names])
    table.insert(0, "regressor", list(design.columns[:n_atoms])
                 + naming.surrogate_names(surrogates.shape[1]))
    table.attrs["atlas"] = atlas.name
    table.attrs["networks"] = names
    return table


def _network_prediction(fit, run_data, runs, atoms_by_acq, atlas) -> pd.DataFrame:
    """The network-prediction test's table: one row per block (the atoms, then the
    surrogate blocks), one column per network, the split-half prediction correlation of the
    network's mean signal (:func:`bids_app.encoding.split_half_prediction`)."""
    n_atoms = np.shape(run_data[0].atoms)[1]
    blocks = np.concatenate([
        np.asarray(atoms_by_acq[run.acquisition][3][: run.n_volumes],
                   dtype=np.float64)[np.asarray(data.sample_mask)]
        for data, run in zip(run_data, runs)])                 # (n_used, n_blocks * n_atoms)
    blocks = blocks.reshape(blocks.shape[0], -1, n_atoms).transpose(1, 0, 2)
    design = fit.design
    every = np.concatenate([design.to_numpy(np.float64)[None, :, :n_atoms], blocks])
    r = split_half_prediction(design, n_atoms, every, fit.network_signals,
                              [np.asarray(d.sample_mask).size for d in run_data])
    names = list(atlas.network_names)
    table = pd.DataFrame(r, columns=names)
    table.insert(0, "block", ["atoms"] + naming.surrogate_names(len(blocks)))
    table.attrs["ridge"] = PREDICTION_RIDGE
    table.attrs["atlas"] = atlas.name
    table.attrs["networks"] = names
    return table


def _subject_sidecar(config: Config, spec, runs: list[RunFiles], fit) -> dict:
    n_atoms = fit.effect.shape[0]
    return {
        **model_sidecar(config, spec), **image_sidecar(config, runs),
        "Tasks": sorted({r.task for r in runs}),
        **volumes_used(fit.design),
        "DegreesOfFreedom": int(fit.dof),
        "Atoms": naming.atom_names(n_atoms),
        "AtomsFile": f"{naming.ATOMS_DIR}/{naming.model_desc(spec.label)}_atoms.tsv",
    }


def _nuisance_sidecar(config: Config, runs: list[RunFiles], fit) -> dict:
    return {**nuisance_sidecar(config), **image_sidecar(config, runs),
            "Tasks": sorted({r.task for r in runs}), **volumes_used(fit.design)}


def subject_workers(config: Config, dataset) -> int:
    """How many subjects run at once: ``--nprocs``, at most one per subject, and as many as
    ``--mem-gb`` holds at :data:`SUBJECT_MEMORY_FACTOR` times the largest subject's BOLD
    (float32, whole grid, every run)."""
    import nibabel as nib

    n = min(int(config.nprocs), len(dataset.subjects))
    if n < 2:
        return 1
    largest = max(sum(4 * float(np.prod(nib.load(run.bold).shape)) for run in runs)
                  for runs in dataset.runs.values())
    fits = int(config.mem_gb * 2 ** 30 // max(SUBJECT_MEMORY_FACTOR * largest, 1.0))
    workers = max(1, min(n, fits))
    LOGGER.info("Participant maps: %d subject(s) at a time, one thread each (--nprocs %d; "
                "--mem-gb %g holds %d at ~%.1f GB each)", workers, config.nprocs,
                config.mem_gb, fits, SUBJECT_MEMORY_FACTOR * largest / 2 ** 30)
    return workers


def _participant_maps(config: Config, spec, dataset, atoms_dir: Path, regressors,
                      write_nuisance: bool, n_workers: int) -> None:
    """Every subject's encoding model, maps and report; ``n_workers`` (:func:`subject_workers`)
    > 1 runs that many subjects at once in forked worker processes
    (:func:`bids_app.parallel.forked_map`), giving the same files as one process."""
    atoms_by_acq = _atoms_by_acquisition(config, atoms_dir)
    # one process for every subject: the report's libraries load while the first subject's
    # GLM runs (not with forked workers: no thread may be running when a process forks)
    drawing = DrawingSetup() if config.reports and n_workers == 1 else None
    work = partial(_subject_outputs, config, spec, dataset, atoms_by_acq, regressors,
                   write_nuisance, drawing)
    subjects = dataset.subjects
    for index, line in enumerate(
            forked_map(work, subjects, n_workers), 1):
        LOGGER.info("[%d/%d] %s", index, len(subjects), line)


def _subject_outputs(config: Config, spec, dataset, atoms_by_acq: dict, regressors,
                     write_nuisance: bool, drawing: DrawingSetup | None, subject: str
                     ) -> str:
    """Fit one subject, write its maps, sidecars and report; returns its log line. BLAS
    runs on one thread (as in each of the forked workers), so that the maps are the same
    bits whatever ``--nprocs`` (a threaded matrix product rounds differently)."""
    from threadpoolctl import threadpool_limits

    started = time.monotonic()
    runs = dataset.runs[subject]
    seconds = {"read": 0.0}
    with threadpool_limits(1), collect_warnings() as warned:
        fit, cv_r, mask_img, mask, checks, mean_bold = _fit_subject(
            config, runs, atoms_by_acq, regressors, seconds,
            after_reading=None if drawing is None else drawing.start)
        seconds["GLM"] = time.monotonic() - started - seconds["read"]
        writing = time.monotonic()
        write_participant_outputs(config.output_dir, subject, config.space_entities,
                                  spec.label, fit, cv_r, mask_img, mask,
                                  _subject_sidecar(config, spec, runs, fit))
        if write_nuisance and fit.nuisance is not None:
            write_nuisance_outputs(config.output_dir, subject, config.space_entities,
                                   fit.nuisance, mask_img, mask, _nuisance_sidecar(
                                       config, runs, fit))
        seconds["maps"] = time.monotonic() - writing
    if config.reports:
        reporting = time.monotonic()
        if drawing is not None:
            drawing.wait()
        write_subject_report(SubjectResult(config=config, spec=spec, subject=subject,
                                           fit=fit, cv_r=cv_r, mask_img=mask_img, mask=mask,
                                           runs=checks, mean_bold=mean_bold,
                                           warnings=warned))
        seconds["report"] = time.monotonic() - reporting
    stages = ", ".join(f"{name} {value:.1f} s" for name, value in seconds.items())
    return (f"sub-{subject} ({spec.label}): {len(runs)} runs, {fit.n_volumes_used} volumes, "
            f"{int(mask.sum())} voxels, median R2 {float(np.median(fit.r2)):.3f}, "
            "median CV r " + ("n/a" if cv_r is None else f"{float(np.median(cv_r)):.3f}")
            + f" ({stages}; {time.monotonic() - started:.1f} s)")
