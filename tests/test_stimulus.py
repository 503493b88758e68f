"""Tests for bids_app.stimulus: Gentle word timings and the story onset."""

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bids_app.errors import LlmfbnError
from bids_app.stimulus import (WordTimings, read_gentle_csv, read_gentle_json,
                               read_word_timings, story_onset_s)

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
