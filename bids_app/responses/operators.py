"""From word activations to the temporal responses of the neurons on the frame grid.

:func:`response_operator` is the linear map (one matrix per FIR slot) from a neuron's word
activations to its response at the frames, :func:`temporal_responses` applies it to many
neurons in batches, :func:`zscore_time` standardises the result over time, and
:func:`n_response_columns` / :func:`response_column_labels` say which column is which.

For "huth" each neuron has one column per FIR delay; the columns are **neuron-major**
(column ``k * n_delays + i`` is neuron ``k`` delayed by ``fir_delays[i]`` frames), so that
the columns of a contiguous block of neurons are contiguous. (Huth's ``make_delayed`` is
delay-major.)
"""

from __future__ import annotations

import numpy as np

from bids_app.errors import LlmfbnError
from bids_app.responses.hrf import hrf_design
from bids_app.responses.huth import DEFAULT_FIR_DELAYS, check_fir_delays, lanczos_design, shift_into

__all__ = ["BATCH_BYTES", "RESPONSE_MODELS", "n_response_columns", "response_column_labels",
           "response_operator", "temporal_responses", "zscore_time"]

#: Response models understood by :func:`temporal_responses`: the canonical HRFs of
#: :data:`~bids_app.responses.hrf.HRF_MODELS` and ``"huth"`` (Lanczos downsampling + FIR
#: delays).
RESPONSE_MODELS = ("glover", "huth", "spm")

#: Largest float64 temporary (bytes) made per batch of neurons (or columns) by
#: :func:`temporal_responses` and :func:`zscore_time`; keeps memory bounded for models with
#: hundreds of thousands of neurons.
BATCH_BYTES = 256 * 2**20


def _check_response_model(hrf_model):
    if not isinstance(hrf_model, str) or hrf_model not in RESPONSE_MODELS:
        raise LlmfbnError(
            "Unknown HRF model", expected=f"one of {sorted(RESPONSE_MODELS)}",
            found=repr(hrf_model), todo="choose one of the listed HRF models",
        )
    return hrf_model


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
        return n_neurons * len(check_fir_delays(fir_delays))
    return n_neurons


def response_column_labels(n_neurons, hrf_model="spm",
                           fir_delays=DEFAULT_FIR_DELAYS) -> np.ndarray:
    """The (neuron, delay) label of each column of :func:`temporal_responses`.

    Parameters are those of :func:`n_response_columns`.

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
        delays = np.asarray(check_fir_delays(fir_delays), dtype=np.int64)
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
        Frame times in seconds (see :func:`~bids_app.responses.frames.frame_times_s`:
        RepetitionTime and StartTime).
    hrf_model : {"spm", "glover", "huth"}, default="spm"
        Canonical HRF ("spm", "glover"), or "huth": Lanczos downsampling + FIR delays.
    oversampling : int, default=50
        Fine-grid points per TR for the convolution ("spm", "glover" only).
    fir_delays : sequence of int, default=(1, 2, 3, 4)
        FIR delays in frames ("huth" only).
    lanczos_window : int, default=3
        Lanczos lobes on each side ("huth" only).
    cutoff_mult : float, default=1.0
        Multiplier of the Lanczos cutoff ("huth" only; see
        :func:`~bids_app.responses.huth.lanczos_design`).
    drop_outside_s : float or None, default=None
        If given, words earlier than ``frame_times_s[0] - drop_outside_s`` or later than
        the last frame contribute nothing (see :func:`~bids_app.responses.hrf.hrf_design`);
        use it when the word list covers more than the run.

    Returns
    -------
    responses : ndarray of shape (n_frames, n_columns), float32
        Temporal responses, not z-scored (see :func:`zscore_time`). ``n_columns`` is
        ``n_neurons`` for "spm"/"glover" and ``n_neurons * len(fir_delays)`` for "huth",
        neuron-major (see :func:`n_response_columns`, :func:`response_column_labels`).
        Computed in float64, in batches of neurons (:data:`BATCH_BYTES`) to bound the
        memory of the float64 temporaries.
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
    batch = max(1, BATCH_BYTES // (8 * max(n_words + n_frames, 1)))
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
    "glover" (``operator[0]`` is :func:`~bids_app.responses.hrf.hrf_design`) and
    ``len(fir_delays)`` for "huth" (``operator[s]`` is
    :func:`~bids_app.responses.huth.lanczos_design` with its rows shifted by the s-th delay,
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
        delays = check_fir_delays(fir_delays)
        design = lanczos_design(onsets, frame_times_s, window=lanczos_window,
                                cutoff_mult=cutoff_mult, drop_outside_s=drop_outside_s)
        operator = np.zeros((len(delays),) + design.shape)
        for slot, delay in enumerate(delays):
            shift_into(operator[slot], design, delay)
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
        ``(x - mean) / std`` per column (population std, ``ddof=0``), computed in float64
        in batches of columns (:data:`BATCH_BYTES`). Columns whose std is below
        ``1e-8 * max(1, |mean|)`` (constant up to round-off) become all zero rather than NaN.

    Notes
    -----
    For "huth" responses each delayed copy is z-scored separately, over all frames
    including its zero-filled edge frames. Huth et al. z-score the downsampled signal
    before delaying it; to do exactly that, z-score
    ``temporal_responses(..., hrf_model="huth", fir_delays=(0,))`` and pass the result to
    :func:`~bids_app.responses.huth.delay_frames`. The two differ only through the ``d``
    zero-filled frames of a delay ``d``.
    """
    responses = np.asarray(responses)
    if responses.ndim not in (1, 2) or responses.shape[0] < 1:
        raise LlmfbnError("Responses must be a (n_frames, n_neurons) array",
                          found=f"shape {responses.shape}")
    squeeze = responses.ndim == 1
    data = responses[:, None] if squeeze else responses
    n_frames, n_columns = data.shape
    zscored = np.empty((n_frames, n_columns), dtype=np.float32)
    batch = max(1, BATCH_BYTES // (8 * n_frames))
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
