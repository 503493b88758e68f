"""Gentle forced-aligner output: ``align.csv`` and ``align.json``.

Narratives keeps these at ``stimuli/gentle/<task>/align.csv`` (and ``align.json``). Times
are seconds from the start of the story's audio; words Gentle could not place are kept
with interpolated times (see :mod:`bids_app.stimulus`).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from bids_app.errors import LlmfbnError
from bids_app.stimulus.tables import nonblank_rows
from bids_app.stimulus.timings import WordList, WordTimings, check_time, parse_time, read_text

GENTLE_CSV_COLUMNS = ("word", "alignedWord", "start", "end")
_GENTLE_JSON_CASES = ("success", "not-found-in-audio", "not-found-in-transcript")


def read_gentle_csv(path) -> WordTimings:
    """Read Gentle's ``align.csv``.

    The file has no header and four columns: ``word, alignedWord, start, end`` (times in
    seconds from story start). Rows of words Gentle could not align have empty ``start``
    and ``end`` (e.g. ``word,,,`` or ``word,<unk>,,``); they are kept and their times are
    interpolated (see :mod:`bids_app.stimulus`). A first row that is literally the header
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
    text = read_text(path, "Word-timing file")
    words = WordList()
    # newline="" splits lines like open(..., newline="") does, as the csv module expects.
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        for line, row in nonblank_rows(reader):
            where = f"line {line}"
            _check_gentle_csv_columns(row, path, where)
            if not words and [f.strip().lower() for f in row] == [
                    c.lower() for c in GENTLE_CSV_COLUMNS]:
                continue  # a header row written by some exporters
            word, onset, offset = _gentle_csv_times(row, path, where)
            words.add(word, onset, offset, where)
    except csv.Error as exc:
        raise LlmfbnError(
            f"{path}, line {reader.line_num}: not valid CSV",
            expected="a Gentle align.csv", found=str(exc),
            todo="fix or regenerate the alignment",
        ) from exc
    return words.timings(path)


def _check_gentle_csv_columns(row: list[str], path: Path, where: str) -> None:
    """Raise unless the ``align.csv`` row has its four columns."""
    if len(row) != 4:
        raise LlmfbnError(
            f"{path}, {where}: wrong number of columns",
            expected="4 comma-separated columns without header: "
                     "word, alignedWord, start, end (Gentle align.csv)",
            found=f"{len(row)} column(s): {row[:6]!r}",
            todo="give a Gentle align.csv, or quote fields that contain commas",
        )


def _gentle_csv_times(row: list[str], path: Path, where: str):
    """(word, onset, offset) of a four-column ``align.csv`` row; times None if unaligned."""
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
    if not has_start:
        return word, None, None
    return (word, parse_time(start, path, where, "start"),
            parse_time(end, path, where, "end"))


def read_gentle_json(path) -> WordTimings:
    """Read Gentle's ``align.json``.

    The file is ``{"transcript": str, "words": [{"word", "alignedWord", "case", "start",
    "end", "startOffset", "endOffset"}, ...]}``. Entries with ``case == "success"`` carry
    ``start``/``end`` in seconds; ``"not-found-in-audio"`` entries have none and get
    interpolated times (see :mod:`bids_app.stimulus`). ``"not-found-in-transcript"``
    entries are sounds that are not transcript words; they are skipped, as in Gentle's own
    CSV export.

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
    doc = _load_gentle_json(path)
    words = WordList()
    for i, entry in enumerate(doc["words"]):
        where = f"entry words[{i}]"
        case = _gentle_json_case(entry, path, where)
        if case == "not-found-in-transcript":
            continue
        if case == "success":
            onset, offset = _gentle_json_times(entry, path, where)
        else:
            onset = offset = None
        words.add(entry["word"], onset, offset, where)
    return words.timings(path)


def _load_gentle_json(path: Path) -> dict:
    """The parsed ``align.json`` of ``path``: a dict with a ``"words"`` list."""
    text = read_text(path, "Word-timing file")
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
    return doc


def _gentle_json_case(entry, path: Path, where: str) -> str:
    """The alignment case of a ``words`` entry, after checking the entry's word.

    An entry without ``case`` is ``"success"`` when it has a ``start``, else
    ``"not-found-in-audio"``.
    """
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
    return case


def _gentle_json_times(entry: dict, path: Path, where: str) -> tuple[float, float]:
    """(onset, offset) in seconds of an aligned (``"success"``) ``words`` entry."""
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
        times.append(check_time(value, value, path, where, column))
    onset, offset = times
    return onset, offset
