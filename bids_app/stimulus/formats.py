"""Which format a word-timing file is in, and reading it with that format's reader."""

from __future__ import annotations

from pathlib import Path

from bids_app.errors import LlmfbnError
from bids_app.stimulus.gentle import GENTLE_CSV_COLUMNS, read_gentle_csv, read_gentle_json
from bids_app.stimulus.tables import (
    ONSET_COLUMNS,
    WORD_COLUMNS,
    first_line,
    header_names,
    read_events_words,
    read_word_table,
)
from bids_app.stimulus.textgrid import read_textgrid
from bids_app.stimulus.timings import NUMBER_RE, WordTimings, read_text

_SUPPORTED_FORMATS = (
    "a Gentle align.csv (.csv, 4 columns word, alignedWord, start, end, no header), "
    "a Gentle align.json (.json), a Praat TextGrid with a word tier (.TextGrid), "
    "a word table with a header row (.tsv or .csv; columns word/words/token/text, "
    "onset/start/start_time/tmin/xmin and offset/end/stop/end_time/tmax/xmax or "
    "duration), or a BIDS *_events.tsv with trial_type 'word' rows"
)


def read_word_timings(path) -> WordTimings:
    """Read a word-timing file, choosing the reader from the file name and header.

    Parameters
    ----------
    path : str or os.PathLike
        ``*.TextGrid``: Praat TextGrid (see :func:`read_textgrid`, tier chosen
        automatically); ``*.json``: Gentle ``align.json`` (see :func:`read_gentle_json`);
        ``*.csv``/``*.tsv`` whose first line is a header naming a word column and an onset
        column: word table (see :func:`read_word_table`); ``*_events.tsv`` with a
        ``trial_type`` column: BIDS events (see :func:`read_events_words`; times relative
        to the run start); any other ``*.csv``: Gentle ``align.csv`` (see
        :func:`read_gentle_csv`).

    Returns
    -------
    timings : WordTimings
        Words with onsets/offsets in seconds from story start (from run start for events
        files).

    Raises
    ------
    LlmfbnError
        Unknown format (the message lists the supported ones), or any problem reported by
        the chosen reader.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".textgrid":
        return read_textgrid(path)
    if suffix == ".json":
        return read_gentle_json(path)
    if suffix in (".csv", ".tsv"):
        return _read_table_timings(path, suffix)
    raise _unknown_format(
        path, found=f"suffix {suffix!r}" if suffix else "no suffix",
        todo="convert the word timings to a supported format or rename the file with the "
             "right suffix")


def _read_table_timings(path: Path, suffix: str) -> WordTimings:
    """Read a ``.csv``/``.tsv`` word-timing file, telling the format from its header."""
    text = read_text(path, "Word-timing file")
    header = header_names(text)
    is_events = path.name.lower().endswith("_events.tsv")
    if is_events and "trial_type" in header:
        return read_events_words(path)
    if looks_like_word_table(header):
        return read_word_table(path)
    if suffix == ".csv":
        return read_gentle_csv(path)
    if is_events:
        return read_events_words(path)  # explains the missing trial_type column
    line = first_line(text)
    raise _unknown_format(
        path, found=f"first line {line[:200]!r}" if line else "an empty file",
        todo="add a header row naming the word and onset columns (e.g. "
             "word<TAB>onset<TAB>offset), or convert the timings to a supported format")


def _unknown_format(path: Path, found: str, todo: str) -> LlmfbnError:
    """The error for a word-timing file of no supported format; it lists the formats."""
    return LlmfbnError(f"Cannot tell the format of word-timing file {path}",
                       expected=_SUPPORTED_FORMATS, found=found, todo=todo)


def looks_like_word_table(header: list[str]) -> bool:
    """A header naming a word and an onset column, no number, not Gentle's own header."""
    return (header != [c.lower() for c in GENTLE_CSV_COLUMNS]
            and any(name in header for name in WORD_COLUMNS)
            and any(name in header for name in ONSET_COLUMNS)
            and not any(NUMBER_RE.fullmatch(name) for name in header))
