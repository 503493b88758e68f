"""Temporal responses of artificial neurons on the scanner clock.

Each neuron's temporal response is a train of impulses at the word onsets, scaled by the
neuron's activation for each word, convolved with a canonical haemodynamic response function
(HRF) and sampled at the BOLD frame times. The definition is exactly that of nilearn's
:func:`nilearn.glm.first_level.compute_regressor` for events of duration 0.

``hrf_model="huth"`` is the alternative of the Huth lab (Huth et al. 2016): Lanczos
downsampling of the word impulses to the frame times and finite impulse response (FIR)
delays instead of a canonical HRF; each neuron then has one column per delay, neuron-major.

Modules, one idea each:

- :mod:`.frames`: the run's clock (frame times, checks of onsets and frame times, which
  words a run keeps);
- :mod:`.hrf`: the canonical-HRF design, nilearn's regressor built step by step;
- :mod:`.huth`: the Lanczos kernel and design, FIR delays;
- :mod:`.operators`: the linear map from activations to responses, its application to many
  neurons, the column labels, and the z-scoring over time;
- :mod:`.stage`: the pipeline's responses stage: every AN of a model on every acquisition's
  TR grid (the frames that carry a story by default), written to an on-disk array within a
  memory budget;
- :mod:`.nuisance`: the low-level stimulus regressors of the GLM (word rate, audio
  envelope) on a run's frames.
"""

from bids_app.responses.frames import FRAME_RULES, STORY_TAIL_S, frame_times_s, story_frames
from bids_app.responses.hrf import HRF_MODELS, hrf_design
from bids_app.responses.huth import DEFAULT_FIR_DELAYS, delay_frames, lanczos_design, lanczos_kernel
from bids_app.responses.nuisance import (
    NUISANCE_TEXT,
    acquisition_nuisance,
    envelope_regressor,
    nuisance_hrf,
    word_rate_regressor,
)
from bids_app.responses.operators import (
    RESPONSE_MODELS,
    n_response_columns,
    response_column_labels,
    response_operator,
    temporal_responses,
    zscore_time,
)
from bids_app.responses.stage import frames_table, layer_chunks, used_frames, write_responses

__all__ = ["DEFAULT_FIR_DELAYS", "FRAME_RULES", "HRF_MODELS", "NUISANCE_TEXT",
           "RESPONSE_MODELS", "STORY_TAIL_S", "acquisition_nuisance", "delay_frames",
           "envelope_regressor", "frame_times_s", "frames_table", "hrf_design",
           "lanczos_design", "lanczos_kernel", "layer_chunks", "n_response_columns",
           "nuisance_hrf", "response_column_labels", "response_operator", "story_frames",
           "temporal_responses", "used_frames", "word_rate_regressor", "write_responses",
           "zscore_time"]
