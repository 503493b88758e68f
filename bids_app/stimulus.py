"""Stimulus timing: word timings of a story and the story's onset inside a run.

Word timings are read from any of the formats datasets ship (:func:`read_word_timings`
picks the reader from the file name and header):

* Gentle forced-aligner output, as used by the Narratives dataset
  (``stimuli/gentle/<task>/align.csv`` or ``align.json``): :func:`read_gentle_csv`,
  :func:`read_gentle_json`;
* a Praat TextGrid word tier (e.g. from the Montreal Forced Aligner):
  :func:`read_textgrid`;
* a word table with a header, TSV or CSV, with word/onset/offset (or duration) columns, as
  in the Le Petit Prince dataset: :func:`read_word_table`;
* BIDS ``*_events.tsv`` rows with ``trial_type == "word"``: :func:`read_events_words`.

Except for events files, times are in seconds from the start of the story's audio;
:func:`story_onset_s` gives the offset of the story inside a BOLD run, read from the run's
``*_events.tsv``. Events-file word onsets are already on the run's clock (story onset 0).
:func:`check_within_run` checks that the words fit inside the run.

Words an aligner could not place in the audio are kept, because the language model needs
them as context. Their times are filled in by linear interpolation over word position
between the nearest aligned words before and after them; before the first aligned word
(after the last one) they take that word's onset and offset (constant extrapolation, i.e.
clamping). The ``aligned`` mask says which times were measured and which were filled in.
"""

from __future__ import annotations

import codecs
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
    "read_textgrid",
    "read_word_table",
    "read_events_words",
    "story_onset_s",
    "check_within_run",
]

# A plain decimal number, as Gentle writes it ("12.34", "3", "1e-3"); float() alone would
# also accept "nan", "inf" and "1_0".
_NUMBER_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_GENTLE_CSV_COLUMNS = ("word", "alignedWord", "start", "end")
_GENTLE_JSON_CASES = ("success", "not-found-in-audio", "not-found-in-transcript")

# TextGrid interval labels that mark silence or a pause, not a word (compared lower-cased).
_SILENCE_MARKS = frozenset({"", "sp", "sil", "<sil>", "{sl}", "#"})
# Column names of word tables, compared lower-cased; earlier aliases win.
_WORD_COLUMNS = ("word", "words", "token", "text")
_ONSET_COLUMNS = ("onset", "start", "start_time", "tmin", "xmin")
_OFFSET_COLUMNS = ("offset", "end", "stop", "end_time", "tmax", "xmax")
_DURATION_COLUMNS = ("duration",)
_EVENTS_WORD_COLUMNS = ("word", "value", "stim")
# Cell values that mean "no time" (unaligned word): BIDS n/a, pandas/R missing values.
_MISSING_VALUES = frozenset({"", "n/a", "na", "nan"})
# Offset and onset + duration may disagree by this much (seconds) from rounding in print.
_TIME_TOLERANCE_S = 1e-3
_SUPPORTED_FORMATS = (
    "a Gentle align.csv (.csv, 4 columns word, alignedWord, start, end, no header), "
    "a Gentle align.json (.json), a Praat TextGrid with a word tier (.TextGrid), "
    "a word table with a header row (.tsv or .csv; columns word/words/token/text, "
    "onset/start/start_time/tmin/xmin and offset/end/stop/end_time/tmax/xmax or "
    "duration), or a BIDS *_events.tsv with trial_type 'word' rows"
)


@dataclass(frozen=True)
class WordTimings:
    """Timing of every transcript word of one story.

    Attributes
    ----------
    words : tuple of str, length n_words
        Transcript words in story order, with their original spelling and punctuation
        (Gentle's ``word`` field; the TextGrid interval text or table cell, without
        surrounding blanks).
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
        text = _read_text(path, "Word-timing file")
        header = _header_names(text)
        is_events = path.name.lower().endswith("_events.tsv")
        if is_events and "trial_type" in header:
            return read_events_words(path)
        if _looks_like_word_table(header):
            return read_word_table(path)
        if suffix == ".csv":
            return read_gentle_csv(path)
        if is_events:
            return read_events_words(path)  # explains the missing trial_type column
        first_line = next((line for line in text.splitlines() if line.strip()), "")
        raise LlmfbnError(
            f"Cannot tell the format of word-timing file {path}",
            expected=_SUPPORTED_FORMATS,
            found=f"first line {first_line[:200]!r}" if first_line else "an empty file",
            todo="add a header row naming the word and onset columns (e.g. "
                 "word<TAB>onset<TAB>offset), or convert the timings to a supported format",
        )
    raise LlmfbnError(
        f"Cannot tell the format of word-timing file {path}",
        expected=_SUPPORTED_FORMATS,
        found=f"suffix {suffix!r}" if suffix else "no suffix",
        todo="convert the word timings to a supported format or rename the file with the "
             "right suffix",
    )


def _read_text(path: Path, what: str) -> str:
    """Read a whole text file, turning every I/O problem into an LlmfbnError.

    The file is UTF-8 (with or without BOM), or UTF-16 when it starts with a UTF-16 byte
    order mark (Praat writes non-ASCII TextGrids that way, Excel its "Unicode text").
    Line ends are kept as they are (``newline=""``), as the csv module expects.
    """
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
        with open(path, "rb") as fobj:
            raw = fobj.read()
    except OSError as exc:
        raise LlmfbnError(
            f"Cannot read {what.lower()} {path}", found=str(exc),
            todo="check the file permissions and that the file is a regular file",
        ) from exc
    utf16 = raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    try:
        return raw.decode("utf-16" if utf16 else "utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LlmfbnError(
            f"{what} {path} is not " + ("valid UTF-16" if utf16 else "UTF-8") + " text",
            expected="a UTF-8 encoded text file (or UTF-16 with a byte order mark)",
            found=f"undecodable bytes at byte {exc.start}",
            todo="re-save the file as UTF-8",
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


# --- Praat TextGrid ----------------------------------------------------------------------

# Praat's text formats are a stream of numbers, "strings" (a doubled "" is a quote inside)
# and <flags>; the long format adds labels ("xmin =", "intervals [3]:") that Praat's own
# reader skips. Reading the token stream therefore parses the long and the short format.
_TEXTGRID_TOKEN_RE = re.compile(r'''
      (?P<string>"(?:[^"]|"")*")
    | (?P<open_string>")
    | (?P<flag><[^<>\s]*>)
    | (?P<comment>![^\n]*)
    | (?P<index>\[[^\]\n]*\])
    | (?P<label>[^\W\d][\w?]*)
    | (?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<skip>\s+|.)
''', re.VERBOSE | re.DOTALL)
_TOKEN_NAMES = {"string": 'a "string"', "number": "a number", "flag": "a <flag>"}


class _TextGridTokens:
    """Cursor over the tokens of a TextGrid text: (kind, value, line) triples."""

    def __init__(self, text: str, path: Path):
        self.path = path
        self.tokens = []
        line = 1
        for match in _TEXTGRID_TOKEN_RE.finditer(text):
            kind = match.lastgroup
            value = match.group()
            if kind == "open_string":
                raise LlmfbnError(
                    f"{path}, line {line}: unterminated string",
                    expected='text in double quotes, a quote inside written as ""',
                    found=repr(text[match.start():match.start() + 60]),
                    todo="fix the TextGrid or save it again from Praat",
                )
            if kind == "string":
                self.tokens.append(("string", value[1:-1].replace('""', '"'), line))
            elif kind in ("number", "flag"):
                self.tokens.append((kind, value, line))
            line += value.count("\n")
        self.position = 0

    def take(self, kind: str, what: str) -> tuple[str, int]:
        """Return (value, line) of the next token, which must be of ``kind``."""
        if self.position >= len(self.tokens):
            raise LlmfbnError(
                f"{self.path}: TextGrid ends too early, while reading {what}",
                expected=f"{_TOKEN_NAMES[kind]} for {what}", found="the end of the file",
                todo="the file looks truncated; save it again from Praat",
            )
        found_kind, value, line = self.tokens[self.position]
        if found_kind != kind:
            raise LlmfbnError(
                f"{self.path}, line {line}: unexpected {found_kind} while reading {what}",
                expected=f"{_TOKEN_NAMES[kind]} for {what} (Praat TextGrid text format)",
                found=repr(value)[:100],
                todo="fix the TextGrid or save it again from Praat as a text file",
            )
        self.position += 1
        return value, line

    def peek_kind(self) -> str | None:
        return self.tokens[self.position][0] if self.position < len(self.tokens) else None

    def take_count(self, what: str) -> int:
        value, line = self.take("number", what)
        if not value.isdigit():
            raise LlmfbnError(
                f"{self.path}, line {line}: {what} is not a whole number",
                expected=f"{what} as a non-negative integer", found=repr(value),
                todo="fix the TextGrid or save it again from Praat",
            )
        return int(value)


@dataclass
class _Tier:
    kind: str                 # "IntervalTier" or "TextTier"
    name: str
    line: int
    intervals: list           # IntervalTier: (xmin text, xmax text, label, line) tuples


def _parse_textgrid(text: str, path: Path) -> list[_Tier]:
    """Parse a long or short text TextGrid into its tiers."""
    if text.lstrip().startswith("ooBinaryFile"):
        raise LlmfbnError(
            f"{path} is a binary Praat file",
            expected="a TextGrid saved as a text file", found='"ooBinaryFile" header',
            todo="open it in Praat and use 'Save as text file...' (or 'short text file')",
        )
    tokens = _TextGridTokens(text, path)
    file_type, line = tokens.take("string", 'the file type ("ooTextFile")')
    if not file_type.startswith("ooTextFile"):
        raise LlmfbnError(
            f"{path}, line {line}: not a Praat text file",
            expected='File type = "ooTextFile"', found=repr(file_type)[:100],
            todo="give a TextGrid saved by Praat as a (short) text file",
        )
    object_class, line = tokens.take("string", 'the object class ("TextGrid")')
    if object_class != "TextGrid":
        raise LlmfbnError(
            f"{path}, line {line}: a Praat {object_class!r} object, not a TextGrid",
            expected='Object class = "TextGrid"', found=repr(object_class)[:100],
            todo="give the TextGrid with the word tier",
        )
    tokens.take("number", "the TextGrid's xmin")
    tokens.take("number", "the TextGrid's xmax")
    n_tiers = None
    if tokens.peek_kind() == "flag":
        flag, _ = tokens.take("flag", "tiers? <exists>")
        if flag == "<absent>":
            n_tiers = 0
    if n_tiers is None:
        n_tiers = tokens.take_count("the number of tiers")
    tiers = []
    for i_tier in range(1, n_tiers + 1):
        kind, line = tokens.take("string", f"the class of tier {i_tier}")
        name, _ = tokens.take("string", f"the name of tier {i_tier}")
        tokens.take("number", f"the xmin of tier {name!r}")
        tokens.take("number", f"the xmax of tier {name!r}")
        if kind == "IntervalTier":
            n_items = tokens.take_count(f"the number of intervals of tier {name!r}")
            intervals = []
            for k in range(1, n_items + 1):
                what = f"tier {name!r}, interval {k}"
                xmin, item_line = tokens.take("number", f"the xmin of {what}")
                xmax, _ = tokens.take("number", f"the xmax of {what}")
                label, _ = tokens.take("string", f"the text of {what}")
                intervals.append((xmin, xmax, label, item_line))
        elif kind == "TextTier":
            n_items = tokens.take_count(f"the number of points of tier {name!r}")
            for k in range(1, n_items + 1):
                tokens.take("number", f"the time of tier {name!r}, point {k}")
                tokens.take("string", f"the mark of tier {name!r}, point {k}")
            intervals = []
        else:
            raise LlmfbnError(
                f"{path}, line {line}: tier {i_tier} has unknown class {kind!r}",
                expected='"IntervalTier" or "TextTier"', found=repr(kind)[:100],
                todo="fix the TextGrid or save it again from Praat",
            )
        tiers.append(_Tier(kind=kind, name=name, line=line, intervals=intervals))
    return tiers


def _describe_tiers(tiers) -> str:
    if not tiers:
        return "no tiers"
    return "tiers " + ", ".join(f"{t.name!r} ({t.kind})" for t in tiers)


def _choose_tier(tiers, tier, path: Path) -> _Tier:
    """The word tier: named ``tier``; else named words/word; else the only IntervalTier."""
    interval_tiers = [t for t in tiers if t.kind == "IntervalTier"]
    if tier is not None:
        matches = [t for t in tiers if t.name == str(tier)]
        if len(matches) == 1 and matches[0].kind == "IntervalTier":
            return matches[0]
        problem = ("is a TextTier (points), not an IntervalTier" if len(matches) == 1
                   else "appears more than once" if matches else "does not exist")
        raise LlmfbnError(
            f"Tier {str(tier)!r} of TextGrid {path} {problem}",
            expected="the name of exactly one IntervalTier holding the words",
            found=_describe_tiers(tiers), todo="give one of the IntervalTier names",
        )
    # Exact "words"/"word", then names ending in it such as the Montreal Forced
    # Aligner's multi-speaker "speaker1 - words".
    for pattern in (r"words?", r".*[^a-z0-9]words?"):
        matches = [t for t in interval_tiers
                   if re.fullmatch(pattern, t.name.strip().lower(), re.DOTALL)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            break
    else:
        if len(interval_tiers) == 1:
            return interval_tiers[0]
    raise LlmfbnError(
        f"Cannot choose the word tier of TextGrid {path}",
        expected="one IntervalTier named 'words' or 'word' (any case), or a single "
                 "IntervalTier",
        found=_describe_tiers(tiers),
        todo="rename the word tier 'words', or call read_textgrid(path, tier=NAME)",
    )


def read_textgrid(path, tier=None) -> WordTimings:
    """Read the word tier of a Praat TextGrid.

    Both Praat text formats are read (the long ``ooTextFile`` format with labels such as
    ``xmin = 0`` and the short one without), UTF-8 or UTF-16 with byte order mark. Each
    interval of the word tier whose text is not silence (``""``, ``"sp"``, ``"sil"``,
    ``"<sil>"``, ``"{SL}"``, ``"#"``, any case, surrounding blanks ignored) is one word with
    onset ``xmin`` and offset ``xmax``. Every word of a TextGrid is aligned.

    Parameters
    ----------
    path : str or os.PathLike
        Path of the ``.TextGrid`` file. Times are seconds from the start of the story.
    tier : str or None, default=None
        Name of the word tier. None: the IntervalTier named ``words`` or ``word`` (any
        case; else one whose name ends in it, e.g. ``"speaker1 - words"``), else the only
        IntervalTier.

    Returns
    -------
    timings : WordTimings
        One entry per non-silent interval, in tier order; words without surrounding
        blanks.

    Raises
    ------
    LlmfbnError
        Missing/unreadable file, binary or malformed TextGrid, no such tier (or no tier
        can be chosen; the message lists the tiers), non-finite/negative times, an
        interval ending before it starts or overlapping the previous one, or no word. The
        message names the file and the line or the tier's interval.
    """
    path = Path(path)
    text = _read_text(path, "Word-timing file")
    chosen = _choose_tier(_parse_textgrid(text, path), tier, path)
    words, onsets_s, offsets_s, places = [], [], [], []
    previous_offset, previous_place = -np.inf, None
    for k, (xmin, xmax, label, line) in enumerate(chosen.intervals, start=1):
        where = f"tier {chosen.name!r}, interval {k} (line {line})"
        onset = _check_time(xmin, xmin, path, where, "xmin")
        offset = _check_time(xmax, xmax, path, where, "xmax")
        if offset < onset:
            raise LlmfbnError(
                f"{path}, {where}: interval {label.strip()!r} ends before it starts",
                expected="xmax >= xmin", found=f"xmin {xmin}, xmax {xmax}",
                todo="fix the TextGrid",
            )
        if onset < previous_offset - _TIME_TOLERANCE_S:
            raise LlmfbnError(
                f"{path}, {where}: interval overlaps the previous one (inconsistent times)",
                expected="intervals in time order, each starting where the previous ends",
                found=f"xmin {xmin} s before the end {previous_offset!r} s of "
                      f"{previous_place}",
                todo="sort the tier's intervals in time order or fix the TextGrid",
            )
        previous_offset, previous_place = offset, where
        if label.strip().lower() in _SILENCE_MARKS:
            continue
        words.append(label.strip())
        onsets_s.append(onset)
        offsets_s.append(offset)
        places.append(where)
    if not words:
        raise LlmfbnError(
            f"Tier {chosen.name!r} of TextGrid {path} holds no words",
            expected="intervals with word text",
            found=f"{len(chosen.intervals)} interval(s), all silence or empty",
            todo="check that this is the word tier",
        )
    return _finish_timings(words, onsets_s, offsets_s, places, path)


# --- word tables and events files --------------------------------------------------------

def _first_line(text: str) -> str:
    return next((line for line in text.splitlines() if line.strip()), "")


def _delimiter(text: str) -> str:
    """Tab when the header line has a tab, else comma when it has one, else tab."""
    header = _first_line(text)
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
    line_end = 0
    try:
        for row in reader:
            line_start, line_end = line_end + 1, reader.line_num
            if all(not field.strip() for field in row):
                continue
            yield line_start, row
    except csv.Error as exc:
        raise LlmfbnError(
            f"{path}, line {reader.line_num}: not valid "
            + ("TSV" if delimiter == "\t" else "CSV"),
            expected="a table with a header row", found=str(exc),
            todo="fix the table (quote fields that contain commas or line breaks)",
        ) from exc


def _normalized(name: str) -> str:
    return name.strip().lower()


def _header_names(text: str) -> list[str]:
    """Normalized column names of the first non-blank row (empty when unreadable)."""
    try:
        for _, row in _table_rows(text, Path()):
            return [_normalized(name) for name in row]
    except LlmfbnError:
        pass
    return []


def _looks_like_word_table(header: list[str]) -> bool:
    """A header naming a word and an onset column, no number, not Gentle's own header."""
    return (header != [c.lower() for c in _GENTLE_CSV_COLUMNS]
            and any(name in header for name in _WORD_COLUMNS)
            and any(name in header for name in _ONSET_COLUMNS)
            and not any(_NUMBER_RE.fullmatch(name) for name in header))


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
    text = _read_text(path, what)
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


def _optional_time(text: str, path: Path, where: str, column: str) -> float | None:
    """A time in seconds, or None for a missing value (empty, n/a, NA, NaN)."""
    if text.strip().lower() in _MISSING_VALUES:
        return None
    return _parse_time(text, path, where, column)


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
    aligned; their times are interpolated (see the module docstring). Blank lines are
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
    i_word = _find_column(header, _WORD_COLUMNS, path, header_line)
    i_onset = _find_column(header, _ONSET_COLUMNS, path, header_line)
    i_offset = _find_column(header, _OFFSET_COLUMNS, path, header_line)
    i_duration = _find_column(header, _DURATION_COLUMNS, path, header_line)
    if i_word is None or i_onset is None or (i_offset is None and i_duration is None):
        missing = [role for role, index in (("word", i_word), ("onset", i_onset),
                                            ("offset or duration", i_offset))
                   if index is None and not (role.startswith("offset")
                                             and i_duration is not None)]
        raise LlmfbnError(
            f"{path}, line {header_line}: word table has no {' / '.join(missing)} column",
            expected="a header row with columns " + "; ".join([
                "word: " + "/".join(_WORD_COLUMNS),
                "onset: " + "/".join(_ONSET_COLUMNS),
                "offset: " + "/".join(_OFFSET_COLUMNS) + " (or duration)"]),
            found=f"columns {names[:20]}",
            todo="rename the columns (times in seconds from the start of the story)",
        )
    words, onsets_s, offsets_s, places = [], [], [], []
    for line, row in rows:
        fields = _row_fields(row, len(header), path, line, names)
        where = f"line {line}"
        word = fields[i_word].strip()
        if not word:
            raise LlmfbnError(
                f"{path}, {where}: empty word",
                expected=f"the word in column {names[i_word]!r}", found=repr(row)[:200],
                todo="fill in the word or remove the row",
            )
        onset = _optional_time(fields[i_onset], path, where, names[i_onset])
        offset = (None if i_offset is None
                  else _optional_time(fields[i_offset], path, where, names[i_offset]))
        duration = (None if i_duration is None
                    else _optional_time(fields[i_duration], path, where,
                                        names[i_duration]))
        if onset is None:
            if offset is not None:
                raise LlmfbnError(
                    f"{path}, {where}: word {word!r} has an offset but no onset "
                    "(inconsistent times)",
                    expected="both onset and offset (aligned) or neither (not aligned)",
                    found=f"onset {fields[i_onset]!r}, offset {fields[i_offset]!r}",
                    todo="fix the word timings",
                )
        elif offset is None and duration is None:
            raise LlmfbnError(
                f"{path}, {where}: word {word!r} has an onset but no offset or duration "
                "(inconsistent times)",
                expected="both onset and offset/duration (aligned) or neither",
                found=f"onset {fields[i_onset]!r}", todo="fix the word timings",
            )
        elif duration is not None:
            end = _check_time(onset + duration, onset + duration, path, where,
                              "onset + duration")
            if offset is not None and abs(end - offset) > _TIME_TOLERANCE_S:
                raise LlmfbnError(
                    f"{path}, {where}: word {word!r} has inconsistent times",
                    expected=f"offset = onset + duration (within {_TIME_TOLERANCE_S} s)",
                    found=f"onset {onset!r} s + duration {duration!r} s != offset "
                          f"{offset!r} s",
                    todo="fix the word timings or drop one of the offset/duration columns",
                )
            if offset is None:
                offset = end
        words.append(word)
        onsets_s.append(onset)
        offsets_s.append(offset if onset is not None else None)
        places.append(where)
    return _finish_timings(words, onsets_s, offsets_s, places, path)


def read_events_words(path) -> WordTimings:
    """Read the words of a BIDS ``*_events.tsv``: the rows with ``trial_type == "word"``.

    The word is in column ``word`` (else ``value``, else ``stim``); the onset in ``onset``
    and the offset is ``onset + duration``. A ``duration`` that is ``n/a`` (or no
    ``duration`` column) gives a zero-length word (offset = onset). A word row whose onset
    is ``n/a`` is a word that was not aligned; its times are interpolated (see the module
    docstring). Rows of other trial types are ignored.

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
    i_onset = _find_column(header, ("onset",), path, header_line)
    i_duration = _find_column(header, ("duration",), path, header_line)
    i_type = _find_column(header, ("trial_type",), path, header_line)
    i_word = _find_column(header, _EVENTS_WORD_COLUMNS, path, header_line)
    if i_onset is None or i_type is None or i_word is None:
        raise LlmfbnError(
            f"{path}, line {header_line}: events file has no "
            + " / ".join(role for role, index in (("onset", i_onset),
                                                  ("trial_type", i_type),
                                                  ("word", i_word)) if index is None)
            + " column",
            expected="tab-separated columns onset, duration, trial_type and the word in "
                     "column " + " or ".join(_EVENTS_WORD_COLUMNS),
            found=f"columns {names[:20]}",
            todo="add the columns, with trial_type 'word' on the word rows",
        )
    words, onsets_s, offsets_s, places = [], [], [], []
    trial_types = set()
    for line, row in rows:
        fields = _row_fields(row, len(header), path, line, names)
        trial_type = fields[i_type].strip()
        if trial_type.lower() != "word":
            trial_types.add(trial_type)
            continue
        where = f"line {line}"
        word = fields[i_word].strip()
        if word.lower() in ("", "n/a"):
            raise LlmfbnError(
                f"{path}, {where}: empty word",
                expected=f"the word in column {names[i_word]!r} of each word row",
                found=repr(row)[:200], todo="fill in the word or remove the row",
            )
        onset = _optional_time(fields[i_onset], path, where, "onset")
        duration = (None if i_duration is None
                     else _optional_time(fields[i_duration], path, where, "duration"))
        offset = None
        if onset is not None:
            offset = _check_time(onset + (duration or 0.0), onset + (duration or 0.0),
                                 path, where, "onset + duration")
        words.append(word)
        onsets_s.append(onset)
        offsets_s.append(offset)
        places.append(where)
    if not words:
        raise LlmfbnError(
            f"Events file {path} has no rows with trial_type 'word'",
            expected="one row per word with trial_type 'word'",
            found=f"trial_types {sorted(trial_types)[:10]}" if trial_types else "no rows",
            todo="give the word timings in another format, or mark the word rows",
        )
    return _finish_timings(words, onsets_s, offsets_s, places, path)


def check_within_run(timings: WordTimings, story_onset_s: float, run_duration_s: float,
                     path) -> None:
    """Check that a story's words lie inside a BOLD run.

    Parameters
    ----------
    timings : WordTimings
        The story's words, times in seconds from the story start.
    story_onset_s : float
        Story onset in seconds on the run's clock (0 for timings read from events files).
    run_duration_s : float
        Duration of the run in seconds (number of volumes x repetition time).
    path : str or os.PathLike
        The run's file (BOLD or events) the story onset and duration come from; named in
        the message.

    Raises
    ------
    LlmfbnError
        The last word ends beyond the run's duration, the first word starts before the
        run, or the onset/duration are not finite.
    """
    if timings.n_words == 0:
        return
    end_s = story_onset_s + float(np.max(timings.offsets_s))
    start_s = story_onset_s + float(np.min(timings.onsets_s))
    todo = (f"check the story onset in {path} and the word-timing file {timings.source} "
            "(are they for the same story?)")
    if not (math.isfinite(story_onset_s) and math.isfinite(run_duration_s)):
        raise LlmfbnError(
            f"Story onset or run duration of {path} is not a finite number",
            expected="finite seconds", found=f"onset {story_onset_s!r} s, run duration "
                                             f"{run_duration_s!r} s", todo=todo)
    # Slack for the rounding of onset + offset sums only.
    if end_s > run_duration_s + 1e-6:
        last = int(np.argmax(timings.offsets_s))
        raise LlmfbnError(
            f"The words of {timings.source} end beyond the run's duration ({path})",
            expected=f"story onset + last word offset <= run duration {run_duration_s:g} s",
            found=f"{story_onset_s:g} s + {float(timings.offsets_s[last]):g} s (word "
                  f"{last + 1}, {timings.words[last]!r}) = {end_s:g} s", todo=todo)
    if start_s < -1e-6:
        raise LlmfbnError(
            f"The words of {timings.source} start before the run ({path})",
            expected="story onset + first word onset >= 0 s",
            found=f"{story_onset_s:g} s + {float(np.min(timings.onsets_s)):g} s "
                  f"= {start_s:g} s", todo=todo)


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
