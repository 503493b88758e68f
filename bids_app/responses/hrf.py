"""Canonical-HRF design: nilearn's regressor of every word impulse, one column per word.

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
from bids_app.responses.frames import (
    check_drop_outside,
    check_frame_times,
    check_onsets,
    kept_onsets,
)

__all__ = ["HRF_MODELS", "hrf_design"]

#: HRF models understood by :func:`hrf_design`, mapped to nilearn's kernel functions.
HRF_MODELS = {"spm": spm_hrf, "glover": glover_hrf}


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


def _fine_grid(frame_times, min_onset_s, oversampling):
    """nilearn's ``frame_times_high_res`` (``_sample_condition``), formula for formula."""
    n_frames = frame_times.size
    mini, maxi = frame_times.min(), frame_times.max()
    n_high_res = (n_frames - 1) * 1.0 / (maxi - mini)
    n_high_res *= (maxi * (1 + 1.0 / (n_frames - 1)) - mini - min_onset_s) * oversampling
    n_high_res += 1
    return np.linspace(mini + min_onset_s, maxi * (1 + 1.0 / (n_frames - 1)),
                       np.rint(n_high_res).astype(int))


def _checked_fine_grid(frame_times, min_onset_s, oversampling) -> np.ndarray:
    """:func:`_fine_grid`, raising if it does not span the frame times."""
    grid = _fine_grid(frame_times, min_onset_s, oversampling)
    if grid.size < 2 or grid[-1] < frame_times[-1] or grid[0] > frame_times[0]:
        raise LlmfbnError(
            "Frame times outside the HRF convolution grid",
            expected="frame times whose last value is >= 0 and min_onset_s <= 0 "
                     "(nilearn's fine grid spans [t0 + min_onset, t_last * (1 + 1/(n-1))])",
            found=f"grid [{grid[0]}, {grid[-1]}] s, frames [{frame_times[0]}, "
                  f"{frame_times[-1]}] s",
            todo="check StartTime and the number of volumes",
        )
    return grid


def _warn_early_onsets(onsets, kept, grid_start_s) -> None:
    """nilearn's warning for kept onsets before the fine grid (attributed to the caller of
    :func:`hrf_design`)."""
    early = kept & (onsets < grid_start_s)
    if early.any():
        warnings.warn(
            f"{int(early.sum())} onset(s) are earlier than {grid_start_s} s; "
            "as in nilearn they are placed at the start of the convolution grid",
            UserWarning, stacklevel=3,
        )


def _sampled_impulses(grid, frame_times, onsets, kept, kernel) -> np.ndarray:
    """Convolved unit impulses at the onsets, linearly interpolated at the frame times.

    Parameters
    ----------
    grid : ndarray of shape (n_grid,), float64
        nilearn's fine time grid in seconds (:func:`_checked_fine_grid`).
    frame_times : ndarray of shape (n_frames,), float64
        Frame times in seconds.
    onsets : ndarray of shape (n_events,), float64
        Impulse onsets in seconds.
    kept : ndarray of shape (n_events,), bool
        Onsets that may respond; the others get an all-zero column.
    kernel : ndarray of shape (n_kernel,), float64
        HRF sampled on the fine grid's step.

    Returns
    -------
    design : ndarray of shape (n_frames, n_events), float64
    """
    n_grid = grid.size
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
        (see :func:`~bids_app.responses.frames.frame_times_s`).
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
    frame_times = check_frame_times(frame_times_s)
    onsets = check_onsets(onsets_s)
    if isinstance(oversampling, bool) or int(oversampling) < 1:
        raise LlmfbnError("oversampling must be a positive integer", found=repr(oversampling))
    oversampling = int(oversampling)  # as compute_regressor does
    min_onset_s = float(min_onset_s)
    drop_outside_s = check_drop_outside(drop_outside_s)
    kept = kept_onsets(onsets, frame_times, drop_outside_s)
    if drop_outside_s is not None:
        min_onset_s = min(min_onset_s, -drop_outside_s)

    grid = _checked_fine_grid(frame_times, min_onset_s, oversampling)
    _warn_early_onsets(onsets, kept, frame_times[0] + min_onset_s)

    # The minimal frame spacing, as nilearn's _calculate_tr, sets the kernel's time step.
    t_r = float(np.min(np.diff(frame_times)))
    kernel = np.asarray(kernel_fn(t_r, oversampling), dtype=np.float64)
    return _sampled_impulses(grid, frame_times, onsets, kept, kernel)
