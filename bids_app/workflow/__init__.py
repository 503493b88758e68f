"""The two analysis levels, wiring the stages together (no algorithm lives here).

Data flows one way: stimulus (word timings) -> features (AN activations per word) ->
responses (HRF, TR grid) -> atoms (dictionary learning) -> encoding (participant maps) ->
group (coupling with networks) -> report. Stimulus-level results are computed once per story
set and model and cached in the work directory; participant jobs running in parallel share
them.

- :mod:`.preflight`: every input checked before the first write, for both levels;
- :mod:`.stimulus`: cached responses and atoms per model (work directory), the stimulus
  nuisance regressors;
- :mod:`.participant`: ``llmfbn ... participant``;
- :mod:`.group`: ``llmfbn ... group``.
"""

from bids_app.workflow.group import run_group
from bids_app.workflow.participant import run_participant
from bids_app.workflow.preflight import preflight_group, preflight_participant
from bids_app.workflow.stimulus import compute_atoms, compute_responses, nuisance_regressors

__all__ = ["compute_atoms", "compute_responses", "nuisance_regressors", "preflight_group",
           "preflight_participant", "run_group", "run_participant"]
