"""Low-level stimulus nuisance regressors: the audio envelope, word rate and envelope
regressors against nilearn, and their place and maps in the participant GLM."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from nilearn.glm.first_level import compute_regressor
from scipy.io import wavfile

from bids_app.encoding import RunData, fit_participant, percent_signal_change
from bids_app.errors import LlmfbnError
from bids_app.responses import (
    acquisition_nuisance,
    envelope_regressor,
    frame_times_s,
    nuisance_hrf,
    word_rate_regressor,
)
from bids_app.stimulus import audio_envelope, read_wav, usable_audio


# ------------------------------------------------------------------------- the envelope
@pytest.mark.parametrize("dtype, channels, rate", [(np.int16, 1, 8000), (np.int16, 2, 44100),
                                                   (np.uint8, 1, 11025),
                                                   (np.float32, 2, 16000)])
def test_rms_envelope_against_a_window_loop(tmp_path, dtype, channels, rate):
    rng = np.random.default_rng(rate)
    n = int(rate * 1.2345)                               # a partial last window
    wave = rng.uniform(-0.9, 0.9, (n, channels)) * np.linspace(0, 1, n)[:, None]
    if dtype == np.int16:
        stored = (wave * 32768).astype(np.int16)
    elif dtype == np.uint8:
        stored = (wave * 128 + 128).astype(np.uint8)
    else:
        stored = wave.astype(np.float32)
    path = tmp_path / "a.wav"
    wavfile.write(path, rate, stored[:, 0] if channels == 1 else stored)
    times, rms = audio_envelope(path)
    full = {np.int16: 32768.0, np.uint8: 128.0, np.float32: 1.0}[dtype]
    mono = (stored.astype(np.float64) - (128 if dtype == np.uint8 else 0)) / full
    mono = mono.mean(axis=1)
    width = round(rate * 0.01)
    expected = [np.sqrt(np.mean(mono[i:i + width] ** 2)) for i in range(0, n, width)]
    centres = [(i + min(i + width, n)) / 2 / rate for i in range(0, n, width)]
    np.testing.assert_allclose(rms, expected, rtol=1e-10)
    np.testing.assert_allclose(times, centres, rtol=1e-12)


def test_wav_errors_name_the_file(tmp_path, caplog):
    with pytest.raises(LlmfbnError, match="audio file not found: .*missing.wav"):
        read_wav(tmp_path / "missing.wav")
    bad = tmp_path / "story.wav"
    bad.write_text("not a RIFF file")
    with pytest.raises(LlmfbnError, match="cannot read the audio file .*story.wav"):
        read_wav(bad)
    # not asked for explicitly: skipped with a line in the log; asked for: an error
    with caplog.at_level(logging.INFO, logger="llmfbn"):
        assert usable_audio(bad, False, "pieman") is None
        assert usable_audio(None, False, "pieman") is None
    assert "envelope regressor is skipped" in caplog.text and "story.wav" in caplog.text
    with pytest.raises(LlmfbnError, match="story.wav"):
        usable_audio(bad, True, "pieman")
    with pytest.raises(LlmfbnError, match="needs the audio of pieman"):
        usable_audio(None, True, "pieman")
    good = tmp_path / "good.wav"
    wavfile.write(good, 8000, np.zeros(800, np.int16))
    assert usable_audio(good, True, "pieman") == good


# --------------------------------------------------------------- regressors vs nilearn
@pytest.mark.parametrize("hrf, seed", [("spm", 0), ("glover", 1), ("huth", 2)])
def test_word_rate_equals_nilearn_compute_regressor(hrf, seed):
    rng = np.random.default_rng(seed)
    frames = frame_times_s(int(rng.integers(60, 150)), rng.uniform(0.8, 2.5),
                           rng.uniform(0, 1))
    onsets = np.sort(rng.uniform(-20, frames[-1] - 5, 300))
    reference = compute_regressor(np.vstack([onsets, np.zeros_like(onsets),
                                             np.ones_like(onsets)]),
                                  nuisance_hrf(hrf), frames, oversampling=50,
                                  min_onset=-32)[0][:, 0]
    ours = word_rate_regressor(onsets, frames, hrf)
    assert nuisance_hrf("huth") == "spm"
    np.testing.assert_allclose(ours, reference, atol=1e-10 * np.abs(reference).max())


@pytest.mark.parametrize("hrf", ["spm", "glover"])
def test_envelope_regressor_equals_nilearn_compute_regressor(hrf):
    rng = np.random.default_rng(3)
    frames = frame_times_s(80, 1.5, 0.75)
    times = 8.0 + np.arange(0.005, 90, 0.01)             # 10 ms windows, story at 8 s
    rms = np.abs(rng.standard_normal(times.size)) * (np.sin(times / 7) + 1.2)
    reference = compute_regressor(np.vstack([times, np.zeros_like(times), rms]), hrf,
                                  frames, oversampling=50, min_onset=-32)[0][:, 0]
    np.testing.assert_allclose(envelope_regressor(rms, times, frames, hrf), reference,
                               atol=1e-10 * np.abs(reference).max())


class _Words:
    def __init__(self, onsets):
        self.onsets_s = np.asarray(onsets)


class _Acq:
    def __init__(self, stories, n_frames=60):
        self.stories, self.n_frames = stories, n_frames

    def frame_times_s(self):
        return frame_times_s(self.n_frames, 2.0, 1.0)


class _Story:
    def __init__(self, timings, onset_s, audio):
        self.timings, self.onset_s, self.audio = timings, onset_s, audio


def test_acquisition_nuisance_sums_stories_and_needs_every_audio():
    words = {"a": _Words(np.arange(0, 20, 0.5)), "b": _Words(np.arange(0, 10, 0.4))}
    envelope = (np.arange(0.005, 20, 0.01), np.ones(2000))
    stories = [_Story("a", 5.0, "a.wav"), _Story("b", 60.0, "b.wav")]
    frames = _Acq(stories).frame_times_s()
    table = acquisition_nuisance(_Acq(stories), ["wordrate", "envelope"], "spm", words,
                                 {"a.wav": envelope, "b.wav": envelope})
    assert list(table.columns) == ["wordrate", "envelope"] and len(table) == 60
    np.testing.assert_allclose(table["wordrate"], word_rate_regressor(
        np.r_[5 + words["a"].onsets_s, 60 + words["b"].onsets_s], frames))
    np.testing.assert_allclose(table["envelope"], envelope_regressor(
        np.ones(4000), np.r_[5 + envelope[0], 60 + envelope[0]], frames))
    # one story without usable audio: no envelope in that run
    partial = acquisition_nuisance(_Acq(stories), ["wordrate", "envelope"], "spm", words,
                                   {"a.wav": envelope})
    assert list(partial.columns) == ["wordrate"]
    assert acquisition_nuisance(_Acq(stories), [], "spm", words, {}).shape == (60, 0)


# ------------------------------------------------------------------------ in the GLM
def _runs(rng, n_voxels=300, planted=None, n_atoms=3):
    """Two runs with confounds, a word-rate-like and an envelope-like regressor, and BOLD
    that carries ``planted`` (voxel weights of the first nuisance regressor) when given."""
    runs = []
    for r, n in enumerate((120, 100)):
        frames = frame_times_s(n, 1.5, 0.75)
        onsets = np.sort(rng.uniform(10, frames[-1] - 20, 250))
        wordrate = word_rate_regressor(onsets, frames)
        times = np.arange(0.005, frames[-1], 0.01)
        loud = np.abs(np.sin(times / 9.0)) * (rng.random(times.size) < 0.5)
        nuisance = pd.DataFrame({"wordrate": wordrate,
                                 "envelope": envelope_regressor(loud, times, frames)})
        confounds = pd.DataFrame(rng.standard_normal((n, 4)), columns=list("abcd"))
        bold = 500 + rng.standard_normal((n, n_voxels))
        if planted is not None:
            z = (wordrate - wordrate.mean()) / wordrate.std()
            bold += 5.0 * np.outer(z, planted)
        keep = np.arange(2, n)
        runs.append(RunData(bold=bold.astype(np.float32), confounds=confounds.iloc[keep],
                            sample_mask=keep, atoms=rng.standard_normal((n, n_atoms)),
                            name=f"task-x_run-{r + 1}", nuisance=nuisance))
    return runs


def _numpy_nuisance_maps(runs):
    """Independent reference: the block-diagonal model without atoms built by hand, OLS by
    lstsq, each regressor's contrast averaging its per-run coefficients."""
    blocks, targets, names = [], [], ["wordrate", "envelope"]
    for run in runs:
        keep = run.sample_mask
        nuis = run.nuisance.to_numpy()[keep]
        nuis = (nuis - nuis.mean(0)) / nuis.std(0)
        blocks.append(np.column_stack([run.confounds.to_numpy(), nuis, np.ones(keep.size)]))
        targets.append(percent_signal_change(np.asarray(run.bold, np.float64)[keep]))
    width = sum(b.shape[1] for b in blocks)
    X = np.zeros((sum(len(b) for b in blocks), width))
    row = col = 0
    contrasts = np.zeros((2, width))
    for block in blocks:
        X[row:row + len(block), col:col + block.shape[1]] = block
        contrasts[:, col + 4:col + 6] += np.eye(2) / len(blocks)
        row, col = row + len(block), col + block.shape[1]
    Y = np.vstack(targets)
    beta = np.linalg.lstsq(X, Y, rcond=None)[0]
    dof = X.shape[0] - np.linalg.matrix_rank(X)
    sigma2 = np.sum((Y - X @ beta) ** 2, axis=0) / dof
    effect = contrasts @ beta
    var = np.einsum("ij,jk,ik->i", contrasts, np.linalg.inv(X.T @ X), contrasts)
    return names, effect, effect / np.sqrt(var[:, None] * sigma2[None]), dof


@pytest.mark.parametrize("seed", [0, 1])
def test_nuisance_maps_equal_a_numpy_ols_contrast(seed):
    rng = np.random.default_rng(seed)
    runs = _runs(rng)
    fit = fit_participant(runs)
    names, effect, t, dof = _numpy_nuisance_maps(runs)
    assert list(fit.nuisance.effect) == names and fit.nuisance.dof == dof
    for k, name in enumerate(names):
        np.testing.assert_allclose(fit.nuisance.effect[name], effect[k], rtol=1e-4,
                                   atol=1e-6)
        np.testing.assert_allclose(fit.nuisance.t[name], t[k], rtol=1e-4, atol=1e-5)
    assert fit.nuisance.runs["wordrate"] == ["task-x_run-1", "task-x_run-2"]
    assert "task-x_run-1_wordrate" in fit.design.columns


def test_nuisance_enters_the_model_like_confounds():
    """Atom maps with RunData.nuisance equal those with the (standardised) regressors
    appended to the confounds, in both GLM modes."""
    runs = _runs(np.random.default_rng(4))
    as_confounds = []
    for run in runs:
        nuis = run.nuisance.iloc[run.sample_mask]
        nuis = (nuis - nuis.mean()) / nuis.std(ddof=0)
        conf = pd.concat([run.confounds, nuis.set_index(run.confounds.index)], axis=1)
        as_confounds.append(RunData(bold=run.bold, confounds=conf, sample_mask=run.sample_mask,
                                    atoms=run.atoms, name=run.name))
    for glm in ("separate", "joint"):
        ours, reference = fit_participant(runs, glm), fit_participant(as_confounds, glm)
        np.testing.assert_allclose(ours.t, reference.t, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ours.r2, reference.r2, rtol=1e-5, atol=1e-6)
    assert fit_participant(as_confounds).nuisance is None


def test_word_rate_map_is_large_where_planted_and_null_elsewhere():
    rng = np.random.default_rng(7)
    planted = np.zeros(300)
    planted[:40] = 1.0
    fit = fit_participant(_runs(rng, planted=planted))
    t = fit.nuisance.t["wordrate"]
    assert t[:40].min() > 10                      # 5 sd of signal per voxel, ~220 volumes
    assert np.abs(t[40:]).mean() < 1.2 and np.quantile(np.abs(t[40:]), 0.99) < 3.5
    # the atoms do not take the planted signal: it belongs to the nuisance regressor
    assert np.abs(fit.t[:, :40]).max() < 5


# ------------------------------------------------------------------------- the workflow
def test_implicit_envelope_skips_an_unreadable_audio_with_a_log_line(dataset_copy, tmp_path,
                                                                     caplog):
    """The envelope asked for in a Config but not on the command line (the CLI's default is
    no nuisance regressor): a story whose WAV cannot be read loses its envelope with a log
    line, the other story keeps it. An explicit ``--nuisance envelope`` makes this an error
    (the ``envelope-audio-missing`` case of tests/bad_inputs.py)."""
    from bids_app.cli.parser import parse_args
    from bids_app.workflow import nuisance_regressors, preflight_participant

    audio = dataset_copy / "stimuli" / "market_audio.wav"
    audio.unlink()                     # hard-linked: replace, do not edit in place
    audio.write_bytes(b"not a wav")
    config = parse_args([str(dataset_copy), str(tmp_path / "out"), "participant"])
    config.resolve_paths()
    config.nuisance = ["wordrate", "envelope"]
    plan = preflight_participant(config).plan
    with caplog.at_level(logging.INFO, logger="llmfbn"):
        regressors = nuisance_regressors(config, plan)
    assert list(regressors["task-lighthouse"].columns) == ["wordrate", "envelope"]
    assert list(regressors["task-market"].columns) == ["wordrate"]
    assert "market_audio.wav" in caplog.text and "envelope regressor is skipped" in caplog.text
    none = parse_args([str(dataset_copy), str(tmp_path / "out"), "participant", "--nuisance",
                       "none"])
    assert all(t.shape[1] == 0 for t in nuisance_regressors(none, plan).values())
    assert not (tmp_path / "out").exists()
