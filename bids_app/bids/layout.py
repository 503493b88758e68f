"""Find everything a run needs in the raw dataset and its fMRIPrep derivatives (pybids).

All checks happen here, before any output is written: a missing subject, missing fMRIPrep
files or missing word timings fail with a message naming the expected file.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib

from bids_app.config import Config
from bids_app.errors import LlmfbnError

LOGGER = logging.getLogger("llmfbn")
TIMING_NAMES = ("align.csv", "align.json")


@dataclass(frozen=True)
class RunFiles:
    """The files and timing of one preprocessed BOLD run of one subject."""

    subject: str
    task: str
    run: int | None
    session: str | None
    bold: Path
    mask: Path
    confounds: Path
    events: Path
    t_r_s: float
    start_time_s: float
    n_volumes: int

    @property
    def name(self) -> str:
        parts = [f"ses-{self.session}"] if self.session else []
        parts.append(f"task-{self.task}")
        if self.run is not None:
            parts.append(f"run-{self.run}")
        return "_".join(parts)


@dataclass
class DatasetFiles:
    """What discovery found: runs per subject and the word timings of each task."""

    subjects: list[str]
    runs: dict[str, list[RunFiles]]
    timings: dict[str, Path]
    raw_description: dict = field(default_factory=dict)
    fmriprep_description: dict = field(default_factory=dict)

    @property
    def tasks(self) -> list[str]:
        return sorted({r.task for runs in self.runs.values() for r in runs})


def _read_description(folder: Path, what: str, todo: str) -> dict:
    path = folder / "dataset_description.json"
    if not path.is_file():
        raise LlmfbnError(f"{what} has no dataset_description.json",
                          expected=str(path), found="no such file", todo=todo)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise LlmfbnError(f"cannot read {path}", found=str(err), todo="fix the JSON file")


def _layout(root: Path, validate: bool, derivative: bool):
    from bids import BIDSLayout
    from bids.exceptions import BIDSValidationError

    try:
        if derivative:
            return BIDSLayout(root, validate=False, is_derivative=True)
        return BIDSLayout(root, validate=validate)
    except (BIDSValidationError, ValueError) as err:
        raise LlmfbnError(
            f"pybids could not index {root}", found=str(err).splitlines()[0],
            todo="fix the dataset, or pass --skip-bids-validation if you know it is usable",
        )


def find_word_timings(bids_dir: Path, task: str) -> Path | None:
    """Narratives layout: ``stimuli/gentle/<task>/align.csv`` (or ``align.json``)."""
    folder = bids_dir / "stimuli" / "gentle" / task
    for name in TIMING_NAMES:
        if (folder / name).is_file():
            return folder / name
    return None


def _one(files, what: str, expected: str, todo: str) -> Path:
    if not files:
        raise LlmfbnError(f"missing {what}", expected=expected, found="no such file", todo=todo)
    if len(files) > 1:
        names = ", ".join(sorted(Path(f.path).name for f in files))
        raise LlmfbnError(f"several candidates for {what}", found=names,
                          todo="select one with --space SPACE:res-N (or --task)")
    return Path(files[0].path)


def discover(config: Config) -> DatasetFiles:
    """Index the raw dataset and fMRIPrep derivatives; check every file the run needs."""
    validate = not config.skip_bids_validation
    raw_description = _read_description(
        config.bids_dir, f"the BIDS dataset {config.bids_dir}",
        "point BIDS_DIR at the dataset root (the folder holding sub-*/)")
    LOGGER.info("Indexing %s with pybids", config.bids_dir)
    raw = _layout(config.bids_dir, validate, derivative=False)
    subjects_all = sorted(raw.get_subjects())
    if not subjects_all:
        raise LlmfbnError("no subjects in the BIDS dataset", expected="sub-*/ folders",
                          found=f"none under {config.bids_dir}")
    if config.participant_label:
        unknown = [s for s in config.participant_label if s not in subjects_all]
        if unknown:
            raise LlmfbnError(
                "unknown participant label(s): " + ", ".join(f"sub-{s}" for s in unknown),
                found="subjects in the dataset: " + ", ".join(f"sub-{s}" for s in subjects_all),
                todo="use one of the existing labels with --participant-label",
            )
        subjects = list(config.participant_label)
    else:
        subjects = subjects_all

    fmriprep_dir = config.derivatives
    if not fmriprep_dir.is_dir():
        raise LlmfbnError(
            "the fMRIPrep derivatives folder does not exist", expected=str(fmriprep_dir),
            found="no such folder",
            todo="run fMRIPrep first, or point --derivatives at its output folder")
    fmriprep_description = _read_description(
        fmriprep_dir, f"the fMRIPrep folder {fmriprep_dir}",
        "point --derivatives at fMRIPrep's output folder (it writes dataset_description.json)")
    deriv = _layout(fmriprep_dir, validate=False, derivative=True)

    tasks_all = sorted(raw.get_tasks())
    if config.task:
        unknown = [t for t in config.task if t not in tasks_all]
        if unknown:
            raise LlmfbnError("unknown task(s): " + ", ".join(unknown),
                              found="tasks in the dataset: " + ", ".join(tasks_all),
                              todo="use existing task labels with --task")
        tasks = list(config.task)
    else:
        tasks = tasks_all

    timings: dict[str, Path] = {}
    for task in tasks:
        path = find_word_timings(config.bids_dir, task)
        if path is None:
            expected = config.bids_dir / "stimuli" / "gentle" / task / "align.csv"
            if config.task:
                raise LlmfbnError(
                    f"missing word timings for task '{task}'",
                    expected=f"{expected} (Gentle CSV) or align.json beside it",
                    found="no such file",
                    todo="add the story's word timings there, or leave this task out with --task",
                )
            LOGGER.warning("Task '%s' has no word timings at %s: skipped", task, expected)
            continue
        timings[task] = path
    if not timings:
        raise LlmfbnError(
            "no task has word timings",
            expected="stimuli/gentle/<task>/align.csv for the tasks " + ", ".join(tasks),
            found="none", todo="add the stories' Gentle alignments in the Narratives layout")

    space_query = {"space": config.space}
    if config.res:
        space_query["res"] = config.res
    runs: dict[str, list[RunFiles]] = {}
    for subject in subjects:
        subject_runs = []
        for task in sorted(timings):
            raw_bolds = raw.get(subject=subject, task=task, suffix="bold",
                                extension=[".nii", ".nii.gz"])
            for raw_bold in raw_bolds:
                ents = raw_bold.get_entities()
                subject_runs.append(_run_files(config, raw, deriv, ents, space_query))
        if not subject_runs:
            raise LlmfbnError(
                f"sub-{subject} has no BOLD run of the tasks " + ", ".join(sorted(timings)),
                found=f"nothing under {config.bids_dir / ('sub-' + subject)}",
                todo="leave this subject out with --participant-label")
        runs[subject] = subject_runs
    return DatasetFiles(subjects=subjects, runs=runs, timings=timings,
                        raw_description=raw_description,
                        fmriprep_description=fmriprep_description)


def _run_files(config: Config, raw, deriv, ents: dict, space_query: dict) -> RunFiles:
    subject, task = ents["subject"], ents["task"]
    query = {k: ents[k] for k in ("subject", "session", "task", "run") if k in ents}
    label = "sub-" + subject + "".join(
        f"_{k[:3] if k == 'session' else k}-{ents[k]}" for k in ("session", "task", "run")
        if k in ents)
    todo = (f"run fMRIPrep for sub-{subject} with --output-spaces {config.space}"
            f"{':res-' + config.res if config.res else ''}, point --derivatives at its "
            f"output, or leave sub-{subject} out with --participant-label")
    where = config.derivatives / f"sub-{subject}" / "func"
    space_txt = "_".join(f"{k}-{v}" for k, v in space_query.items())
    bold = _one(deriv.get(**query, **space_query, desc="preproc", suffix="bold",
                          extension=[".nii", ".nii.gz"]),
                f"fMRIPrep preprocessed BOLD for {label}",
                f"{where}/{label}_{space_txt}_desc-preproc_bold.nii.gz", todo)
    mask = _one(deriv.get(**query, **space_query, desc="brain", suffix="mask",
                          extension=[".nii", ".nii.gz"]),
                f"fMRIPrep brain mask for {label}",
                f"{where}/{label}_{space_txt}_desc-brain_mask.nii.gz", todo)
    confounds = _one(deriv.get(**query, desc="confounds", suffix="timeseries", extension=".tsv"),
                     f"fMRIPrep confounds for {label}",
                     f"{where}/{label}_desc-confounds_timeseries.tsv", todo)
    events = raw.get(**query, suffix="events", extension=".tsv")
    if not events:
        raise LlmfbnError(
            f"missing events.tsv for {label}; llmfbn reads the story onset from it",
            expected=f"{config.bids_dir / ('sub-' + subject) / 'func' / (label + '_events.tsv')}"
            f" or task-{task}_events.tsv at the dataset root",
            found="no such file", todo="add the events file with the story's onset")
    metadata = deriv.get_metadata(str(bold))
    if "RepetitionTime" not in metadata:
        metadata = {**raw.get_metadata(str(bold).replace(str(config.derivatives), str(config.bids_dir))),
                    **metadata}
    if "RepetitionTime" not in metadata:
        raise LlmfbnError(f"no RepetitionTime for {bold.name}",
                          expected="RepetitionTime in the BOLD JSON sidecar",
                          found="no such field", todo="add it to the sidecar")
    try:
        header = nib.load(bold).header
    except Exception as err:  # noqa: BLE001 - any nibabel failure is a bad input file
        raise LlmfbnError(f"cannot read {bold}", found=str(err), todo="re-run fMRIPrep")
    shape = header.get_data_shape()
    if len(shape) != 4:
        raise LlmfbnError(f"{bold.name} is not a 4-D BOLD series", found=f"shape {shape}")
    return RunFiles(
        subject=subject, task=task, run=ents.get("run"), session=ents.get("session"),
        bold=bold, mask=mask, confounds=confounds, events=Path(events[0].path),
        t_r_s=float(metadata["RepetitionTime"]),
        start_time_s=float(metadata.get("StartTime", 0.0)), n_volumes=int(shape[3]),
    )
