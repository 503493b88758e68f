"""A story's audio: reading a WAV file and its broadband amplitude envelope.

The envelope is the root mean square (RMS) of the waveform in consecutive windows of
:data:`ENVELOPE_WINDOW_S` (10 ms), all channels averaged first: the loudness of the sound
over time, on the audio's own clock (t = 0 at the first sample, which is the story's t = 0
for the word timings aligned to it).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

from bids_app.errors import LlmfbnError

__all__ = ["ENVELOPE_WINDOW_S", "audio_envelope", "read_wav", "rms_envelope", "usable_audio"]

LOGGER = logging.getLogger("llmfbn")

#: Window of the RMS envelope in seconds.
ENVELOPE_WINDOW_S = 0.01

#: Windows processed at a time (bounds the float64 temporaries for long recordings).
_WINDOW_BATCH = 65536

#: Full scale of integer WAV samples, so that every format lands in [-1, 1].
_FULL_SCALE = {np.dtype(np.uint8): 128.0, np.dtype(np.int16): 32768.0,
               np.dtype(np.int32): 2.0 ** 31, np.dtype(np.int64): 2.0 ** 63}

_TODO = ("give a readable PCM WAV file (convert e.g. with 'ffmpeg -i story.mp3 story.wav'), "
         "or leave the envelope out with --nuisance wordrate")


def read_wav(path) -> tuple[np.ndarray, int]:
    """The samples and sampling rate of a WAV file (scipy.io.wavfile).

    Parameters
    ----------
    path : str or os.PathLike
        A PCM or IEEE-float WAV file.

    Returns
    -------
    samples : ndarray of shape (n_samples,) or (n_samples, n_channels)
        As stored (memory-mapped when the format allows it); see :func:`rms_envelope`.
    rate : int
        Samples per second.

    Raises
    ------
    LlmfbnError
        The file does not exist, is not a WAV file scipy can read, or holds no sample.
    """
    from scipy.io import wavfile

    path = Path(path)
    if not path.is_file():
        raise LlmfbnError(f"audio file not found: {path}", expected="a WAV file",
                          found="no such file", todo=_TODO)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", wavfile.WavFileWarning)  # unknown chunks
            try:
                rate, samples = wavfile.read(path, mmap=True)
            except ValueError:          # e.g. 24-bit PCM cannot be memory-mapped
                rate, samples = wavfile.read(path)
    except (ValueError, OSError, EOFError) as err:
        raise LlmfbnError(f"cannot read the audio file {path}",
                          expected="a PCM or float WAV file (scipy.io.wavfile)",
                          found=f"{type(err).__name__}: {err}", todo=_TODO) from err
    if samples.shape[0] == 0 or rate <= 0:
        raise LlmfbnError(f"the audio file {path} holds no sound",
                          expected="samples at a positive rate",
                          found=f"{samples.shape[0]} samples at {rate} Hz", todo=_TODO)
    return samples, int(rate)


def rms_envelope(samples, rate: int, window_s: float = ENVELOPE_WINDOW_S
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Broadband amplitude envelope: RMS of the waveform in consecutive windows.

    Parameters
    ----------
    samples : array-like of shape (n_samples,) or (n_samples, n_channels)
        Waveform; integer samples are scaled to [-1, 1] by their full scale (unsigned 8-bit
        centred on 128), channels are averaged.
    rate : int
        Samples per second.
    window_s : float, default :data:`ENVELOPE_WINDOW_S`
        Window length in seconds (rounded to whole samples, at least one).

    Returns
    -------
    times_s : ndarray of shape (n_windows,), float64
        Centre of each window in seconds from the first sample.
    rms : ndarray of shape (n_windows,), float64
        Root mean square of each window (the last window may be shorter).
    """
    samples = np.asarray(samples)     # a view of a memory map: read window by window
    width = max(1, int(round(rate * window_s)))
    n_samples = samples.shape[0]
    n_windows = -(-n_samples // width)
    rms = np.empty(n_windows)
    for first in range(0, n_windows, _WINDOW_BATCH):
        last = min(n_windows, first + _WINDOW_BATCH)
        block = _as_mono(samples[first * width:last * width])
        squares = np.zeros((last - first) * width)
        squares[:block.size] = block ** 2
        counts = np.full(last - first, width)
        counts[-1] = block.size - (last - first - 1) * width
        rms[first:last] = np.sqrt(squares.reshape(-1, width).sum(axis=1) / counts)
    starts = np.arange(n_windows) * width
    ends = np.minimum(starts + width, n_samples)
    return (starts + ends) / 2.0 / rate, rms


def _as_mono(block: np.ndarray) -> np.ndarray:
    """float64 samples in [-1, 1], channels averaged."""
    values = np.asarray(block)
    dtype = values.dtype
    values = values.astype(np.float64)
    if dtype == np.uint8:
        values = values - 128.0
    values = values / _FULL_SCALE.get(dtype, 1.0)
    return values.mean(axis=1) if values.ndim == 2 else values


def audio_envelope(path, window_s: float = ENVELOPE_WINDOW_S
                   ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`rms_envelope` of the WAV file ``path`` (see :func:`read_wav` for errors)."""
    samples, rate = read_wav(path)
    return rms_envelope(samples, rate, window_s)


def usable_audio(path: Path | None, required: bool, story: str) -> Path | None:
    """``path`` if it is a readable WAV file; else None (logged) or an error.

    Parameters
    ----------
    path : pathlib.Path or None
        The audio named for a story (``stim_file`` of events.tsv, or the ``audio`` column
        of ``--stimuli``); None when none is named.
    required : bool
        Raise instead of returning None (the envelope was asked for explicitly).
    story : str
        The story, for the messages.

    Raises
    ------
    LlmfbnError
        ``required`` and the audio is not named, absent or unreadable.
    """
    if path is None:
        if required:
            raise LlmfbnError(f"--nuisance envelope needs the audio of {story}",
                              expected="a stim_file in events.tsv (relative to stimuli/) "
                              "or an audio column in --stimuli", found="none named",
                              todo=_TODO)
        LOGGER.info("No audio named for %s (events.tsv stim_file, --stimuli audio): its "
                    "envelope regressor is skipped", story)
        return None
    try:
        read_wav(path)
    except LlmfbnError as err:
        if required:
            raise
        LOGGER.warning("No readable audio for %s: its envelope regressor is skipped (%s)",
                       story, " ".join(str(err).split()))
        return None
    return path
