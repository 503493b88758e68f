"""Participant level: pre-flight checks, stimulus-level results per model (cached in the
work directory), then one encoding model per subject, its maps and its report.

Nothing is written to OUTPUT_DIR before the pre-flight checks pass and the atoms of every
model exist; the outputs are then written inside :func:`bids_app.atomic.deferred_replace`,
so a run that fails on the way (a damaged file met late, a full disk) leaves no new file
under a final name."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bids_app.atomic import deferred_replace, remove_stale_temporaries
from bids_app.bids import naming
from bids_app.bids.describe import write_dataset_files
from bids_app.bids.images import intersect_masks, masked_series
from bids_app.bids.layout import RunFiles
from bids_app.bids.outputs import write_atom_outputs, write_participant_outputs, write_run_config
from bids_app.bids.sidecars import image_sidecar, model_sidecar
from bids_app.cache import CACHE_DIR
from bids_app.config import Config
from bids_app.encoding import RunData, cross_validated_r, fit_participant
from bids_app.report import SubjectResult, write_subject_report
from bids_app.workflow.preflight import preflight_participant
from bids_app.workflow.stimulus import compute_atoms

LOGGER = logging.getLogger("llmfbn")


def run_participant(config: Config) -> None:
    """Pre-flight, stimulus features and atoms (cached, per model), then one encoding model
    per subject."""
    import torch  # imported when used: the checks at the door answer in well under a second

    checked = preflight_participant(config)
    torch.set_num_threads(config.nprocs)
    dataset, plan, specs = checked.dataset, checked.plan, checked.specs
    remove_stale_temporaries(config.output_dir)
    remove_stale_temporaries(config.work_dir / CACHE_DIR)
    LOGGER.info("Participant level: %d subject(s) [%s], %d task/run clock(s) [%s], model(s) %s",
                len(dataset.subjects), ", ".join(dataset.subjects), len(plan),
                ", ".join(plan), ", ".join(s.name for s in specs))
    atoms_dirs = {spec.label: compute_atoms(config, spec, plan, checked.device)
                  for spec in specs}
    with deferred_replace():
        write_dataset_files(config.output_dir, config.bids_dir, config.derivatives,
                            dataset.raw_description, dataset.fmriprep_description)
        write_run_config(config)
        for spec in specs:
            write_atom_outputs(config.output_dir, spec.label, atoms_dirs[spec.label],
                               model_sidecar(config, spec))
            _participant_maps(config, spec, dataset, atoms_dirs[spec.label],
                              checked.confounds)
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
    mask_img, mask = subject_mask(runs)
    run_data = []
    for run in runs:
        conf, sample_mask = confounds[run.bold]
        run_data.append(RunData(bold=masked_series(run.bold, mask, mask_img), confounds=conf,
                                sample_mask=sample_mask,
                                atoms=atoms_by_acq[run.acquisition][: run.n_volumes],
                                name=run.name))
    fit = fit_participant(run_data, glm=config.glm)
    cv_r = cross_validated_r(run_data) if len(run_data) > 1 else None
    return fit, cv_r, mask_img, mask


def _subject_sidecar(config: Config, spec, runs: list[RunFiles], fit) -> dict:
    n_atoms = fit.effect.shape[0]
    return {
        **model_sidecar(config, spec), **image_sidecar(config, runs),
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
        fit, cv_r, mask_img, mask = _fit_subject(config, runs, atoms_by_acq, confounds)
        write_participant_outputs(config.output_dir, subject, config.space_entities,
                                  spec.label, fit, cv_r, mask_img, mask,
                                  _subject_sidecar(config, spec, runs, fit))
        write_subject_report(SubjectResult(config=config, spec=spec, subject=subject, fit=fit,
                                           cv_r=cv_r, mask_img=mask_img, mask=mask))
        LOGGER.info("[%d/%d] sub-%s (%s): %d runs, %d volumes, %d voxels, median R2 %.3f, "
                    "median CV r %s (%.1f s)", index, len(dataset.subjects), subject,
                    spec.label, len(runs), fit.n_volumes_used, int(mask.sum()),
                    float(np.median(fit.r2)),
                    "n/a" if cv_r is None else f"{float(np.median(cv_r)):.3f}",
                    time.monotonic() - started)
