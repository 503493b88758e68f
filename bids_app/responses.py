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

``hrf_model="huth"`` is the alternative of the Huth lab (Huth et al. 2016, *Nature* 532:453):
no canonical HRF; the word-rate impulses are downsampled to the frame times with a Lanczos
filter (their ``lanczosinterp2D(data, oldtime, newtime, window=3, cutoff_mult=1.0)``), which
is the matrix ``H_lanczos`` (n_frames, n_words) of :func:`lanczos_design`, and the
haemodynamic lag is left to a finite impulse response (FIR) model: copies of the downsampled
response delayed by ``fir_delays`` frames (default 1, 2, 3, 4 TRs), zero-filled
(:func:`delay_frames`, their ``make_delayed``). Each neuron then has one column per delay;
the columns are **neuron-major** (column ``k * n_delays + i`` is neuron ``k`` delayed by
``fir_delays[i]`` frames; see :func:`response_column_labels`), so that the columns of a
contiguous block of neurons are contiguous. (Huth's ``make_delayed`` is delay-major.)
"""

from __future__ import annotations

import warnings

import numpy as np
from nilearn.glm.first_level import glover_hrf, spm_hrf

from bids_app.errors import LlmfbnError

__all__ = ["DEFAULT_FIR_DELAYS", "HRF_MODELS", "RESPONSE_MODELS", "delay_frames",
           "frame_times_s", "hrf_design", "lanczos_design", "lanczos_kernel",
           "n_response_columns", "response_column_labels", "response_operator",
           "temporal_responses",
           "zscore_time"]

#: HRF models understood by :func:`hrf_design`, mapped to nilearn's kernel functions.
HRF_MODELS = {"spm": spm_hrf, "glover": glover_hrf}

#: Response models understood by :func:`temporal_responses`: the canonical HRFs of
#: :data:`HRF_MODELS` and ``"huth"`` (Lanczos downsampling + FIR delays).
RESPONSE_MODELS = ("glover", "huth", "spm")

#: Default FIR delays of the ``"huth"`` model, in frames (TRs), as in Huth et al. 2016.
DEFAULT_FIR_DELAYS = (1, 2, 3, 4)

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
    if hrf_model == "huth":
        raise LlmfbnError(
            "hrf_design builds canonical-HRF designs only",
            expected=f"one of {sorted(HRF_MODELS)}", found="'huth'",
            todo="for the Huth model use lanczos_design and delay_frames, or "
                 "temporal_responses(..., hrf_model='huth')",
        )
    if not isinstance(hrf_model, str) or hrf_model not in HRF_MODELS:
        raise LlmfbnError(
            "Unknown HRF model", expected=f"one of {sorted(HRF_MODELS)}",
            found=repr(hrf_model), todo="choose one of the listed HRF models",
        )
    return HRF_MODELS[hrf_model]


def _check_response_model(hrf_model):
    if not isinstance(hrf_model, str) or hrf_model not in RESPONSE_MODELS:
        raise LlmfbnError(
            "Unknown HRF model", expected=f"one of {sorted(RESPONSE_MODELS)}",
            found=repr(hrf_model), todo="choose one of the listed HRF models",
        )
    return hrf_model


def _check_onsets(onsets_s):
    onsets = np.asarray(onsets_s, dtype=np.float64)
    if onsets.ndim != 1:
        raise LlmfbnError("Onsets must be a 1-D array of times in seconds",
                          expected="shape (n_events,)", found=f"shape {onsets.shape}")
    if not np.all(np.isfinite(onsets)):
        raise LlmfbnError("Onsets must be finite times in seconds",
                          found=f"{int(np.sum(~np.isfinite(onsets)))} non-finite onset(s)",
                          todo="check the word timings")
    return onsets


def _check_drop_outside(drop_outside_s):
    if drop_outside_s is None:
        return None
    if isinstance(drop_outside_s, bool) or not np.isscalar(drop_outside_s) or not (
            np.isfinite(drop_outside_s) and drop_outside_s >= 0):
        raise LlmfbnError("drop_outside_s must be None or a non-negative number of seconds",
                          found=repr(drop_outside_s))
    return float(drop_outside_s)


def _kept_onsets(onsets, frame_times, drop_outside_s):
    """Onsets inside ``[t0 - drop_outside_s, t_last]`` (all of them when it is None)."""
    if drop_outside_s is None:
        return np.ones(onsets.shape, dtype=bool)
    return (onsets >= frame_times[0] - drop_outside_s) & (onsets <= frame_times[-1])


def _check_fir_delays(fir_delays):
    if isinstance(fir_delays, (str, bytes)) or not np.iterable(fir_delays):
        raise LlmfbnError("fir_delays must be a sequence of integer delays in frames",
                          expected="e.g. (1, 2, 3, 4)", found=repr(fir_delays))
    delays = []
    for delay in fir_delays:
        if isinstance(delay, (bool, np.bool_)) or not isinstance(delay, (int, np.integer)):
            raise LlmfbnError("FIR delays must be integers (numbers of frames)",
                              expected="e.g. (1, 2, 3, 4)", found=repr(tuple(fir_delays)))
        delays.append(int(delay))
    if not delays or len(set(delays)) != len(delays):
        raise LlmfbnError("FIR delays must be a non-empty list of distinct integers",
                          expected="e.g. (1, 2, 3, 4)", found=repr(tuple(fir_delays)))
    return tuple(delays)


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
               min_onset_s=-24.0, *, drop_outside_s: float | None = None) -> np.ndarray:
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
    drop_outside_s : float or None, default=None
        If given (seconds, >= 0), onsets earlier than ``frame_times_s[0] - drop_outside_s``
        or later than ``frame_times_s[-1]`` are dropped (all-zero column) instead of being
        handled as nilearn does, and the fine grid starts at
        ``min(min_onset_s, -drop_outside_s)`` so that no kept onset is moved. Use it when
        the word list covers more than the run (a story spanning several runs).

    Returns
    -------
    design : ndarray of shape (n_frames, n_events), float64
        Unit-impulse responses sampled at the frame times. With ``drop_outside_s``, the
        kept columns equal nilearn's with ``min_onset = min(min_onset_s,
        -drop_outside_s)``.

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
    onsets = _check_onsets(onsets_s)
    if isinstance(oversampling, bool) or int(oversampling) < 1:
        raise LlmfbnError("oversampling must be a positive integer", found=repr(oversampling))
    oversampling = int(oversampling)  # as compute_regressor does
    min_onset_s = float(min_onset_s)
    drop_outside_s = _check_drop_outside(drop_outside_s)
    kept = _kept_onsets(onsets, frame_times, drop_outside_s)
    if drop_outside_s is not None:
        min_onset_s = min(min_onset_s, -drop_outside_s)

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
    early = kept & (onsets < frame_times[0] + min_onset_s)
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
    design[:, ~(responds & kept)] = 0.0
    return design


def lanczos_kernel(times_s, cutoff_hz, window=3) -> np.ndarray:
    """Lanczos kernel (windowed sinc) at the given time offsets.

    ``L(t) = window * sin(pi c t) * sin(pi c t / window) / (pi**2 c**2 t**2)`` with
    ``c = cutoff_hz``; ``L(0) = 1`` and ``L(t) = 0`` where ``|c t| > window``. This is the
    ``lanczosfun(cutoff, t, window)`` of Huth et al. (2016).

    Parameters
    ----------
    times_s : array-like of any shape
        Time offsets in seconds (frame time minus event time).
    cutoff_hz : float
        The kernel's rate in Hz: its zeros are at the non-zero multiples of
        ``1 / cutoff_hz`` seconds, and it passes frequencies up to ``cutoff_hz / 2``.
    window : int, default=3
        Number of sinc lobes on each side; the kernel spans ``|t| <= window / cutoff_hz``.

    Returns
    -------
    values : ndarray of the shape of ``times_s``, float64
    """
    if not np.isfinite(cutoff_hz) or cutoff_hz <= 0:
        raise LlmfbnError("The Lanczos cutoff must be a positive frequency in Hz",
                          found=repr(cutoff_hz))
    window = _check_lanczos_window(window)
    scaled = np.asarray(times_s, dtype=np.float64) * float(cutoff_hz)
    # np.sinc(x) = sin(pi x) / (pi x), equal to 1 at 0 and finite for tiny x; the product
    # sinc(x) * sinc(x / window) is the formula above.
    values = np.sinc(scaled) * np.sinc(scaled / window)
    return np.where(np.abs(scaled) > window, 0.0, values)


def _check_lanczos_window(window):
    if isinstance(window, (bool, np.bool_)) or not isinstance(window, (int, np.integer)) \
            or window < 1:
        raise LlmfbnError("The Lanczos window must be a positive integer number of lobes",
                          expected="e.g. 3", found=repr(window))
    return int(window)


def lanczos_design(onsets_s, frame_times_s, window=3, cutoff_mult=1.0, *,
                   drop_outside_s: float | None = None) -> np.ndarray:
    """Lanczos downsampling matrix from word onsets to frame times (Huth et al. 2016).

    ``design[t, j] = lanczos_kernel(frame_times_s[t] - onsets_s[j], cutoff_hz, window)``
    with ``cutoff_hz = cutoff_mult / mean(diff(frame_times_s))``, so that
    ``design @ activations`` is Huth's
    ``lanczosinterp2D(activations, onsets_s, frame_times_s, window, cutoff_mult)``.

    Parameters
    ----------
    onsets_s : array-like of shape (n_words,)
        Word times in seconds, on the same clock as ``frame_times_s``; any order.
    frame_times_s : array-like of shape (n_frames,)
        Strictly increasing frame acquisition times in seconds, n_frames >= 2
        (see :func:`frame_times_s`); assumed evenly spaced, as Huth's code does.
    window : int, default=3
        Lanczos lobes on each side: a word reaches frames within ``window * TR``.
    cutoff_mult : float, default=1.0
        Multiplier of the cutoff. With 1, the kernel's zeros fall on the other frames
        (a word at a frame time gives 1 at that frame, 0 at the others) and the filter
        passes frequencies up to the Nyquist frequency ``1 / (2 TR)``.
    drop_outside_s : float or None, default=None
        If given, words earlier than ``frame_times_s[0] - drop_outside_s`` or later than
        ``frame_times_s[-1]`` get an all-zero column (see :func:`hrf_design`).

    Returns
    -------
    design : ndarray of shape (n_frames, n_words), float64
    """
    frame_times = _check_frame_times(frame_times_s)
    onsets = _check_onsets(onsets_s)
    if isinstance(cutoff_mult, bool) or not np.isscalar(cutoff_mult) or not (
            np.isfinite(cutoff_mult) and cutoff_mult > 0):
        raise LlmfbnError("cutoff_mult must be a positive number", found=repr(cutoff_mult))
    kept = _kept_onsets(onsets, frame_times, _check_drop_outside(drop_outside_s))
    # Huth's cutoff = 1 / mean(diff(newtime)) * cutoff_mult: the sampling rate of the frames.
    cutoff_hz = float(cutoff_mult) / float(np.mean(np.diff(frame_times)))
    design = lanczos_kernel(frame_times[:, None] - onsets[None, :], cutoff_hz, window)
    design[:, ~kept] = 0.0
    return design


def _shift_into(out, signal, delay):
    """``out[t] = signal[t - delay]`` where ``0 <= t - delay < n_frames``; ``out`` is zero."""
    n_frames = signal.shape[0]
    if abs(delay) >= n_frames:
        return
    if delay >= 0:
        out[delay:] = signal[:n_frames - delay]
    else:
        out[:n_frames + delay] = signal[-delay:]


def delay_frames(responses, fir_delays=DEFAULT_FIR_DELAYS) -> np.ndarray:
    """FIR delayed copies of time courses, zero-filled (Huth's ``make_delayed``).

    Parameters
    ----------
    responses : array-like of shape (n_frames, n_neurons)
        Time courses on the frame grid, time on axis 0.
    fir_delays : sequence of int, default=(1, 2, 3, 4)
        Distinct delays in frames (TRs). A delay ``d`` gives ``x[t - d]`` at frame ``t``
        and zeros for the first ``d`` frames (last ``-d`` frames when ``d < 0``).

    Returns
    -------
    delayed : ndarray of shape (n_frames, n_neurons * n_delays), dtype of ``responses``
        Neuron-major: column ``k * n_delays + i`` is neuron ``k`` delayed by
        ``fir_delays[i]`` frames (see :func:`response_column_labels`).
    """
    responses = np.asarray(responses)
    if responses.ndim != 2 or responses.shape[0] < 1:
        raise LlmfbnError("Responses must be a (n_frames, n_neurons) array",
                          found=f"shape {responses.shape}")
    delays = _check_fir_delays(fir_delays)
    n_frames, n_neurons = responses.shape
    delayed = np.zeros((n_frames, n_neurons, len(delays)), dtype=responses.dtype)
    for i, delay in enumerate(delays):
        _shift_into(delayed[:, :, i], responses, delay)
    return delayed.reshape(n_frames, n_neurons * len(delays))


def _check_n_neurons(n_neurons):
    if isinstance(n_neurons, (bool, np.bool_)) or not isinstance(n_neurons, (int, np.integer)) \
            or n_neurons < 0:
        raise LlmfbnError("The number of neurons must be a non-negative integer",
                          found=repr(n_neurons))
    return int(n_neurons)


def n_response_columns(n_neurons, hrf_model="spm", fir_delays=DEFAULT_FIR_DELAYS) -> int:
    """Number of columns :func:`temporal_responses` returns for ``n_neurons`` neurons.

    Parameters
    ----------
    n_neurons : int
        Number of neurons (columns of the activations).
    hrf_model : {"spm", "glover", "huth"}, default="spm"
    fir_delays : sequence of int, default=(1, 2, 3, 4)
        FIR delays in frames; used only by ``"huth"``.

    Returns
    -------
    n_columns : int
        ``n_neurons`` for "spm" and "glover", ``n_neurons * len(fir_delays)`` for "huth".
    """
    n_neurons = _check_n_neurons(n_neurons)
    if _check_response_model(hrf_model) == "huth":
        return n_neurons * len(_check_fir_delays(fir_delays))
    return n_neurons


def response_column_labels(n_neurons, hrf_model="spm",
                           fir_delays=DEFAULT_FIR_DELAYS) -> np.ndarray:
    """The (neuron, delay) label of each column of :func:`temporal_responses`.

    Parameters
    ----------
    n_neurons : int
        Number of neurons (columns of the activations).
    hrf_model : {"spm", "glover", "huth"}, default="spm"
    fir_delays : sequence of int, default=(1, 2, 3, 4)
        FIR delays in frames; used only by ``"huth"``.

    Returns
    -------
    labels : ndarray of shape (n_columns, 2), int64
        ``labels[c] = (neuron index, delay in frames)`` of column ``c``. For "huth" the
        order is neuron-major: ``labels[k * n_delays + i] = (k, fir_delays[i])``. For
        "spm" and "glover" (one column per neuron, the HRF carries the lag) the delay is 0.
    """
    n_neurons = _check_n_neurons(n_neurons)
    neurons = np.arange(n_neurons, dtype=np.int64)
    if _check_response_model(hrf_model) == "huth":
        delays = np.asarray(_check_fir_delays(fir_delays), dtype=np.int64)
        return np.column_stack([np.repeat(neurons, delays.size),
                                np.tile(delays, n_neurons)])
    return np.column_stack([neurons, np.zeros(n_neurons, dtype=np.int64)])


def temporal_responses(activations, onsets_s, frame_times_s, hrf_model="spm",
                       oversampling=50, *, fir_delays=DEFAULT_FIR_DELAYS,
                       lanczos_window=3, cutoff_mult=1.0,
                       drop_outside_s: float | None = None) -> np.ndarray:
    """Responses of many neurons to their word activations, sampled at the frame times.

    For "spm" and "glover" and every neuron this equals nilearn's
    ``compute_regressor(np.vstack([onsets_s, zeros, activations[:, k]]), hrf_model,
    frame_times_s, oversampling=oversampling)[0][:, 0]``, i.e. ``hrf_design(...) @
    activations``. For "huth" it is
    ``delay_frames(lanczos_design(...) @ activations, fir_delays)``: Huth et al.'s Lanczos
    downsampling followed by FIR delays.

    Parameters
    ----------
    activations : array-like of shape (n_words, n_neurons)
        Activation of each neuron for each word (impulse amplitudes).
    onsets_s : array-like of shape (n_words,)
        Word onsets in seconds on the run's clock (story onset already added).
    frame_times_s : array-like of shape (n_frames,)
        Frame times in seconds (see :func:`frame_times_s`: RepetitionTime and StartTime).
    hrf_model : {"spm", "glover", "huth"}, default="spm"
        Canonical HRF ("spm", "glover"), or "huth": Lanczos downsampling + FIR delays.
    oversampling : int, default=50
        Fine-grid points per TR for the convolution ("spm", "glover" only).
    fir_delays : sequence of int, default=(1, 2, 3, 4)
        FIR delays in frames ("huth" only).
    lanczos_window : int, default=3
        Lanczos lobes on each side ("huth" only).
    cutoff_mult : float, default=1.0
        Multiplier of the Lanczos cutoff ("huth" only; see :func:`lanczos_design`).
    drop_outside_s : float or None, default=None
        If given, words earlier than ``frame_times_s[0] - drop_outside_s`` or later than
        the last frame contribute nothing (see :func:`hrf_design`); use it when the word
        list covers more than the run.

    Returns
    -------
    responses : ndarray of shape (n_frames, n_columns), float32
        Temporal responses, not z-scored (see :func:`zscore_time`). ``n_columns`` is
        ``n_neurons`` for "spm"/"glover" and ``n_neurons * len(fir_delays)`` for "huth",
        neuron-major (see :func:`n_response_columns`, :func:`response_column_labels`).
        Computed in float64, in batches of neurons to bound the memory of the float64
        temporaries.
    """
    hrf_model = _check_response_model(hrf_model)
    activations = np.asarray(activations)
    onsets = np.asarray(onsets_s, dtype=np.float64)
    if activations.ndim != 2 or activations.shape[0] != onsets.shape[0]:
        raise LlmfbnError(
            "Activations and onsets do not match",
            expected=f"activations of shape (n_words, n_neurons) with n_words = "
                     f"{onsets.shape[0] if onsets.ndim == 1 else '?'} (one row per onset)",
            found=f"activations {activations.shape}, onsets {onsets.shape}",
        )
    operator = response_operator(onsets, frame_times_s, hrf_model, oversampling,
                                 fir_delays=fir_delays, lanczos_window=lanczos_window,
                                 cutoff_mult=cutoff_mult, drop_outside_s=drop_outside_s)
    n_slots, n_frames, n_words = operator.shape
    n_neurons = activations.shape[1]
    responses = np.empty((n_frames, n_neurons * n_slots), dtype=np.float32)
    by_slot = responses.reshape(n_frames, n_neurons, n_slots)  # a view, neuron-major
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
        for slot in range(n_slots):
            by_slot[:, start:start + batch, slot] = operator[slot] @ block
    return responses


def response_operator(onsets_s, frame_times_s, hrf_model="spm", oversampling=50, *,
                      fir_delays=DEFAULT_FIR_DELAYS, lanczos_window=3, cutoff_mult=1.0,
                      drop_outside_s: float | None = None) -> np.ndarray:
    """The linear map from word activations to temporal responses.

    ``temporal_responses(activations, ...)[:, k * n_slots + s]`` equals
    ``operator[s] @ activations[:, k]`` for every neuron k: ``n_slots`` is 1 for "spm" and
    "glover" (``operator[0]`` is :func:`hrf_design`) and ``len(fir_delays)`` for "huth"
    (``operator[s]`` is :func:`lanczos_design` with its rows shifted by the s-th delay,
    zero-filled). The pipeline applies it where the activations are (e.g. on the GPU),
    so that only TR-level responses leave the device.

    Parameters are those of :func:`temporal_responses`.

    Returns
    -------
    operator : ndarray of shape (n_slots, n_frames, n_words), float64
    """
    hrf_model = _check_response_model(hrf_model)
    onsets = np.asarray(onsets_s, dtype=np.float64)
    if hrf_model == "huth":
        delays = _check_fir_delays(fir_delays)
        design = lanczos_design(onsets, frame_times_s, window=lanczos_window,
                                cutoff_mult=cutoff_mult, drop_outside_s=drop_outside_s)
        operator = np.zeros((len(delays),) + design.shape)
        for slot, delay in enumerate(delays):
            _shift_into(operator[slot], design, delay)
        return operator
    design = hrf_design(onsets, frame_times_s, hrf_model=hrf_model,
                        oversampling=oversampling, drop_outside_s=drop_outside_s)
    return design[None]


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

    Notes
    -----
    For "huth" responses each delayed copy is z-scored separately, over all frames
    including its zero-filled edge frames. Huth et al. z-score the downsampled signal
    before delaying it; to do exactly that, z-score
    ``temporal_responses(..., hrf_model="huth", fir_delays=(0,))`` and pass the result to
    :func:`delay_frames`. The two differ only through the ``d`` zero-filled frames of a
    delay ``d``.
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
