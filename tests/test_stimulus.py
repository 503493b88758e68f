"""Tests for bids_app.stimulus: word timings (Gentle, TextGrid, word tables, events
files), format detection, the story onset and the run-duration check."""

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bids_app.errors import LlmfbnError
from bids_app.stimulus import (
    WordTimings,
    check_within_run,
    read_events_words,
    read_gentle_csv,
    read_gentle_json,
    read_textgrid,
    read_word_table,
    read_word_timings,
    story_onset_s,
)

# A Gentle align.csv: unaligned words at the start, in the middle (two in a row) and at
# the end; a word with a comma and one with quotes (csv quoting); an aligned <unk>.
GENTLE_CSV = (
    'Once,,,\n'
    'upon,upon,0.5,0.8\n'
    'a,<unk>,,\n'
    '"time,",,,\n'
    'there,there,2.0,2.6\n'
    '"""was""",was,2.6,3.0\n'
    'Zork,<unk>,3.1,3.5\n'
    'gone.,,,\n'
)
WORDS = ("Once", "upon", "a", "time,", "there", '"was"', "Zork", "gone.")
# Planted truth, computed by hand: words 2 and 3 sit 1/3 and 2/3 of the way from word 1
# (0.5-0.8 s) to word 4 (2.0-2.6 s); word 0 takes word 1's times, word 7 takes word 6's.
ONSETS = [0.5, 0.5, 1.0, 1.5, 2.0, 2.6, 3.1, 3.1]
OFFSETS = [0.8, 0.8, 1.4, 2.0, 2.6, 3.0, 3.5, 3.5]
ALIGNED = [False, True, False, False, True, True, True, False]


def _gentle_json():
    entries = []
    for word, on, off, ok in zip(WORDS, ONSETS, OFFSETS, ALIGNED):
        if ok:
            entries.append({"word": word, "alignedWord": word.lower(), "case": "success",
                            "start": on, "end": off, "startOffset": 0, "endOffset": 1})
        else:
            entries.append({"word": word, "case": "not-found-in-audio",
                            "startOffset": 0, "endOffset": 1})
    # A sound heard in the audio but not in the transcript is not a transcript word.
    entries.insert(5, {"word": "uh", "alignedWord": "uh", "case": "not-found-in-transcript",
                       "start": 2.5, "end": 2.55})
    return {"transcript": " ".join(WORDS), "words": entries}


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _assert_timings_equal(a: WordTimings, b: WordTimings):
    assert a.words == b.words
    np.testing.assert_array_equal(a.onsets_s, b.onsets_s)
    np.testing.assert_array_equal(a.offsets_s, b.offsets_s)
    np.testing.assert_array_equal(a.aligned, b.aligned)


def test_gentle_csv_interpolates_unaligned_words(tmp_path):
    path = _write(tmp_path, "align.csv", GENTLE_CSV)
    timings = read_gentle_csv(path)
    assert timings.words == WORDS
    assert timings.source == str(path) and len(timings) == timings.n_words == 8
    np.testing.assert_allclose(timings.onsets_s, ONSETS, rtol=0, atol=1e-12)
    np.testing.assert_allclose(timings.offsets_s, OFFSETS, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(timings.aligned, ALIGNED)
    assert timings.onsets_s.dtype == np.float64 and timings.aligned.dtype == bool
    assert np.all(timings.offsets_s >= timings.onsets_s)
    with pytest.raises(ValueError):  # read-only arrays: cached timings stay intact
        timings.onsets_s[0] = 1.0


def test_gentle_json_gives_same_timings(tmp_path):
    csv_path = _write(tmp_path, "align.csv", GENTLE_CSV)
    json_path = _write(tmp_path, "align.json", json.dumps(_gentle_json()))
    from_json = read_gentle_json(json_path)
    _assert_timings_equal(from_json, read_gentle_csv(csv_path))
    assert from_json.source == str(json_path)
    _assert_timings_equal(read_word_timings(json_path), from_json)
    _assert_timings_equal(read_word_timings(csv_path), from_json)


def test_header_and_blank_lines_tolerated(tmp_path):
    path = _write(tmp_path, "align.csv",
                  "word,alignedWord,start,end\n" + GENTLE_CSV.replace("\n", "\n\n", 2))
    _assert_timings_equal(read_gentle_csv(path),
                          read_gentle_csv(_write(tmp_path, "plain.csv", GENTLE_CSV)))


def test_unknown_suffix(tmp_path):
    path = _write(tmp_path, "align.txt", GENTLE_CSV)
    with pytest.raises(LlmfbnError, match=r"\.csv.*\.json"):
        read_word_timings(path)


@pytest.mark.parametrize("reader", [read_word_timings, read_gentle_csv, read_gentle_json])
def test_missing_file_names_expected_path(tmp_path, reader):
    path = tmp_path / "stimuli" / "gentle" / "pieman" / "align.csv"
    with pytest.raises(LlmfbnError, match="not found") as info:
        reader(path)
    assert str(path) in str(info.value)


MALFORMED_CSV = {
    "empty": ("", None, "empty"),
    "blank lines only": ("\n\n  \n", None, "empty"),
    "three columns": ("a,a,0.1,0.2\nb,b,0.3\n", 2, "number of columns"),
    "five columns": ("a,a,0.1,0.2,x\n", 1, "number of columns"),
    "non-numeric start": ("a,a,0.1,0.2\nb,b,abc,0.5\n", 2, "not a number"),
    "non-numeric end": ("a,a,0.1,0.2\nb,b,0.3,1.0s\n", 2, "not a number"),
    "nan": ("a,a,nan,0.2\n", 1, "not a number"),
    "infinite": ("a,a,0.1,1e999\n", 1, "not a finite number"),
    "negative": ("a,a,0.1,0.2\nb,b,-0.5,0.1\n", 2, "negative"),
    "end before start": ("a,a,0.1,0.2\nb,,,\nc,c,0.9,0.4\n", 3, "ends before it starts"),
    "onsets decrease": ("a,a,1.0,1.2\nb,b,1.3,1.4\nc,c,0.5,0.6\n", 3, "onsets decrease"),
    "only start": ("a,a,0.1,0.2\nb,b,0.3,\n", 2, "only one of start/end"),
    "empty word": ("a,a,0.1,0.2\n,x,0.3,0.4\n", 2, "empty word"),
    "no aligned word": ("a,,,\nb,<unk>,,\n", None, "No word"),
    "quoted multi-line": ('a,a,0.1,0.2\n"b\nc",b,x,0.4\n', 2, "not a number"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_CSV))
def test_malformed_csv_names_file_and_line(tmp_path, case):
    text, line, phrase = MALFORMED_CSV[case]
    path = _write(tmp_path, "align.csv", text)
    with pytest.raises(LlmfbnError, match=phrase) as info:
        read_word_timings(path)
    message = str(info.value)
    assert str(path) in message
    if line is not None:
        assert f"line {line}:" in message


def test_non_utf8_csv(tmp_path):
    path = tmp_path / "align.csv"
    path.write_bytes(b"caf\xe9,cafe,0.1,0.2\n")
    with pytest.raises(LlmfbnError, match="UTF-8") as info:
        read_gentle_csv(path)
    assert str(path) in str(info.value)


def _json_with(entry):
    return json.dumps({"transcript": "a b", "words": [
        {"word": "a", "case": "success", "start": 0.1, "end": 0.2}, entry]})


MALFORMED_JSON = {
    "not json": ('{"words": [', "not valid JSON"),
    "empty": ("", "empty"),
    "no words list": ('{"transcript": "a"}', '"words" list'),
    "success without times": (_json_with({"word": "b", "case": "success"}), "no start/end"),
    "string time": (_json_with({"word": "b", "case": "success", "start": "0.3",
                                "end": 0.4}), "not a number"),
    "negative time": (_json_with({"word": "b", "case": "success", "start": -1,
                                  "end": 0.4}), "negative"),
    "end before start": (_json_with({"word": "b", "case": "success", "start": 0.5,
                                     "end": 0.4}), "ends before it starts"),
    "unknown case": (_json_with({"word": "b", "case": "maybe"}), "unknown alignment case"),
    "entry without word": (_json_with({"case": "success", "start": 0.3, "end": 0.4}),
                           "not a Gentle word entry"),
    "no aligned word": (json.dumps({"words": [{"word": "a",
                                               "case": "not-found-in-audio"}]}), "No word"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_JSON))
def test_malformed_json_names_file_and_entry(tmp_path, case):
    text, phrase = MALFORMED_JSON[case]
    path = _write(tmp_path, "align.json", text)
    with pytest.raises(LlmfbnError, match=phrase) as info:
        read_word_timings(path)
    assert str(path) in str(info.value)
    if "entry" in case or "time" in case or "start" in case:
        assert "words[1]" in str(info.value)


# --- story onset -------------------------------------------------------------------------

def _events(tmp_path, text):
    return _write(tmp_path, "sub-01_task-pieman_events.tsv", text)


def test_story_onset_from_trial_type(tmp_path):
    path = _events(tmp_path, "onset\tduration\ttrial_type\tstim_file\n"
                             "0.0\t15.0\tmusic\tintro.wav\n"
                             "15.0\t422.0\tpieman\tpieman_audio.wav\n")
    assert story_onset_s(path, "pieman") == 15.0


def test_story_onset_from_single_stim_file(tmp_path):
    path = _events(tmp_path, "onset\tduration\ttrial_type\tstim_file\n"
                             "0.0\t3.0\tfixation\tn/a\n"
                             "3.0\t400.0\tstory\tpieman_audio.wav\n"
                             "403.0\t10.0\tfixation\tn/a\n")
    assert story_onset_s(path, "pieman") == 3.0


def test_story_onset_from_only_row(tmp_path):
    path = _events(tmp_path, "onset\tduration\ttrial_type\n12.5\t300\tstory\n")
    assert story_onset_s(path, "pieman") == 12.5


@pytest.mark.parametrize("text, phrase", [
    ("onset\tduration\ttrial_type\n0\t3\tfix\n3\t300\tstory\n", "Cannot tell the story onset"),
    ("onset\tduration\ttrial_type\tstim_file\n0\t3\ta\ta.wav\n3\t3\tb\tb.wav\n",
     "Cannot tell the story onset"),
    ("onset\tduration\ttrial_type\n0\t3\tpieman\n5\t3\tpieman\n", "2 rows with trial_type"),
    ("duration\ttrial_type\n3\tpieman\n", "no 'onset' column"),
    ("onset\tduration\ttrial_type\n", "Cannot tell the story onset"),
    ("", "Cannot read events file"),
    ("onset\tduration\ttrial_type\nn/a\t3\tpieman\n", "not a number"),
])
def test_story_onset_errors(tmp_path, text, phrase):
    path = _events(tmp_path, text)
    with pytest.raises(LlmfbnError, match=phrase) as info:
        story_onset_s(path, "pieman")
    assert str(path) in str(info.value)
    if "Cannot tell" in phrase:
        assert "trial_type == 'pieman'" in str(info.value)  # the rule is explained


def test_story_onset_missing_file(tmp_path):
    path = tmp_path / "sub-01_task-pieman_events.tsv"
    with pytest.raises(LlmfbnError, match="not found") as info:
        story_onset_s(path, "pieman")
    assert str(path) in str(info.value)


# --- fuzz --------------------------------------------------------------------------------

_FIELD = st.one_of(
    st.sampled_from(["", "word", "<unk>", "0.5", "1", "-1", "nan", "inf", "1e999", "1e-3",
                     " 2.0 ", '"', '""', "a,b", "\n", "\r", "\x00", "é"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=8),
)
_CSV_LIKE = st.lists(st.lists(_FIELD, min_size=0, max_size=6), max_size=8).map(
    lambda rows: "\n".join(",".join(row) for row in rows))


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(st.text(), _CSV_LIKE))
def test_fuzz_csv_only_raises_llmfbn_error(text):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "align.csv"
        path.write_text(text, encoding="utf-8", newline="")
        try:
            timings = read_word_timings(path)
        except LlmfbnError as exc:
            assert str(path) in str(exc)
        else:
            assert timings.n_words >= 1 and timings.aligned.any()
            assert np.all(np.isfinite(timings.onsets_s))
            assert np.all(timings.offsets_s >= timings.onsets_s)


# --- Praat TextGrid ----------------------------------------------------------------------

# Planted truth: tricky words (contractions, quotes, punctuation, non-ASCII, CJK) with
# silences and pauses between them that must be skipped.
TG_WORDS = ("Don't", '"Hello,"', "café", "naïve—", "日本語", "l'homme", "it's.")
TG_ONSETS = [0.25, 0.6, 1.0, 1.5, 2.5, 3.0, 3.4]
TG_OFFSETS = [0.6, 1.0, 1.5, 2.0, 3.0, 3.4, 4.125]
TG_SILENCES = {0: "", 4: "sp", 6: "<SIL>", 9: "{SL}"}  # position in the tier -> label


def _word_intervals():
    """Intervals (xmin, xmax, text) of the word tier: TG words + silences, contiguous."""
    words = iter(zip(TG_ONSETS, TG_OFFSETS, TG_WORDS))
    intervals, t = [], 0.0
    for position in range(len(TG_WORDS) + len(TG_SILENCES)):
        if position in TG_SILENCES:
            if position == len(TG_WORDS) + len(TG_SILENCES) - 1:
                intervals.append((t, 5.0, TG_SILENCES[position]))
                t = 5.0
            else:
                nxt = next(words)
                intervals.append((t, nxt[0], TG_SILENCES[position]))
                words = iter([nxt] + list(words))
                t = nxt[0]
        else:
            on, off, word = next(words)
            assert on == t
            intervals.append((on, off, word))
            t = off
    return intervals


def _quote(text):
    return '"' + text.replace('"', '""') + '"'


def _textgrid_long(tiers, xmax=5.0):
    """Praat's long text format. tiers: (class, name, items) with items (xmin, xmax, text)
    for IntervalTiers and (time, mark) for TextTiers."""
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "",
             "xmin = 0 ", f"xmax = {xmax} ", "tiers? <exists> ", f"size = {len(tiers)} ",
             "item []: "]
    for i, (cls, name, items) in enumerate(tiers, start=1):
        lines += [f"    item [{i}]:", f"        class = {_quote(cls)} ",
                  f"        name = {_quote(name)} ", "        xmin = 0 ",
                  f"        xmax = {xmax} "]
        if cls == "IntervalTier":
            lines.append(f"        intervals: size = {len(items)} ")
            for k, (lo, hi, text) in enumerate(items, start=1):
                lines += [f"        intervals [{k}]:", f"            xmin = {lo} ",
                          f"            xmax = {hi} ", f"            text = {_quote(text)} "]
        else:
            lines.append(f"        points: size = {len(items)} ")
            for k, (time, mark) in enumerate(items, start=1):
                lines += [f"        points [{k}]:", f"            number = {time} ",
                          f"            mark = {_quote(mark)} "]
    return "\n".join(lines) + "\n"


def _textgrid_short(tiers, xmax=5.0):
    """Praat's short text format (same content as _textgrid_long)."""
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "0", str(xmax),
             "<exists>", str(len(tiers))]
    for cls, name, items in tiers:
        lines += [_quote(cls), _quote(name), "0", str(xmax), str(len(items))]
        for item in items:
            lines += [str(value) for value in item[:-1]] + [_quote(item[-1])]
    return "\n".join(lines) + "\n"


TG_TIERS = [
    ("IntervalTier", "phones", [(0.0, 2.5, "d oʊ n t"), (2.5, 5.0, "")]),
    ("TextTier", "bell", [(1.2, "ding")]),
    ("IntervalTier", "words", None),  # filled with _word_intervals()
]


def _tg_tiers(word_tier_name="words"):
    tiers = [t if t[2] is not None else (t[0], word_tier_name, _word_intervals())
             for t in TG_TIERS]
    return tiers


def _assert_tg_truth(timings):
    assert timings.words == TG_WORDS
    np.testing.assert_allclose(timings.onsets_s, TG_ONSETS, rtol=0, atol=1e-12)
    np.testing.assert_allclose(timings.offsets_s, TG_OFFSETS, rtol=0, atol=1e-12)
    assert timings.aligned.all()


@pytest.mark.parametrize("writer", [_textgrid_long, _textgrid_short])
@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-be-bom"])
def test_textgrid_formats_and_encodings(tmp_path, writer, encoding):
    text = writer(_tg_tiers())
    path = tmp_path / "story.TextGrid"
    if encoding == "utf-16-be-bom":
        path.write_bytes(b"\xfe\xff" + text.encode("utf-16-be"))
    else:
        path.write_bytes(text.encode(encoding))  # Python's utf-16 writes a BOM
    timings = read_textgrid(path)
    _assert_tg_truth(timings)
    assert timings.source == str(path)
    _assert_timings_equal(read_word_timings(path), timings)


def test_textgrid_literal_praat_file(tmp_path):
    # Typed as Praat writes it (CRLF line ends, trailing blanks), independent of the
    # writers above; the word tier is the only IntervalTier and has an unusual name.
    text = ('File type = "ooTextFile"\r\nObject class = "TextGrid"\r\n\r\n'
            'xmin = 0 \r\nxmax = 1.5 \r\ntiers? <exists> \r\nsize = 2 \r\nitem []: \r\n'
            '    item [1]:\r\n        class = "IntervalTier" \r\n        name = "ortho" \r\n'
            '        xmin = 0 \r\n        xmax = 1.5 \r\n        intervals: size = 3 \r\n'
            '        intervals [1]:\r\n            xmin = 0 \r\n            xmax = 0.4 \r\n'
            '            text = "We\'re" \r\n'
            '        intervals [2]:\r\n            xmin = 0.4 \r\n            xmax = 0.9 \r\n'
            '            text = "#" \r\n'
            '        intervals [3]:\r\n            xmin = 0.9 \r\n'
            '            xmax = 1.5 \r\n            text = "  ""done"" " \r\n'
            '    item [2]:\r\n        class = "TextTier" \r\n        name = "words" \r\n'
            '        xmin = 0 \r\n        xmax = 1.5 \r\n        points: size = 0 \r\n')
    path = _write(tmp_path, "x.TextGrid", text)
    timings = read_textgrid(path)
    assert timings.words == ("We're", '"done"')
    np.testing.assert_array_equal(timings.onsets_s, [0.0, 0.9])
    np.testing.assert_array_equal(timings.offsets_s, [0.4, 1.5])


@pytest.mark.parametrize("name", ["WORD", " Words ", "speaker1 - words"])
def test_textgrid_word_tier_found_by_name(tmp_path, name):
    path = _write(tmp_path, "s.TextGrid", _textgrid_long(_tg_tiers(name)))
    _assert_tg_truth(read_textgrid(path))


def test_textgrid_explicit_tier(tmp_path):
    path = _write(tmp_path, "s.TextGrid", _textgrid_long(_tg_tiers()))
    timings = read_textgrid(path, tier="phones")
    assert timings.words == ("d oʊ n t",)  # the empty interval is silence
    _assert_tg_truth(read_textgrid(path, tier="words"))


@pytest.mark.parametrize("tiers, tier, phrase", [
    ([("IntervalTier", "a", [(0, 1, "x")]), ("IntervalTier", "b", [(0, 1, "y")])], None,
     "Cannot choose the word tier"),
    ([("IntervalTier", "words", [(0, 1, "x")]), ("IntervalTier", "Word", [(0, 1, "y")])],
     None, "Cannot choose the word tier"),
    ([("TextTier", "words", [(0.5, "x")])], None, "Cannot choose the word tier"),
    ([("IntervalTier", "a", [(0, 1, "x")]), ("IntervalTier", "b", [(0, 1, "y")])], "c",
     "does not exist"),
    ([("IntervalTier", "a", [(0, 1, "x")]), ("TextTier", "b", [(0.5, "y")])], "b",
     "is a TextTier"),
])
def test_textgrid_tier_errors_list_tiers(tmp_path, tiers, tier, phrase):
    path = _write(tmp_path, "s.TextGrid", _textgrid_long(tiers))
    with pytest.raises(LlmfbnError, match=phrase) as info:
        read_textgrid(path, tier=tier)
    message = str(info.value)
    assert str(path) in message
    for _, name, _ in tiers:
        assert repr(name) in message


def _tg_one_tier(items):
    return _textgrid_long([("IntervalTier", "words", items)])


MALFORMED_TEXTGRID = {
    # case: (text, "interval k" or the token whose line must be named, phrase)
    "end before start": (_tg_one_tier([(0, 1, "a"), (1, 0.5, "b")]), "interval 2",
                         "ends before it starts"),
    "overlap": (_tg_one_tier([(0, 1, "a"), (1, 2, "b"), (1.5, 3, "c")]), "interval 3",
                "overlaps the previous one"),
    "negative": (_tg_one_tier([(-1, 0.5, "a"), (0.5, 1, "b")]), "interval 1", "negative"),
    "infinite": (_tg_one_tier([(0, 1, "a"), (1, "1e999", "b")]), "interval 2",
                 "not a finite number"),
    "string for a time": (_tg_one_tier([(0, 1, "a")]).replace("xmax = 1 ", 'xmax = "1" '),
                          '"1"', "unexpected string"),
    "unterminated string": (_tg_one_tier([(0, 1, "a"), (1, 2, "b")]).replace('"b" ', '"b '),
                            '"b', "unterminated string"),
    "truncated": (_tg_one_tier([(0, 1, "a"), (1, 2, "b")])[:-40], None, "ends too early"),
    "fractional size": (_tg_one_tier([(0, 1, "a")]).replace("intervals: size = 1",
                                                             "intervals: size = 1.5"),
                        "size = 1.5", "not a whole number"),
    "unknown tier class": (_tg_one_tier([(0, 1, "a")]).replace('"IntervalTier"', '"Foo"'),
                           '"Foo"', "unknown class"),
    "not a TextGrid": (_tg_one_tier([(0, 1, "a")]).replace('"TextGrid"', '"Sound"'),
                       '"Sound"', "not a TextGrid"),
    "not a Praat file": ("hello world\n", None, "ends too early"),
    "only silence": (_tg_one_tier([(0, 1, "sil"), (1, 2, " ")]), None, "holds no words"),
    "binary": ("ooBinaryFile\x00\x01", None, "binary Praat file"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_TEXTGRID))
def test_malformed_textgrid_names_file_and_place(tmp_path, case):
    text, place, phrase = MALFORMED_TEXTGRID[case]
    path = _write(tmp_path, "story.TextGrid", text)
    with pytest.raises(LlmfbnError, match=phrase) as info:
        read_word_timings(path)
    message = str(info.value)
    assert str(path) in message
    if place is not None and place.startswith("interval"):
        assert f"tier 'words', {place} (line" in message
    elif place is not None:
        assert f"line {text[:text.index(place)].count(chr(10)) + 1}:" in message


def test_textgrid_bad_utf16(tmp_path):
    path = tmp_path / "s.TextGrid"
    path.write_bytes(b"\xff\xfe" + "ab".encode("utf-16-le") + b"\x00")  # odd length
    with pytest.raises(LlmfbnError, match="UTF-16") as info:
        read_textgrid(path)
    assert str(path) in str(info.value)


# --- word tables and events files ---------------------------------------------------------

# Same words and times as GENTLE_CSV (unaligned words have no times), as tables.
WORD_TSV = ("word\tonset\toffset\tlemma\n"
            "Once\t\t\tonce\n"
            "upon\t0.5\t0.8\tupon\n"
            "a\tn/a\tn/a\ta\n"
            "time,\tNaN\t\ttime\n"
            "there\t2.0\t2.6\tthere\n"
            '"was"\t2.6\t3.0\tbe\n'
            "\n"
            "Zork\t3.1\t3.5\tzork\n"
            "gone.\tNA\tNA\tgo\n")
WORD_CSV_DURATION = ('Token,Start,Duration\n'
                     'Once,,\n'
                     'upon,0.5,0.3\n'
                     'a,,\n'
                     '"time,",,\n'
                     'there,2.0,0.6\n'
                     '"""was""",2.6,0.4\n'
                     'Zork,3.1,0.4\n'
                     'gone.,,\n')


def test_word_tsv_equals_gentle_csv(tmp_path):
    gentle = read_gentle_csv(_write(tmp_path, "align.csv", GENTLE_CSV))
    path = _write(tmp_path, "words.tsv", WORD_TSV)
    table = read_word_table(path)
    _assert_timings_equal(table, gentle)  # same planted ONSETS/OFFSETS/ALIGNED
    _assert_timings_equal(read_word_timings(path), gentle)


def test_word_csv_with_duration_equals_gentle_csv(tmp_path):
    gentle = read_gentle_csv(_write(tmp_path, "align.csv", GENTLE_CSV))
    path = _write(tmp_path, "words.csv", WORD_CSV_DURATION)
    table = read_word_timings(path)
    assert table.words == gentle.words
    # offset = onset + duration is computed in floating point: 0.5 + 0.3 != 0.8 exactly.
    np.testing.assert_allclose(table.onsets_s, gentle.onsets_s, rtol=0, atol=1e-12)
    np.testing.assert_allclose(table.offsets_s, gentle.offsets_s, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(table.aligned, gentle.aligned)


def _aligned_gentle_csv():
    return "".join(f"{_csv_field(w)},{w.lower()},{on},{off}\n"
                   for w, on, off in zip(TG_WORDS, TG_ONSETS, TG_OFFSETS))


def _csv_field(text):
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"') else text


def test_same_words_in_every_format_are_equal(tmp_path):
    gentle = read_word_timings(_write(tmp_path, "align.csv", _aligned_gentle_csv()))
    _assert_tg_truth(gentle)
    textgrid = read_word_timings(_write(tmp_path, "s.TextGrid", _textgrid_long(_tg_tiers())))
    tsv = read_word_timings(_write(tmp_path, "w.tsv", "text\ttmin\ttmax\n" + "".join(
        f"{w}\t{on}\t{off}\n" for w, on, off in zip(TG_WORDS, TG_ONSETS, TG_OFFSETS))))
    csv_table = read_word_timings(_write(tmp_path, "w.csv", "words,start_time,end_time\n"
                                         + "".join(f"{_csv_field(w)},{on},{off}\n" for
                                                   w, on, off in zip(TG_WORDS, TG_ONSETS,
                                                                     TG_OFFSETS))))
    events = read_word_timings(_write(
        tmp_path, "sub-01_task-x_events.tsv", "onset\tduration\ttrial_type\tvalue\n"
        "0\t5\tstory\tn/a\n" + "".join(
            f"{on}\t{off - on!r}\tword\t{w}\n"
            for w, on, off in zip(TG_WORDS, TG_ONSETS, TG_OFFSETS))))
    for other in (textgrid, tsv, csv_table):
        _assert_timings_equal(other, gentle)
    assert events.words == gentle.words
    np.testing.assert_array_equal(events.onsets_s, gentle.onsets_s)
    np.testing.assert_allclose(events.offsets_s, gentle.offsets_s, rtol=0, atol=1e-12)


def test_word_table_offset_and_duration_agree(tmp_path):
    path = _write(tmp_path, "w.tsv", "word\tonset\tduration\tend\n"
                                     "a\t0.1\t0.2\t0.3\nb\t0.3\t0.25\t0.5504\n")
    timings = read_word_table(path)
    np.testing.assert_array_equal(timings.offsets_s, [0.3, 0.5504])  # offset column wins


@pytest.mark.parametrize("column", ["value", "stim", "word"])
def test_events_words_pick_word_rows(tmp_path, column):
    path = _write(tmp_path, "sub-01_task-lpp_run-1_events.tsv",
                  f"onset\tduration\ttrial_type\t{column}\n"
                  "0.0\t2.0\tfixation\tn/a\n"
                  "2.0\t0.3\tword\tC'était\n"
                  "2.3\tn/a\tWord\t«\xa0bien\xa0»\n"
                  "3.0\t0.5\tsound\tbeep\n"
                  "n/a\tn/a\tword\tsix\n"
                  "4.0\t0.25\tword\tans.\n")
    timings = read_events_words(path)
    assert timings.words == ("C'était", "«\xa0bien\xa0»", "six", "ans.")
    np.testing.assert_allclose(timings.onsets_s, [2.0, 2.3, 3.15, 4.0], rtol=0, atol=1e-12)
    # n/a duration: zero-length word; the unaligned word interpolates the neighbours.
    np.testing.assert_allclose(timings.offsets_s, [2.3, 2.3, 3.275, 4.25], rtol=0,
                               atol=1e-12)
    np.testing.assert_array_equal(timings.aligned, [True, True, False, True])
    _assert_timings_equal(read_word_timings(path), timings)


MALFORMED_TABLES = {
    # case: (file name, text, line or None, phrase)
    "no word column": ("w.tsv", "lemma\tonset\toffset\na\t0\t1\n", 1, "no word column"),
    "no onset column": ("w.tsv", "word\ttime\toffset\na\t0\t1\n", 1, "no onset column"),
    "no offset column": ("w.tsv", "word\tonset\ta\nb\t0\t1\n", 1,
                         "no offset or duration column"),
    "duplicate column": ("w.tsv", "word\tonset\tonset\toffset\na\t0\t0\t1\n", 1,
                         "appears 2 times"),
    "header only": ("w.tsv", "word\tonset\toffset\n", None, "empty"),
    "too few fields": ("w.tsv", "word\tonset\toffset\na\t0\t1\nb\t2\n", 3,
                       "number of columns"),
    "too many fields": ("w.csv", "word,onset,offset\na,0,1\nb,2,3,4\n", 3,
                        "number of columns"),
    "empty word": ("w.tsv", "word\tonset\toffset\na\t0\t1\n \t2\t3\n", 3, "empty word"),
    "non-numeric onset": ("w.tsv", "word\tonset\toffset\na\t0\t1\nb\t2s\t3\n", 3,
                          "not a number"),
    "negative onset": ("w.csv", "word,onset,offset\na,-1,1\n", 2, "negative"),
    "negative duration": ("w.csv", "word,onset,duration\na,1,-0.5\n", 2, "negative"),
    "infinite offset": ("w.tsv", "word\tonset\toffset\na\t0\t1e400\n", 2,
                        "not a finite number"),
    "offset before onset": ("w.tsv", "word\tonset\toffset\na\t0\t1\nb\t2\t1.5\n", 3,
                            "ends before it starts"),
    "onsets decrease": ("w.tsv", "word\tonset\toffset\na\t2\t3\nb\t1\t1.5\n", 3,
                        "onsets decrease"),
    "offset without onset": ("w.tsv", "word\tonset\toffset\na\t0\t1\nb\tn/a\t3\n", 3,
                             "offset but no onset"),
    "onset without offset": ("w.tsv", "word\tonset\toffset\na\t0\t1\nb\t2\t\n", 3,
                             "onset but no offset"),
    "offset disagrees with duration": ("w.tsv", "word\tonset\toffset\tduration\n"
                                       "a\t0\t1\t1\nb\t2\t3\t0.5\n", 3,
                                       "inconsistent times"),
    "no aligned word": ("w.tsv", "word\tonset\toffset\na\t\t\nb\tn/a\tn/a\n", None,
                        "No word"),
    "events without trial_type": ("sub-01_task-x_events.tsv",
                                  "onset\tduration\tvalue\n0\t1\ta\n", 1,
                                  "no trial_type column"),
    "events without word column": ("sub-01_task-x_events.tsv",
                                   "onset\tduration\ttrial_type\n0\t1\tword\n", 1,
                                   "no word column"),
    "events without word rows": ("sub-01_task-x_events.tsv",
                                 "onset\tduration\ttrial_type\tword\n0\t300\tstory\tn/a\n",
                                 None, "no rows with trial_type 'word'"),
    "events n/a word": ("sub-01_task-x_events.tsv",
                        "onset\tduration\ttrial_type\tword\n0\t1\tword\ta\n"
                        "1\t1\tword\tn/a\n", 3, "empty word"),
    "events bad onset": ("sub-01_task-x_events.tsv",
                         "onset\tduration\ttrial_type\tword\n0\t1\tword\ta\n"
                         "one\t1\tword\tb\n", 3, "not a number"),
    "events onsets decrease": ("sub-01_task-x_events.tsv",
                               "onset\tduration\ttrial_type\tword\n5\t1\tword\ta\n"
                               "0\t0\tfixation\tn/a\n4\t1\tword\tb\n", 4,
                               "onsets decrease"),
    "tsv without header": ("w.tsv", "a\t0\t1\n", None, "Cannot tell the format"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_TABLES))
def test_malformed_tables_name_file_and_line(tmp_path, case):
    name, text, line, phrase = MALFORMED_TABLES[case]
    path = _write(tmp_path, name, text)
    # Without word and onset columns, read_word_timings cannot tell that the file is a
    # word table (test_unknown_format_lists_supported_formats); the reader can say more.
    reader = (read_word_table if case in ("no word column", "no onset column")
              else read_word_timings)
    with pytest.raises(LlmfbnError, match=phrase) as info:
        reader(path)
    message = str(info.value)
    assert str(path) in message
    if line is not None:
        assert f"line {line}:" in message


def test_readers_called_directly_report_missing_columns(tmp_path):
    path = _write(tmp_path, "w.tsv", "a\t0\t1\n")
    with pytest.raises(LlmfbnError, match="no word / onset / offset or duration column"):
        read_word_table(path)
    with pytest.raises(LlmfbnError, match="no onset / trial_type / word column"):
        read_events_words(path)


# --- format detection ---------------------------------------------------------------------

def test_detection_routes_each_format(tmp_path, monkeypatch):
    # read_word_timings calls the readers as they are named in the module that detects the
    # format; replacing them there shows which one it chose.
    from bids_app.stimulus import formats

    calls = []
    for name in ("read_textgrid", "read_gentle_json", "read_gentle_csv",
                 "read_word_table", "read_events_words"):
        monkeypatch.setattr(formats, name, lambda path, _n=name: calls.append(_n) or _n)
    cases = [
        ("a.TextGrid", "", "read_textgrid"),
        ("a.textgrid", "", "read_textgrid"),
        ("align.json", "{}", "read_gentle_json"),
        ("align.csv", GENTLE_CSV, "read_gentle_csv"),
        ("align.csv", "word,alignedWord,start,end\n" + GENTLE_CSV, "read_gentle_csv"),
        # A Gentle row whose fields happen to be column names is still Gentle (numbers).
        ("align.csv", "text,start,0.1,0.2\n", "read_gentle_csv"),
        ("w.csv", "\n  Word , Onset ,Offset\nx,0,1\n", "read_word_table"),
        ("w.tsv", "token\tstart\tend\nx\t0\t1\n", "read_word_table"),
        ("sub-1_task-a_events.tsv", "onset\tduration\ttrial_type\tword\n", "read_events_words"),
        # An events file with word and onset columns but no trial_type is a word table.
        ("sub-1_task-a_events.tsv", "onset\tduration\tword\n", "read_word_table"),
        ("sub-1_task-a_events.tsv", "onset\tduration\tvalue\n", "read_events_words"),
    ]
    for name, text, reader in cases:
        calls.clear()
        assert read_word_timings(_write(tmp_path, name, text)) == reader, name
        assert calls == [reader]


@pytest.mark.parametrize("name, text", [("w.tsv", ""), ("w.tsv", "a\tb\n"),
                                        ("w.txt", "word\tonset\toffset\n"),
                                        ("w", "x")])
def test_unknown_format_lists_supported_formats(tmp_path, name, text):
    path = _write(tmp_path, name, text)
    with pytest.raises(LlmfbnError, match="Cannot tell the format") as info:
        read_word_timings(path)
    message = str(info.value)
    assert str(path) in message
    for fmt in (".csv", ".json", ".TextGrid", ".tsv", "_events.tsv"):
        assert fmt in message


def test_new_readers_missing_file(tmp_path):
    for reader, name in ((read_textgrid, "a.TextGrid"), (read_word_table, "w.tsv"),
                         (read_events_words, "sub-01_task-x_events.tsv")):
        path = tmp_path / name
        with pytest.raises(LlmfbnError, match="not found") as info:
            reader(path)
        assert str(path) in str(info.value)


# --- the placement rule: do the words fall inside the run? --------------------------------

def test_check_within_run(tmp_path):
    # Word onsets run from 0.5 s ('upon', the first word takes its times) to 3.1 s ('gone.',
    # the last word takes the times of 'Zork'); offsets to 3.5 s.
    timings = read_gentle_csv(_write(tmp_path, "align.csv", GENTLE_CSV))
    run = "task-pieman_run-1"
    check_within_run(timings, 15.0, 15.0 + 3.1, run_name=run)  # last onset at the run's end
    check_within_run(timings, -0.5, 100.0, run_name=run)  # first onset at the run's start
    check_within_run(timings, 0.0, 3.1 + 1e-9, run_name=run)
    with pytest.raises(LlmfbnError, match="beyond the run's duration") as info:
        check_within_run(timings, 15.0, 18.0, run_name=run)
    message = str(info.value)
    assert run in message and timings.source in message and "'gone.'" in message
    assert "outside the run" in message and "18 s" in message
    assert "volumes" not in message
    # With the run's volumes and TR, the message shows them; they do not change the rule.
    check_within_run(timings, 15.0, 18.1, run_name=run, n_frames=1, t_r_s=1.0)
    with pytest.raises(LlmfbnError, match=r"18 s \(12 volumes x TR 1.5 s\)"):
        check_within_run(timings, 15.0, 18.0, run_name=run, n_frames=12, t_r_s=1.5)
    with pytest.raises(LlmfbnError, match="before the run") as info:
        check_within_run(timings, -1.0, 100.0, run_name=run)
    assert "'Once'" in str(info.value)
    with pytest.raises(LlmfbnError, match="not a finite number"):
        check_within_run(timings, float("nan"), 100.0, run_name=run)
    with pytest.raises(LlmfbnError, match="not a finite number"):
        check_within_run(timings, 0.0, float("inf"), run_name=run)
    # A run's path names the run as well as its key does.
    events = tmp_path / "sub-01_task-pieman_events.tsv"
    with pytest.raises(LlmfbnError, match="outside the run") as info:
        check_within_run(timings, 15.0, 18.0, run_name=events)
    assert str(events) in str(info.value)


def test_check_within_run_split_story(tmp_path):
    # Onsets 0.5 s .. 3.1 s; the run lasts 10 s.
    timings = read_gentle_csv(_write(tmp_path, "align.csv", GENTLE_CSV))
    run = "task-pieman_run-2"
    # Partly inside the run, at its start or at its end: a split story passes, a story
    # played whole in the run does not.
    for onset_s, phrase in ((-2.0, "before the run"), (8.0, "beyond the run's duration")):
        check_within_run(timings, onset_s, 10.0, run_name=run, split=True)
        with pytest.raises(LlmfbnError, match=phrase):
            check_within_run(timings, onset_s, 10.0, run_name=run, split=False)
        with pytest.raises(LlmfbnError, match=phrase):
            check_within_run(timings, onset_s, 10.0, run_name=run)  # split=False by default
    # One word inside, on the run's edge, is enough.
    check_within_run(timings, -3.1, 10.0, run_name=run, split=True)  # last onset at 0 s
    check_within_run(timings, 9.5, 10.0, run_name=run, split=True)  # first onset at 10 s
    # All words before the run, or all after it: fails even for a split story.
    with pytest.raises(LlmfbnError, match="all come before the run") as info:
        check_within_run(timings, -10.0, 10.0, run_name=run, split=True)
    message = str(info.value)
    assert run in message and timings.source in message and "split over several" in message
    with pytest.raises(LlmfbnError, match="all come after the run's end"):
        check_within_run(timings, 9.6, 10.0, run_name=run, split=True)
    with pytest.raises(LlmfbnError, match="not a finite number"):
        check_within_run(timings, float("nan"), 10.0, run_name=run, split=True)


@settings(max_examples=200, deadline=None)
@given(onset_s=st.floats(-40, 40, allow_nan=False), duration_s=st.floats(0, 40),
       split=st.booleans(),
       times=st.lists(st.floats(0, 20, allow_nan=False), min_size=1, max_size=5))
def test_check_within_run_is_the_workflow_rule(onset_s, duration_s, split, times):
    """check_within_run fails exactly when the rule the workflow applied before it had one
    home says the words fall outside the run (word onsets on the run's clock)."""
    onsets = sorted(times)
    timings = WordTimings(words=tuple(f"w{i}" for i in range(len(onsets))),
                          onsets_s=onsets, offsets_s=[t + 0.2 for t in onsets],
                          aligned=[True] * len(onsets), source="story.csv")
    first_s = onset_s + float(timings.onsets_s[0])
    last_s = onset_s + float(timings.onsets_s[-1])
    outside = ((not split and (last_s > duration_s or first_s < 0))
               or (split and (last_s < 0 or first_s > duration_s)))
    try:
        check_within_run(timings, onset_s, duration_s, run_name="task-x", split=split)
    except LlmfbnError as exc:
        assert outside, str(exc)
        assert "outside the run task-x" in str(exc)
    else:
        assert not outside


# --- fuzz: every parser either returns valid timings or raises LlmfbnError -----------------

_NUMBERISH = st.one_of(
    st.sampled_from(["0", "1", "0.5", "2.25", "-1", "1e999", "1e-3", "nan", ".", "3.",
                     "+2", "1.5e", "10"]),
    st.floats(min_value=0, max_value=10, allow_nan=False).map(repr),
    st.integers(-2, 1000).map(str),
)
_LABEL = st.one_of(st.sampled_from(["", "sp", "sil", "#", "{SL}", "it's", '"q"', "é", "日",
                                    "a b", "<sil>"]),
                   st.text(max_size=6))


def _sorted_times(draw, n):
    """n + 1 non-decreasing interval boundaries in seconds (valid times)."""
    steps = draw(st.lists(st.floats(0, 2, allow_nan=False), min_size=n + 1, max_size=n + 1))
    return np.cumsum(steps).tolist()


@st.composite
def _textgrids(draw):
    tiers = []
    for _ in range(draw(st.integers(0, 3))):
        cls = draw(st.sampled_from(["IntervalTier", "IntervalTier", "TextTier", "Other"]))
        name = draw(st.sampled_from(["words", "Word", "phones", "", "x", "spk - words"]))
        n_items = draw(st.integers(0, 5))
        if draw(st.booleans()):  # well-formed times: contiguous intervals
            bounds = _sorted_times(draw, n_items)
            items = [(bounds[k], bounds[k + 1], draw(_LABEL)) for k in range(n_items)]
        else:
            items = draw(st.lists(st.tuples(_NUMBERISH, _NUMBERISH, _LABEL),
                                  min_size=n_items, max_size=n_items))
        tiers.append((cls, name, items if cls == "IntervalTier" else
                      [item[1:] for item in items]))
    text = draw(st.sampled_from([_textgrid_long, _textgrid_short]))(tiers)
    cut = draw(st.one_of(st.none(), st.none(), st.integers(0, len(text))))
    if cut is not None:  # truncate, or drop a character: broken structure
        text = text[:cut] if draw(st.booleans()) else text[:cut] + text[cut + 1:]
    return text


_ENCODINGS = st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le"])


def _check_fuzz_result(path, read):
    try:
        timings = read(path)
    except LlmfbnError as exc:
        assert str(path) in str(exc)
    else:
        assert timings.n_words >= 1 and timings.aligned.any()
        assert all(isinstance(w, str) and w.strip() for w in timings.words)
        assert np.all(np.isfinite(timings.onsets_s)) and np.all(timings.onsets_s >= 0)
        assert np.all(timings.offsets_s >= timings.onsets_s)
        assert np.all(np.diff(timings.onsets_s[timings.aligned]) >= 0)
        return timings


_FUZZ = settings(max_examples=200, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(text=st.one_of(_textgrids(), st.text()), encoding=_ENCODINGS,
       tier=st.sampled_from([None, None, "words", "phones"]))
def test_fuzz_textgrid(text, encoding, tier):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "story.TextGrid"
        try:
            raw = text.encode(encoding)
        except UnicodeEncodeError:  # lone surrogates
            raw = text.encode("utf-8", "replace")
        path.write_bytes(raw)
        timings = _check_fuzz_result(path, lambda p: read_textgrid(p, tier=tier))
        if timings is not None:
            assert not any(w.lower() in ("sp", "sil", "#", "{sl}", "<sil>")
                           for w in timings.words)


_TABLE_HEADERS = st.sampled_from([
    ["word", "onset", "offset"], ["Token", "start", "duration"],
    ["text", "tmin", "tmax", "duration"], ["words", "xmin", "end_time", "lemma"],
    ["onset", "duration", "trial_type", "word"], ["onset", "duration", "trial_type", "value"],
    ["word", "onset"], ["a", "b"], []])
_CELL = st.one_of(_NUMBERISH, _LABEL, st.sampled_from(["n/a", "NaN", "word", "\t", ",",
                                                       '"', "\r\n", "\x00"]))


@st.composite
def _tables(draw, sep):
    header = draw(_TABLE_HEADERS)
    n_rows = draw(st.integers(0, 6))
    if header and draw(st.booleans()):  # well-formed rows, with missing values
        times = _sorted_times(draw, n_rows)
        rows = []
        for k in range(n_rows):
            row = []
            for column in header:
                if column in ("onset", "start", "tmin", "xmin"):
                    cell = repr(times[k])
                elif column in ("offset", "tmax", "end_time"):
                    cell = repr(times[k + 1])
                elif column == "duration":
                    cell = repr(times[k + 1] - times[k])
                elif column == "trial_type":
                    cell = draw(st.sampled_from(["word", "story", "Word"]))
                else:
                    cell = draw(_LABEL)
                if draw(st.integers(0, 5)) == 0:
                    cell = draw(st.sampled_from(["", "n/a", "NaN"]))
                row.append(cell)
            rows.append(row)
    else:
        rows = draw(st.lists(st.lists(_CELL, min_size=max(len(header) - 1, 0),
                                      max_size=len(header) + 1),
                             min_size=n_rows, max_size=n_rows))
    lines = [header] + rows if draw(st.booleans()) or not header else rows
    return "\n".join(sep.join(row) for row in lines)


@_FUZZ
@given(text=st.one_of(_tables("\t"), st.text()))
def test_fuzz_word_tsv(text):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "words.tsv"
        path.write_text(text, encoding="utf-8", errors="replace", newline="")
        _check_fuzz_result(path, read_word_timings)
        _check_fuzz_result(path, read_word_table)


@_FUZZ
@given(text=st.one_of(_tables(","), st.text()))
def test_fuzz_word_csv(text):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "words.csv"
        path.write_text(text, encoding="utf-8", errors="replace", newline="")
        _check_fuzz_result(path, read_word_timings)
        _check_fuzz_result(path, read_word_table)


@_FUZZ
@given(text=st.one_of(_tables("\t"), st.text()))
def test_fuzz_events_tsv(text):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "sub-01_task-x_events.tsv"
        path.write_text(text, encoding="utf-8", errors="replace", newline="")
        _check_fuzz_result(path, read_word_timings)
        _check_fuzz_result(path, read_events_words)
