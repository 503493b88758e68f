"""The atoms stage: representative temporal patterns ("atoms") of all artificial neurons.

Sparse dictionary learning on the AN responses X (n_neurons, n_trs): :func:`learn_atoms`
runs the stage (its outputs go to ``atoms/``) with :class:`DictionaryLearner`, a torch
learner of scikit-learn's ``DictionaryLearning`` objective on CPU or CUDA that streams X
from memory maps. :data:`ALGORITHM_ID` identifies the stage and all its fixed settings
(:mod:`bids_app.atoms.settings`) in cache keys and sidecars.

Modules: :mod:`~.learn` (the stage), :mod:`~.learner` (the learner and its algorithm),
:mod:`~.epochs`, :mod:`~.anderson`, :mod:`~.seeding`, :mod:`~.lasso`, :mod:`~.update`,
:mod:`~.restarts`, :mod:`~.rows`, :mod:`~.resources`, :mod:`~.scores`, :mod:`~.settings`.
"""

from bids_app.atoms.learn import Atoms, atom_stability, learn_atoms, responding_rows

# isort: split
from bids_app.atoms.learn import response_projections
from bids_app.atoms.learner import DictionaryLearner
from bids_app.atoms.scores import dictionary_objective, match_atoms
from bids_app.atoms.settings import ALGORITHM_ID

__all__ = ["ALGORITHM_ID", "Atoms", "DictionaryLearner", "atom_stability",
           "dictionary_objective", "learn_atoms", "match_atoms", "responding_rows",
           "response_projections"]
