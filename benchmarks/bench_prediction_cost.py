"""What the network-prediction test adds to a subject's participant level (issue 9, item 8).

Times, on one thread, the two steps the test adds to ``workflow.participant`` at the
participant level's size (300 frames, 64 atoms, 30 confound columns, the 13 networks of the
Seitzman atlas): drawing the 100 surrogate blocks (``phase_randomised_blocks``, once per
model) and the split-half ridge of the atoms and every block on every network's signal
(``split_half_prediction``, once per subject). The network signals themselves are the
coupling null's (``bench_null_cost.py``). Median of ``--repeats``. Usage::

    python benchmarks/bench_prediction_cost.py --json r.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    import numpy as np
    import pandas as pd
    from threadpoolctl import threadpool_limits

    from bids_app.encoding.prediction import split_half_prediction
    from bids_app.group.null import DEFAULT_N_BLOCKS, phase_randomised_blocks

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--atoms", type=int, default=64)
    parser.add_argument("--confounds", type=int, default=30)
    parser.add_argument("--networks", type=int, default=13)
    parser.add_argument("--blocks", type=int, default=DEFAULT_N_BLOCKS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="append one JSON line here")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    n, k = args.frames, args.atoms
    atoms = rng.normal(size=(k, n)).cumsum(axis=1)
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    confounds = np.column_stack([rng.normal(size=(n, args.confounds - 1)), np.ones(n)])
    design = pd.DataFrame(np.column_stack([atoms.T, confounds]))
    signals = rng.normal(size=(n, args.networks))
    draw, fit = [], []
    with threadpool_limits(1):
        for _ in range(args.repeats):
            started = time.perf_counter()
            blocks = phase_randomised_blocks(atoms, np.zeros(n, int), args.blocks, 0)
            draw.append(time.perf_counter() - started)
            every = np.concatenate([atoms.T[None], blocks.transpose(0, 2, 1)])
            started = time.perf_counter()
            split_half_prediction(design, k, every, signals, [n])
            fit.append(time.perf_counter() - started)
    row = {"frames": n, "atoms": k, "confounds": args.confounds, "networks": args.networks,
           "blocks": args.blocks, "draw_blocks_s": float(np.median(draw)),
           "prediction_per_subject_s": float(np.median(fit)),
           "memory_blocks_mb": every.nbytes / 2 ** 20, "machine": platform.node(),
           "cpus": os.cpu_count(), "load": os.getloadavg()[0],
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    print(json.dumps(row))
    if args.json:
        with args.json.open("a") as stream:
            stream.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
