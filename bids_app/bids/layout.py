"""Find everything a run needs in the raw dataset and its fMRIPrep derivatives (pybids).

All checks happen here, before any output is written: a missing subject, missing fMRIPrep
files or missing word timings fail with a message naming the expected file.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from bids_app.bids.images import bold_volumes
from bids_app.config import Config
from bids_app.errors import LlmfbnError
from bids_app.stimulus import read_wav, story_onset_s, story_stim_file

LOGGER = logging.getLogger("llmfbn")
TIMING_NAMES = ("align.csv", "align.json")


@dataclass(frozen=True)
class StoryPlacement:
    """A story (word-timing file) placed in a run: its start relative to the run's start.

    ``onset_s`` is the time of the story's t = 0 in seconds from the start of the run's first
    volume; it is negative for the later runs of a story split over several runs. ``audio``
    is the story's audio file when one is named (events.tsv ``stim_file`` under
    ``stimuli/``, or the ``audio`` column of ``--stimuli``), whether or not it exists.
    """

    timings: Path
    onset_s: float
    audio: Path | None = None


@dataclass(frozen=True)
class RunFiles:
    """The files, timing and stories of one preprocessed BOLD run of one subject."""

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
    stories: tuple[StoryPlacement, ...] = ()
    raw_bold: Path | None = None

    @property
    def acquisition(self) -> str:
        """Key shared by all subjects' runs of one task/run: ``task-x[_run-N]``."""
        return f"task-{self.task}" + (f"_run-{self.run}" if self.run is not None else "")

    @property
    def name(self) -> str:
        parts = [f"ses-{self.session}"] if self.session else []
        parts.append(f"task-{self.task}")
        if self.run is not None:
            parts.append(f"run-{self.run}")
        return "_".join(parts)


@dataclass
class DatasetFiles:
    """What discovery found: runs per subject, each with the stories placed in it."""

    subjects: list[str]
    runs: dict[str, list[RunFiles]]
    raw_description: dict = field(default_factory=dict)
    fmriprep_description: dict = field(default_factory=dict)

    @property
    def tasks(self) -> list[str]:
        return sorted({r.task for runs in self.runs.values() for r in runs})

    @property
    def all_runs(self) -> list[RunFiles]:
        return [r for subject in self.subjects for r in self.runs[subject]]


def _read_description(folder: Path, what: str, todo: str) -> dict:
    path = folder / "dataset_description.json"
    if not path.is_file():
        raise LlmfbnError(f"{what} has no dataset_description.json",
                          expected=str(path), found="no such file", todo=todo)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise LlmfbnError(f"cannot read {path}", found=str(err),
                          todo="fix the JSON file") from err


def subject_filter(subjects) -> re.Pattern | None:
    """The pybids ignore pattern of every subject but ``subjects`` (paths relative to the
    root, with a leading ``/``): a participant run of a few subjects indexes their files
    only, not the whole dataset's (fMRIPrep does the same). ``None`` for all subjects."""
    if not subjects:
        return None
    labels = "|".join(re.escape(s) for s in subjects)
    return re.compile(rf"^/sub-(?!(?:{labels})(?:[/_.]|$))")


def _layout(root: Path, validate: bool, derivative: bool, subjects=None):
    """pybids' layout of ``root``; with ``subjects``, only their files are indexed."""
    from bids import BIDSLayout
    from bids.exceptions import BIDSValidationError
    from bids.layout.index import BIDSLayoutIndexer
    from bids.layout.validation import DEFAULT_LOCATIONS_TO_IGNORE

    others = subject_filter(subjects)
    ignore = None if others is None else [*DEFAULT_LOCATIONS_TO_IGNORE, others]
    try:
        if derivative:
            return BIDSLayout(root, validate=False, is_derivative=True,
                              indexer=BIDSLayoutIndexer(validate=False, ignore=ignore))
        return BIDSLayout(root, validate=validate,
                          indexer=BIDSLayoutIndexer(validate=validate, ignore=ignore))
    except (BIDSValidationError, ValueError) as err:
        raise LlmfbnError(
            f"pybids could not index {root}", found=str(err).splitlines()[0],
            todo="fix the dataset, or pass --skip-bids-validation if you know it is usable",
        ) from err


def dataset_subjects(bids_dir: Path) -> list[str]:
    """The subject labels of a BIDS dataset: its ``sub-<label>`` folders."""
    return sorted(p.name[4:] for p in Path(bids_dir).glob("sub-*") if p.is_dir())


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


def _select_subjects(config: Config) -> list[str]:
    subjects_all = dataset_subjects(config.bids_dir)
    if not subjects_all:
        raise LlmfbnError("no subjects in the BIDS dataset", expected="sub-*/ folders",
                          found=f"none under {config.bids_dir}")
    if not config.participant_label:
        return subjects_all
    unknown = [s for s in config.participant_label if s not in subjects_all]
    if unknown:
        raise LlmfbnError(
            "unknown participant label(s): " + ", ".join(f"sub-{s}" for s in unknown),
            found="subjects in the dataset: " + ", ".join(f"sub-{s}" for s in subjects_all),
            todo="use one of the existing labels with --participant-label",
        )
    return list(config.participant_label)


def _fmriprep_layout(config: Config, subjects=None):
    fmriprep_dir = config.derivatives
    if not fmriprep_dir.is_dir():
        raise LlmfbnError(
            "the fMRIPrep derivatives folder does not exist", expected=str(fmriprep_dir),
            found="no such folder",
            todo="run fMRIPrep first, or point --derivatives at its output folder")
    description = _read_description(
        fmriprep_dir, f"the fMRIPrep folder {fmriprep_dir}",
        "point --derivatives at fMRIPrep's output folder (it writes dataset_description.json)")
    return (_layout(fmriprep_dir, validate=False, derivative=True, subjects=subjects),
            description)


def _task_timings(config: Config, raw) -> tuple[dict, pd.DataFrame | None]:
    """{task: Narratives timing file, or None with --stimuli}, and the --stimuli table."""
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
    if not config.stimuli:
        return _narratives_timings(config, tasks), None
    stimuli = read_stimuli_table(config.stimuli, config.bids_dir)
    unknown = sorted(set(stimuli["task"]) - set(tasks_all))
    if unknown:
        raise LlmfbnError(
            f"--stimuli {config.stimuli} names task(s) not in the dataset: "
            + ", ".join(unknown), found="tasks in the dataset: " + ", ".join(tasks_all),
            todo="fix the task column")
    return {t: None for t in tasks if t in set(stimuli["task"])}, stimuli


def _subject_runs(config: Config, raw, deriv, subject: str, timings: dict,
                  stimuli: pd.DataFrame | None) -> list[RunFiles]:
    space_query = {"space": config.space}
    if config.res:
        space_query["res"] = config.res
    subject_runs = []
    for task in sorted(timings):
        raw_bolds = raw.get(subject=subject, task=task, suffix="bold",
                            extension=[".nii", ".nii.gz"])
        for raw_bold in raw_bolds:
            run = _run_files(config, raw, deriv, raw_bold, space_query)
            stories = (stories_from_table(stimuli, run, config.bids_dir)
                       if stimuli is not None
                       else (StoryPlacement(timings[task], story_onset_s(run.events, task),
                                            events_audio(run.events, task, config.bids_dir)),))
            subject_runs.append(replace(run, stories=stories))
    if not subject_runs:
        raise LlmfbnError(
            f"sub-{subject} has no BOLD run of the tasks " + ", ".join(sorted(timings)),
            found=f"nothing under {config.bids_dir / ('sub-' + subject)}",
            todo="leave this subject out with --participant-label")
    return subject_runs


def discover(config: Config) -> DatasetFiles:
    """Index the raw dataset and fMRIPrep derivatives; check every file the run needs."""
    validate = not config.skip_bids_validation
    raw_description = _read_description(
        config.bids_dir, f"the BIDS dataset {config.bids_dir}",
        "point BIDS_DIR at the dataset root (the folder holding sub-*/)")
    LOGGER.info("Indexing %s with pybids", config.bids_dir)
    subjects = _select_subjects(config)
    # with --participant-label, only those subjects' files are indexed (a SLURM array task
    # of one subject of a 345-subject dataset does not index the other 344)
    only = subjects if config.participant_label else None
    raw = _layout(config.bids_dir, validate, derivative=False, subjects=only)
    deriv, fmriprep_description = _fmriprep_layout(config, subjects=only)
    timings, stimuli = _task_timings(config, raw)
    runs = {subject: _subject_runs(config, raw, deriv, subject, timings, stimuli)
            for subject in subjects}
    return DatasetFiles(subjects=subjects, runs=runs,
                        raw_description=raw_description,
                        fmriprep_description=fmriprep_description)


def _narratives_timings(config: Config, tasks: list[str]) -> dict[str, Path]:
    """Word timings in the Narratives layout, one story per task."""
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
                    todo="add the story's word timings there, leave this task out with "
                    "--task, or map tasks to timing files with --stimuli",
                )
            LOGGER.warning("Task '%s' has no word timings at %s: skipped", task, expected)
            continue
        timings[task] = path
    if not timings:
        raise LlmfbnError(
            "no task has word timings",
            expected="stimuli/gentle/<task>/align.csv for the tasks " + ", ".join(tasks),
            found="none",
            todo="add the stories' Gentle alignments in the Narratives layout, or give "
            "--stimuli FILE (a TSV with columns task, path and optional run, onset)")
    return timings


STIMULI_COLUMNS = ("task", "path", "run", "onset", "audio")


def events_audio(events: Path, task: str, bids_dir: Path) -> Path | None:
    """The story's audio named by the run's events.tsv: ``BIDS_DIR/stimuli/<stim_file>``
    (BIDS: ``stim_file`` is relative to ``stimuli/``), or None."""
    stim_file = story_stim_file(events, task)
    return None if stim_file is None else Path(bids_dir) / "stimuli" / stim_file


def _table_file(value: str, bids_dir: Path, where: str, what: str) -> Path:
    """A path of the --stimuli table (relative to BIDS_DIR or absolute) that must exist."""
    path = Path(value)
    path = path if path.is_absolute() else bids_dir / path
    if not path.is_file():
        raise LlmfbnError(f"{where}: {what} not found", expected=f"a file at {path}",
                          found="no such file", todo="paths are relative to BIDS_DIR or "
                          "absolute")
    return path


def read_stimuli_table(path: Path, bids_dir: Path) -> pd.DataFrame:
    """The ``--stimuli`` TSV: which word-timing file plays in which task/run, and when.

    Columns: ``task``, ``path`` (relative to BIDS_DIR or absolute; Gentle CSV/JSON, TextGrid,
    or a word table, detected from the file), optional ``run`` (empty: every run of the task),
    ``onset`` (seconds from the run's start to the story's start; empty: from the run's
    events.tsv) and ``audio`` (the story's WAV file, relative to BIDS_DIR or absolute; it
    must exist and be readable; empty: the run's events.tsv ``stim_file``, for a run with
    one story). The same file in several runs with different onsets is a story split over
    runs; several files in one run are several stories in that run.
    """
    path = Path(path)
    if not path.is_file():
        raise LlmfbnError("the --stimuli file does not exist", expected="a TSV file",
                          found=f"no file at {path}")
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except Exception as err:  # noqa: BLE001 - any parse failure is bad input
        raise LlmfbnError(f"cannot read --stimuli {path}", found=str(err),
                          todo="write a tab-separated table with a header row") from err
    missing = [c for c in ("task", "path") if c not in table.columns]
    extra = [c for c in table.columns if c not in STIMULI_COLUMNS]
    if missing or extra or table.empty:
        raise LlmfbnError(
            f"--stimuli {path} has the wrong columns",
            expected="a header with task, path and optionally run, onset, audio; one row "
            "per story",
            found="columns " + ", ".join(table.columns) + ("" if len(table) else ", no rows"),
            todo="fix the header")
    rows = []
    for line, row in enumerate(table.to_dict("records"), start=2):
        where = f"--stimuli {path}, line {line}"
        timing = _table_file(row["path"], bids_dir, where, "word-timing file")
        audio = row.get("audio", "").strip()
        if audio:
            audio = _table_file(audio, bids_dir, where, "audio file")
            read_wav(audio)             # named explicitly: it must be readable
        run = row.get("run", "").strip()
        onset = row.get("onset", "").strip()
        try:
            run_value = int(run) if run else None
            onset_value = float(onset) if onset else None
        except ValueError as err:
            raise LlmfbnError(f"{where}: run must be a whole number and onset a number of "
                              "seconds", found=f"run={run!r}, onset={onset!r}") from err
        rows.append({"task": row["task"].strip(), "path": timing, "run": run_value,
                     "onset": onset_value, "audio": audio or None})
    return pd.DataFrame(rows)


def stories_from_table(stimuli: pd.DataFrame, run: RunFiles,
                       bids_dir: Path) -> tuple[StoryPlacement, ...]:
    rows = stimuli[(stimuli["task"] == run.task)
                   & (stimuli["run"].isna() | (stimuli["run"] == run.run))]
    if rows.empty:
        raise LlmfbnError(f"--stimuli maps no story to {run.name} of sub-{run.subject}",
                          todo=f"add a row for task {run.task}" +
                          (f" run {run.run}" if run.run is not None else ""))
    placements = []
    for row in rows.to_dict("records"):
        onset = row["onset"]
        if (onset is None or pd.isna(onset)) and Path(row["path"]).name.endswith("_events.tsv"):
            onset = 0.0     # word rows of an events.tsv are timed from the run's start
        if onset is None or pd.isna(onset):
            if len(rows) > 1:
                raise LlmfbnError(
                    f"{run.name} of sub-{run.subject} has {len(rows)} stories in --stimuli; "
                    "their onsets cannot all come from events.tsv",
                    todo="give each of them an onset (seconds from the run's start)")
            onset = story_onset_s(run.events, run.task)
        audio = row.get("audio")
        if (audio is None or pd.isna(audio)) and len(rows) == 1:
            audio = events_audio(run.events, run.task, bids_dir)
        placements.append(StoryPlacement(Path(row["path"]), float(onset),
                                         None if audio is None or pd.isna(audio)
                                         else Path(audio)))
    return tuple(sorted(placements, key=lambda p: p.onset_s))


#: RepetitionTime values closer than this (relative) are the same.
TR_RTOL = 1e-3


def repetition_time(bold: Path, deriv_meta: dict, raw_meta: dict, raw_bold: Path) -> float:
    """RepetitionTime (s) of a run: fMRIPrep's sidecar, else the raw series' metadata with
    BIDS inheritance (its own sidecar, then ``task-<task>_bold.json`` at the dataset root,
    as pybids resolves it); both must agree when both give it."""
    values = {where: float(meta["RepetitionTime"]) for where, meta in
              ((f"the sidecar of {bold.name}", deriv_meta),
               (f"the raw metadata of {raw_bold.name} (with inheritance)", raw_meta))
              if "RepetitionTime" in meta}
    if not values:
        raise LlmfbnError(
            f"no RepetitionTime for {bold.name}",
            expected="RepetitionTime (s) in the fMRIPrep BOLD sidecar, the raw BOLD sidecar "
            "or task-<task>_bold.json at the root of the raw dataset",
            found="no such field in any of them", todo="add it to one of these sidecars")
    first = next(iter(values.values()))
    if any(abs(v - first) > TR_RTOL * first for v in values.values()) or first <= 0:
        raise LlmfbnError(f"inconsistent RepetitionTime for {bold.name}",
                          expected="one positive RepetitionTime (s)",
                          found="; ".join(f"{v:g} s in {w}" for w, v in values.items()),
                          todo="correct the wrong sidecar")
    return first


def _run_files(config: Config, raw, deriv, raw_bold, space_query: dict) -> RunFiles:
    ents = raw_bold.get_entities()
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
    deriv_meta = deriv.get_metadata(str(bold))
    raw_meta = raw.get_metadata(raw_bold.path)
    return RunFiles(
        subject=subject, task=task, run=int(ents["run"]) if ents.get("run") is not None else None,
        session=ents.get("session"),
        bold=bold, mask=mask, confounds=confounds, events=Path(events[0].path),
        t_r_s=repetition_time(bold, deriv_meta, raw_meta, Path(raw_bold.path)),
        start_time_s=float(deriv_meta.get("StartTime", raw_meta.get("StartTime", 0.0))),
        n_volumes=bold_volumes(bold), raw_bold=Path(raw_bold.path),
    )
