"""The run's clock: frame times, word onsets and which onsets a run keeps.

Both response designs (:mod:`.hrf`, :mod:`.huth`) take word onsets and frame times in
seconds on the same clock and check them here.
"""

from __future__ import annotations

import numpy as np

from bids_app.errors import LlmfbnError

__all__ = ["DROP_OUTSIDE_S", "FRAME_RULES", "STORY_TAIL_S", "check_drop_outside",
           "check_frame_times", "check_onsets", "frame_times_s", "kept_onsets", "story_frames"]


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


def check_frame_times(frame_times) -> np.ndarray:
    """Frame times as float64 (n_frames,), n_frames >= 2, finite, strictly increasing."""
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


def check_onsets(onsets_s) -> np.ndarray:
    """Onsets as float64 (n_events,) finite times in seconds."""
    onsets = np.asarray(onsets_s, dtype=np.float64)
    if onsets.ndim != 1:
        raise LlmfbnError("Onsets must be a 1-D array of times in seconds",
                          expected="shape (n_events,)", found=f"shape {onsets.shape}")
    if not np.all(np.isfinite(onsets)):
        raise LlmfbnError("Onsets must be finite times in seconds",
                          found=f"{int(np.sum(~np.isfinite(onsets)))} non-finite onset(s)",
                          todo="check the word timings")
    return onsets


def check_drop_outside(drop_outside_s) -> float | None:
    """``drop_outside_s`` as None or a non-negative float of seconds."""
    if drop_outside_s is None:
        return None
    if isinstance(drop_outside_s, bool) or not np.isscalar(drop_outside_s) or not (
            np.isfinite(drop_outside_s) and drop_outside_s >= 0):
        raise LlmfbnError("drop_outside_s must be None or a non-negative number of seconds",
                          found=repr(drop_outside_s))
    return float(drop_outside_s)


def kept_onsets(onsets, frame_times, drop_outside_s) -> np.ndarray:
    """Onsets inside ``[t0 - drop_outside_s, t_last]`` (all of them when it is None).

    Parameters
    ----------
    onsets : ndarray of shape (n_events,), float64
        Onsets in seconds (see :func:`check_onsets`).
    frame_times : ndarray of shape (n_frames,), float64
        Frame times in seconds (see :func:`check_frame_times`).
    drop_outside_s : float or None
        Seconds before the first frame that still count (see :func:`check_drop_outside`).

    Returns
    -------
    kept : ndarray of shape (n_events,), bool
    """
    if drop_outside_s is None:
        return np.ones(onsets.shape, dtype=bool)
    return (onsets >= frame_times[0] - drop_outside_s) & (onsets <= frame_times[-1])


#: Words (and audio) further than this before a run's first frame (s) do not reach its TRs
#: (a story split over runs).
DROP_OUTSIDE_S = 32.0

#: Seconds after a story's last word onset whose frames still carry its response: the
#: canonical HRF peaks at ~5 s and has returned to baseline (< 1 % of its peak) by ~16 s.
STORY_TAIL_S = 16.0

#: The frames that enter dictionary learning and the participant GLM (``--frames``), in
#: words (the sidecars' ``FramesRule``).
FRAME_RULES = {
    "story": f"frames that carry a story: from a story's first word onset to its last word "
             f"onset + {STORY_TAIL_S:g} s (haemodynamic tail), for any story heard in the run; "
             "non-steady-state volumes are removed per subject in the GLM",
    "all": "every frame of every run (non-steady-state volumes removed per subject in the "
           "GLM)",
}


def story_frames(word_onsets_s: list[np.ndarray], frame_times: np.ndarray,
                 tail_s: float = STORY_TAIL_S) -> np.ndarray:
    """Which frames carry a story: from a story's first word to its last word plus the
    haemodynamic tail, for any of the stories heard in the run.

    Parameters
    ----------
    word_onsets_s : list of arrays of shape (n_words,)
        Word onsets of each story heard in the run, in seconds on the run's clock (the
        story's onset in the run already added).
    frame_times : array of shape (n_frames,)
        Frame times in seconds on the same clock.
    tail_s : float, default :data:`STORY_TAIL_S`
        Seconds after the last word onset that still count.

    Returns
    -------
    used : ndarray of bool, shape (n_frames,)
    """
    frame_times = check_frame_times(frame_times)
    used = np.zeros(frame_times.shape, dtype=bool)
    for onsets in word_onsets_s:
        onsets = np.asarray(onsets, dtype=np.float64)
        if onsets.size:
            used |= (frame_times >= onsets.min()) & (frame_times <= onsets.max() + tail_s)
    return used
