"""The synthetic dataset looks like Narratives + fMRIPrep and carries its truth."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd

from bids_app.stimulus import audio_envelope, read_word_timings, story_onset_s, story_stim_file
from bids_app.synthetic import T_R_S, speak, story_text


def test_layout_names_and_sidecars(small_dataset):
    bids = small_dataset
    func = bids / "derivatives" / "fmriprep" / "sub-001" / "func"
    base = "sub-001_task-market"
    space = "space-MNI152NLin2009cAsym_res-2"
    for name in (f"{base}_{space}_desc-preproc_bold.nii.gz",
                 f"{base}_{space}_desc-brain_mask.nii.gz",
                 f"{base}_desc-confounds_timeseries.tsv", f"{base}_desc-confounds_timeseries.json"):
        assert (func / name).is_file(), name
    sidecar = json.loads((func / f"{base}_{space}_desc-preproc_bold.json").read_text())
    assert sidecar["RepetitionTime"] == T_R_S
    assert "StartTime" in sidecar and "SkullStripped" in sidecar
    img = nib.load(func / f"{base}_{space}_desc-preproc_bold.nii.gz")
    assert img.shape[3] >= 200
    confounds = pd.read_csv(func / f"{base}_desc-confounds_timeseries.tsv", sep="\t")
    for col in ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z",
                "framewise_displacement", "a_comp_cor_00", "a_comp_cor_09", "cosine00",
                "non_steady_state_outlier00"):
        assert col in confounds.columns, col
    nss = confounds.filter(like="non_steady_state").to_numpy().sum(axis=1)
    assert nss[:3].tolist() == [1, 1, 1] and nss[3:].sum() == 0
    assert (bids / "stimuli" / "gentle" / "market" / "align.csv").is_file()
    assert (bids / "sourcedata" / "llmfbn_truth.json").is_file()


def test_story_onset_and_timings(small_dataset):
    events = small_dataset / "sub-001" / "func" / "sub-001_task-lighthouse_events.tsv"
    assert story_onset_s(events, "lighthouse") > 0
    csv = read_word_timings(small_dataset / "stimuli" / "gentle" / "lighthouse" / "align.csv")
    js = read_word_timings(small_dataset / "stimuli" / "gentle" / "lighthouse" / "align.json")
    assert csv.words == js.words
    np.testing.assert_allclose(csv.onsets_s, js.onsets_s)
    assert 0 < (~csv.aligned).sum() < 0.06 * len(csv.words)    # a few unaligned words
    rate = len(csv.words) / (csv.offsets_s[-1] - csv.onsets_s[0])
    assert 2.2 < rate < 2.8                                     # realistic speaking rate


def test_speaking_pauses_at_sentence_ends():
    rng = np.random.default_rng(0)
    table = speak(story_text("market"), rng)
    gaps = table["onset_s"].to_numpy()[1:] - table["offset_s"].to_numpy()[:-1]
    assert np.all(gaps > -1e-9)
    assert len(table) > 600
    assert np.quantile(gaps, 0.95) > 3 * np.median(gaps)


def test_motion_leaks_into_signal(small_dataset):
    """Without confound regression, BOLD correlates with the motion regressors."""
    func = small_dataset / "derivatives" / "fmriprep" / "sub-002" / "func"
    base = "sub-002_task-market"
    img = nib.load(func / f"{base}_space-MNI152NLin2009cAsym_res-2_desc-preproc_bold.nii.gz")
    mask = np.asarray(nib.load(
        func / f"{base}_space-MNI152NLin2009cAsym_res-2_desc-brain_mask.nii.gz").dataobj) > 0
    bold = np.asarray(img.dataobj)[mask][:500, 3:].T
    motion = pd.read_csv(func / f"{base}_desc-confounds_timeseries.tsv", sep="\t")[
        ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]].to_numpy()[3:]
    X = np.column_stack([motion, np.ones(len(motion))])
    resid = bold - X @ np.linalg.lstsq(X, bold, rcond=None)[0]
    explained = 1 - resid.var(0) / bold.var(0)
    assert np.median(explained) > 0.05                         # chance level ~6/208 = 0.03


def test_story_audio_follows_the_words(small_dataset):
    """Each story has a small WAV under stimuli/, named by the events' stim_file relative to
    stimuli/ (BIDS), loud during the words and near silent between them."""
    from scipy.io import wavfile

    events = small_dataset / "sub-001" / "func" / "sub-001_task-lighthouse_events.tsv"
    stim_file = story_stim_file(events, "lighthouse")
    assert stim_file == "lighthouse_audio.wav"
    path = small_dataset / "stimuli" / stim_file
    rate, samples = wavfile.read(path)
    assert rate == 8000 and samples.dtype == np.int16 and samples.ndim == 1
    assert path.stat().st_size < 6e6
    times, rms = audio_envelope(path)
    csv = read_word_timings(small_dataset / "stimuli" / "gentle" / "lighthouse" / "align.csv")
    aligned = csv.aligned
    starts, ends = csv.onsets_s[aligned], csv.offsets_s[aligned]
    index = np.searchsorted(starts, times, side="right") - 1
    in_word = (index >= 0) & (times < ends[np.clip(index, 0, None)] - 0.02) & \
        (times > starts[np.clip(index, 0, None)] + 0.02)
    assert np.median(rms[in_word]) > 10 * np.median(rms[~in_word])     # unaligned words sound too
    assert times[-1] > csv.offsets_s[-1]


def test_second_profile_has_its_own_tr_grid_and_story(tmp_path):
    """The second planted dataset's generator (issue 9): another story in one run, TR 2.0 s,
    6 mm voxels; its sidecars, headers, events and truth say so, and the BIDS layout is the
    demo's."""
    from bids_app.synthetic import SECOND, make_dataset

    bids = make_dataset(tmp_path / "bids", n_subjects=3, planted=False, seed=4,
                        profile="second")
    func = bids / "derivatives" / "fmriprep" / "sub-002" / "func"
    base = "sub-002_task-orchard_space-MNI152NLin2009cAsym_res-2"
    sidecar = json.loads((func / f"{base}_desc-preproc_bold.json").read_text())
    assert (sidecar["RepetitionTime"], sidecar["StartTime"], sidecar["VoxelSizeMm"]) == \
        (2.0, 1.0, 6.0)
    img = nib.load(func / f"{base}_desc-preproc_bold.nii.gz")
    assert img.header.get_zooms() == (6.0, 6.0, 6.0, 2.0)
    assert [p.name for p in sorted((bids / "sub-001" / "func").glob("*_events.tsv"))] == \
        ["sub-001_task-orchard_events.tsv"]
    assert story_onset_s(bids / "sub-001" / "func" / "sub-001_task-orchard_events.tsv",
                         "orchard") == SECOND.onsets_s["orchard"]
    words = read_word_timings(bids / "stimuli" / "gentle" / "orchard" / "align.csv").words
    assert list(words[:3]) == ["The", "orchard", "sat"] and len(words) > 900
    truth = json.loads((bids / "sourcedata" / "llmfbn_truth.json").read_text())
    assert (truth["profile"], truth["t_r_s"], truth["voxel_mm"], truth["tasks"]) == \
        ("second", 2.0, 6.0, ["orchard"])
    confounds = pd.read_csv(next(func.glob("*_desc-confounds_timeseries.tsv")), sep="\t")
    # the 128 s high-pass drift basis follows the TR: floor(2 n TR / 128) columns
    assert confounds.filter(like="cosine").shape[1] == int(2 * img.shape[3] * 2.0 // 128)


def _toy_runs(seed: int = 0):
    """Two runs of 300 toy ANs over 300 frames (the story frames 10-279 of each): ANs 0-59
    follow a word-rate-like regressor, 60-119 a signal A, 120-179 a signal B, 180-239 are
    loosely tied to a signal C (each AN correlates ~0.45 with it), the rest are noise."""
    rng = np.random.default_rng(seed)
    n_frames, n_ans = 300, 300

    def smooth(n, k):
        x = rng.standard_normal((n + 20, k))
        kernel = np.exp(-0.5 * (np.arange(-8, 9) / 1.5) ** 2)
        return np.stack([np.convolve(x[:, j], kernel, "same")[10:-10] for j in range(k)], 1)

    runs, story, low = {}, {}, {}
    for task in ("a", "b"):
        low_level = smooth(n_frames, 1)
        sources = smooth(n_frames, 3)                          # A, B, C
        resp = smooth(n_frames, n_ans)
        resp /= resp.std(0)
        for first, course, noise in ((0, low_level[:, 0], 0.3), (60, sources[:, 0], 0.3),
                                     (120, sources[:, 1], 0.3), (180, sources[:, 2], 2.0)):
            course = (course - course.mean()) / course.std()
            resp[:, first:first + 60] = course[:, None] + noise * resp[:, first:first + 60]
        runs[task] = (resp - resp.mean(0)) / resp.std(0)
        story[task] = np.zeros(n_frames, bool)
        story[task][10:280] = True
        low[task] = low_level
    return runs, story, low


def test_planted_subgroups_are_coherent_and_not_low_level():
    """The generator plants only coherent sub-groups (>= 3/4 of their ANs in their own
    functional truth) whose signal the low-level regressors explain at most 25 % of: on toy
    responses with a word-rate group, two clean groups and a loose one, it picks the clean
    ones, whatever the draw; without the low-level check it also takes the word-rate group."""
    from bids_app.synthetic import FUNCTIONAL_TRUTH_R, choose_subgroups, on_story

    runs, story, low = _toy_runs()
    layers = np.repeat(np.arange(3), 100)
    x = on_story(runs, story)
    for seed in range(5):
        groups = choose_subgroups(runs, story, layers, 2, np.random.default_rng(seed),
                                  size=20, low_level=low)
        for members in groups:
            signal = on_story({t: r[:, members].mean(1, keepdims=True)
                               for t, r in runs.items()}, story)[:, 0]
            assert np.mean(signal @ x[:, members] >= FUNCTIONAL_TRUTH_R) >= 0.75
        # mostly the clean groups A (ANs 60-119) and B (120-179), never the word rate or C
        assert sorted(_source(g) for g in groups) == [1, 2], groups
    picked = {_source(g) for seed in range(10) for g in choose_subgroups(
        runs, story, layers, 2, np.random.default_rng(seed), size=20)}
    assert 0 in picked and 3 not in picked


def _source(members) -> int:
    """The toy source (0: word rate, 1: A, 2: B, 3: C, 4: noise) of at least 3/4 of
    ``members``."""
    counts = np.bincount(np.asarray(members) // 60, minlength=5)
    assert counts.max() >= 0.75 * len(members), members
    return int(np.argmax(counts))


def test_choose_subgroups_says_when_it_cannot():
    import pytest

    from bids_app.synthetic import choose_subgroups

    runs, story, low = _toy_runs()
    layers = np.repeat(np.arange(3), 100)
    with pytest.raises(RuntimeError, match="coherent"):
        choose_subgroups(runs, story, layers, 3, np.random.default_rng(0), size=20,
                         low_level=low)
