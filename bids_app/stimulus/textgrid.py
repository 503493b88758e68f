"""Praat TextGrid word tiers (e.g. from the Montreal Forced Aligner).

The long and the short text formats are read by one tokenizer; the word tier is chosen by
name or as the only IntervalTier (:func:`read_textgrid`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bids_app.errors import LlmfbnError
from bids_app.stimulus.timings import TIME_TOLERANCE_S, WordList, WordTimings, check_time, read_text

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

# TextGrid interval labels that mark silence or a pause, not a word (compared lower-cased).
_SILENCE_MARKS = frozenset({"", "sp", "sil", "<sil>", "{sl}", "#"})


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
    text = read_text(path, "Word-timing file")
    chosen = _choose_tier(_parse_textgrid(text, path), tier, path)
    words = WordList()
    previous_offset, previous_place = -np.inf, None
    for k, (xmin, xmax, label, line) in enumerate(chosen.intervals, start=1):
        where = f"tier {chosen.name!r}, interval {k} (line {line})"
        onset = check_time(xmin, xmin, path, where, "xmin")
        offset = check_time(xmax, xmax, path, where, "xmax")
        if offset < onset:
            raise LlmfbnError(
                f"{path}, {where}: interval {label.strip()!r} ends before it starts",
                expected="xmax >= xmin", found=f"xmin {xmin}, xmax {xmax}",
                todo="fix the TextGrid",
            )
        if onset < previous_offset - TIME_TOLERANCE_S:
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
        words.add(label.strip(), onset, offset, where)
    if not words:
        raise LlmfbnError(
            f"Tier {chosen.name!r} of TextGrid {path} holds no words",
            expected="intervals with word text",
            found=f"{len(chosen.intervals)} interval(s), all silence or empty",
            todo="check that this is the word tier",
        )
    return words.timings(path)
