"""Group level: atom maps across subjects, coupling with FBNs, AN sub-groups, metrics.

1. :mod:`.stats`: :func:`one_sample_t` of each atom's effect maps across subjects and
   :func:`fdr_mask` within each group map.
2. :mod:`.coupling`: overlap of every thresholded atom map with every FBN
   (:func:`coupling_table`), the surrogate null's columns (:func:`add_null`, from
   :mod:`.null`) and the assignment of each atom to its best passing FBN (:func:`assign_atoms`);
   the same per subject (:func:`subject_assignments`); the network-level test of all atoms
   together (:func:`prediction_table`, from :mod:`.null`).
3. :mod:`.subgroups`: the AN sub-group of each coupled network (:class:`SubGroups`).
4. :mod:`.metrics` (brain side) and :mod:`.an_metrics` (AN side): organisation metrics.

Arrays: ``effects`` (n_subjects, n_atoms, n_voxels); group maps (n_atoms, n_voxels); voxels
in ``np.flatnonzero(mask)`` order, as in :class:`bids_app.atlases.FBNAtlas`. Atoms are
numbered from 1 in tables.
"""

from bids_app.bids.naming import NO_NETWORK
from bids_app.group.an_metrics import an_metrics, bootstrap_an_metrics
from bids_app.group.coupling import (
    SIGNS,
    add_null,
    assign_atoms,
    coupling_p_fwe,
    coupling_table,
    group_coupling,
    subject_assignments,
)
from bids_app.group.metrics import (
    N_BOOTSTRAP,
    bootstrap_diversity,
    diversity_metrics,
    organisation_metrics,
)
from bids_app.group.null import (
    DEFAULT_N_BLOCKS,
    DEFAULT_N_SURROGATES,
    PREDICTION_ALPHA,
    null_table,
    phase_randomised,
    phase_randomised_blocks,
    prediction_table,
)
from bids_app.group.stats import fdr_mask, one_sample_t
from bids_app.group.subgroups import (
    MEMBERSHIP_THRESHOLD,
    SubGroups,
    an_prior_penalty,
    choose_ridge,
    joint_network_effects,
    network_effects,
    separate_network_effects,
)

__all__ = [
    "DEFAULT_N_BLOCKS",
    "DEFAULT_N_SURROGATES",
    "MEMBERSHIP_THRESHOLD",
    "NO_NETWORK",
    "N_BOOTSTRAP",
    "PREDICTION_ALPHA",
    "SIGNS",
    "SubGroups",
    "add_null",
    "an_metrics",
    "an_prior_penalty",
    "assign_atoms",
    "bootstrap_an_metrics",
    "bootstrap_diversity",
    "choose_ridge",
    "coupling_p_fwe",
    "coupling_table",
    "diversity_metrics",
    "fdr_mask",
    "group_coupling",
    "joint_network_effects",
    "network_effects",
    "null_table",
    "one_sample_t",
    "organisation_metrics",
    "phase_randomised",
    "phase_randomised_blocks",
    "prediction_table",
    "separate_network_effects",
    "subject_assignments",
]
