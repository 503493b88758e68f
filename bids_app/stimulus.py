"""Stimulus timing: word timings of a story and the story's onset inside a run.

Word timings come from the forced aligner Gentle, as used by the Narratives dataset
(``stimuli/gentle/<task>/align.csv`` or ``align.json``). All times are in seconds from the
start of the story's audio; :func:`story_onset_s` gives the offset of the story inside a
BOLD run, read from the run's ``*_events.tsv``.

Words Gentle could not place in the audio are kept, because the language model needs them
as context. Their times are filled in by linear interpolation over word position between
the nearest aligned words before and after them; before the first aligned word (after the
last one) they take that word's onset and offset (constant extrapolation, i.e. clamping).
The ``aligned`` mask says which times were measured and which were filled in.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bids_app.errors import LlmfbnError

__all__ = [
    "WordTimings",
    "read_word_timings",
    "read_gentle_csv",
    "read_gentle_json",
    "story_onset_s",
]

# A plain decimal number, as Gentle writes it ("12.34", "3", "1e-3"); float() alone would
# also accept "nan", "inf" and "1_0".
_NUMBER_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_GENTLE_CSV_COLUMNS = ("word", "alignedWord", "start", "end")
_GENTLE_JSON_CASES = ("success", "not-found-in-audio", "not-found-in-transcript")


@dataclass(frozen=True)
class WordTimings:
    """Timing of every transcript word of one story.

    Attributes
    ----------
    words : tuple of str, length n_words
        Transcript words in story order, with their original spelling and punctuation
        (Gentle's ``word`` field).
    onsets_s : ndarray of shape (n_words,), float64
        Word onsets in seconds from the start of the story. Non-decreasing over the aligned
        words; interpolated for words with ``aligned == False``.
    offsets_s : ndarray of shape (n_words,), float64
        Word offsets in seconds from the start of the story; ``offsets_s >= onsets_s``.
    aligned : ndarray of shape (n_words,), bool
        True where the aligner measured the word's times, False where they were
        interpolated (see the module docstring).
    source : str
        Path of the file the timings were read from.

    Notes
    -----
    The arrays are made read-only so that a cached instance cannot be modified by a
    consumer.
    """

    words: tuple[str, ...]
    onsets_s: np.ndarray
    offsets_s: np.ndarray
    aligned: np.ndarray
    source: str

    def __post_init__(self):
        words = tuple(self.words)
        onsets_s = np.array(self.onsets_s, dtype=np.float64)
        offsets_s = np.array(self.offsets_s, dtype=np.float64)
        aligned = np.array(self.aligned, dtype=bool)
        n_words = len(words)
        for name, arr in (("onsets_s", onsets_s), ("offsets_s", offsets_s),
                          ("aligned", aligned)):
            if arr.shape != (n_words,):
                raise ValueError(
                    f"WordTimings.{name} must have shape ({n_words},), got {arr.shape}")
            arr.setflags(write=False)
        object.__setattr__(self, "words", words)
        object.__setattr__(self, "onsets_s", onsets_s)
        object.__setattr__(self, "offsets_s", offsets_s)
        object.__setattr__(self, "aligned", aligned)
        object.__setattr__(self, "source", str(self.source))

    @property
    def n_words(self) -> int:
        """Number of transcript words."""
        return len(self.words)

    def __len__(self) -> int:
        return len(self.words)


def read_word_timings(path) -> WordTimings:
    """Read a word-timing file, choosing the reader from the file suffix.

    Parameters
    ----------
    path : str or os.PathLike
        ``*.csv``: Gentle ``align.csv`` (see :func:`read_gentle_csv`);
        ``*.json``: Gentle ``align.json`` (see :func:`read_gentle_json`).

    Returns
    -------
    timings : WordTimings
        Words with onsets/offsets in seconds from story start.

    Raises
    ------
    LlmfbnError
        Unknown suffix, or any problem reported by the chosen reader.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_gentle_csv(path)
    if suffix == ".json":
        return read_gentle_json(path)
    raise LlmfbnError(
        f"Cannot tell the format of word-timing file {path}",
        expected="a Gentle alignment ending in .csv (align.csv) or .json (align.json)",
        found=f"suffix {suffix!r}" if suffix else "no suffix",
        todo="convert the word timings to Gentle's align.csv/align.json or rename the file "
             "with the right suffix",
    )


def _read_text(path: Path, what: str) -> str:
    """Read a whole UTF-8 text file, turning every I/O problem into an LlmfbnError."""
    if not path.is_file():
        raise LlmfbnError(
            f"{what} not found: {path}",
            expected=f"a file at {path}" + (
                " (Narratives keeps Gentle alignments at stimuli/gentle/<task>/align.csv)"
                if what.startswith("Word-timing") else ""),
            found="no such file" if not path.exists() else "a directory or special file",
            todo="check the path, or give the word-timing file explicitly",
        )
    try:
        # newline="" keeps quoted newlines inside CSV fields intact (csv module contract).
        with open(path, encoding="utf-8-sig", newline="") as fobj:
            return fobj.read()
    except UnicodeDecodeError as exc:
        raise LlmfbnError(
            f"{what} {path} is not UTF-8 text",
            expected="a UTF-8 encoded text file",
            found=f"undecodable bytes at byte {exc.start}",
            todo="re-save the file as UTF-8",
        ) from exc
    except OSError as exc:
        raise LlmfbnError(
            f"Cannot read {what.lower()} {path}", found=str(exc),
            todo="check the file permissions and that the file is a regular file",
        ) from exc


def _parse_time(text: str, path: Path, where: str, column: str) -> float:
    """Parse one time in seconds from CSV text, or raise an LlmfbnError naming the place."""
    stripped = text.strip()
    if not _NUMBER_RE.fullmatch(stripped):
        raise LlmfbnError(
            f"{path}, {where}: {column} time is not a number",
            expected=f"{column} in seconds as a plain decimal number (or empty when the "
                     "word was not aligned)",
            found=repr(text),
            todo="fix or regenerate the alignment",
        )
    return _check_time(float(stripped), text, path, where, column)


def _check_time(value, shown, path: Path, where: str, column: str) -> float:
    """Check that a time is a finite, non-negative number of seconds; return it as float."""
    try:
        value = float(value)
    except (OverflowError, TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise LlmfbnError(
            f"{path}, {where}: {column} time is not a finite number",
            expected=f"a finite {column} time in seconds", found=repr(shown)[:100],
            todo="fix or regenerate the alignment",
        )
    if value < 0:
        raise LlmfbnError(
            f"{path}, {where}: {column} time is negative",
            expected="times >= 0 s from the start of the story", found=repr(shown)[:100],
            todo="fix or regenerate the alignment",
        )
    return value


def _finish_timings(words, onsets_s, offsets_s, places, path: Path) -> WordTimings:
    """Validate aligned times, interpolate the unaligned ones, build WordTimings.

    ``onsets_s``/``offsets_s`` are lists with None for unaligned words; ``places`` names
    the location (line or entry) of each word for error messages.
    """
    if not words:
        raise LlmfbnError(
            f"Word-timing file {path} is empty: it holds no words",
            expected="one word per row/entry", found="an empty alignment",
            todo="regenerate the alignment from the story transcript and audio",
        )
    aligned = np.array([on is not None for on in onsets_s], dtype=bool)
    if not aligned.any():
        raise LlmfbnError(
            f"No word in {path} has a time: the aligner could not place any word",
            expected="at least one aligned word with start and end times",
            found=f"{len(words)} words, none aligned",
            todo="check that the audio matches the transcript and re-run the aligner",
        )
    previous_onset, previous_place = -np.inf, None
    for i in np.flatnonzero(aligned):
        on, off = onsets_s[i], offsets_s[i]
        if off < on:
            raise LlmfbnError(
                f"{path}, {places[i]}: word {words[i]!r} ends before it starts",
                expected="end >= start", found=f"start {on!r} s, end {off!r} s",
                todo="fix or regenerate the alignment",
            )
        if on < previous_onset:
            raise LlmfbnError(
                f"{path}, {places[i]}: word onsets decrease",
                expected="aligned words in story order, onsets never decreasing",
                found=f"onset {on!r} s after onset {previous_onset!r} s at {previous_place}",
                todo="sort the alignment in story order or regenerate it",
            )
        previous_onset, previous_place = on, places[i]

    positions = np.arange(len(words), dtype=np.float64)
    known = np.flatnonzero(aligned)
    known_onsets = np.array([onsets_s[i] for i in known], dtype=np.float64)
    known_offsets = np.array([offsets_s[i] for i in known], dtype=np.float64)
    # np.interp holds the end values constant outside the aligned range: the clamping
    # described in the module docstring.
    all_onsets = np.interp(positions, known, known_onsets)
    all_offsets = np.interp(positions, known, known_offsets)
    all_onsets[known] = known_onsets  # exact values, no interpolation round-off
    all_offsets[known] = known_offsets
    return WordTimings(words=tuple(words), onsets_s=all_onsets, offsets_s=all_offsets,
                       aligned=aligned, source=str(path))


def read_gentle_csv(path) -> WordTimings:
    """Read Gentle's ``align.csv``.

    The file has no header and four columns: ``word, alignedWord, start, end`` (times in
    seconds from story start). Rows of words Gentle could not align have empty ``start``
    and ``end`` (e.g. ``word,,,`` or ``word,<unk>,,``); they are kept and their times are
    interpolated (see the module docstring). A first row that is literally the header
    ``word,alignedWord,start,end`` is tolerated; blank lines are skipped.

    Parameters
    ----------
    path : str or os.PathLike
        Path of the CSV file.

    Returns
    -------
    timings : WordTimings
        One entry per row, in file order.

    Raises
    ------
    LlmfbnError
        Missing or unreadable file, no rows, a row without exactly four columns, an empty
        word, a non-numeric/non-finite/negative time, only one of start/end given,
        end < start, aligned onsets decreasing, or no aligned word. The message names the
        file and line.
    """
    path = Path(path)
    text = _read_text(path, "Word-timing file")
    words, onsets_s, offsets_s, places = [], [], [], []
    # newline="" splits lines like open(..., newline="") does, as the csv module expects.
    reader = csv.reader(io.StringIO(text, newline=""))
    line_end = 0
    try:
        for row in reader:
            line_start, line_end = line_end + 1, reader.line_num
            if all(not field.strip() for field in row):
                continue
            where = f"line {line_start}"
            if len(row) != 4:
                raise LlmfbnError(
                    f"{path}, {where}: wrong number of columns",
                    expected="4 comma-separated columns without header: "
                             "word, alignedWord, start, end (Gentle align.csv)",
                    found=f"{len(row)} column(s): {row[:6]!r}",
                    todo="give a Gentle align.csv, or quote fields that contain commas",
                )
            if not words and [f.strip().lower() for f in row] == [
                    c.lower() for c in _GENTLE_CSV_COLUMNS]:
                continue  # a header row written by some exporters
            word, _aligned_word, start, end = row
            if not word.strip():
                raise LlmfbnError(
                    f"{path}, {where}: empty word",
                    expected="the transcript word in the first column", found=repr(row),
                    todo="fix or regenerate the alignment",
                )
            has_start, has_end = bool(start.strip()), bool(end.strip())
            if has_start != has_end:
                raise LlmfbnError(
                    f"{path}, {where}: word {word!r} has only one of start/end",
                    expected="both start and end (aligned) or both empty (not aligned)",
                    found=f"start {start!r}, end {end!r}",
                    todo="fix or regenerate the alignment",
                )
            if has_start:
                onset = _parse_time(start, path, where, "start")
                offset = _parse_time(end, path, where, "end")
            else:
                onset = offset = None
            words.append(word)
            onsets_s.append(onset)
            offsets_s.append(offset)
            places.append(where)
    except csv.Error as exc:
        raise LlmfbnError(
            f"{path}, line {reader.line_num}: not valid CSV",
            expected="a Gentle align.csv", found=str(exc),
            todo="fix or regenerate the alignment",
        ) from exc
    return _finish_timings(words, onsets_s, offsets_s, places, path)


def read_gentle_json(path) -> WordTimings:
    """Read Gentle's ``align.json``.

    The file is ``{"transcript": str, "words": [{"word", "alignedWord", "case", "start",
    "end", "startOffset", "endOffset"}, ...]}``. Entries with ``case == "success"`` carry
    ``start``/``end`` in seconds; ``"not-found-in-audio"`` entries have none and get
    interpolated times (see the module docstring). ``"not-found-in-transcript"`` entries
    are sounds that are not transcript words; they are skipped, as in Gentle's own CSV
    export.

    Parameters
    ----------
    path : str or os.PathLike
        Path of the JSON file.

    Returns
    -------
    timings : WordTimings
        One entry per transcript word, in file order.

    Raises
    ------
    LlmfbnError
        Missing/unreadable file, invalid JSON, unexpected structure, bad times (as for
        :func:`read_gentle_csv`), or no aligned word. The message names the file and the
        entry (``words[i]``).
    """
    path = Path(path)
    text = _read_text(path, "Word-timing file")
    if not text.strip():
        raise LlmfbnError(
            f"Word-timing file {path} is empty",
            expected="a Gentle align.json", found="an empty file",
            todo="regenerate the alignment",
        )
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        line = f", line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise LlmfbnError(
            f"{path}{line}: not valid JSON",
            expected="a Gentle align.json",
            found=getattr(exc, "msg", None) or str(exc)[:200] or type(exc).__name__,
            todo="fix or regenerate the alignment",
        ) from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("words"), list):
        raise LlmfbnError(
            f"{path} is not a Gentle alignment",
            expected='a JSON object with a "words" list',
            found=f"a JSON {type(doc).__name__}" + (
                f" with keys {sorted(doc)[:10]}" if isinstance(doc, dict) else ""),
            todo="give Gentle's align.json",
        )
    words, onsets_s, offsets_s, places = [], [], [], []
    for i, entry in enumerate(doc["words"]):
        where = f"entry words[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("word"), str) \
                or not entry["word"].strip():
            raise LlmfbnError(
                f"{path}, {where}: not a Gentle word entry",
                expected='an object with a non-empty "word" string',
                found=repr(entry)[:200], todo="fix or regenerate the alignment",
            )
        case = entry.get("case", "success" if "start" in entry else "not-found-in-audio")
        if case not in _GENTLE_JSON_CASES:
            raise LlmfbnError(
                f"{path}, {where}: unknown alignment case",
                expected=f"case in {list(_GENTLE_JSON_CASES)}", found=repr(case),
                todo="fix or regenerate the alignment",
            )
        if case == "not-found-in-transcript":
            continue
        if case == "success":
            if "start" not in entry or "end" not in entry:
                raise LlmfbnError(
                    f"{path}, {where}: aligned word {entry['word']!r} has no start/end",
                    expected='"start" and "end" in seconds for case "success"',
                    found=f"keys {sorted(entry)}", todo="fix or regenerate the alignment",
                )
            times = []
            for column in ("start", "end"):
                value = entry[column]
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise LlmfbnError(
                        f"{path}, {where}: {column} time is not a number",
                        expected=f"{column} in seconds as a JSON number",
                        found=repr(value), todo="fix or regenerate the alignment",
                    )
                times.append(_check_time(value, value, path, where, column))
            onset, offset = times
        else:
            onset = offset = None
        words.append(entry["word"])
        onsets_s.append(onset)
        offsets_s.append(offset)
        places.append(where)
    return _finish_timings(words, onsets_s, offsets_s, places, path)


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
    rule = (f"the row with trial_type == {task!r}; else the single row with a non-empty "
            "stim_file; else the only row of the file")
    todo = (f"add a row with trial_type '{task}' and the story's onset to the events file, "
            "or give the story onset explicitly")
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
    text = table.at[chosen, "onset"].strip()
    if not _NUMBER_RE.fullmatch(text):
        raise LlmfbnError(
            f"{path}, data row {int(chosen) + 1}: story onset is not a number",
            expected="onset in seconds", found=repr(text), todo=todo,
        )
    return float(text)
