"""Stories placed on runs: the --stimuli table, split stories, several stories per run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bids_app.bids.acquisitions import Acquisition, plan_acquisitions
from bids_app.bids.layout import (
    DatasetFiles,
    RunFiles,
    StoryPlacement,
    read_stimuli_table,
    stories_from_table,
)
from bids_app.errors import LlmfbnError


def _gentle(path: Path, words, start=0.5, step=0.4) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{w},{w.lower()},{start + i * step:.2f},{start + i * step + 0.3:.2f}"
             for i, w in enumerate(words)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(tmp_path, subject="01", task="story", run=None, n_volumes=100, stories=(),
         events_onset=5.0):
    events = tmp_path / f"sub-{subject}_task-{task}_run-{run}_events.tsv"
    events.write_text(f"onset\tduration\ttrial_type\n{events_onset}\t100\t{task}\n")
    return RunFiles(subject=subject, task=task, run=run, session=None, bold=Path("b"),
                    mask=Path("m"), confounds=Path("c"), events=events, t_r_s=1.0,
                    start_time_s=0.5, n_volumes=n_volumes, stories=tuple(stories))


def test_stimuli_table_paths_runs_onsets(tmp_path):
    a = _gentle(tmp_path / "timings" / "a.csv", ["Once", "upon", "a", "time"])
    b = _gentle(tmp_path / "b.csv", ["The", "end"])
    table = tmp_path / "stimuli.tsv"
    table.write_text("task\tpath\trun\tonset\n"
                     "story\ttimings/a.csv\t1\t3.5\n"
                     f"story\t{b}\t2\t\n")
    stim = read_stimuli_table(table, tmp_path)
    assert stim["path"].tolist() == [a, b]
    run1 = _run(tmp_path, run=1)
    run2 = _run(tmp_path, run=2, events_onset=7.0)
    assert stories_from_table(stim, run1, tmp_path) == (StoryPlacement(a, 3.5),)
    # onset from events.tsv
    assert stories_from_table(stim, run2, tmp_path) == (StoryPlacement(b, 7.0),)
    with pytest.raises(LlmfbnError, match="run 3"):
        stories_from_table(stim, _run(tmp_path, run=3), tmp_path)


@pytest.mark.parametrize("content, message", [
    ("task\tfile\nstory\ta.csv\n", "wrong columns"),
    ("task\tpath\nstory\tmissing.csv\n", "line 2"),
    ("task\tpath\trun\nstory\ta.csv\tone\n", "whole number"),
    ("task\tpath\n", "wrong columns"),
])
def test_stimuli_table_errors(tmp_path, content, message):
    _gentle(tmp_path / "a.csv", ["x", "y"])
    table = tmp_path / "stimuli.tsv"
    table.write_text(content)
    with pytest.raises(LlmfbnError, match=message):
        read_stimuli_table(table, tmp_path)
    with pytest.raises(LlmfbnError, match="does not exist"):
        read_stimuli_table(tmp_path / "nope.tsv", tmp_path)


def test_two_stories_in_one_run_need_onsets(tmp_path):
    _gentle(tmp_path / "a.csv", ["x", "y"])
    _gentle(tmp_path / "b.csv", ["z"])
    table = tmp_path / "stimuli.tsv"
    table.write_text("task\tpath\tonset\nstory\ta.csv\t40\nstory\tb.csv\t2\n")
    stories = stories_from_table(read_stimuli_table(table, tmp_path), _run(tmp_path), tmp_path)
    assert [p.onset_s for p in stories] == [2.0, 40.0]        # in playing order
    table.write_text("task\tpath\nstory\ta.csv\nstory\tb.csv\n")
    with pytest.raises(LlmfbnError, match="onset"):
        stories_from_table(read_stimuli_table(table, tmp_path), _run(tmp_path), tmp_path)


def _dataset(runs):
    subjects = sorted({r.subject for r in runs})
    return DatasetFiles(subjects=subjects,
                        runs={s: [r for r in runs if r.subject == s] for s in subjects})


def test_split_story_and_consistency_checks(tmp_path):
    story = _gentle(tmp_path / "long.csv", [f"w{i}" for i in range(400)], step=0.45)
    # a 180 s story played over two runs of 100 s: the second run starts 95 s into it
    runs = [_run(tmp_path, subject=s, run=r, stories=[StoryPlacement(story, onset)])
            for s in ("01", "02") for r, onset in ((1, 5.0), (2, -95.0))]
    plan = plan_acquisitions(_dataset(runs))
    assert list(plan) == ["task-story_run-1", "task-story_run-2"]
    assert plan["task-story_run-2"].stories[0].onset_s == -95.0
    np.testing.assert_allclose(plan["task-story_run-1"].frame_times_s()[:2], [0.5, 1.5])
    # subjects disagreeing on the onset of a shared acquisition is an error
    bad = runs[:3] + [_run(tmp_path, subject="02", run=2, stories=[StoryPlacement(story, -90)])]
    with pytest.raises(LlmfbnError, match="disagree"):
        plan_acquisitions(_dataset(bad))


def test_story_beyond_its_single_run(tmp_path):
    story = _gentle(tmp_path / "long.csv", [f"w{i}" for i in range(400)], step=0.45)
    runs = [_run(tmp_path, stories=[StoryPlacement(story, 5.0)])]       # 180 s in 100 s
    with pytest.raises(LlmfbnError, match="outside the run"):
        plan_acquisitions(_dataset(runs))


def _responses(tmp_path, plan, name, frames="all"):
    from bids_app.config import Config
    from bids_app.features import resolve_model
    from bids_app.workflow import compute_responses

    config = Config(bids_dir=tmp_path, output_dir=tmp_path / "out", analysis_level="participant",
                    work_dir=tmp_path / f"work-{name}", context_tokens=64, frames=frames)
    folder = compute_responses(config, resolve_model("minilm"), plan, "cpu")
    return np.load(folder / "x.npy"), pd.read_csv(folder / "frames.tsv", sep="\t")


def _acq(key, run, n_frames, stories):
    return Acquisition(key=key, task="story", run=run, t_r_s=1.5, start_time_s=0.75,
                       n_frames=n_frames, stories=tuple(stories))


def _unit(rows):
    rows = rows - rows.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)


def test_split_story_equals_the_continuous_recording(tmp_path):
    """A story split over two runs gives, in each run, the responses that one continuous
    run would have had at those times (up to the per-run z-scoring)."""
    from bids_app.synthetic import speak, story_text

    table = speak(story_text("lighthouse"), np.random.default_rng(0))[:300]
    story = _gentle(tmp_path / "story.csv", table["word"].tolist())
    words_end = 0.5 + 0.4 * 300
    # one continuous run of 100 frames (150 s) vs two runs of 50 frames: the second run
    # starts 75 s after the first, so the story starts 75 s before it
    whole, _ = _responses(tmp_path, {"task-story": _acq("task-story", None, 100,
                                                        [StoryPlacement(story, 10.0)])}, "a")
    split, frames = _responses(tmp_path, {
        "task-story_run-1": _acq("task-story_run-1", 1, 50, [StoryPlacement(story, 10.0)]),
        "task-story_run-2": _acq("task-story_run-2", 2, 50, [StoryPlacement(story, -65.0)]),
    }, "b")
    assert words_end + 10 < 150
    assert list(frames["acquisition"].unique()) == ["task-story_run-1", "task-story_run-2"]
    # nilearn's method places each word on a fine grid (TR / 50 = 0.03 s) anchored to the
    # run's frames, so the two recordings differ by that discretisation only: per-AN
    # correlation of the time courses >= 0.995 (typically > 0.9999)
    for part in (slice(0, 50), slice(50, 100)):
        a, b = _unit(split[:, part]), _unit(whole[:, part])
        live = np.linalg.norm(b, axis=1) > 0
        r = np.sum(a[live] * b[live], axis=1)
        assert r.min() > 0.995 and np.median(r) > 0.9999, (r.min(), np.median(r))


def test_two_stories_in_one_run_add_up(tmp_path):
    """Responses of a run with two stories = sum of each story's own responses."""
    from bids_app.features import load_model, resolve_model, word_activations
    from bids_app.responses import frame_times_s, temporal_responses, zscore_time
    from bids_app.stimulus import read_word_timings

    first = _gentle(tmp_path / "first.csv", "the sea was calm that night".split() * 10)
    second = _gentle(tmp_path / "second.csv", "a market opened by the river".split() * 10)
    placements = [StoryPlacement(first, 2.0), StoryPlacement(second, 40.0)]
    x, _ = _responses(tmp_path, {"task-story": _acq("task-story", None, 60, placements)}, "c")
    lm = load_model(resolve_model("minilm"))
    frames = frame_times_s(60, 1.5, 0.75)
    total = 0
    for placement in placements:
        timings = read_word_timings(placement.timings)
        acts = word_activations(lm, timings.words, context_tokens=64)
        total = total + temporal_responses(acts, placement.onset_s + timings.onsets_s, frames,
                                           drop_outside_s=32.0)
    np.testing.assert_allclose(x, _unit(zscore_time(total).T), atol=2e-5)


def test_huth_responses_through_the_device_projection(tmp_path):
    """--hrf huth in the responses stage (Lanczos + 4 FIR delays projected on the device)
    equals temporal_responses(..., hrf_model="huth") of the word activations, one row per
    (AN, delay), AN-major (abs 2e-5 on unit-norm rows)."""
    from bids_app.config import Config
    from bids_app.features import load_model, resolve_model, word_activations
    from bids_app.responses import frame_times_s, temporal_responses, zscore_time
    from bids_app.stimulus import read_word_timings
    from bids_app.workflow import compute_responses

    story = _gentle(tmp_path / "story.csv", "the sea was calm that night".split() * 12)
    placement = StoryPlacement(story, 3.0)
    config = Config(bids_dir=tmp_path, output_dir=tmp_path / "out",
                    analysis_level="participant", work_dir=tmp_path / "work",
                    context_tokens=64, hrf_model="huth", frames="all")
    folder = compute_responses(config, resolve_model("minilm"),
                               {"task-story": _acq("task-story", None, 50, [placement])}, "cpu")
    x = np.load(folder / "x.npy")
    neurons = pd.read_csv(folder / "neurons.tsv", sep="\t")
    timings = read_word_timings(story)
    acts = word_activations(load_model(resolve_model("minilm")), timings.words,
                            context_tokens=64)
    reference = temporal_responses(acts, 3.0 + timings.onsets_s, frame_times_s(50, 1.5, 0.75),
                                   hrf_model="huth", drop_outside_s=32.0)
    assert x.shape == (4 * 9216, 50) and len(neurons) == 4 * 9216
    assert list(neurons["delay_trs"][:5]) == [1, 2, 3, 4, 1]
    np.testing.assert_allclose(x, _unit(zscore_time(reference).T), atol=2e-5)
