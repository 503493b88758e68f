"""Participant-level voxel-wise encoding model of BOLD on fixed regressors (atoms).

Stage 3 of the pipeline (see ``design.md``): for one participant, the preprocessed BOLD of
each run is regressed, voxel by voxel, on the K atom time courses of that run, with the
run's nuisance confounds, its low-level stimulus regressors (word rate, audio envelope) and a
per-run intercept in the same ordinary-least-squares model.

The steps follow what nilearn's ``FirstLevelModel(noise_model="ols")`` does for
concatenated runs:

1. per run, keep the volumes that are not non-steady-state and carry the stimulus
   (``sample_mask``, :func:`used_volumes`),
2. per run, scale each voxel to percent signal change around its mean over the kept volumes,
3. stack the runs; design = atoms (shared columns) + confounds, nuisance regressors and
   intercept of each run (block-diagonal, zero in the other runs' rows),
4. OLS with a pseudo-inverse, in float64, over blocks of voxels so memory stays bounded,
5. the reduced model (no atoms) gives the partial R² of the atoms and the nuisance
   regressors' maps.

Modules, one idea each:

- :mod:`.confounds`: the confound strategy (nilearn's keywords and their prose) and the
  loader of a run's fMRIPrep confounds;
- :mod:`.ols`: least squares of many voxels on one design, in blocks of voxels
  (patch :data:`bids_app.encoding.ols.VOXEL_BLOCK` to change the block size);
- :mod:`.design`: a run's data, their checks and the stacked design matrix;
- :mod:`.nuisance`: the maps of the stimulus nuisance regressors (a contrast over runs);
- :mod:`.participant`: the participant model and its cross-validated correlation;
- :mod:`.prediction`: the split-half prediction of each network's signal by all atoms (the
  network-level coupling test's participant statistic).
"""

from bids_app.encoding.confounds import (
    CONFOUND_STRATEGY,
    confound_strategy_text,
    load_run_confounds,
    load_run_motion,
)
from bids_app.encoding.design import RunData, design_matrix, used_volumes
from bids_app.encoding.nuisance import NuisanceMaps
from bids_app.encoding.ols import VOXEL_BLOCK, OLSResult, fit_ols, percent_signal_change
from bids_app.encoding.participant import (
    GLM_MODES,
    MIN_EXTRA_VOLUMES,
    ParticipantFit,
    cross_validated_r,
    fit_participant,
    minimum_volumes,
    network_effects_of,
    partial_network_effects,
)
from bids_app.encoding.prediction import PREDICTION_RIDGE, half_split, split_half_prediction

__all__ = [
    "CONFOUND_STRATEGY",
    "GLM_MODES",
    "NuisanceMaps",
    "MIN_EXTRA_VOLUMES",
    "OLSResult",
    "PREDICTION_RIDGE",
    "ParticipantFit",
    "RunData",
    "VOXEL_BLOCK",
    "confound_strategy_text",
    "cross_validated_r",
    "design_matrix",
    "fit_ols",
    "network_effects_of",
    "partial_network_effects",
    "fit_participant",
    "half_split",
    "load_run_confounds",
    "load_run_motion",
    "minimum_volumes",
    "percent_signal_change",
    "split_half_prediction",
    "used_volumes",
]
