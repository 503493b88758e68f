"""The atoms stage's identifier and the fixed tuning constants of its learner.

Every constant here shapes the result of a fit, so :data:`ALGORITHM_ID` (a cache key, and
``DictionaryLearning.Algorithm`` in the sidecars) must change whenever one of them does.
The modules of :mod:`bids_app.atoms` read them as ``settings.NAME`` when they run, so a test
may change one with ``monkeypatch.setattr(settings, NAME, value)``.
"""

from __future__ import annotations

#: Identifies the stage (``patterns-v3``) and its learner with all the settings below
#: (``torch-fista-bcd-v4``: v3 with the in-span FastICA seeding and Anderson-accelerated
#: epochs), in cache keys and sidecars: change it with any of them.
ALGORITHM_ID = "patterns-v3+torch-fista-bcd-v4"

# Since v4 (2026-12-03) the learner seeds by k-means++ rotated within its span by FastICA
# and accelerates its batch epochs by Anderson mixing, stopped over two epochs: on 11
# demo-size problems x 3 seeds 14-31 epochs (median 21) instead of 38-60 (median 49), the
# objective lower on average on every problem (27 of 33 fits); on the 11 planted datasets
# every planted network coupled and no other, F1 as v3's; on 20 null datasets nothing
# coupled (benchmarks/results/dictionary.md, "v4"). The v3 learner is SEEDING =
# "kmeans++", ANDERSON_MEMORY = 0, STOP_WINDOW = 1. FastICA on the leading components
# ("auto", "ica") loses small planted groups (same file).

#: The settings below that give the v3 learner (k-means++ seeding, plain epochs, one-epoch
#: stopping rule), for comparisons (benchmarks, tests).
V3_LEARNER = {"SEEDING": "kmeans++", "ANDERSON_MEMORY": 0, "STOP_WINDOW": 1}

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
#: Memory m of the Anderson acceleration of the batch epochs (AA(m) mixes the atoms of the
#: last m + 1 epochs, see :mod:`bids_app.atoms.anderson`); 0: plain steps (v3).
ANDERSON_MEMORY = 3
#: Accepted batch epochs over which the relative objective change is compared with
#: ``window * tol`` to stop (1: consecutive epochs, the plain steps' rule of v3); 2 with
#: Anderson steps, which gain unevenly from one epoch to the next.
STOP_WINDOW = 2

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
