"""Participant level: stimulus-level results per model (cached), then one encoding model
per subject, its maps and its report."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bids_app.bids import derivatives as out
from bids_app.bids import naming
from bids_app.bids.images import intersect_masks, read_bold
from bids_app.bids.layout import RunFiles
from bids_app.bids.outputs import write_atom_outputs, write_participant_outputs, write_run_config
from bids_app.bids.sidecars import model_sidecar
from bids_app.config import Config
from bids_app.encoding import (
    RunData,
    cross_validated_r,
    fit_participant,
    load_run_confounds,
    load_run_motion,
)
from bids_app.report import RunCheck, SubjectResult, collect_warnings, write_subject_report
from bids_app.workflow.stimulus import compute_atoms, prepare

LOGGER = logging.getLogger("llmfbn")


def run_participant(config: Config) -> None:
    """Stimulus features and atoms (cached, per model), then one encoding model per subject."""
    import torch  # imported when used: the checks at the door answer in well under a second

    torch.set_num_threads(config.nprocs)
    dataset, plan, specs, device = prepare(config)
    confounds = {r.bold: load_run_confounds(r.bold) for r in dataset.all_runs}
    LOGGER.info("Participant level: %d subject(s) [%s], %d task/run clock(s) [%s], model(s) %s",
                len(dataset.subjects), ", ".join(dataset.subjects), len(plan),
                ", ".join(plan), ", ".join(s.name for s in specs))
    out.write_dataset_description(config.output_dir, config.bids_dir, config.derivatives,
                                  dataset.raw_description, dataset.fmriprep_description)
    write_run_config(config)
    for spec in specs:
        atoms_dir = compute_atoms(config, spec, plan, device)
        write_atom_outputs(config.output_dir, spec.label, atoms_dir, model_sidecar(config, spec))
        _participant_maps(config, spec, dataset, atoms_dir, confounds)
    LOGGER.info("Participant level done: outputs in %s", config.output_dir)


def _atoms_by_acquisition(atoms_dir: Path) -> dict[str, np.ndarray]:
    """{acquisition: (n_frames, n_atoms)} atom time courses on each acquisition's clock."""
    atoms = np.load(atoms_dir / "atoms.npy")              # (n_atoms, n_trs_total)
    frames = pd.read_csv(atoms_dir / "frames.tsv", sep="\t")
    return {key: atoms[:, (frames["acquisition"] == key).to_numpy()].T
            for key in frames["acquisition"].unique()}


def subject_mask(runs: list[RunFiles]):
    """Intersection of the subject's fMRIPrep brain masks (all runs on one grid)."""
    return intersect_masks([r.mask for r in runs], [r.mask.name for r in runs],
                           f"the runs of sub-{runs[0].subject} are on different grids",
                           "use one --space/res for all runs")


def _fit_subject(config: Config, runs: list[RunFiles], atoms_by_acq: dict, confounds: dict):
    """The subject's fit, CV r, mask and what the report's data checks show (each run's
    checks and the mean BOLD, computed from the BOLD read for the fit)."""
    mask_img, mask = subject_mask(runs)
    run_data, checks, mean_bold = [], [], 0.0
    for run in runs:
        conf, sample_mask = confounds[run.bold]
        bold, mean = read_bold(run.bold, mask, mask_img)
        mean_bold = mean_bold + mean * (run.n_volumes / sum(r.n_volumes for r in runs))
        run_data.append(RunData(bold=bold, confounds=conf, sample_mask=sample_mask,
                                atoms=atoms_by_acq[run.acquisition][: run.n_volumes],
                                name=run.name))
        checks.append(RunCheck(name=run.name, t_r_s=run.t_r_s, n_volumes=run.n_volumes,
                               kept=sample_mask, confounds=conf,
                               motion=load_run_motion(run.confounds)))
    fit = fit_participant(run_data, glm=config.glm)
    cv_r = cross_validated_r(run_data) if len(run_data) > 1 else None
    return fit, cv_r, mask_img, mask, checks, mean_bold


def _subject_sidecar(config: Config, spec, runs: list[RunFiles], fit) -> dict:
    n_atoms = fit.effect.shape[0]
    return {
        **model_sidecar(config, spec),
        "Sources": [str(r.bold.relative_to(config.derivatives)) for r in runs],
        "Tasks": sorted({r.task for r in runs}),
        "VolumesUsed": fit.n_volumes_used, "DegreesOfFreedom": int(fit.dof),
        "Atoms": naming.atom_names(n_atoms),
        "AtomsFile": f"{naming.ATOMS_DIR}/{naming.model_desc(spec.label)}_atoms.tsv",
    }


def _participant_maps(config: Config, spec, dataset, atoms_dir: Path, confounds) -> None:
    atoms_by_acq = _atoms_by_acquisition(atoms_dir)
    for index, subject in enumerate(dataset.subjects, 1):
        started = time.monotonic()
        runs = dataset.runs[subject]
        with collect_warnings() as warned:
            fit, cv_r, mask_img, mask, checks, mean_bold = _fit_subject(
                config, runs, atoms_by_acq, confounds)
            write_participant_outputs(config.output_dir, subject, config.space_entities,
                                      spec.label, fit, cv_r, mask_img, mask,
                                      _subject_sidecar(config, spec, runs, fit))
        write_subject_report(SubjectResult(config=config, spec=spec, subject=subject, fit=fit,
                                           cv_r=cv_r, mask_img=mask_img, mask=mask,
                                           runs=checks, mean_bold=mean_bold, warnings=warned))
        LOGGER.info("[%d/%d] sub-%s (%s): %d runs, %d volumes, %d voxels, median R2 %.3f, "
                    "median CV r %s (%.1f s)", index, len(dataset.subjects), subject,
                    spec.label, len(runs), fit.n_volumes_used, int(mask.sum()),
                    float(np.median(fit.r2)),
                    "n/a" if cv_r is None else f"{float(np.median(cv_r)):.3f}",
                    time.monotonic() - started)
