"""Temporal responses of artificial neurons on the scanner clock.

Each neuron's temporal response is a train of impulses at the word onsets, scaled by the
neuron's activation for each word, convolved with a canonical haemodynamic response function
(HRF) and sampled at the BOLD frame times. The definition is exactly that of nilearn's
:func:`nilearn.glm.first_level.compute_regressor` for events of duration 0.

Sampling on nilearn's fine grid, convolution and linear interpolation are all linear in the
amplitudes, so the responses of all neurons are ``H @ activations`` where column ``j`` of the
HRF design ``H`` (n_frames, n_words) is nilearn's regressor for a unit impulse at onset ``j``.
:func:`hrf_design` builds ``H`` directly, reproducing nilearn step by step:

1. nilearn's fine time grid ``frame_times_high_res`` (``oversampling`` points per TR,
   starting ``min_onset_s`` before the first frame);
2. the fine-grid bin of each onset, ``searchsorted`` on that grid as nilearn does
   (an onset at or beyond the last fine bin gives no response, as in nilearn);
3. the HRF kernel from nilearn's public :func:`~nilearn.glm.first_level.spm_hrf` or
   :func:`~nilearn.glm.first_level.glover_hrf`, at the smallest frame spacing;
4. linear interpolation of the convolved fine-grid signal at the frame times, which for a
   unit impulse at bin ``b`` means gathering two kernel samples ``h[lo - b]`` and
   ``h[lo + 1 - b]`` per (frame, word), ``lo`` being the fine bin just before the frame.
"""

from __future__ import annotations

import warnings

import numpy as np
from nilearn.glm.first_level import glover_hrf, spm_hrf

from bids_app.errors import LlmfbnError

__all__ = ["HRF_MODELS", "frame_times_s", "hrf_design", "temporal_responses",
           "zscore_time"]

#: HRF models understood by :func:`hrf_design`, mapped to nilearn's kernel functions.
HRF_MODELS = {"spm": spm_hrf, "glover": glover_hrf}

# Largest float64 temporary (bytes) made per batch of neurons; keeps memory bounded for
# models with hundreds of thousands of neurons.
_BATCH_BYTES = 256 * 2**20


def frame_times_s(n_frames: int, t_r: float, start_time_s: float = 0.0) -> np.ndarray:
    """Acquisition times of the BOLD frames of a run.

    Parameters
    ----------
    n_frames : int
        Number of BOLD volumes (after any volumes the caller removed at the start have
        been accounted for in ``start_time_s``).
    t_r : float
        Repetition time in seconds (BIDS ``RepetitionTime``).
    start_time_s : float, default=0.0
        Time of frame 0 in seconds on the events' clock (BIDS ``StartTime``: e.g. the
        slice-timing reference time that fMRIPrep writes, ``TR/2`` for mid-TR
        correction).

    Returns
    -------
    frame_times : ndarray of shape (n_frames,), float64
        ``start_time_s + t_r * arange(n_frames)``, in seconds.
    """
    if isinstance(n_frames, bool) or int(n_frames) != n_frames or n_frames < 1:
        raise LlmfbnError("The number of BOLD frames must be a positive integer",
                          found=repr(n_frames))
    if not np.isfinite(t_r) or t_r <= 0:
        raise LlmfbnError("RepetitionTime must be a positive number of seconds",
                          found=repr(t_r), todo="check RepetitionTime in the BOLD sidecar")
    if not np.isfinite(start_time_s):
        raise LlmfbnError("StartTime must be a finite number of seconds",
                          found=repr(start_time_s),
                          todo="check StartTime in the BOLD sidecar")
    return float(start_time_s) + float(t_r) * np.arange(int(n_frames), dtype=np.float64)


def _check_hrf_model(hrf_model):
    if not isinstance(hrf_model, str) or hrf_model not in HRF_MODELS:
        raise LlmfbnError(
            "Unknown HRF model", expected=f"one of {sorted(HRF_MODELS)}",
            found=repr(hrf_model), todo="choose one of the listed HRF models",
        )
    return HRF_MODELS[hrf_model]


def _check_frame_times(frame_times):
    frame_times = np.asarray(frame_times, dtype=np.float64)
    if frame_times.ndim != 1 or frame_times.size < 2:
        raise LlmfbnError(
            "Frame times must be a 1-D array of at least two times",
            expected="shape (n_frames,) with n_frames >= 2",
            found=f"shape {frame_times.shape}",
            todo="check the number of BOLD volumes of the run",
        )
    if not np.all(np.isfinite(frame_times)) or np.any(np.diff(frame_times) <= 0):
        raise LlmfbnError(
            "Frame times must be finite and strictly increasing",
            found=f"first times {frame_times[:5].tolist()}",
            todo="check RepetitionTime and StartTime",
        )
    return frame_times


def _fine_grid(frame_times, min_onset_s, oversampling):
    """nilearn's ``frame_times_high_res`` (``_sample_condition``), formula for formula."""
    n_frames = frame_times.size
    mini, maxi = frame_times.min(), frame_times.max()
    n_high_res = (n_frames - 1) * 1.0 / (maxi - mini)
    n_high_res *= (maxi * (1 + 1.0 / (n_frames - 1)) - mini - min_onset_s) * oversampling
    n_high_res += 1
    return np.linspace(mini + min_onset_s, maxi * (1 + 1.0 / (n_frames - 1)),
                       np.rint(n_high_res).astype(int))


def hrf_design(onsets_s, frame_times_s, hrf_model="spm", oversampling=50,
               min_onset_s=-24.0) -> np.ndarray:
    """HRF design: the sampled response of every word impulse, one column per word.

    Column ``j`` equals nilearn's
    ``compute_regressor([[onsets_s[j]], [0], [1]], hrf_model, frame_times_s,
    oversampling=oversampling, min_onset=min_onset_s)[0][:, 0]``.

    Parameters
    ----------
    onsets_s : array-like of shape (n_events,)
        Impulse onsets in seconds, on the same clock as ``frame_times_s``; any order.
    frame_times_s : array-like of shape (n_frames,)
        Strictly increasing frame acquisition times in seconds, n_frames >= 2
        (see :func:`frame_times_s`).
    hrf_model : {"spm", "glover"}, default="spm"
        Canonical HRF, as nilearn's :func:`~nilearn.glm.first_level.spm_hrf` /
        :func:`~nilearn.glm.first_level.glover_hrf`.
    oversampling : int, default=50
        Fine-grid points per TR for the convolution (nilearn's ``oversampling``).
    min_onset_s : float, default=-24.0
        Start of the fine grid relative to the first frame, in seconds (nilearn's
        ``min_onset``).

    Returns
    -------
    design : ndarray of shape (n_frames, n_events), float64
        Unit-impulse responses sampled at the frame times.

    Notes
    -----
    Onsets earlier than ``frame_times_s[0] + min_onset_s`` are handled exactly as nilearn's
    code handles them: nilearn warns that they are "not considered", but its
    ``searchsorted`` puts them in the first fine-grid bin, so they act as impulses at
    ``frame_times_s[0] + min_onset_s`` (whose response at the frames is only the late
    undershoot of the HRF, about 1e-4 of the peak). A ``UserWarning`` is issued as in
    nilearn. Onsets that fall in or beyond the last fine-grid bin (about one TR after the
    last frame) give an all-zero column, as in nilearn.
    """
    kernel_fn = _check_hrf_model(hrf_model)
    frame_times = _check_frame_times(frame_times_s)
    onsets = np.asarray(onsets_s, dtype=np.float64)
    if onsets.ndim != 1:
        raise LlmfbnError("Onsets must be a 1-D array of times in seconds",
                          expected="shape (n_events,)", found=f"shape {onsets.shape}")
    if not np.all(np.isfinite(onsets)):
        raise LlmfbnError("Onsets must be finite times in seconds",
                          found=f"{int(np.sum(~np.isfinite(onsets)))} non-finite onset(s)",
                          todo="check the word timings")
    if isinstance(oversampling, bool) or int(oversampling) < 1:
        raise LlmfbnError("oversampling must be a positive integer", found=repr(oversampling))
    oversampling = int(oversampling)  # as compute_regressor does
    min_onset_s = float(min_onset_s)

    grid = _fine_grid(frame_times, min_onset_s, oversampling)
    n_grid = grid.size
    if n_grid < 2 or grid[-1] < frame_times[-1] or grid[0] > frame_times[0]:
        raise LlmfbnError(
            "Frame times outside the HRF convolution grid",
            expected="frame times whose last value is >= 0 and min_onset_s <= 0 "
                     "(nilearn's fine grid spans [t0 + min_onset, t_last * (1 + 1/(n-1))])",
            found=f"grid [{grid[0]}, {grid[-1]}] s, frames [{frame_times[0]}, "
                  f"{frame_times[-1]}] s",
            todo="check StartTime and the number of volumes",
        )
    early = onsets < frame_times[0] + min_onset_s
    if early.any():
        warnings.warn(
            f"{int(early.sum())} onset(s) are earlier than {frame_times[0] + min_onset_s} s; "
            "as in nilearn they are placed at the start of the convolution grid",
            UserWarning, stacklevel=2,
        )

    # The minimal frame spacing, as nilearn's _calculate_tr, sets the kernel's time step.
    t_r = float(np.min(np.diff(frame_times)))
    kernel = np.asarray(kernel_fn(t_r, oversampling), dtype=np.float64)
    n_kernel = kernel.size

    # nilearn's _sample_condition with duration 0: +1 at bin b, -1 at bin b+1, cumsum.
    # When b is the last bin both land on it and cancel: no response.
    impulse_bin = np.minimum(np.searchsorted(grid, onsets), n_grid - 1)
    responds = impulse_bin < n_grid - 1

    # scipy's interp1d (linear) as used by nilearn's _resample_regressor.
    upper = np.clip(np.searchsorted(grid, frame_times), 1, n_grid - 1)
    lower = upper - 1
    weight = (frame_times - grid[lower]) / (grid[upper] - grid[lower])

    # Convolved unit impulse at bin b, sampled at fine bin n: kernel[n - b] (0 outside).
    lag = lower[:, None] - impulse_bin[None, :]                 # (n_frames, n_events)
    padded = np.concatenate([kernel, [0.0]])                    # index n_kernel -> 0
    lag_lo = np.where((lag >= 0) & (lag < n_kernel), lag, n_kernel)
    lag_hi = np.where((lag + 1 >= 0) & (lag + 1 < n_kernel), lag + 1, n_kernel)
    design = (1.0 - weight)[:, None] * padded[lag_lo] + weight[:, None] * padded[lag_hi]
    design[:, ~responds] = 0.0
    return design


def temporal_responses(activations, onsets_s, frame_times_s, hrf_model="spm",
                       oversampling=50) -> np.ndarray:
    """HRF-convolved responses of many neurons, sampled at the BOLD frame times.

    For every neuron this equals nilearn's
    ``compute_regressor(np.vstack([onsets_s, zeros, activations[:, k]]), hrf_model,
    frame_times_s, oversampling=oversampling)[0][:, 0]``.

    Parameters
    ----------
    activations : array-like of shape (n_words, n_neurons)
        Activation of each neuron for each word (impulse amplitudes).
    onsets_s : array-like of shape (n_words,)
        Word onsets in seconds on the run's clock (story onset already added).
    frame_times_s : array-like of shape (n_frames,)
        Frame times in seconds (see :func:`frame_times_s`).
    hrf_model : {"spm", "glover"}, default="spm"
        Canonical HRF.
    oversampling : int, default=50
        Fine-grid points per TR for the convolution.

    Returns
    -------
    responses : ndarray of shape (n_frames, n_neurons), float32
        Temporal responses, not z-scored (see :func:`zscore_time`). Computed in float64,
        in batches of neurons to bound the memory of the float64 temporaries.
    """
    activations = np.asarray(activations)
    onsets = np.asarray(onsets_s, dtype=np.float64)
    if activations.ndim != 2 or activations.shape[0] != onsets.shape[0]:
        raise LlmfbnError(
            "Activations and onsets do not match",
            expected=f"activations of shape (n_words, n_neurons) with n_words = "
                     f"{onsets.shape[0] if onsets.ndim == 1 else '?'} (one row per onset)",
            found=f"activations {activations.shape}, onsets {onsets.shape}",
        )
    design = hrf_design(onsets, frame_times_s, hrf_model=hrf_model,
                        oversampling=oversampling)
    n_frames, n_words = design.shape
    n_neurons = activations.shape[1]
    responses = np.empty((n_frames, n_neurons), dtype=np.float32)
    batch = max(1, _BATCH_BYTES // (8 * max(n_words + n_frames, 1)))
    for start in range(0, n_neurons, batch):
        block = np.asarray(activations[:, start:start + batch], dtype=np.float64)
        if not np.all(np.isfinite(block)):
            raise LlmfbnError(
                "Activations contain NaN or infinite values",
                found=f"non-finite values among neurons {start}..{start + block.shape[1] - 1}",
                todo="check the model's precision settings (e.g. use float32 instead of "
                     "float16)",
            )
        responses[:, start:start + batch] = design @ block
    return responses


def zscore_time(responses) -> np.ndarray:
    """Z-score each column over time.

    Parameters
    ----------
    responses : array-like of shape (n_frames, n_neurons) or (n_frames,)
        Time courses, time on axis 0.

    Returns
    -------
    zscored : ndarray of the same shape, float32
        ``(x - mean) / std`` per column (population std, ``ddof=0``), computed in float64.
        Columns whose std is below ``1e-8 * max(1, |mean|)`` (constant up to round-off)
        become all zero rather than NaN.
    """
    responses = np.asarray(responses)
    if responses.ndim not in (1, 2) or responses.shape[0] < 1:
        raise LlmfbnError("Responses must be a (n_frames, n_neurons) array",
                          found=f"shape {responses.shape}")
    squeeze = responses.ndim == 1
    data = responses[:, None] if squeeze else responses
    n_frames, n_columns = data.shape
    zscored = np.empty((n_frames, n_columns), dtype=np.float32)
    batch = max(1, _BATCH_BYTES // (8 * n_frames))
    for start in range(0, n_columns, batch):
        block = np.asarray(data[:, start:start + batch], dtype=np.float64)
        if not np.all(np.isfinite(block)):
            raise LlmfbnError("Responses contain NaN or infinite values",
                              found=f"non-finite values among columns {start}.."
                                    f"{start + block.shape[1] - 1}")
        mean = block.mean(axis=0)
        std = block.std(axis=0)
        constant = std < 1e-8 * np.maximum(1.0, np.abs(mean))
        scale = np.where(constant, np.inf, std)  # x / inf -> 0 for constant columns
        zscored[:, start:start + batch] = (block - mean) / scale
    return zscored[:, 0] if squeeze else zscored
