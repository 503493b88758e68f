"""``llmfbn-demo OUTDIR``: the whole pipeline on a synthetic dataset, on CPU, in minutes.

Writes the synthetic Narratives-like dataset (two original stories, six subjects, fMRIPrep
derivatives, planted ground truth; see :mod:`bids_app.synthetic`) under ``OUTDIR/bids``, runs
the participant and group levels into ``OUTDIR/bids/derivatives/llmfbn`` with the bundled
all-MiniLM-L6-v2 model, prints the atoms coupled to networks and compares them with the
planted truth.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from bids_app.caches import use_writable_caches
from bids_app.cli.run import main as llmfbn_main
from bids_app.cli.run import setup_logging

LOGGER = logging.getLogger("llmfbn")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmfbn-demo",
        description="Generate a synthetic naturalistic-listening dataset with planted ground "
        "truth and run llmfbn on it end to end (CPU, a few minutes).")
    parser.add_argument("outdir", type=Path, help="folder for the dataset, outputs and cache")
    parser.add_argument("--null", action="store_true",
                        help="generate the null dataset (no planted signal)")
    parser.add_argument("--subjects", type=int, default=6, help="number of subjects (>= 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generator")
    parser.add_argument("--nprocs", type=int, default=None, help="CPU threads")
    parser.add_argument("--profile", choices=["demo", "second"], default="demo",
                        help="'demo': two stories, TR 1.5 s, 4 mm voxels; 'second': another "
                        "story in one run, TR 2.0 s, 6 mm voxels (the second planted dataset)")
    parser.add_argument("--no-atom-stability", action="store_true",
                        help="skip the three atom-stability refits (faster)")
    parser.add_argument("--check", action="store_true",
                        help="exit with status 3 unless the coupled networks are exactly the "
                        "planted ones (none for --null): a smoke test of an installation")
    return parser


def print_recovery(truth: dict, output: Path) -> None:
    """The AN sub-groups against the planted functional truth, one row per network."""
    import pandas as pd

    from bids_app.bids.naming import group_file
    from bids_app.recovery import recovery_table

    members = pd.read_csv(group_file(output, "minilm", "members", ".tsv"), sep="\t")
    scores = pd.read_csv(group_file(output, "minilm", "scores", ".tsv"), sep="\t")
    table = recovery_table(truth, members, scores)
    print("AN sub-groups vs the planted functional truth (targets: F1 >= 0.7, AUC >= 0.95, "
          "size <= 3 x truth):")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def planted_and_coupled(bids_dir: Path, output_dir: Path, label: str = "minilm"):
    """The networks planted in a synthetic dataset and those its group level coupled (by
    an atom or by the network-prediction test: the networks with a sub-group), both sorted
    lists (``planted`` is empty for the null dataset)."""
    import pandas as pd

    from bids_app.bids.naming import group_file

    truth = json.loads((Path(bids_dir) / "sourcedata" / "llmfbn_truth.json").read_text())
    planted = sorted(n["network"] for n in truth["networks"])
    networks = pd.read_csv(group_file(output_dir, label, "networksubgroups", ".tsv"),
                           sep="\t")
    return planted, sorted(set(networks["network"].astype(str)))


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(0)
    use_writable_caches()  # the dataset generator loads the model (transformers) first
    started = time.monotonic()
    outdir = args.outdir.absolute()
    bids_dir = outdir / "bids"
    truth_file = bids_dir / "sourcedata" / "llmfbn_truth.json"
    if args.subjects < 3:
        print("llmfbn-demo: error: --subjects must be at least 3 (the group level needs 3)",
              file=sys.stderr)
        return 2
    if truth_file.is_file():
        LOGGER.info("[demo 1/3] Reusing the synthetic dataset in %s", bids_dir)
    elif bids_dir.exists() and any(bids_dir.iterdir()):
        print(f"llmfbn-demo: error: {bids_dir} exists and is not a llmfbn synthetic dataset; "
              "choose an empty or new OUTDIR", file=sys.stderr)
        return 1
    else:
        from bids_app.synthetic import make_dataset

        LOGGER.info("[demo 1/3] Generating the synthetic dataset in %s", bids_dir)
        make_dataset(bids_dir, n_subjects=args.subjects, planted=not args.null, seed=args.seed,
                     profile=args.profile)
    output = bids_dir / "derivatives" / "llmfbn"
    common = ["-w", str(outdir / "work")]
    if args.nprocs:
        common += ["--nprocs", str(args.nprocs)]
    stability = ["--no-atom-stability"] if args.no_atom_stability else []
    LOGGER.info("[demo 2/3] llmfbn %s %s participant", bids_dir, output)
    code = llmfbn_main([str(bids_dir), str(output), "participant", *common, *stability])
    if code:
        return code
    LOGGER.info("[demo 3/3] llmfbn %s %s group", bids_dir, output)
    code = llmfbn_main([str(bids_dir), str(output), "group", *common])
    if code:
        return code
    from bids_app.bids.naming import group_file

    planted, coupled = planted_and_coupled(bids_dir, output)
    print("Planted networks: " + (", ".join(planted) if planted else "none (null dataset)"))
    print("Coupled networks: " + (", ".join(coupled) if coupled else "none"))
    if planted:
        print_recovery(json.loads(truth_file.read_text()), output)
    print(f"Group report: {group_file(output, 'minilm', 'report', '.html')}")
    print(f"Demo finished in {time.monotonic() - started:.0f} s")
    if args.check and coupled != planted:
        print("llmfbn-demo: check failed: the coupled networks are not the planted ones",
              file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
