"""The atoms stage's identifier and the fixed tuning constants of its learner.

Every constant here shapes the result of a fit, so :data:`ALGORITHM_ID` (a cache key, and
``DictionaryLearning.Algorithm`` in the sidecars) must change whenever one of them does.
The modules of :mod:`bids_app.atoms` read them as ``settings.NAME`` when they run, so a test
may change one with ``monkeypatch.setattr(settings, NAME, value)``.
"""

from __future__ import annotations

#: Identifies the stage (``patterns-v3``) and its learner with all the settings below
#: (``torch-fista-bcd-v6``: v5 with quasi-Newton (L-BFGS) directions instead of conjugate
#: ones), in cache keys and sidecars: change it with any of them.
ALGORITHM_ID = "patterns-v3+torch-fista-bcd-v6"

# Since v4 (2026-12-03) the learner seeds by k-means++ rotated within its span by FastICA
# (FastICA on the leading components, "auto" or "ica", loses small planted groups). v4
# accelerated its batch epochs by Anderson mixing; since v5 (2026-12-03) they step along
# a conjugate direction for a length searched on a subsample, and stop when the objective
# fell by less than 3.5e-4 per epoch over four epochs: on 11 demo-size problems x 3 seeds
# 12-18 epochs (median 14; <= 15 in 28 of 33 fits) against v4's 14-31 (21) and v3's 38-60
# (49), the objective below v3's in all 33 fits; the searches code 3.3-5.3 passes' worth
# of rows, so a fit takes about 1.15x v4's wall time (benchmarks/results/dictionary.md,
# "v5"). Since v6 (2026-12-03) the direction searched is an L-BFGS direction: 12-16
# epochs (median 13) on those 33 fits and 22 held-out ones, <= 15 at or below v3's
# objective in 53 of 55 (v5: 48), the searches coding about 3 passes' worth of rows
# (v5: 4) (benchmarks/results/dictionary.md, "v6").

#: The settings below that give the v3 learner (k-means++ seeding, plain epochs, one-epoch
#: stopping rule), the v4 learner (in-span FastICA seeding, AA(3) epochs) and the v5
#: learner, for comparisons (benchmarks, tests).
V3_LEARNER = {"SEEDING": "kmeans++", "STEPS": "plain", "STOP_WINDOW": 1, "STOP_TOL": 1e-4,
              "SETTLED_WINDOW": 0}
V4_LEARNER = {"SEEDING": "span-ica", "STEPS": "anderson", "STOP_WINDOW": 2, "STOP_TOL": 1e-4,
              "SETTLED_WINDOW": 0}
V5_LEARNER = {"SEEDING": "span-ica", "STEPS": "conjugate-search", "STOP_WINDOW": 4,
              "STOP_TOL": 3.5e-4, "SETTLED_WINDOW": 2}

# -- initial atoms
#: "kmeans++": greedy k-means++ on rows; "auto": the FastICA and the k-means++ atoms
#: (:mod:`bids_app.atoms.seeding`), keeping those whose lasso codes of the tuning rows
#: reach the lower objective; "ica": FastICA (k-means++ when the subsample cannot carry it);
#: "span-ica": the k-means++ atoms rotated within their span by FastICA.
SEEDING = "span-ica"
#: FastICA iterations at most, and its tolerance on the unmixing rows' change.
ICA_MAX_ITER = 200
ICA_TOL = 1e-4

# -- sparse coding (lasso by FISTA, stopped on the per-row duality gap / ||x||^2)
#: Duality-gap tolerance in batch epochs (float32).
GAP_TOL_FIT = 1e-6
#: ... in online epochs (the atoms move after every mini-batch).
GAP_TOL_ONLINE = 1e-4
#: FISTA iterations per mini-batch in online epochs.
MAX_ITER_ONLINE = 100
#: Duality-gap tolerance of the final codes and of ``transform`` (float64).
GAP_TOL_FINAL = 1e-11
#: FISTA iterations per chunk while learning.
MAX_ITER_FIT = 300
#: FISTA iterations of the final codes.
MAX_ITER_FINAL = 20000
#: FISTA iterations between duality-gap checks.
CHECK_EVERY = 5

# -- dictionary update
#: Most passes of block coordinate descent per batch epoch.
BCD_PASSES = 20
#: How a batch epoch steps from its plain step (BCD's atoms for the epoch's codes):
#: "plain" (v3), "anderson" (AA(ANDERSON_MEMORY), v4), "conjugate-search" (a conjugate
#: direction, its length searched on a subsample: :mod:`bids_app.atoms.steps`, v5) or
#: "quasi-newton-search" (an L-BFGS direction, its length searched likewise, v6).
STEPS = "quasi-newton-search"
#: (s, y) pairs of the L-BFGS directions (from the last LBFGS_MEMORY epochs; 3 and 8 did
#: no better on the demo-size problems).
LBFGS_MEMORY = 5
#: Memory m of the Anderson steps (AA(m) mixes the atoms of the last m + 1 epochs, see
#: :mod:`bids_app.atoms.anderson`).
ANDERSON_MEMORY = 3
#: Step lengths (in plain steps) tried after 1, in order while the objective falls.
SEARCH_LENGTHS = (2, 4, 8, 16)
#: Rows the step length is searched on: this fraction of the phase's rows, at least
#: SEARCH_MIN_ROWS (or all), at most SEARCH_MAX_ROWS.
SEARCH_FRACTION = 0.1
SEARCH_MIN_ROWS = 1000
SEARCH_MAX_ROWS = 8192
#: Duality-gap tolerance of the subsample's codes in a search (as GAP_TOL_FIT).
SEARCH_GAP_TOL = 1e-6
#: Accepted batch epochs over which the relative objective change is compared with
#: ``window * tol`` to stop (1: consecutive epochs, the plain steps' rule of v3; 2 with
#: v4's Anderson steps); 4 with searched steps, which gain unevenly from one epoch to the
#: next (a long step, then a short one).
STOP_WINDOW = 4
#: ``tol`` of a learner made without one: the mean relative change of the objective per
#: epoch over the window below which it stops (1e-4 in v3 and v4).
STOP_TOL = 3.5e-4
#: A fit also stops when the objective changed by less than min(tol, SETTLED_TOL) per
#: epoch over SETTLED_WINDOW accepted epochs (v4's rule; 0: not used): a problem that
#: settles in a few epochs (the 100k benchmark) then stops without waiting for the
#: four-epoch window.
SETTLED_WINDOW = 2
SETTLED_TOL = 1e-4

# -- rows, memory and threads
#: Rows drawn for the initialisation (and for the warm-up epochs when X has at least twice
#: as many).
INIT_SAMPLE = 20000
#: Rows used to pick alpha from ``target_sparsity``.
TUNE_SAMPLE = 4000
#: Rows per chunk (fewer, larger operations).
DEFAULT_CHUNK = 32768
#: Re-tunings of alpha (``target_sparsity``) before it is kept fixed.
MAX_RETUNES = 5
#: n_rows * n_atoms below which one CPU thread is used.
SMALL_PROBLEM = 2 ** 20

# -- restarts of wasted atoms and splits of rotated pairs
#: |cos| above which the weaker of two atoms is re-initialised.
DUPLICATE_CORR = 0.9
#: Batch epochs (per phase) that may restart wasted atoms or split pairs.
MAX_RESTART_ROUNDS = 3
#: Code energy, relative to the median atom's, of a rarely used atom.
RARE_ENERGY = 0.05
#: Rows whose coding residuals re-initialise atoms.
N_PROBE = 16384
#: Fraction of a pair's ANs coded by both atoms above which the pair is a rotated pair.
COACTIVE_FRACTION = 0.6
#: ANs the less used atom of a rotated pair needs.
MIN_PAIR_ROWS = 10
