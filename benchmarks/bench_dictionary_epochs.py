"""Epochs and objective of the dictionary learner, as it is and in its other variants.

Issue 10 item 4: the demo-size problem in <= 15 epochs at the same or lower objective. Fits
the responding rows of saved response matrices (the ``x.npy`` a run of ``llmfbn-demo``
leaves under ``WORK/llmfbn/responses/<key>/``), as ``learn_atoms`` does (64 atoms, alpha
0.1, one torch thread), for several learner seeds, once per variant (``--variants``;
``default`` and ``plain`` unless said):

- ``default``: the learner as it is (since ``torch-fista-bcd-v6``: in-span FastICA seeding,
  searched quasi-Newton (L-BFGS) steps, the four-epoch stopping rule);
- ``v5``: the v5 learner (searched conjugate steps, otherwise the same);
- ``plain``: the v3 learner (k-means++ seeding, plain batch epochs, stopped when the
  objective changes by < tol between two epochs);
- ``v4``: the v4 learner (``span-ica-accelerated`` below);
- ``accelerated``: FastICA seeding on the leading components (``settings.SEEDING =
  "auto"``: FastICA or k-means++, whichever starts lower; Anderson steps
  (``STEPS = "anderson"``, AA(3)); ``STOP_WINDOW = 2``: stopped when the objective fell
  by < 2 x tol over two accepted epochs);
- ``accelerated-w1``: the same with the one-epoch stopping rule (``STOP_WINDOW = 1``);
- ``span-ica-accelerated``: ``accelerated`` but seeded by the k-means++ atoms rotated
  within their span by FastICA (``SEEDING = "span-ica"``).

Each fit runs in this process, one after another; one JSON line per fit goes to ``--json``
(epochs, rejected steps, the rows coded by the step searches in passes over the rows,
objective, wall seconds, load average), and a summary
table to stdout. Usage::

    python benchmarks/bench_dictionary_epochs.py RUN/work/llmfbn/responses/*/x.npy \\
        --seeds 0 1 2 --json benchmarks/results/dictionary_epochs.jsonl
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time

import numpy as np

from bids_app.atoms import settings
from bids_app.atoms.learn import responding_rows
from bids_app.atoms.learner import DictionaryLearner

ACCELERATED = {"SEEDING": "auto", "STEPS": "anderson", "ANDERSON_MEMORY": 3, "STOP_WINDOW": 2}
VARIANTS = {"default": {}, "plain": settings.V3_LEARNER, "v4": settings.V4_LEARNER,
            "v5": settings.V5_LEARNER,
            "accelerated": ACCELERATED,
            "accelerated-w1": {**ACCELERATED, "STOP_WINDOW": 1},
            "span-ica-accelerated": {**ACCELERATED, "SEEDING": "span-ica"}}


def fit_once(x, rows, seed: int, variant: str, n_atoms: int = 64, alpha: float = 0.1):
    """One fit of ``variant`` (a key of VARIANTS): a dict of what it measured."""
    saved = {name: getattr(settings, name) for name in VARIANTS[variant]}
    try:
        for name, value in VARIANTS[variant].items():
            setattr(settings, name, value)
        started = time.perf_counter()
        learner = DictionaryLearner(n_atoms=n_atoms, alpha=alpha, random_state=seed,
                                    n_threads=1).fit(x, rows=rows)
        wall = time.perf_counter() - started
    finally:
        for name, value in saved.items():
            setattr(settings, name, value)
    return {"variant": variant, "seed": seed, "epochs": learner.n_iter_,
            "rejected": sum(h.get("accepted") is False for h in learner.history_),
            "search_passes": round(sum(h.get("searched_rows", 0) for h in learner.history_)
                                   / len(rows), 2),
            "converged": bool(learner.converged_), "objective": float(learner.objective_),
            "wall_s": round(wall, 2), "load_avg": round(os.getloadavg()[0], 2)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("matrices", nargs="+", help="x.npy response matrices")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=["default", "plain"],
                        choices=VARIANTS)
    parser.add_argument("--n-atoms", type=int, default=64)
    parser.add_argument("--json", help="append one JSON line per fit to this file")
    args = parser.parse_args(argv)
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    records = []
    for path in args.matrices:
        x = np.load(path, mmap_mode="r")
        rows = responding_rows(x)
        for seed in args.seeds:
            for variant in args.variants:
                record = {"matrix": path, "shape": [int(rows.size), int(x.shape[1])],
                          "date": stamp, "machine": platform.machine(),
                          "cpus": os.cpu_count(),
                          **fit_once(x, rows, seed, variant, n_atoms=args.n_atoms)}
                records.append(record)
                print(json.dumps(record), flush=True)
                if args.json:
                    with open(args.json, "a") as out:
                        out.write(json.dumps(record) + "\n")
    print("\nmatrix | variant | epochs (per seed) | objective mean (per seed) | wall s mean")
    for path in args.matrices:
        for variant in args.variants:
            rec = [r for r in records if r["matrix"] == path and r["variant"] == variant]
            objectives = [r["objective"] for r in rec]
            each = ", ".join(f"{value:.2f}" for value in objectives)
            print(f"{path} | {variant} | {[r['epochs'] for r in rec]} | "
                  f"{np.mean(objectives):.2f} ({each}) | "
                  f"{np.mean([r['wall_s'] for r in rec]):.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
