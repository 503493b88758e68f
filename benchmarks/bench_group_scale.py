"""Group level at scale: peak memory and wall time against the time to read every subject's
maps once (issue 10, item 1).

Builds participant-level outputs of N subjects on a real grid cheaply: ``--distinct`` subjects
get their own random maps (llmfbn's writers, as ``tests/fakes.py``), the others are hard links
to them (same bytes, so the files cost no disk and no writing time; the group level still
reads, decompresses and streams every subject's files). Then it measures

1. the reading floor: nibabel reading and masking every subject's effect and t maps once
   (and the same with llmfbn's own reader, ISA-L's gzip streamed a block at a time);
2. the group level (``llmfbn OUT_DIR group --no-reports``) in its own process: wall time and
   peak resident memory (VmHWM; ``--nprocs 1`` so the one process holds everything).

Usage (from the repository root)::

    python benchmarks/bench_group_scale.py --subjects 24 --root /scratch/bench --json r.json
    python benchmarks/bench_group_scale.py --subjects 4 --grid tiny --root /tmp/b  # smoke

``--grid 2mm`` is nilearn's MNI152 2 mm brain mask (99 x 117 x 95, 235,375 voxels: the
Narratives scale); ``tiny`` every 4th voxel of it (8 mm) for smoke tests.
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

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_scale import prewarm  # noqa: E402  (the sandbox's lazily backed memory)

_PEAK = ("import re, sys\n"
         "from bids_app.cli.run import main\n"
         "code = main(sys.argv[1:])\n"
         "status = open('/proc/self/status').read()\n"
         "print('PEAK_KB', re.search(r'VmHWM:\\s+(\\d+)', status).group(1))\n"
         "sys.exit(code)\n")


def _mask(grid: str) -> nib.Nifti1Image:
    """nilearn's MNI152 2 mm brain mask, or every 4th voxel of it (8 mm) for ``tiny``."""
    from nilearn.datasets import load_mni152_brain_mask

    img = load_mni152_brain_mask(resolution=2)
    data = np.asarray(img.dataobj).astype(np.uint8)
    if grid == "2mm":
        return nib.Nifti1Image(data, img.affine)
    affine = img.affine.copy()
    affine[:3, :3] *= 4
    return nib.Nifti1Image(np.ascontiguousarray(data[::4, ::4, ::4]), affine)


def build(root: Path, n_subjects: int, distinct: int, n_atoms: int, grid: str) -> Path:
    """A BIDS stub with fMRIPrep brain masks and llmfbn participant outputs of
    ``n_subjects`` subjects; returns the output folder."""
    from tests.fakes import TASKS, fake_participant_outputs

    bids = root / "bids"
    func = bids / "derivatives" / "fmriprep" / "sub-001" / "func"
    func.mkdir(parents=True, exist_ok=True)
    (bids / "dataset_description.json").write_text(json.dumps(
        {"Name": "bench", "BIDSVersion": "1.9.0"}))
    mask = _mask(grid)
    for task in TASKS:
        nib.save(mask, func / f"sub-001_task-{task}_space-MNI152NLin2009cAsym_res-2_"
                              "desc-brain_mask.nii.gz")
    out = root / "out"
    labels = [f"{i:03d}" for i in range(1, n_subjects + 1)]
    first = labels[:distinct]
    fake_participant_outputs(bids, out, root / "scratch", first, n_atoms=n_atoms)
    for i, label in enumerate(labels[distinct:]):
        source = out / f"sub-{first[i % distinct]}"
        for path in source.rglob("*"):
            target = out / f"sub-{label}" / Path(str(path.relative_to(source)).replace(
                f"sub-{source.name[4:]}", f"sub-{label}"))
            if path.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(path, target)
    return out


def reading_floor(out: Path, reader: str = "nibabel") -> float:
    """Seconds to read and mask every subject's effect and t maps once: with nibabel
    (``np.asarray(img.dataobj, float32)[mask].T``, the floor the issue means) or with
    llmfbn's own streaming reader (``reader="llmfbn"``: ISA-L's gzip, a block of maps at
    a time)."""
    from bids_app.bids.images import masked_maps

    started = time.perf_counter()
    for subject in sorted(out.glob("sub-*")):
        maps = sorted(subject.glob("func/*_stat-effect_statmap.nii.gz")) + sorted(
            subject.glob("func/*_stat-t_statmap.nii.gz"))
        mask_path = next(subject.glob("func/*_mask.nii.gz"))
        mask = np.asarray(nib.load(mask_path).dataobj) > 0
        for path in maps:
            if reader == "llmfbn":
                masked_maps(path, mask)
            else:
                values = np.asarray(nib.load(path).dataobj, dtype=np.float32)[mask].T
                assert values.shape[1] == mask.sum()
    return time.perf_counter() - started


def group_run(bids: Path, out: Path, work: Path, nprocs: int, mem_gb: float) -> dict:
    """``llmfbn BIDS OUT group --no-reports`` in its own process: wall seconds, peak resident
    memory (VmHWM, MB), the read pass's and the bootstrap's seconds from its log, and the
    log itself (``stderr``). Raises RuntimeError when the run fails."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", _PEAK, str(bids), str(out), "group",
                          "-w", str(work), "--nprocs", str(nprocs), "--no-reports",
                          "--mem-gb", str(mem_gb)], capture_output=True, text=True, env=env,
                         timeout=3600)
    wall = time.perf_counter() - started
    if run.returncode:
        raise RuntimeError(run.stderr[-4000:])
    steps = {}
    for line in run.stderr.splitlines():
        found = re.search(r"read (\d+) of \1 subjects' maps \((\d+) s\)", line)
        if found:
            steps["read_pass_s"] = float(found.group(2))
        found = re.search(r"Bootstrap intervals.*: ([\d.]+) s", line)
        if found:
            steps["bootstrap_s"] = float(found.group(1))
    return {"wall_s": round(wall, 1), "peak_rss_mb": round(int(re.search(
        r"PEAK_KB (\d+)", run.stdout).group(1)) / 1024, 1), **steps, "stderr": run.stderr}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=24)
    parser.add_argument("--distinct", type=int, default=6)
    parser.add_argument("--atoms", type=int, default=64)
    parser.add_argument("--grid", choices=("2mm", "tiny"), default="2mm")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--nprocs", type=int, default=1)
    parser.add_argument("--mem-gb", type=float, default=8.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--prewarm-gb", type=float, default=3.0,
                        help="GiB touched in a throw-away process before each measurement "
                        "(bench_scale.prewarm); 0: none")
    args = parser.parse_args(argv)
    args.root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    out = build(args.root, args.subjects, min(args.distinct, args.subjects), args.atoms,
                args.grid)
    record = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": f"{platform.processor() or platform.machine()}, "
                         f"{os.cpu_count()} CPUs", "load_1min": os.getloadavg()[0],
              "subjects": args.subjects, "distinct": args.distinct, "atoms": args.atoms,
              "grid": args.grid, "n_voxels": int(np.asarray(_mask(args.grid).dataobj).sum()),
              "build_s": round(time.perf_counter() - started, 1)}
    record["prewarm_gb"] = args.prewarm_gb
    prewarm(args.prewarm_gb)
    record["reading_floor_s"] = round(reading_floor(out), 2)
    prewarm(args.prewarm_gb)
    record["llmfbn_read_s"] = round(reading_floor(out, "llmfbn"), 2)
    prewarm(args.prewarm_gb)
    record["group"] = group_run(args.root / "bids", out, args.root / "work", args.nprocs,
                                args.mem_gb)
    del record["group"]["stderr"]
    record["group_over_floor"] = round(record["group"]["wall_s"]
                                       / max(record["reading_floor_s"], 0.01), 2)
    record["group_over_llmfbn_read"] = round(record["group"]["wall_s"]
                                             / max(record["llmfbn_read_s"], 0.01), 2)
    print(json.dumps(record))
    if args.json:
        args.json.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
