"""A story's place in a BOLD run: its onset, and the rule that its words fall in the run.

:func:`story_onset_s` reads the story's onset on the run's clock from the run's
``*_events.tsv`` (and :func:`story_stim_file` the same row's ``stim_file``, the story's
audio); :func:`check_within_run` is the one rule for whether a story placed at an
onset fits its run, for a story played whole in the run and for one split over several
runs.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from bids_app.errors import LlmfbnError
from bids_app.stimulus.timings import NUMBER_RE, WordTimings


def check_within_run(timings: WordTimings, onset_s: float, run_duration_s: float, *,
                     run_name, split: bool = False, n_frames: int | None = None,
                     t_r_s: float | None = None) -> None:
    """Check that a story's words fall inside a BOLD run.

    The rule compares word onsets on the run's clock: ``first = onset_s +
    timings.onsets_s[0]`` and ``last = onset_s + timings.onsets_s[-1]``. A story played
    whole in the run (``split=False``) must have all its words inside the run:
    ``0 <= first`` and ``last <= run_duration_s``. A story split over several runs
    (``split=True``) needs only some of its words inside the run: it must neither end
    before the run (``last < 0``) nor start after it (``first > run_duration_s``).

    Parameters
    ----------
    timings : WordTimings
        The story's words, times in seconds from the story start.
    onset_s : float
        Story onset in seconds on the run's clock (0 for timings read from events files;
        negative for the later runs of a split story).
    run_duration_s : float
        Duration of the run in seconds (number of volumes x repetition time).
    run_name : str or os.PathLike
        The run, named in the message (e.g. ``"task-pieman_run-1"`` or its events file).
    split : bool, default=False
        True when the story is spread over several runs.
    n_frames, t_r_s : int and float, optional
        Number of volumes and repetition time (s) of the run; when both are given the
        message shows them next to the run's duration. They play no part in the rule.

    Raises
    ------
    LlmfbnError
        The words fall outside the run by the rule above, or the onset or duration is
        not a finite number.
    """
    if timings.n_words == 0:
        return
    if not (math.isfinite(onset_s) and math.isfinite(run_duration_s)):
        raise LlmfbnError(
            f"Story onset or run duration of {run_name} is not a finite number",
            expected="finite seconds",
            found=f"onset {onset_s!r} s, run duration {run_duration_s!r} s",
            todo="check the story onset (events.tsv or --stimuli) and the run")
    first_s = onset_s + float(timings.onsets_s[0])
    last_s = onset_s + float(timings.onsets_s[-1])
    if split:
        problem = ("all come before the run" if last_s < 0
                   else "all come after the run's end" if first_s > run_duration_s else None)
    else:
        problem = ("go beyond the run's duration" if last_s > run_duration_s
                   else "start before the run" if first_s < 0 else None)
    if problem is None:
        return
    expected = f"word onsets between 0 and the run's duration {run_duration_s:g} s"
    if n_frames is not None and t_r_s is not None:
        expected += f" ({n_frames} volumes x TR {t_r_s:g} s)"
    raise LlmfbnError(
        f"The words of {timings.source} fall outside the run {run_name}: they {problem}",
        expected=("some " + expected + ", as the story is split over several runs") if split
        else expected,
        found=f"story onset {onset_s:g} s + words from {float(timings.onsets_s[0]):g} s "
              f"({timings.words[0]!r}) to {float(timings.onsets_s[-1]):g} s "
              f"({timings.words[-1]!r})",
        todo="check the story onset (events.tsv or --stimuli) and the word-timing file "
             "(are they for the same story?)")


def story_onset_s(events_tsv, task: str) -> float:
    """Onset of the story inside a BOLD run, from the run's ``*_events.tsv``.

    The story onset is, in this order of preference:

    1. the onset of the row whose ``trial_type`` equals ``task`` (Narratives style);
    2. else the onset of the single row with a non-empty ``stim_file``;
    3. else, if the file has exactly one row, that row's onset.

    Parameters
    ----------
    events_tsv : str or os.PathLike
        BIDS events file with at least an ``onset`` column (seconds from the first volume's
        acquisition, BIDS convention).
    task : str
        Task label without the ``task-`` prefix (e.g. ``"pieman"``).

    Returns
    -------
    onset_s : float
        Story onset in seconds on the run's clock.

    Raises
    ------
    LlmfbnError
        File missing/unreadable, no ``onset`` column, no unique row chosen by the rules
        above, or a non-numeric onset.
    """
    path = Path(events_tsv)
    todo = (f"add a row with trial_type '{task}' and the story's onset to the events file, "
            "or give the story onset explicitly")
    table = _read_events_table(path, todo)
    chosen = _story_row(table, task, path, todo)
    text = table.at[chosen, "onset"].strip()
    if not NUMBER_RE.fullmatch(text):
        raise LlmfbnError(
            f"{path}, data row {int(chosen) + 1}: story onset is not a number",
            expected="onset in seconds", found=repr(text), todo=todo,
        )
    return float(text)


def story_stim_file(events_tsv, task: str) -> str | None:
    """The ``stim_file`` of the story's row of a run's ``*_events.tsv`` (the row
    :func:`story_onset_s` reads), or None when the file names none.

    Parameters are those of :func:`story_onset_s`.

    Returns
    -------
    stim_file : str or None
        As written in the file: BIDS makes it relative to the dataset's ``stimuli/``
        folder. None when there is no ``stim_file`` column, it is empty or ``n/a``, or no
        story row can be chosen.
    """
    path = Path(events_tsv)
    try:
        table = _read_events_table(path, "")
        chosen = _story_row(table, task, path, "")
    except LlmfbnError:
        return None
    if "stim_file" not in table.columns:
        return None
    value = table.at[chosen, "stim_file"].strip()
    return None if value in ("", "n/a") else value


def _read_events_table(path: Path, todo: str) -> pd.DataFrame:
    """The events file as a table of strings, with stripped column names and an onset."""
    if not path.is_file():
        raise LlmfbnError(
            f"Events file not found: {path}",
            expected=f"a BIDS *_events.tsv at {path} giving the story onset",
            found="no such file" if not path.exists() else "a directory or special file",
            todo=todo,
        )
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False,
                            index_col=False, encoding="utf-8-sig").fillna("")
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError,
            ValueError, OSError) as exc:
        raise LlmfbnError(
            f"Cannot read events file {path}",
            expected="a tab-separated BIDS events file with an 'onset' column",
            found=str(exc).strip() or type(exc).__name__, todo=todo,
        ) from exc
    table.columns = [str(column).strip() for column in table.columns]
    if "onset" not in table.columns:
        raise LlmfbnError(
            f"Events file {path} has no 'onset' column",
            expected="tab-separated columns onset, duration, trial_type[, stim_file]",
            found=f"columns {list(table.columns)}", todo=todo,
        )
    return table


def _story_row(table: pd.DataFrame, task: str, path: Path, todo: str):
    """Index label of the story's row of the events table (rules of story_onset_s)."""
    rule = (f"the row with trial_type == {task!r}; else the single row with a non-empty "
            "stim_file; else the only row of the file")

    def _filled(column: str) -> pd.Series:
        values = table[column].str.strip()
        return (values != "") & (values.str.lower() != "n/a")

    chosen = None
    if "trial_type" in table.columns:
        matches = table.index[table["trial_type"].str.strip() == task]
        if len(matches) > 1:
            raise LlmfbnError(
                f"Events file {path} has {len(matches)} rows with trial_type {task!r}",
                expected=f"one story row, chosen as {rule}",
                found=f"data rows {[int(i) + 1 for i in matches]}", todo=todo,
            )
        if len(matches) == 1:
            chosen = matches[0]
    if chosen is None and "stim_file" in table.columns:
        with_stim = table.index[_filled("stim_file")]
        if len(with_stim) == 1:
            chosen = with_stim[0]
    if chosen is None and len(table) == 1:
        chosen = table.index[0]
    if chosen is None:
        raise LlmfbnError(
            f"Cannot tell the story onset from events file {path}",
            expected=f"the story row: {rule}",
            found=f"{len(table)} rows, columns {list(table.columns)}"
                  + (f", trial_types {sorted(set(table['trial_type']))[:10]}"
                     if "trial_type" in table.columns else ""),
            todo=todo,
        )
    return chosen
