"""Word timings of a story and the checks every word-timing reader shares.

:class:`WordTimings` holds a story's words and their times. The readers
(:mod:`~bids_app.stimulus.gentle`, :mod:`~bids_app.stimulus.textgrid`,
:mod:`~bids_app.stimulus.tables`) read the file's text with :func:`read_text`, parse and
check each time with :func:`parse_time`/:func:`check_time`, and collect the words in a
:class:`WordList`, with None for the times of unaligned words; :meth:`WordList.timings`
checks the order of the aligned words and interpolates the others (see the package
docstring).
"""

from __future__ import annotations

import codecs
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bids_app.errors import LlmfbnError

# A plain decimal number, as Gentle writes it ("12.34", "3", "1e-3"); float() alone would
# also accept "nan", "inf" and "1_0".
NUMBER_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
# Offset and onset + duration may disagree by this much (seconds) from rounding in print.
TIME_TOLERANCE_S = 1e-3


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
        interpolated (see :mod:`bids_app.stimulus`).
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


def read_text(path: Path, what: str) -> str:
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


def parse_time(text: str, path: Path, where: str, column: str) -> float:
    """Parse one time in seconds from CSV text, or raise an LlmfbnError naming the place."""
    stripped = text.strip()
    if not NUMBER_RE.fullmatch(stripped):
        raise LlmfbnError(
            f"{path}, {where}: {column} time is not a number",
            expected=f"{column} in seconds as a plain decimal number (or empty when the "
                     "word was not aligned)",
            found=repr(text),
            todo="fix or regenerate the alignment",
        )
    return check_time(float(stripped), text, path, where, column)


def check_time(value, shown, path: Path, where: str, column: str) -> float:
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
    # described in the docstring of bids_app.stimulus.
    all_onsets = np.interp(positions, known, known_onsets)
    all_offsets = np.interp(positions, known, known_offsets)
    all_onsets[known] = known_onsets  # exact values, no interpolation round-off
    all_offsets[known] = known_offsets
    return WordTimings(words=tuple(words), onsets_s=all_onsets, offsets_s=all_offsets,
                       aligned=aligned, source=str(path))


class WordList:
    """The words of a story in file order, as a reader finds them.

    Each word comes with its onset and offset in seconds from the story start (None for
    both when the word was not aligned) and its place in the file (line or entry), named in
    error messages. :meth:`timings` checks the aligned times and interpolates the others.
    """

    def __init__(self):
        self.words, self.onsets_s, self.offsets_s, self.places = [], [], [], []

    def __len__(self) -> int:
        return len(self.words)

    def add(self, word: str, onset_s: float | None, offset_s: float | None,
            place: str) -> None:
        """Append one word, with its times (None when not aligned) and its place."""
        self.words.append(word)
        self.onsets_s.append(onset_s)
        self.offsets_s.append(offset_s)
        self.places.append(place)

    def timings(self, path: Path) -> WordTimings:
        """The words as :class:`WordTimings` of the file ``path`` (see _finish_timings)."""
        return _finish_timings(self.words, self.onsets_s, self.offsets_s, self.places, path)
