"""Word timings in tables with a header row: word tables and BIDS events files.

A word table (TSV or CSV, as in the Le Petit Prince dataset) names its word, onset and
offset (or duration) columns in its header: :func:`read_word_table`. A BIDS
``*_events.tsv`` gives the words as its rows with ``trial_type == "word"``, on the run's
clock: :func:`read_events_words`. Both find their columns by name and read their rows with
the helpers of this module (:func:`nonblank_rows` also serves Gentle's header-less CSV).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import NamedTuple

from bids_app.errors import LlmfbnError
from bids_app.stimulus.timings import (
    TIME_TOLERANCE_S,
    WordList,
    WordTimings,
    check_time,
    parse_time,
    read_text,
)

# Column names of word tables, compared lower-cased; earlier aliases win.
WORD_COLUMNS = ("word", "words", "token", "text")
ONSET_COLUMNS = ("onset", "start", "start_time", "tmin", "xmin")
_OFFSET_COLUMNS = ("offset", "end", "stop", "end_time", "tmax", "xmax")
_DURATION_COLUMNS = ("duration",)
_EVENTS_WORD_COLUMNS = ("word", "value", "stim")
# Cell values that mean "no time" (unaligned word): BIDS n/a, pandas/R missing values.
_MISSING_VALUES = frozenset({"", "n/a", "na", "nan"})


class _WordColumns(NamedTuple):
    """Column indices of a word table; offset or duration may be absent (None)."""

    word: int
    onset: int
    offset: int | None
    duration: int | None


class _EventsColumns(NamedTuple):
    """Column indices of an events file; duration may be absent (None)."""

    onset: int
    duration: int | None
    trial_type: int
    word: int


# --- reading a table ---------------------------------------------------------------------

def nonblank_rows(reader):
    """Yield (line number, fields) of the rows of a ``csv.reader`` that are not blank.

    The line number is the row's first line (a quoted field may span several); a
    ``csv.Error`` of the reader reaches the caller, who knows what the file should be.
    """
    line_end = 0
    for row in reader:
        line_start, line_end = line_end + 1, reader.line_num
        if all(not field.strip() for field in row):
            continue
        yield line_start, row


def first_line(text: str) -> str:
    """The first line of ``text`` that is not blank ("" when there is none)."""
    return next((line for line in text.splitlines() if line.strip()), "")


def _delimiter(text: str) -> str:
    """Tab when the header line has a tab, else comma when it has one, else tab."""
    header = first_line(text)
    return "\t" if "\t" in header or "," not in header else ","


def _table_rows(text: str, path: Path):
    """Yield (line number, fields) of the non-blank rows of a TSV/CSV text.

    TSV fields are taken literally (BIDS TSV has no quoting: a word may be ``"Hello``);
    CSV fields follow the usual double-quote rules.
    """
    delimiter = _delimiter(text)
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter,
                        quoting=quoting)
    try:
        yield from nonblank_rows(reader)
    except csv.Error as exc:
        raise LlmfbnError(
            f"{path}, line {reader.line_num}: not valid "
            + ("TSV" if delimiter == "\t" else "CSV"),
            expected="a table with a header row", found=str(exc),
            todo="fix the table (quote fields that contain commas or line breaks)",
        ) from exc


def _normalized(name: str) -> str:
    return name.strip().lower()


def header_names(text: str) -> list[str]:
    """Normalized column names of the first non-blank row (empty when unreadable)."""
    try:
        for _, row in _table_rows(text, Path()):
            return [_normalized(name) for name in row]
    except LlmfbnError:
        pass
    return []


def _find_column(header: list[str], aliases, path: Path, line: int) -> int | None:
    """Index of the first alias present in the normalized header, None if none is."""
    for alias in aliases:
        indices = [i for i, name in enumerate(header) if name == alias]
        if len(indices) > 1:
            raise LlmfbnError(
                f"{path}, line {line}: column {alias!r} appears {len(indices)} times",
                expected="each column name once", found=f"columns {header}",
                todo="rename or remove the duplicated column",
            )
        if indices:
            return indices[0]
    return None


def _read_header(path: Path, what: str):
    """Read a table; return (header names as written, normalized, rows iterator, line)."""
    text = read_text(path, what)
    rows = _table_rows(text, path)
    first = next(rows, None)
    if first is None:
        raise LlmfbnError(
            f"{what} {path} is empty", expected="a header row and one row per word",
            found="no rows", todo="regenerate the word timings",
        )
    line, header = first
    return header, [_normalized(name) for name in header], rows, line


def _row_fields(row, n_columns: int, path: Path, line: int, header) -> list[str]:
    """The row's fields, checked against the header (trailing empty fields tolerated)."""
    if len(row) < n_columns or any(field.strip() for field in row[n_columns:]):
        raise LlmfbnError(
            f"{path}, line {line}: wrong number of columns",
            expected=f"{n_columns} columns as in the header {header}",
            found=f"{len(row)} column(s): {row[:8]!r}",
            todo="fix the row (in a CSV, quote fields that contain commas)",
        )
    return row[:n_columns]


def _row_word(cell: str, row, column: str, path: Path, where: str, *, empty=("",),
              rows: str = "") -> str:
    """The word in ``cell`` without surrounding blanks; an error when it is empty (any of
    ``empty``, compared lower-cased). ``rows`` says which rows need a word."""
    word = cell.strip()
    if word.lower() in empty:
        raise LlmfbnError(
            f"{path}, {where}: empty word",
            expected=f"the word in column {column!r}{rows}", found=repr(row)[:200],
            todo="fill in the word or remove the row",
        )
    return word


def _optional_time(text: str, path: Path, where: str, column: str) -> float | None:
    """A time in seconds, or None for a missing value (empty, n/a, NA, NaN)."""
    if text.strip().lower() in _MISSING_VALUES:
        return None
    return parse_time(text, path, where, column)


# --- word tables -------------------------------------------------------------------------

def read_word_table(path) -> WordTimings:
    """Read a word table with a header row (TSV or CSV).

    The columns are found by name (any case, surrounding blanks ignored; earlier names
    win): the word in ``word``, ``words``, ``token`` or ``text``; the onset in ``onset``,
    ``start``, ``start_time``, ``tmin`` or ``xmin``; the offset in ``offset``, ``end``,
    ``stop``, ``end_time``, ``tmax`` or ``xmax``, or else ``duration`` (offset = onset +
    duration). When both an offset and a duration are given they must agree within 1 ms.
    Other columns are ignored. The file is tab-separated when its header line holds a tab
    (no quoting: fields are literal, as in BIDS TSV), else comma-separated (CSV quoting).
    Rows whose onset is missing (empty, ``n/a``, ``NA``, ``NaN``) are words that were not
    aligned; their times are interpolated (see :mod:`bids_app.stimulus`). Blank lines are
    skipped.

    Parameters
    ----------
    path : str or os.PathLike
        Path of the table. Times are seconds from the start of the story.

    Returns
    -------
    timings : WordTimings
        One entry per row, in file order; words without surrounding blanks.

    Raises
    ------
    LlmfbnError
        Missing/unreadable file, no header, no word/onset/offset-or-duration column, a
        row with the wrong number of fields, an empty word, a non-numeric/non-finite/
        negative time, an offset without onset or an onset without offset, an offset
        disagreeing with onset + duration, offset < onset, aligned onsets decreasing, or
        no aligned word. The message names the file and line.
    """
    path = Path(path)
    names, header, rows, header_line = _read_header(path, "Word-timing file")
    columns = _word_table_columns(names, header, path, header_line)
    words = WordList()
    for line, row in rows:
        fields = _row_fields(row, len(header), path, line, names)
        where = f"line {line}"
        word, onset, offset = _word_table_row(fields, row, columns, names, path, where)
        words.add(word, onset, offset, where)
    return words.timings(path)


def _word_table_columns(names, header: list[str], path: Path, line: int) -> _WordColumns:
    """The word, onset and offset and/or duration columns of a word table's header."""
    i_word = _find_column(header, WORD_COLUMNS, path, line)
    i_onset = _find_column(header, ONSET_COLUMNS, path, line)
    i_offset = _find_column(header, _OFFSET_COLUMNS, path, line)
    i_duration = _find_column(header, _DURATION_COLUMNS, path, line)
    if i_word is None or i_onset is None or (i_offset is None and i_duration is None):
        missing = [role for role, index in (("word", i_word), ("onset", i_onset),
                                            ("offset or duration", i_offset))
                   if index is None and not (role.startswith("offset")
                                             and i_duration is not None)]
        raise LlmfbnError(
            f"{path}, line {line}: word table has no {' / '.join(missing)} column",
            expected="a header row with columns " + "; ".join([
                "word: " + "/".join(WORD_COLUMNS),
                "onset: " + "/".join(ONSET_COLUMNS),
                "offset: " + "/".join(_OFFSET_COLUMNS) + " (or duration)"]),
            found=f"columns {names[:20]}",
            todo="rename the columns (times in seconds from the start of the story)",
        )
    return _WordColumns(i_word, i_onset, i_offset, i_duration)


def _word_table_row(fields: list[str], row, columns: _WordColumns, names, path: Path,
                    where: str):
    """(word, onset, offset) of one word-table row; times None when not aligned."""
    word = _row_word(fields[columns.word], row, names[columns.word], path, where)
    onset = _optional_time(fields[columns.onset], path, where, names[columns.onset])
    offset = (None if columns.offset is None
              else _optional_time(fields[columns.offset], path, where,
                                  names[columns.offset]))
    duration = (None if columns.duration is None
                else _optional_time(fields[columns.duration], path, where,
                                    names[columns.duration]))
    if onset is None:
        if offset is not None:
            raise LlmfbnError(
                f"{path}, {where}: word {word!r} has an offset but no onset "
                "(inconsistent times)",
                expected="both onset and offset (aligned) or neither (not aligned)",
                found=f"onset {fields[columns.onset]!r}, offset "
                      f"{fields[columns.offset]!r}",
                todo="fix the word timings",
            )
        return word, None, None
    return word, onset, _word_offset(word, onset, offset, duration, fields[columns.onset],
                                     path, where)


def _word_offset(word: str, onset: float, offset: float | None, duration: float | None,
                 onset_text: str, path: Path, where: str) -> float:
    """The offset of an aligned word from its offset and/or duration, which must agree."""
    if offset is None and duration is None:
        raise LlmfbnError(
            f"{path}, {where}: word {word!r} has an onset but no offset or duration "
            "(inconsistent times)",
            expected="both onset and offset/duration (aligned) or neither",
            found=f"onset {onset_text!r}", todo="fix the word timings",
        )
    if duration is not None:
        end = check_time(onset + duration, onset + duration, path, where,
                         "onset + duration")
        if offset is not None and abs(end - offset) > TIME_TOLERANCE_S:
            raise LlmfbnError(
                f"{path}, {where}: word {word!r} has inconsistent times",
                expected=f"offset = onset + duration (within {TIME_TOLERANCE_S} s)",
                found=f"onset {onset!r} s + duration {duration!r} s != offset "
                      f"{offset!r} s",
                todo="fix the word timings or drop one of the offset/duration columns",
            )
        if offset is None:
            offset = end
    return offset


# --- BIDS events files -------------------------------------------------------------------

def read_events_words(path) -> WordTimings:
    """Read the words of a BIDS ``*_events.tsv``: the rows with ``trial_type == "word"``.

    The word is in column ``word`` (else ``value``, else ``stim``); the onset in ``onset``
    and the offset is ``onset + duration``. A ``duration`` that is ``n/a`` (or no
    ``duration`` column) gives a zero-length word (offset = onset). A word row whose onset
    is ``n/a`` is a word that was not aligned; its times are interpolated (see
    :mod:`bids_app.stimulus`). Rows of other trial types are ignored.

    Events onsets are on the run's clock (seconds from the first volume's acquisition, BIDS
    convention), not the story's: with these timings the story onset is 0.

    Parameters
    ----------
    path : str or os.PathLike
        Tab-separated BIDS events file with ``onset``, ``trial_type`` and a word column.

    Returns
    -------
    timings : WordTimings
        One entry per word row, in file order, with times relative to the run start.

    Raises
    ------
    LlmfbnError
        Missing/unreadable file, no ``onset``/``trial_type``/word column, no word row, a
        row with the wrong number of fields, an empty (or ``n/a``) word, a non-numeric/
        non-finite/negative time, aligned onsets decreasing, or no aligned word. The
        message names the file and line.
    """
    path = Path(path)
    names, header, rows, header_line = _read_header(path, "Events file")
    columns = _events_columns(names, header, path, header_line)
    words = WordList()
    trial_types = set()
    for line, row in rows:
        fields = _row_fields(row, len(header), path, line, names)
        trial_type = fields[columns.trial_type].strip()
        if trial_type.lower() != "word":
            trial_types.add(trial_type)
            continue
        where = f"line {line}"
        word, onset, offset = _events_word_row(fields, row, columns, names, path, where)
        words.add(word, onset, offset, where)
    if not words:
        raise LlmfbnError(
            f"Events file {path} has no rows with trial_type 'word'",
            expected="one row per word with trial_type 'word'",
            found=f"trial_types {sorted(trial_types)[:10]}" if trial_types else "no rows",
            todo="give the word timings in another format, or mark the word rows",
        )
    return words.timings(path)


def _events_columns(names, header: list[str], path: Path, line: int) -> _EventsColumns:
    """The onset, duration, trial_type and word columns of an events file's header."""
    i_onset = _find_column(header, ("onset",), path, line)
    i_duration = _find_column(header, ("duration",), path, line)
    i_type = _find_column(header, ("trial_type",), path, line)
    i_word = _find_column(header, _EVENTS_WORD_COLUMNS, path, line)
    if i_onset is None or i_type is None or i_word is None:
        raise LlmfbnError(
            f"{path}, line {line}: events file has no "
            + " / ".join(role for role, index in (("onset", i_onset),
                                                  ("trial_type", i_type),
                                                  ("word", i_word)) if index is None)
            + " column",
            expected="tab-separated columns onset, duration, trial_type and the word in "
                     "column " + " or ".join(_EVENTS_WORD_COLUMNS),
            found=f"columns {names[:20]}",
            todo="add the columns, with trial_type 'word' on the word rows",
        )
    return _EventsColumns(i_onset, i_duration, i_type, i_word)


def _events_word_row(fields: list[str], row, columns: _EventsColumns, names, path: Path,
                     where: str):
    """(word, onset, offset) of one word row of an events file; times None if unaligned."""
    word = _row_word(fields[columns.word], row, names[columns.word], path, where,
                     empty=("", "n/a"), rows=" of each word row")
    onset = _optional_time(fields[columns.onset], path, where, "onset")
    duration = (None if columns.duration is None
                else _optional_time(fields[columns.duration], path, where, "duration"))
    offset = None
    if onset is not None:
        offset = check_time(onset + (duration or 0.0), onset + (duration or 0.0),
                            path, where, "onset + duration")
    return word, onset, offset
