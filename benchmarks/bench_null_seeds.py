"""The coupling null on null datasets: how many of N seeds couple an atom (issue 9, item 5).

For each seed, the synthetic generator writes a null dataset (no planted signal: same
stories, noise, drifts, motion and physiology as the demo) and llmfbn runs on it with its
defaults (story frames, word rate and envelope regressors, 1,000 surrogate atoms), except
``--no-atom-stability`` and ``--no-reports`` (they do not change a coupling). The family-wise
error of the coupling test is the share of seeds with at least one coupled atom; issue 9
asks for at most 1 of 20. A network can also be coupled without an atom, by the
network-prediction test (all atoms together, ``networkprediction.tsv``): a seed counts as
a false positive when either route couples anything (``n_coupled_networks``).

Usage (from the repository root; each seed takes a few minutes on 2 cores)::

    python benchmarks/bench_null_seeds.py --seeds 20 --subjects 4 --root /scratch/null \
        --json benchmarks/results/null_seeds.json
    python benchmarks/bench_null_seeds.py --seeds 1 --subjects 3 --root /tmp/n   # smoke

``--planted`` runs the planted dataset instead (the other side: every planted network
should be found).
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


def run_seed(root: Path, seed: int, subjects: int, planted: bool, profile: str,
             nprocs: int) -> dict:
    """Generate one dataset, run both levels, return what was coupled."""
    import pandas as pd

    from bids_app.bids.naming import NO_NETWORK, group_file
    from bids_app.cli.run import main
    from bids_app.synthetic import make_dataset

    folder = root / f"seed-{seed:02d}"
    bids = folder / "bids"
    started = time.monotonic()
    if not (bids / "sourcedata" / "llmfbn_truth.json").is_file():
        make_dataset(bids, n_subjects=subjects, planted=planted, seed=seed, profile=profile)
    out = folder / "out"
    common = ["-w", str(folder / "work"), "--nprocs", str(nprocs), "--no-reports"]
    for level, extra in (("participant", ["--no-atom-stability"]), ("group", [])):
        code = main([str(bids), str(out), level, *common, *extra])
        if code:
            raise SystemExit(f"seed {seed}: llmfbn {level} exited with {code}")
    assignments = pd.read_csv(group_file(out, "minilm", "assignments", ".tsv"), sep="\t")
    coupling = pd.read_csv(group_file(out, "minilm", "coupling", ".tsv"), sep="\t")
    networks = pd.read_csv(group_file(out, "minilm", "networksubgroups", ".tsv"), sep="\t")
    prediction_file = group_file(out, "minilm", "networkprediction", ".tsv")
    prediction = (pd.read_csv(prediction_file, sep="\t") if prediction_file.is_file()
                  else None)
    coupled = assignments[assignments["network"] != NO_NETWORK]
    n_tests = len(coupling)
    return {"seed": seed, "planted": planted, "subjects": subjects, "profile": profile,
            "n_coupled_atoms": int(len(coupled)),
            "networks": sorted(set(coupled["network"])),
            "min_p_fwe": float(min(1.0, coupling["p_null"].min() * n_tests)),
            "n_coupled_networks": int(len(networks)),
            "networks_any_route": sorted(map(str, networks["network"])),
            "prediction_min_p_fwe": (None if prediction is None
                                     else float(prediction["p_fwe"].min())),
            "seconds": round(time.monotonic() - started, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--profile", choices=["demo", "second"], default="demo")
    parser.add_argument("--planted", action="store_true")
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--json", type=Path, help="append one JSON line per seed here")
    parser.add_argument("--code", default=None, help="label of the code version, recorded")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from bids_app.cli.run import setup_logging

    setup_logging(0)
    args.root.mkdir(parents=True, exist_ok=True)
    results = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        row = run_seed(args.root, seed, args.subjects, args.planted, args.profile, args.nprocs)
        if args.code:
            row["code"] = args.code
        row.update(machine=platform.node(), cpus=os.cpu_count(),
                   date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                   load=os.getloadavg()[0])
        results.append(row)
        print(json.dumps(row), flush=True)
        if args.json:
            with args.json.open("a") as stream:
                stream.write(json.dumps(row) + "\n")
    with_atoms = sum(r["n_coupled_atoms"] > 0 for r in results)
    with_networks = sum(r["n_coupled_networks"] > 0 for r in results)
    print(f"{with_atoms} of {len(results)} seeds coupled at least one atom; "
          f"{with_networks} coupled at least one network by either route")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
