"""What the coupling null adds to a subject's participant level at 2 mm (issue 9, item 8).

One 2 mm whole-brain run (nilearn's MNI152 2 mm brain mask: 235,375 voxels; 300 volumes of
random BOLD around a baseline, 64 random smooth atoms, fMRIPrep-like confounds) is fitted by
``fit_participant`` as the participant level does, in its own process each time:

- ``off``: the maps only (``--null-surrogates 0``);
- ``on``: the maps, plus what the null adds in ``workflow.participant._fit_subject``: the
  atlas on the subject's grid (``load_fbn_atlas``), the network-mean signals accumulated in
  the same pass over the voxels (``pools``), N phase-randomised surrogates and their effects
  on every network's signal (``network_effects_of``).

Each process prints its wall time per step and its peak resident memory (VmHWM). Usage::

    python benchmarks/bench_null_cost.py --surrogates 1000 --json r.json
    python benchmarks/bench_null_cost.py --grid tiny                  # smoke (8 mm)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _one(mode: str, grid: str, n_surrogates: int, n_volumes: int, n_atoms: int) -> dict:
    import nibabel as nib
    import numpy as np
    import pandas as pd
    from nilearn.datasets import load_mni152_brain_mask
    from threadpoolctl import threadpool_limits

    from bids_app.encoding import RunData, fit_participant, network_effects_of
    from bids_app.group.null import phase_randomised

    img = load_mni152_brain_mask(resolution=2)
    data = np.asarray(img.dataobj) > 0
    affine = img.affine.copy()
    if grid == "tiny":
        data = data[::4, ::4, ::4]
        affine[:3, :3] *= 4
    mask_img = nib.Nifti1Image(data.astype(np.uint8), affine)
    n_voxels = int(data.sum())
    rng = np.random.default_rng(0)
    bold = (600 + rng.standard_normal((n_volumes, n_voxels), dtype=np.float32) * 6)
    atoms = np.cumsum(rng.standard_normal((n_volumes, n_atoms)), axis=0)
    atoms /= np.linalg.norm(atoms, axis=0)
    t = np.arange(n_volumes)
    confounds = pd.DataFrame(
        np.column_stack([rng.standard_normal((n_volumes, 16))]
                        + [np.cos(np.pi * (2 * t + 1) * (k + 1) / (2 * n_volumes))
                           for k in range(4)]),
        columns=[f"c{k}" for k in range(20)])
    run = RunData(bold=bold, confounds=confounds, sample_mask=np.arange(3, n_volumes),
                  atoms=atoms, name="task-x")
    seconds = {}
    with threadpool_limits(1):               # as each subject of the participant level
        started = time.monotonic()
        pools = atlas = None
        if mode == "on":
            from bids_app.atlases import load_fbn_atlas

            atlas = load_fbn_atlas("seitzman", mask_img)
            masks = np.asarray(atlas.masks, dtype=np.float64)
            pools = masks / np.maximum(masks.sum(axis=1, keepdims=True), 1.0)
            seconds["atlas"] = time.monotonic() - started
        fitting = time.monotonic()
        fit = fit_participant([run], glm="separate", pools=pools)
        seconds["fit"] = time.monotonic() - fitting
        if mode == "on":
            nulling = time.monotonic()
            surrogates = phase_randomised(atoms.T, np.zeros(n_volumes), n_surrogates, 0).T
            design = fit.design
            effects = np.vstack([
                network_effects_of(design, n_atoms, design.iloc[:, :n_atoms],
                                   fit.network_signals),
                network_effects_of(design, n_atoms, surrogates[run.sample_mask],
                                   fit.network_signals)])
            assert effects.shape == (n_atoms + n_surrogates, len(atlas.network_names))
            seconds["surrogates"] = time.monotonic() - nulling
        seconds["total"] = time.monotonic() - started
    status = Path("/proc/self/status").read_text()
    peak_kb = int(re.search(r"VmHWM:\s+(\d+)", status).group(1))
    return {"mode": mode, "grid": grid, "n_voxels": n_voxels, "n_volumes": n_volumes,
            "n_atoms": n_atoms, "n_surrogates": n_surrogates if mode == "on" else 0,
            "seconds": {k: round(v, 2) for k, v in seconds.items()},
            "peak_mb": round(peak_kb / 1024, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--surrogates", type=int, default=1000)
    parser.add_argument("--volumes", type=int, default=300)
    parser.add_argument("--atoms", type=int, default=64)
    parser.add_argument("--grid", choices=["2mm", "tiny"], default="2mm")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", choices=["on", "off"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_one(args.child, args.grid, args.surrogates, args.volumes,
                              args.atoms)))
        return 0
    rows = []
    for _ in range(args.repeat):
        for mode in ("off", "on"):
            out = subprocess.run(
                [sys.executable, __file__, "--child", mode, "--grid", args.grid,
                 "--surrogates", str(args.surrogates), "--volumes", str(args.volumes),
                 "--atoms", str(args.atoms)], check=True, capture_output=True, text=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)})
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row.update(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                       load=os.getloadavg()[0], machine=platform.node(), cpus=os.cpu_count())
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
