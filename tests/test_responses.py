"""Tests for bids_app.responses against nilearn's compute_regressor (the reference) and,
for the Huth model, against straightforward loops written here from the published formulas."""

import math
import warnings
import zlib

import numpy as np
import pytest
from nilearn.glm.first_level import compute_regressor
from scipy import integrate, stats

from bids_app.errors import LlmfbnError
from bids_app.responses import (
    delay_frames,
    frame_times_s,
    hrf_design,
    lanczos_design,
    lanczos_kernel,
    n_response_columns,
    operators,
    response_column_labels,
    temporal_responses,
    zscore_time,
)

N_FRAMES = 90


def _nilearn_response(onsets, amplitudes, frame_times, hrf_model, oversampling=50):
    """nilearn's regressor for impulses (duration 0) with the given amplitudes."""
    condition = np.vstack([onsets, np.zeros_like(onsets), amplitudes])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # early-onset warning
        return compute_regressor(condition, hrf_model, frame_times,
                                 oversampling=oversampling)[0][:, 0]


def _random_onsets(rng, frame_times, n_events, sort):
    """Onsets spanning well before the first frame to after the last frame."""
    t0, t_last = frame_times[0], frame_times[-1]
    onsets = np.concatenate([
        rng.uniform(t0 - 40.0, t0, n_events // 10),       # before the first frame,
        rng.uniform(t0, t_last, n_events - n_events // 5),  # some earlier than -24 s
        rng.uniform(t_last, t_last + 10.0, n_events // 10),  # after the last frame
        [t0 - 24.0, t0, t_last],                             # boundary cases
    ])
    return np.sort(onsets) if sort else rng.permutation(onsets)


def test_frame_times_s():
    np.testing.assert_array_equal(frame_times_s(4, 1.5, 0.75), [0.75, 2.25, 3.75, 5.25])
    assert frame_times_s(3, 2.0).dtype == np.float64
    with pytest.raises(LlmfbnError, match="RepetitionTime"):
        frame_times_s(10, 0.0)
    with pytest.raises(LlmfbnError, match="positive integer"):
        frame_times_s(0, 2.0)


@pytest.mark.parametrize("hrf_model", ["spm", "glover"])
@pytest.mark.parametrize("t_r", [0.7, 1.5, 2.0])
@pytest.mark.parametrize("start_time_s", [0.0, 0.35, 5.0])
@pytest.mark.parametrize("sort", [True, False])
def test_single_neuron_matches_nilearn(hrf_model, t_r, start_time_s, sort):
    rng = np.random.default_rng(zlib.crc32(repr((hrf_model, t_r, start_time_s, sort)).encode()))
    frame_times = frame_times_s(N_FRAMES, t_r, start_time_s)
    onsets = _random_onsets(rng, frame_times, 200, sort)
    amplitudes = rng.normal(size=onsets.size)
    expected = _nilearn_response(onsets, amplitudes, frame_times, hrf_model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        got = temporal_responses(amplitudes[:, None], onsets, frame_times, hrf_model)
    assert got.shape == (N_FRAMES, 1) and got.dtype == np.float32
    # Required tolerance: max abs diff < 1e-6. The responses peak around 0.05 (nilearn's
    # kernel sums to 1 over the fine grid), so also demand 1e-5 relative to the peak,
    # which float32 rounding (~1e-7 relative) satisfies and a one-bin shift does not.
    diff = np.max(np.abs(got[:, 0] - expected))
    assert diff < 1e-6
    assert diff < 1e-5 * np.max(np.abs(expected))


@pytest.mark.parametrize("hrf_model", ["spm", "glover"])
def test_multi_neuron_matches_nilearn_column_by_column(hrf_model):
    rng = np.random.default_rng(7)
    frame_times = frame_times_s(N_FRAMES, 1.5, 0.75)
    onsets = _random_onsets(rng, frame_times, 150, sort=False)
    activations = rng.normal(size=(onsets.size, 6))
    activations[:, 3] = 0.0  # a silent neuron
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        got = temporal_responses(activations, onsets, frame_times, hrf_model)
    assert got.shape == (N_FRAMES, 6)
    for k in range(activations.shape[1]):
        expected = _nilearn_response(onsets, activations[:, k], frame_times, hrf_model)
        assert np.max(np.abs(got[:, k] - expected)) < 1e-6
    assert not got[:, 3].any()


@pytest.mark.parametrize("hrf_model", ["spm", "glover"])
@pytest.mark.parametrize("oversampling", [10, 50])
def test_design_columns_are_nilearn_unit_impulses(hrf_model, oversampling):
    # float64 design against nilearn column by column at a tight tolerance.
    rng = np.random.default_rng(3)
    frame_times = frame_times_s(40, 2.0, 1.0)
    onsets = _random_onsets(rng, frame_times, 20, sort=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        design = hrf_design(onsets, frame_times, hrf_model, oversampling=oversampling)
    assert design.shape == (40, onsets.size) and design.dtype == np.float64
    for j, onset in enumerate(onsets):
        expected = _nilearn_response(np.array([onset]), np.array([1.0]), frame_times,
                                     hrf_model, oversampling=oversampling)
        np.testing.assert_allclose(design[:, j], expected, rtol=0, atol=1e-12)


def test_onsets_outside_grid():
    frame_times = frame_times_s(30, 2.0)
    # Beyond the end of nilearn's fine grid: no response at all.
    design = hrf_design([frame_times[-1] + 2.5, 10.0], frame_times)
    assert not design[:, 0].any() and design[:, 1].any()
    # Earlier than frame_times[0] - 24 s: nilearn warns and clamps to the grid start.
    with pytest.warns(UserWarning, match="earlier than"):
        early = hrf_design([-100.0, -24.0], frame_times)
    np.testing.assert_array_equal(early[:, 0], early[:, 1])


def test_unknown_hrf_model_lists_models():
    with pytest.raises(LlmfbnError, match="glover.*spm|spm.*glover"):
        hrf_design([1.0], frame_times_s(10, 2.0), hrf_model="fir")


def test_input_checks():
    frame_times = frame_times_s(10, 2.0)
    with pytest.raises(LlmfbnError, match="do not match"):
        temporal_responses(np.ones((3, 2)), [1.0, 2.0], frame_times)
    with pytest.raises(LlmfbnError, match="NaN or infinite"):
        temporal_responses(np.array([[np.nan], [1.0]]), [1.0, 2.0], frame_times)
    with pytest.raises(LlmfbnError, match="finite"):
        hrf_design([np.nan], frame_times)
    with pytest.raises(LlmfbnError, match="at least two"):
        hrf_design([1.0], frame_times[:1])


def test_zscore_time_matches_scipy():
    rng = np.random.default_rng(11)
    responses = rng.normal(loc=3.0, scale=2.0, size=(200, 17)).astype(np.float32)
    got = zscore_time(responses)
    expected = stats.zscore(responses.astype(np.float64), axis=0, ddof=0)
    assert got.dtype == np.float32 and got.shape == responses.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(zscore_time(responses[:, 4]), expected[:, 4], atol=1e-5)


def test_zscore_time_batches_give_same_answer(monkeypatch):
    rng = np.random.default_rng(13)
    responses = rng.normal(loc=1.0, size=(200, 17)).astype(np.float32)
    whole = zscore_time(responses)
    monkeypatch.setattr(operators, "BATCH_BYTES", 8 * 200 * 3)   # 3 columns a batch
    np.testing.assert_array_equal(zscore_time(responses), whole)
    responses[5, 7] = np.inf
    with pytest.raises(LlmfbnError, match=r"among columns 6\.\.8"):
        zscore_time(responses)


def test_zscore_time_constant_columns_become_zero():
    rng = np.random.default_rng(12)
    responses = rng.normal(size=(50, 4)).astype(np.float32)
    responses[:, 1] = 0.0
    responses[:, 2] = 1e6  # constant with a large mean
    got = zscore_time(responses)
    assert np.all(np.isfinite(got))
    assert not got[:, 1].any() and not got[:, 2].any()
    np.testing.assert_allclose(got[:, [0, 3]],
                               stats.zscore(responses[:, [0, 3]].astype(np.float64)),
                               atol=1e-5)


# --- drop_outside_s: words beyond the run ---------------------------------------------------

@pytest.mark.parametrize("hrf_model", ["spm", "glover"])
@pytest.mark.parametrize("drop_outside_s", [10.0, 32.0])
def test_drop_outside_matches_nilearn_on_kept_words(hrf_model, drop_outside_s):
    rng = np.random.default_rng(int(drop_outside_s) + len(hrf_model))
    frame_times = frame_times_s(50, 1.5, 0.75)
    t0, t_last = frame_times[0], frame_times[-1]
    onsets = np.concatenate([rng.uniform(t0 - 60.0, t_last + 20.0, 120),
                             [t0 - drop_outside_s, t_last, t_last + 0.01]])
    kept = (onsets >= t0 - drop_outside_s) & (onsets <= t_last)
    assert kept.sum() > 50 and (~kept).sum() > 20
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no kept onset is moved: no early-onset warning
        design = hrf_design(onsets, frame_times, hrf_model, drop_outside_s=drop_outside_s)
    assert not design[:, ~kept].any()
    # nilearn's grid starts at min(min_onset, -drop_outside_s): every kept word at its onset.
    min_onset = min(-24.0, -drop_outside_s)
    for j in np.flatnonzero(kept):
        expected = compute_regressor([[onsets[j]], [0.0], [1.0]], hrf_model, frame_times,
                                     min_onset=min_onset)[0][:, 0]
        np.testing.assert_allclose(design[:, j], expected, rtol=0, atol=1e-12)
    # The multi-neuron responses are nilearn's regressors of the kept words only.
    activations = rng.normal(size=(onsets.size, 3))
    got = temporal_responses(activations, onsets, frame_times, hrf_model,
                             drop_outside_s=drop_outside_s)
    for k in range(3):
        condition = np.vstack([onsets[kept], np.zeros(kept.sum()), activations[kept, k]])
        expected = compute_regressor(condition, hrf_model, frame_times,
                                     min_onset=min_onset)[0][:, 0]
        assert np.max(np.abs(got[:, k] - expected)) < 1e-6


def test_drop_outside_removes_pile_up_of_other_runs_words():
    # One story over two runs: the words of run 2 fall, on run 1's clock, after run 1;
    # those of run 1 fall, on run 2's clock, long before run 2 starts, where nilearn piles
    # them up in the first fine-grid bin.
    rng = np.random.default_rng(21)
    frame_times = frame_times_s(40, 2.0)
    run1 = np.sort(rng.uniform(0.0, 78.0, 200))
    before = run1 - 200.0  # run 1's words on run 2's clock
    with pytest.warns(UserWarning, match="earlier than"):
        piled = hrf_design(before, frame_times)
    assert piled.any()  # nilearn's clamping: all act as impulses at t0 - 24 s
    assert not hrf_design(before, frame_times, drop_outside_s=32.0).any()
    assert not lanczos_design(run1 + 90.0, frame_times, drop_outside_s=32.0).any()
    # Without dropping, Huth's symmetric kernel lets later words reach the last frames.
    assert lanczos_design(run1 + 80.0, frame_times).any()


def test_drop_outside_huth_zeroes_only_dropped_columns():
    frame_times = frame_times_s(30, 2.0, 1.0)
    onsets = np.array([-40.0, -5.0, 1.0, 30.0, 59.0, 59.5, 63.0])
    full = lanczos_design(onsets, frame_times)
    dropped = lanczos_design(onsets, frame_times, drop_outside_s=6.0)
    kept = np.array([False, True, True, True, True, False, False])
    np.testing.assert_array_equal(dropped[:, kept], full[:, kept])
    assert not dropped[:, ~kept].any() and full[:, [1, 5]].any()


# --- the Huth model: Lanczos downsampling and FIR delays --------------------------------------

def _lanczos_formula(t, cutoff, window):
    """Huth et al.'s lanczosfun for one time offset, written from the formula."""
    if t == 0:
        return 1.0
    if abs(t * cutoff) > window:
        return 0.0
    return (window * math.sin(math.pi * cutoff * t) * math.sin(math.pi * cutoff * t / window)
            / (math.pi ** 2 * cutoff ** 2 * t ** 2))


def _lanczos_design_loop(onsets, frame_times, window=3, cutoff_mult=1.0):
    """Per-frame loop of Huth's lanczosinterp2D: cutoff = cutoff_mult / mean frame spacing."""
    cutoff = cutoff_mult / np.mean(np.diff(frame_times))
    design = np.zeros((len(frame_times), len(onsets)))
    for t, frame_time in enumerate(frame_times):
        for j, onset in enumerate(onsets):
            design[t, j] = _lanczos_formula(float(frame_time - onset), cutoff, window)
    return design


def _delay_loop(x, delays):
    """Neuron-major FIR delays, frame by frame: column k * n_delays + i = x[t - d_i, k]."""
    n_frames, n_neurons = x.shape
    out = np.zeros((n_frames, n_neurons * len(delays)), dtype=x.dtype)
    for k in range(n_neurons):
        for i, d in enumerate(delays):
            for t in range(n_frames):
                if 0 <= t - d < n_frames:
                    out[t, k * len(delays) + i] = x[t - d, k]
    return out


@pytest.mark.parametrize("cutoff_hz", [0.25, 1 / 1.5, 1.0 / 0.72])
@pytest.mark.parametrize("window", [1, 2, 3, 5])
def test_lanczos_kernel_matches_formula(cutoff_hz, window):
    rng = np.random.default_rng(zlib.crc32(repr((cutoff_hz, window)).encode()))
    support = window / cutoff_hz
    times = np.concatenate([rng.uniform(-1.5 * support, 1.5 * support, 497),
                            rng.uniform(-1e-3, 1e-3, 20), [0.0, support, -support]])
    got = lanczos_kernel(times.reshape(20, 26), cutoff_hz, window)
    assert got.shape == (20, 26)
    expected = np.array([_lanczos_formula(t, cutoff_hz, window) for t in times])
    assert np.max(np.abs(got.ravel() - expected)) < 1e-10


def test_lanczos_kernel_properties():
    cutoff_hz, window = 1 / 2.0, 3
    assert lanczos_kernel(0.0, cutoff_hz, window) == 1.0
    # Zero at the other sample points (non-zero multiples of 1 / cutoff) and symmetric.
    multiples = np.array([-3, -2, -1, 1, 2, 3]) / cutoff_hz
    assert np.max(np.abs(lanczos_kernel(multiples, cutoff_hz, window))) < 1e-15
    times = np.linspace(-7.0, 7.0, 301)
    np.testing.assert_array_equal(lanczos_kernel(times, cutoff_hz, window),
                                  lanczos_kernel(-times, cutoff_hz, window))
    # Exactly zero beyond the window, non-zero just inside it.
    beyond = np.array([6.0 + 1e-9, 6.5, 10.0, 1e6])
    assert not lanczos_kernel(np.concatenate([beyond, -beyond]), cutoff_hz, window).any()
    assert np.all(lanczos_kernel(np.array([5.9, -5.9]), cutoff_hz, window) != 0)


@pytest.mark.parametrize("t_r", [0.72, 1.5, 2.0])
@pytest.mark.parametrize("start_time_s", [0.0, 0.35, 5.0])
@pytest.mark.parametrize("window, cutoff_mult", [(3, 1.0), (2, 0.5), (4, 1.3)])
def test_lanczos_design_matches_per_frame_loop(t_r, start_time_s, window, cutoff_mult):
    rng = np.random.default_rng(zlib.crc32(repr((t_r, start_time_s, window)).encode()))
    frame_times = frame_times_s(40, t_r, start_time_s)
    onsets = rng.uniform(frame_times[0] - 10 * t_r, frame_times[-1] + 10 * t_r, 150)
    got = lanczos_design(onsets, frame_times, window=window, cutoff_mult=cutoff_mult)
    expected = _lanczos_design_loop(onsets, frame_times, window, cutoff_mult)
    assert got.shape == (40, 150) and got.dtype == np.float64
    assert np.max(np.abs(got - expected)) < 1e-10
    assert np.count_nonzero(expected) > 100  # the comparison is not between zeros


@pytest.mark.parametrize("t_r, start_time_s", [(2.0, 0.0), (1.5, 0.75), (0.8, 3.1)])
def test_lanczos_honours_repetition_time_and_start_time(t_r, start_time_s):
    frame_times = frame_times_s(30, t_r, start_time_s)
    # A word at the time of frame k (StartTime + k * TR) is a unit impulse at frame k.
    frames = np.array([0, 4, 17, 29])
    design = lanczos_design(start_time_s + t_r * frames, frame_times)
    np.testing.assert_allclose(design, np.eye(30)[:, frames], rtol=0, atol=1e-12)
    # Moving StartTime and the words together changes nothing.
    onsets = np.random.default_rng(5).uniform(-5.0, 30 * t_r, 80)
    np.testing.assert_allclose(
        lanczos_design(onsets + start_time_s, frame_times),
        lanczos_design(onsets, frame_times_s(30, t_r)), rtol=0, atol=1e-12)


def test_lanczos_constant_word_rate_gives_constant_signal():
    t_r, spacing_s = 2.0, 0.3
    frame_times = frame_times_s(60, t_r, 1.0)
    onsets = np.arange(20.0, 160.0, spacing_s) + 0.0123
    signal = lanczos_design(onsets, frame_times).sum(axis=1)
    # Frames whose 3-TR window lies inside the word span.
    inner = (frame_times - 3 * t_r > onsets[0]) & (frame_times + 3 * t_r < onsets[-1])
    assert inner.sum() > 40
    # Riemann sum of the kernel: (TR / spacing) * integral of the kernel over one TR unit.
    area, _ = integrate.quad(lambda x: _lanczos_formula(x, 1.0, 3), -3, 3, limit=200)
    expected = t_r / spacing_s * area
    assert np.max(np.abs(signal[inner] / expected - 1)) < 1e-4
    # It falls off at the start of the words: zero 3 TRs before, below 60 % 1 s before.
    assert signal[0] == 0.0
    assert signal[frame_times < onsets[0]][-1] < 0.6 * expected


@pytest.mark.parametrize("delays", [(1, 2, 3, 4), (0,), (0, -2, 5), (3, 1), (2, 25, -30)])
def test_delay_frames_exact(delays):
    rng = np.random.default_rng(len(delays))
    x = rng.normal(size=(25, 6)).astype(np.float32)
    got = delay_frames(x, delays)
    assert got.shape == (25, 6 * len(delays)) and got.dtype == np.float32
    np.testing.assert_array_equal(got, _delay_loop(x, delays))


def test_delay_frames_default_is_one_to_four_trs():
    x = np.arange(1.0, 11.0)[:, None]
    got = delay_frames(x)
    np.testing.assert_array_equal(got[:, 0], np.r_[0, 1:10])
    np.testing.assert_array_equal(got[:, 3], np.r_[0, 0, 0, 0, 1:7])


@pytest.mark.parametrize("fir_delays", [(1, 2, 3, 4), (0, 2)])
def test_huth_responses_match_loop_reference(fir_delays, monkeypatch):
    rng = np.random.default_rng(31)
    frame_times = frame_times_s(45, 1.5, 0.75)
    onsets = rng.uniform(-8.0, 75.0, 180)
    activations = rng.normal(size=(180, 7))
    expected = _delay_loop(_lanczos_design_loop(onsets, frame_times) @ activations,
                           fir_delays)
    got = temporal_responses(activations, onsets, frame_times, "huth", fir_delays=fir_delays)
    n_columns = n_response_columns(7, "huth", fir_delays)
    assert got.shape == (45, n_columns) == (45, 7 * len(fir_delays))
    assert got.dtype == np.float32
    # float32 output: 1e-6 relative to the largest response.
    assert np.max(np.abs(got - expected)) < 1e-6 * np.max(np.abs(expected))
    # Labels name each column: neuron k, delay d is the neuron's downsampled response at t-d.
    labels = response_column_labels(7, "huth", fir_delays)
    downsampled = temporal_responses(activations, onsets, frame_times, "huth", fir_delays=(0,))
    for column, (neuron, delay) in enumerate(labels):
        np.testing.assert_array_equal(got[:, column],
                                      delay_frames(downsampled[:, [neuron]], (delay,))[:, 0])
    # Batching over neurons (forced tiny batches) gives the same array.
    monkeypatch.setattr(operators, "BATCH_BYTES", 8 * (180 + 45) * 2)
    np.testing.assert_array_equal(
        temporal_responses(activations, onsets, frame_times, "huth", fir_delays=fir_delays),
        got)
    # The batches really are of 2 neurons: a NaN of neuron 5 is found in the batch 4..5.
    bad = activations.copy()
    bad[0, 5] = np.nan
    with pytest.raises(LlmfbnError, match=r"among neurons 4\.\.5"):
        temporal_responses(bad, onsets, frame_times, "huth", fir_delays=fir_delays)


def test_huth_responses_are_linear_in_activations():
    rng = np.random.default_rng(33)
    frame_times = frame_times_s(30, 2.0)
    onsets = rng.uniform(0.0, 60.0, 90)
    a, b = rng.normal(size=(2, 90, 4))
    combined = temporal_responses(2.0 * a - 0.5 * b, onsets, frame_times, "huth")
    separate = (2.0 * temporal_responses(a, onsets, frame_times, "huth").astype(np.float64)
                - 0.5 * temporal_responses(b, onsets, frame_times, "huth"))
    np.testing.assert_allclose(combined, separate, rtol=0, atol=1e-5)


def test_response_column_labels_and_counts():
    np.testing.assert_array_equal(response_column_labels(3, "spm"),
                                  [[0, 0], [1, 0], [2, 0]])
    np.testing.assert_array_equal(response_column_labels(2, "huth", (1, 3)),
                                  [[0, 1], [0, 3], [1, 1], [1, 3]])
    assert response_column_labels(4, "huth").shape == (16, 2)
    assert n_response_columns(5, "glover") == 5
    assert n_response_columns(5, "huth") == 20
    assert n_response_columns(0, "huth") == 0


def test_zscore_before_delay_reproduces_huth_order():
    # The route documented in zscore_time: z-score the undelayed signal, then delay.
    rng = np.random.default_rng(41)
    frame_times = frame_times_s(40, 2.0)
    onsets = rng.uniform(0.0, 80.0, 120)
    activations = rng.normal(size=(120, 3))
    got = delay_frames(zscore_time(
        temporal_responses(activations, onsets, frame_times, "huth", fir_delays=(0,))))
    downsampled = _lanczos_design_loop(onsets, frame_times) @ activations
    expected = _delay_loop(stats.zscore(downsampled, axis=0), (1, 2, 3, 4))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_huth_input_checks():
    frame_times = frame_times_s(10, 2.0)
    with pytest.raises(LlmfbnError, match="lanczos_design"):
        hrf_design([1.0], frame_times, hrf_model="huth")
    with pytest.raises(LlmfbnError, match="glover.*huth.*spm"):
        temporal_responses(np.ones((1, 1)), [1.0], frame_times, hrf_model="fir")
    for bad in [(), (1, 1), (1.5,), "1234", 2, (True,)]:
        with pytest.raises(LlmfbnError, match="delay"):
            temporal_responses(np.ones((1, 1)), [1.0], frame_times, "huth", fir_delays=bad)
    with pytest.raises(LlmfbnError, match="window"):
        lanczos_design([1.0], frame_times, window=0)
    with pytest.raises(LlmfbnError, match="window"):
        lanczos_design([1.0], frame_times, window=2.5)
    with pytest.raises(LlmfbnError, match="cutoff_mult"):
        lanczos_design([1.0], frame_times, cutoff_mult=0.0)
    with pytest.raises(LlmfbnError, match="drop_outside_s"):
        hrf_design([1.0], frame_times, drop_outside_s=-1.0)
    with pytest.raises(LlmfbnError, match="drop_outside_s"):
        temporal_responses(np.ones((1, 1)), [1.0], frame_times, "huth", drop_outside_s=np.nan)
    with pytest.raises(LlmfbnError, match="finite"):
        lanczos_design([np.inf], frame_times)
    with pytest.raises(LlmfbnError, match="NaN or infinite"):
        temporal_responses(np.array([[np.nan]]), [1.0], frame_times, "huth")
    with pytest.raises(LlmfbnError, match="non-negative integer"):
        n_response_columns(-1, "huth")
