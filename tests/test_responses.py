"""Tests for bids_app.responses against nilearn's compute_regressor (the reference)."""

import warnings
import zlib

import numpy as np
import pytest
from nilearn.glm.first_level import compute_regressor
from scipy import stats

from bids_app.errors import LlmfbnError
from bids_app.responses import (frame_times_s, hrf_design, temporal_responses,
                                zscore_time)

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
