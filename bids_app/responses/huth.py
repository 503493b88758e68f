"""The Huth model: Lanczos downsampling of the word impulses and FIR delays.

``hrf_model="huth"`` is the alternative of the Huth lab (Huth et al. 2016, *Nature* 532:453):
no canonical HRF; the word-rate impulses are downsampled to the frame times with a Lanczos
filter (their ``lanczosinterp2D(data, oldtime, newtime, window=3, cutoff_mult=1.0)``), which
is the matrix ``H_lanczos`` (n_frames, n_words) of :func:`lanczos_design`, and the
haemodynamic lag is left to a finite impulse response (FIR) model: copies of the downsampled
response delayed by ``fir_delays`` frames (default 1, 2, 3, 4 TRs), zero-filled
(:func:`delay_frames`, their ``make_delayed``).
"""

from __future__ import annotations

import numpy as np

from bids_app.errors import LlmfbnError
from bids_app.responses.frames import (
    check_drop_outside,
    check_frame_times,
    check_onsets,
    kept_onsets,
)

__all__ = ["DEFAULT_FIR_DELAYS", "check_fir_delays", "delay_frames", "lanczos_design",
           "lanczos_kernel", "shift_into"]

#: Default FIR delays of the ``"huth"`` model, in frames (TRs), as in Huth et al. 2016.
DEFAULT_FIR_DELAYS = (1, 2, 3, 4)


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
        Word times in seconds, in any order, on the clock of the frames.
    frame_times_s : array-like of shape (n_frames,)
        Frame times in seconds (n_frames >= 2, see
        :func:`~bids_app.responses.frames.frame_times_s`), strictly increasing and, as
        Huth's code assumes, evenly spaced.
    window : int, default=3
        Lanczos lobes on each side: a word reaches frames within ``window * TR``.
    cutoff_mult : float, default=1.0
        Multiplier of the cutoff. With 1, the kernel's zeros fall on the other frames
        (a word at a frame time gives 1 at that frame, 0 at the others) and the filter
        passes frequencies up to the Nyquist frequency ``1 / (2 TR)``.
    drop_outside_s : float or None, default=None
        If given, words earlier than ``frame_times_s[0] - drop_outside_s`` or later than
        ``frame_times_s[-1]`` get an all-zero column
        (see :func:`~bids_app.responses.hrf.hrf_design`).

    Returns
    -------
    design : ndarray of shape (n_frames, n_words), float64
    """
    frame_times = check_frame_times(frame_times_s)
    onsets = check_onsets(onsets_s)
    if isinstance(cutoff_mult, bool) or not np.isscalar(cutoff_mult) or not (
            np.isfinite(cutoff_mult) and cutoff_mult > 0):
        raise LlmfbnError("cutoff_mult must be a positive number", found=repr(cutoff_mult))
    kept = kept_onsets(onsets, frame_times, check_drop_outside(drop_outside_s))
    # Huth's cutoff = 1 / mean(diff(newtime)) * cutoff_mult: the sampling rate of the frames.
    cutoff_hz = float(cutoff_mult) / float(np.mean(np.diff(frame_times)))
    design = lanczos_kernel(frame_times[:, None] - onsets[None, :], cutoff_hz, window)
    design[:, ~kept] = 0.0
    return design


def check_fir_delays(fir_delays) -> tuple[int, ...]:
    """FIR delays as a non-empty tuple of distinct ints (frames)."""
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


def shift_into(out, signal, delay) -> None:
    """``out[t] = signal[t - delay]`` where ``0 <= t - delay < n_frames``; ``out`` is zero.

    Parameters
    ----------
    out : ndarray of shape (n_frames, ...)
        All-zero destination, written in place.
    signal : ndarray of the shape of ``out``
        Time courses, time on axis 0.
    delay : int
        Delay in frames; negative values shift towards earlier frames.
    """
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
        ``fir_delays[i]`` frames (see
        :func:`~bids_app.responses.operators.response_column_labels`).
    """
    responses = np.asarray(responses)
    if responses.ndim != 2 or responses.shape[0] < 1:
        raise LlmfbnError("Responses must be a (n_frames, n_neurons) array",
                          found=f"shape {responses.shape}")
    delays = check_fir_delays(fir_delays)
    n_frames, n_neurons = responses.shape
    delayed = np.zeros((n_frames, n_neurons, len(delays)), dtype=responses.dtype)
    for i, delay in enumerate(delays):
        shift_into(delayed[:, :, i], responses, delay)
    return delayed.reshape(n_frames, n_neurons * len(delays))
