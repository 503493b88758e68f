"""Low-level stimulus regressors of a run: word rate and the audio envelope.

They enter the participant GLM beside the confounds, so that the atoms are credited only
with what the rate of words and the loudness of the sound do not explain. Both are built
with the canonical-HRF design of :func:`~bids_app.responses.hrf.hrf_design` (nilearn's
``compute_regressor``, events of duration 0), with the run's HRF (``spm`` for ``huth``,
which has no canonical HRF):

- ``wordrate``: a unit impulse at every word onset;
- ``envelope``: an impulse every 10 ms scaled by the RMS of the audio in that window
  (:func:`~bids_app.stimulus.audio.rms_envelope`), i.e. the broadband amplitude envelope.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bids_app.bids.naming import NUISANCE_REGRESSORS
from bids_app.responses.frames import DROP_OUTSIDE_S
from bids_app.responses.hrf import HRF_MODELS, hrf_design

__all__ = ["NUISANCE_REGRESSORS", "NUISANCE_TEXT", "acquisition_nuisance",
           "envelope_regressor", "nuisance_hrf", "word_rate_regressor"]

#: Each nuisance regressor in words (sidecars).
NUISANCE_TEXT = {
    "wordrate": "word rate: unit impulses at the word onsets convolved with the HRF",
    "envelope": "audio envelope: RMS of the story's audio in 10 ms windows (impulses scaled "
                "by it) convolved with the HRF; only in runs whose every story has a "
                "readable WAV file",
}

#: Events per call of :func:`hrf_design` (bounds its (n_frames, n_events) temporaries).
_EVENT_BATCH = 4096


def nuisance_hrf(hrf_model: str) -> str:
    """The canonical HRF of the nuisance regressors: ``hrf_model``, or ``spm`` for
    ``huth``."""
    return hrf_model if hrf_model in HRF_MODELS else "spm"


def _convolved(onsets_s, amplitudes, frame_times_s, hrf_model: str) -> np.ndarray:
    onsets = np.asarray(onsets_s, dtype=np.float64)
    amplitudes = np.asarray(amplitudes, dtype=np.float64)
    out = np.zeros(np.shape(frame_times_s)[0])
    for start in range(0, onsets.size, _EVENT_BATCH):
        part = slice(start, start + _EVENT_BATCH)
        out += hrf_design(onsets[part], frame_times_s, hrf_model=nuisance_hrf(hrf_model),
                          drop_outside_s=DROP_OUTSIDE_S) @ amplitudes[part]
    return out


def word_rate_regressor(onsets_s, frame_times_s, hrf_model: str = "spm") -> np.ndarray:
    """Word rate: unit impulses at the word onsets, convolved with the HRF.

    Equals nilearn's ``compute_regressor([onsets_s, 0, 1], hrf, frame_times_s,
    min_onset=-32)`` for the onsets within :data:`DROP_OUTSIDE_S` of the run (the others,
    words of a story's part heard in another run, are left out).

    Parameters
    ----------
    onsets_s : array-like of shape (n_words,)
        Word onsets in seconds on the run's clock.
    frame_times_s : array-like of shape (n_frames,)
        Frame times in seconds.
    hrf_model : {"spm", "glover", "huth"}
        The run's HRF (``huth`` -> ``spm``).

    Returns
    -------
    regressor : ndarray of shape (n_frames,), float64
    """
    return _convolved(onsets_s, np.ones(np.shape(onsets_s)[0]), frame_times_s, hrf_model)


def envelope_regressor(envelope, times_s, frame_times_s, hrf_model: str = "spm"
                       ) -> np.ndarray:
    """Audio envelope: impulses at ``times_s`` scaled by ``envelope``, convolved with the HRF.

    Parameters
    ----------
    envelope : array-like of shape (n_windows,)
        RMS of each audio window (:func:`~bids_app.stimulus.audio.rms_envelope`).
    times_s : array-like of shape (n_windows,)
        Window centres in seconds on the run's clock (the story's onset added).
    frame_times_s, hrf_model
        As in :func:`word_rate_regressor`.

    Returns
    -------
    regressor : ndarray of shape (n_frames,), float64
    """
    return _convolved(times_s, envelope, frame_times_s, hrf_model)


def acquisition_nuisance(acq, kinds, hrf_model: str, words: dict, envelopes: dict
                         ) -> pd.DataFrame:
    """The nuisance regressors of one acquisition, summed over the stories heard in it.

    Parameters
    ----------
    acq : Acquisition
        ``frame_times_s()`` and ``stories`` (``timings``, ``onset_s``, ``audio``).
    kinds : sequence of str
        Regressors asked for, among :data:`NUISANCE_REGRESSORS`.
    hrf_model : str
        The run's HRF.
    words : dict
        Story timing path -> :class:`~bids_app.stimulus.WordTimings`.
    envelopes : dict
        Audio path -> (times_s, rms) of the usable audio files; a story whose audio is not
        a key has none, and the run then gets no envelope column.

    Returns
    -------
    pandas.DataFrame of shape (n_frames, n_regressors)
        Columns in :data:`NUISANCE_REGRESSORS` order, each present when it could be made.
    """
    frame_times = acq.frame_times_s()
    columns = {}
    if "wordrate" in kinds:
        columns["wordrate"] = sum(
            word_rate_regressor(p.onset_s + words[p.timings].onsets_s, frame_times, hrf_model)
            for p in acq.stories)
    if "envelope" in kinds and acq.stories and all(p.audio in envelopes
                                                   for p in acq.stories):
        columns["envelope"] = sum(
            envelope_regressor(envelopes[p.audio][1], p.onset_s + envelopes[p.audio][0],
                               frame_times, hrf_model)
            for p in acq.stories)
    return pd.DataFrame(columns, index=pd.RangeIndex(frame_times.size, name="volume"))
