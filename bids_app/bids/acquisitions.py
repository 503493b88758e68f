"""Acquisitions: the task/run clocks shared by all subjects, and the stories heard in each."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bids_app.bids.layout import DatasetFiles, RunFiles, StoryPlacement
from bids_app.errors import LlmfbnError
from bids_app.stimulus import check_within_run, read_word_timings


@dataclass(frozen=True)
class Acquisition:
    """One task/run's scanner clock, shared by all subjects, and the stories played in it."""

    key: str                               # "task-x" or "task-x_run-N"
    task: str
    run: int | None
    t_r_s: float
    start_time_s: float
    n_frames: int                          # longest run across subjects
    stories: tuple[StoryPlacement, ...]

    def frame_times_s(self) -> np.ndarray:
        """(n_frames,) acquisition times of the frames in seconds."""
        from bids_app.responses import frame_times_s  # nilearn: seconds to import

        return frame_times_s(self.n_frames, self.t_r_s, self.start_time_s)


_SHARED = (("RepetitionTime", lambda r: r.t_r_s), ("StartTime", lambda r: r.start_time_s),
           ("story onsets (events.tsv / --stimuli)",
            lambda r: tuple(p.onset_s for p in r.stories)),
           ("stories", lambda r: tuple(p.timings for p in r.stories)),
           ("story audio (events.tsv stim_file / --stimuli audio)",
            lambda r: tuple(p.audio for p in r.stories)))


def _check_shared(key: str, runs: list[RunFiles]) -> None:
    for label, value_of in _SHARED:
        values = {value_of(r) for r in runs}
        if len(values) > 1:
            raise LlmfbnError(
                f"the runs of {key} disagree on {label} across subjects",
                found="; ".join(sorted(map(str, values)))[:500],
                todo="the stimulus is shared by all subjects of a task/run; analyse "
                "subjects with different acquisitions separately (--participant-label)")


def plan_acquisitions(dataset: DatasetFiles) -> dict[str, Acquisition]:
    """Group the subjects' runs by task/run; check they share TR, StartTime and stories.

    Also reads every word-timing file once (validating it) and checks that each story's
    words fall inside the runs it is placed in.
    """
    by_key: dict[str, list[RunFiles]] = {}
    for run in dataset.all_runs:
        by_key.setdefault(run.acquisition, []).append(run)
    timings = {p.timings: read_word_timings(p.timings)
               for run in dataset.all_runs for p in run.stories}
    uses: dict[Path, int] = {}
    plan = {}
    for key, runs in sorted(by_key.items()):
        _check_shared(key, runs)
        acq = Acquisition(key=key, task=runs[0].task, run=runs[0].run, t_r_s=runs[0].t_r_s,
                          start_time_s=runs[0].start_time_s,
                          n_frames=max(r.n_volumes for r in runs), stories=runs[0].stories)
        for placement in acq.stories:
            uses[placement.timings] = uses.get(placement.timings, 0) + 1
        plan[key] = acq
    for acq in plan.values():
        for placement in acq.stories:
            check_within_run(timings[placement.timings], placement.onset_s,
                             acq.n_frames * acq.t_r_s, split=uses[placement.timings] > 1,
                             run_name=acq.key,
                             n_frames=acq.n_frames, t_r_s=acq.t_r_s)
    return plan
