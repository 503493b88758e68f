"""Participant level at scale: a 2 mm, 300-volume synthetic dataset for any number of
subjects, and the participant level's per-stage time and memory against the I/O floor and
nilearn (issue 10, items 2 and 5).

The generator starts from the synthetic dataset of :mod:`bids_app.synthetic` (one subject,
null: no planted signal; its stories, Gentle timings, audio and sidecars) and replaces what
depends on the grid and the run length: each subject has one run (task ``lighthouse``) on
nilearn's MNI152 2 mm brain mask grid (99 x 117 x 95, 235,375 brain voxels; the Narratives
scale), ``--volumes`` volumes (TR 1.5 s), float32 ``.nii.gz`` (nibabel's gzip level 1) with
a smooth baseline, AR(1) noise, drifts, motion and physiological signals that its
confounds describe, and non-steady-state volumes. ``--distinct`` subjects get their own
series; the others are hard links to them (same bytes: no disk, no writing time; each is
still read and decompressed in full). The series are written volume by volume, so memory
stays small whatever the grid.

Measured, each in its own process (peak resident memory: VmHWM):

1. the I/O floor on one run: nibabel ``get_fdata(dtype=float32)`` and masking (the issue's
   definition), and plain gzip decompression of the file (no array);
2. the atoms stage (once per model): the first ``llmfbn BIDS OUT participant`` run, less the
   same run with the atoms cached;
3. llmfbn's participant level for one subject with the atoms cached (``--participant-label``,
   ``--nprocs 1``): wall, peak memory, and the subject's stages from its log line (read,
   GLM, maps, report);
4. nilearn's ``FirstLevelModel`` (OLS, the same design: llmfbn's 64 atoms, confounds and
   intercept, the same kept volumes) + 64 t contrasts + writing the effect and t maps as two
   4-D ``.nii.gz`` (nibabel's default compression), on the same run.

Usage (from the repository root)::

    python benchmarks/bench_scale.py build --subjects 345 --distinct 2 --root /scratch/s
    python benchmarks/bench_scale.py measure --root /scratch/s --json r.json
    python benchmarks/bench_scale.py measure --root /tmp/b --grid tiny --volumes 60 \\
        --atoms 4 --build 2                                          # smoke, 8 mm
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TASK = "lighthouse"
T_R_S = 1.5
N_NON_STEADY = 3
SPACE = "space-MNI152NLin2009cAsym_res-2"

_PEAK = ("import re, sys\n"
         "from bids_app.cli.run import main\n"
         "code = main(sys.argv[1:])\n"
         "status = open('/proc/self/status').read()\n"
         "print('PEAK_KB', re.search(r'VmHWM:\\s+(\\d+)', status).group(1))\n"
         "sys.exit(code)\n")


def grid_mask(grid: str) -> nib.Nifti1Image:
    """nilearn's MNI152 2 mm brain mask, or every 4th voxel of it (8 mm) for ``tiny``."""
    from nilearn.datasets import load_mni152_brain_mask

    img = load_mni152_brain_mask(resolution=2)
    data = np.asarray(img.dataobj).astype(np.uint8)
    if grid == "2mm":
        return nib.Nifti1Image(data, img.affine)
    affine = img.affine.copy()
    affine[:3, :3] *= 4
    return nib.Nifti1Image(np.ascontiguousarray(data[::4, ::4, ::4]), affine)


# ------------------------------------------------------------------------------------------
# generator
# ------------------------------------------------------------------------------------------
def _cosines(n: int) -> np.ndarray:
    """fMRIPrep's discrete cosine drift basis (128 s high-pass)."""
    t = np.arange(n)
    return np.stack([np.sqrt(2.0 / n) * np.cos(np.pi * (2 * t + 1) * (k + 1) / (2 * n))
                     for k in range(int(np.floor(2 * n * T_R_S / 128.0)))], axis=1)


def _motion(n: int, rng) -> pd.DataFrame:
    params = np.cumsum(rng.normal(0, [0.03, 0.03, 0.05, 0.0006, 0.0006, 0.0004], (n, 6)), 0)
    names = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
    table = pd.DataFrame(params, columns=names)
    for name in names:
        deriv = np.concatenate([[np.nan], np.diff(table[name].to_numpy())])
        table[f"{name}_derivative1"] = deriv
        table[f"{name}_power2"] = table[name] ** 2
        table[f"{name}_derivative1_power2"] = deriv ** 2
    fd = np.abs(np.diff(params[:, :3], axis=0)).sum(1) + 50 * np.abs(
        np.diff(params[:, 3:], axis=0)).sum(1)
    table["framewise_displacement"] = np.concatenate([[np.nan], fd])
    return table


def _header(shape: tuple, affine: np.ndarray, dtype) -> nib.Nifti1Header:
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    header.set_xyzt_units("mm", "sec")
    header["pixdim"][4] = T_R_S
    header.set_data_offset(352)
    return header


def write_series(path: Path, mask: np.ndarray, affine: np.ndarray, n: int, seed: int,
                 compresslevel: int = 1) -> pd.DataFrame:
    """A float32 BOLD series on ``mask``'s grid, written volume by volume as ``.nii.gz``;
    returns its confounds table (fMRIPrep's columns)."""
    rng = np.random.default_rng(seed)
    n_vox = int(mask.sum())
    motion = _motion(n, rng)
    cosines = _cosines(n)
    physio = rng.standard_normal((n, 10))
    move = motion[["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]].to_numpy()
    move = (move - move.mean(0)) / move.std(0).clip(1e-6)
    from scipy.ndimage import gaussian_filter

    baseline = (600 + 300 * gaussian_filter(rng.random(mask.shape), 3.0))[mask]
    loadings = rng.standard_normal((19, n_vox)).astype(np.float32)
    loadings[:6] *= 0.4
    loadings[6:16] *= 0.3
    loadings[16:] *= 4.0
    regressors = np.column_stack([move, physio, cosines[:, :3]]).astype(np.float32)
    noise = np.zeros(n_vox, np.float32)
    volume = np.zeros(mask.shape, np.float32, order="F")
    global_signal = np.empty(n)
    with gzip.open(path, "wb", compresslevel=compresslevel) as stream:
        stream.write(_header(mask.shape + (n,), affine, np.float32).binaryblock)
        stream.write(b"\0" * 4)
        for t in range(n):
            noise = 0.3 * noise + np.sqrt(1 - 0.09) * rng.standard_normal(n_vox, np.float32)
            psc = noise + regressors[t] @ loadings
            if t < N_NON_STEADY:
                psc += 40.0 - 15.0 * t
            values = (baseline * (1.0 + psc / 100.0)).astype(np.float32)
            volume[mask] = values
            global_signal[t] = float(values.mean())
            stream.write(volume.tobytes(order="F"))
    confounds = pd.DataFrame({"global_signal": global_signal, "csf": physio[:, 0],
                              "white_matter": physio[:, 5]})
    confounds = pd.concat([confounds, motion], axis=1)
    comps = physio + 0.1 * rng.standard_normal(physio.shape)
    for k in range(10):
        confounds[f"a_comp_cor_{k:02d}"] = comps[:, k] / np.linalg.norm(comps[:, k])
    for k in range(cosines.shape[1]):
        confounds[f"cosine{k:02d}"] = cosines[:, k]
    for k in range(N_NON_STEADY):
        confounds[f"non_steady_state_outlier{k:02d}"] = np.eye(n)[k]
    return confounds


def _raw_series(path: Path, n: int) -> None:
    """A tiny int16 raw series with ``n`` volumes (the preflight compares the counts)."""
    data = np.full((8, 8, 8, n), 600, np.int16)
    img = nib.Nifti1Image(data, np.diag([8.0, 8.0, 8.0, 1.0]))
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = T_R_S
    nib.save(img, path)


def _subject_files(bids: Path, label: str) -> list[Path]:
    return [p for folder in (bids / f"sub-{label}", bids / "derivatives" / "fmriprep"
                             / f"sub-{label}") for p in sorted(folder.rglob("*")) if p.is_file()]


def build(root: Path, n_subjects: int, distinct: int, n_volumes: int, grid: str,
          seed: int = 0) -> Path:
    """The dataset under ``root/bids`` (replaced if present); returns its path."""
    from bids_app.synthetic import make_dataset

    bids = root / "bids"
    if bids.exists():
        shutil.rmtree(bids)
    make_dataset(bids, n_subjects=1, planted=False, seed=seed)
    for other in [p for p in bids.rglob("*market*")]:          # one task: one run each
        if other.is_dir():
            shutil.rmtree(other)
        elif other.exists():
            other.unlink()
    mask_img = grid_mask(grid)
    mask = np.asarray(mask_img.dataobj) > 0
    base = f"sub-001_task-{TASK}"
    func = bids / "derivatives" / "fmriprep" / "sub-001" / "func"
    mask_out = nib.Nifti1Image(mask.astype(np.uint8), mask_img.affine)
    mask_out.header.set_xyzt_units("mm")
    nib.save(mask_out, func / f"{base}_{SPACE}_desc-brain_mask.nii.gz")
    for name in (f"{base}_{SPACE}_desc-preproc_bold.json",
                 f"{base}_{SPACE}_desc-brain_mask.json"):
        meta = json.loads((func / name).read_text())
        meta.pop("Resolution", None)
        if "VoxelSizeMm" in meta:
            meta["VoxelSizeMm"] = float(abs(mask_img.affine[0, 0]))
        (func / name).write_text(json.dumps(meta, indent=2) + "\n")
    events = bids / "sub-001" / "func" / f"{base}_events.tsv"
    table = pd.read_csv(events, sep="\t")
    table["duration"] = round(n_volumes * T_R_S - float(table["onset"].iloc[0]) - 15.0, 2)
    table.to_csv(events, sep="\t", index=False)
    _raw_series(bids / "sub-001" / "func" / f"{base}_bold.nii.gz", n_volumes)
    labels = [f"{i:03d}" for i in range(1, n_subjects + 1)]
    template = _subject_files(bids, "001")
    for i, label in enumerate(labels):
        source = labels[i % distinct]
        for path in template:
            target = Path(str(path).replace("sub-001", f"sub-{label}"))
            target.parent.mkdir(parents=True, exist_ok=True)
            if label == "001" and not path.name.endswith(("_bold.nii.gz",
                                                          "_timeseries.tsv")):
                continue
            if path.name.endswith("desc-preproc_bold.nii.gz") or path.name.endswith(
                    "_timeseries.tsv"):
                if i < distinct:
                    if path.name.endswith("desc-preproc_bold.nii.gz"):
                        confounds = write_series(target, mask, mask_img.affine, n_volumes,
                                                 seed + i)
                        confounds.to_csv(target.parent / f"sub-{label}_task-{TASK}_desc-"
                                         "confounds_timeseries.tsv", sep="\t", index=False,
                                         na_rep="n/a", float_format="%.6g")
                    continue
                linked = Path(str(path).replace("sub-001", f"sub-{source}"))
                target.unlink(missing_ok=True)
                os.link(linked, target)
            elif path.suffix == ".json" or path.suffix == ".tsv":
                target.write_text(path.read_text().replace("sub-001", f"sub-{label}"))
            elif not target.exists():
                os.link(path, target)
    pd.DataFrame({"participant_id": [f"sub-{x}" for x in labels],
                  "age": 20 + np.arange(n_subjects) % 15}).to_csv(
        bids / "participants.tsv", sep="\t", index=False)
    return bids


# ------------------------------------------------------------------------------------------
# measurements, each in its own process
# ------------------------------------------------------------------------------------------
def _peak_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return round(int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024, 1)


def floor_nibabel(bold: Path, mask_path: Path) -> dict:
    """nibabel ``get_fdata(dtype=float32)`` of the run, then its brain voxels."""
    mask = np.asarray(nib.load(mask_path).dataobj) > 0
    started = time.perf_counter()
    data = nib.load(bold).get_fdata(dtype=np.float32)
    read = time.perf_counter() - started
    masked = data[mask]
    total = time.perf_counter() - started
    assert masked.shape[0] == int(mask.sum())
    return {"read_s": round(read, 2), "read_mask_s": round(total, 2), "peak_rss_mb": _peak_mb()}


def floor_gunzip(bold: Path) -> dict:
    """Plain gzip decompression of the run, 16 MiB at a time (no array)."""
    started = time.perf_counter()
    n = 0
    with gzip.open(bold, "rb") as stream:
        while block := stream.read(1 << 24):
            n += len(block)
    return {"gunzip_s": round(time.perf_counter() - started, 2), "bytes": n,
            "peak_rss_mb": _peak_mb()}


def nilearn_glm(bold: Path, mask_path: Path, design_tsv: Path, sidecar: Path,
                out: Path) -> dict:
    """nilearn FirstLevelModel (OLS) on llmfbn's design and kept volumes, one t contrast
    per atom, and the effect and t maps written as 4-D ``.nii.gz``."""
    from nilearn.glm.first_level import FirstLevelModel
    from nilearn.image import concat_imgs

    started = time.perf_counter()
    design = pd.read_csv(design_tsv, sep="\t")
    meta = json.loads(sidecar.read_text())
    kept = np.concatenate([np.arange(a, b + 1) for run in meta["VolumesUsedPerRun"].values()
                           for a, b in run["Ranges"]])
    n_volumes = nib.load(bold).shape[3]
    full = pd.DataFrame(0.0, index=np.arange(n_volumes), columns=design.columns)
    full.iloc[kept] = design.to_numpy()
    atoms = [c for c in design.columns if c.startswith("atom")]
    model = FirstLevelModel(t_r=T_R_S, noise_model="ols", mask_img=str(mask_path),
                            signal_scaling=0, minimize_memory=True)
    model.fit(str(bold), design_matrices=[full], sample_masks=[kept])
    fitted = time.perf_counter()
    effects, ts = [], []
    for name in atoms:
        maps = model.compute_contrast(name, stat_type="t", output_type="all")
        effects.append(maps["effect_size"])
        ts.append(maps["stat"])
    contrasts = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    nib.save(concat_imgs(effects), out / "effect.nii.gz")
    nib.save(concat_imgs(ts), out / "t.nii.gz")
    done = time.perf_counter()
    return {"fit_s": round(fitted - started, 2), "contrasts_s": round(contrasts - fitted, 2),
            "write_s": round(done - contrasts, 2), "wall_s": round(done - started, 2),
            "n_atoms": len(atoms), "n_kept": int(kept.size), "peak_rss_mb": _peak_mb()}


def _in_process(kind: str, *args) -> dict:
    """One of this module's measurements in a fresh Python process."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    code = (f"import json, sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r})\n"
            f"import bench_scale as b\nfrom pathlib import Path\n"
            f"print('RESULT', json.dumps(b.{kind}(*[Path(a) for a in sys.argv[1:]])))\n")
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                         text=True, env=env, timeout=3600)
    if run.returncode:
        raise RuntimeError(run.stderr[-4000:])
    result = json.loads(run.stdout.split("RESULT ", 1)[1])
    result["process_wall_s"] = round(time.perf_counter() - started, 2)
    return result


def participant(bids: Path, out: Path, work: Path, label: str, extra=()) -> dict:
    """``llmfbn BIDS OUT participant --participant-label LABEL`` in its own process: wall,
    peak memory, the atoms stage and the subject's stages from the log."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", _PEAK, str(bids), str(out), "participant",
                          "--participant-label", label, "-w", str(work), "--nprocs", "1",
                          *extra], capture_output=True, text=True, env=env, timeout=7200)
    wall = time.perf_counter() - started
    if run.returncode:
        raise RuntimeError(run.stderr[-4000:])
    record = {"wall_s": round(wall, 2), "peak_rss_mb": round(int(re.search(
        r"PEAK_KB (\d+)", run.stdout).group(1)) / 1024, 1)}
    line = next(x for x in run.stderr.splitlines() if f"sub-{label} (" in x)
    record["subject_s"] = float(re.search(r"([\d.]+) s\)\s*$", line).group(1))
    clock = {}
    for x in run.stderr.splitlines():      # the log's clock (1 s resolution)
        found = re.match(r"(\d\d):(\d\d):(\d\d) \[llmfbn\] (Indexing|Pre-flight checks "
                         r"passed|Participant level done)", x)
        if found:
            h, m, sec = map(int, found.groups()[:3])
            clock.setdefault(found.group(4).split()[0], 3600 * h + 60 * m + sec)
    if {"Indexing", "Pre-flight"} <= clock.keys():
        record["preflight_s"] = clock["Pre-flight"] - clock["Indexing"]
    if {"Indexing", "Participant"} <= clock.keys():
        record["logged_s"] = clock["Participant"] - clock["Indexing"]
    for stage, seconds in re.findall(r"(\w+) ([\d.]+) s[,;]", line):
        record[f"{stage}_s"] = float(seconds)
    record["log"] = run.stderr
    return record


def prewarm(gb: float) -> float:
    """Touch ``gb`` GiB of fresh memory in a throw-away process; returns its seconds.

    This sandbox is a virtual machine whose memory the host backs lazily and takes back a
    while after it is freed: the first touch of 1 GiB took 7.0 s, the same right after in
    a new process 0.37 s (2026-12-02, 07:50 UTC). A measured process that happens to get
    cold pages pays that (a 2 mm subject touches ~1 GB, the nibabel floor ~2.6 GB), so
    the same command varied by 2x from run to run. Warming first gives every measurement
    the memory a real node has; ``--prewarm-gb 0`` measures the cold case."""
    if gb <= 0:
        return 0.0
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import numpy as np; "
                    f"np.ones(int({gb} * 2**30) // 4, np.float32)"], check=True)
    return round(time.perf_counter() - started, 2)


def measure(root: Path, n_subjects: int, atoms_args: list[str], reuse_atoms: bool = False,
            nilearn: bool = True, warm_gb: float = 0.0) -> dict:
    bids, out, work = root / "bids", root / "out", root / "work"
    func = bids / "derivatives" / "fmriprep" / "sub-001" / "func"
    bold = func / f"sub-001_task-{TASK}_{SPACE}_desc-preproc_bold.nii.gz"
    mask = func / f"sub-001_task-{TASK}_{SPACE}_desc-brain_mask.nii.gz"
    record = {"bold_mb": round(bold.stat().st_size / 2**20, 1),
              "bold_shape": list(nib.load(bold).shape)}

    def stamp(key, value):
        value = {**value, "prewarm_s": warmed.pop()} if warmed else value
        record[key] = {**value, "date": time.strftime("%H:%M:%S UTC", time.gmtime()),
                       "load_1min": os.getloadavg()[0]}
        print(key, json.dumps({k: v for k, v in record[key].items() if k != "log"}),
              flush=True)

    warmed = []

    def warm():
        warmed[:] = [prewarm(warm_gb)] if warm_gb > 0 else []

    warm()
    stamp("floor_nibabel", _in_process("floor_nibabel", bold, mask))
    warm()
    stamp("floor_gunzip", _in_process("floor_gunzip", bold))
    for path in (out, work) if not reuse_atoms else (out,):
        if path.exists():
            shutil.rmtree(path)
    if not reuse_atoms:
        warm()
        first = participant(bids, out, work, "001", atoms_args)
        first.pop("log")
        stamp("first_run_with_atoms", first)
    for i in range(min(n_subjects, 2)):
        warm()
        run = participant(bids, out, work, f"{i + 1:03d}", atoms_args)
        log = run.pop("log")
        stamp(f"llmfbn_sub{i + 1}", run)
    record["log_last"] = log
    design = next((out / "sub-001" / "func").glob("*_design.tsv"))
    sidecar = next((out / "sub-001" / "func").glob("*_stat-t_statmap.json"))
    if nilearn:
        warm()
        stamp("nilearn", _in_process("nilearn_glm", bold, mask, design, sidecar,
                                     root / "nilearn"))
    if not reuse_atoms:
        record["atoms_stage_s"] = round(record["first_run_with_atoms"]["wall_s"]
                                        - record["llmfbn_sub1"]["wall_s"], 1)
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("build", "measure"))
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--subjects", type=int, default=3)
    parser.add_argument("--distinct", type=int, default=1)
    parser.add_argument("--volumes", type=int, default=300)
    parser.add_argument("--grid", choices=("2mm", "tiny"), default="2mm")
    parser.add_argument("--atoms", type=int, default=64)
    parser.add_argument("--build", type=int, default=0, metavar="N",
                        help="measure: first build N subjects (0: use ROOT/bids)")
    parser.add_argument("--no-atom-stability", action="store_true")
    parser.add_argument("--no-nilearn", action="store_true")
    parser.add_argument("--reuse-atoms", action="store_true",
                        help="keep ROOT/work (atoms cached by an earlier measure)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--prewarm-gb", type=float, default=3.0,
                        help="GiB of memory touched in a throw-away process before each "
                        "measurement (see prewarm); 0: none")
    args = parser.parse_args(argv)
    args.root.mkdir(parents=True, exist_ok=True)
    header = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
              "load_1min": os.getloadavg()[0]}
    if args.step == "build" or args.build:
        started = time.perf_counter()
        n = args.subjects if args.step == "build" else args.build
        build(args.root, n, min(args.distinct, n), args.volumes, args.grid)
        header.update(subjects=n, build_s=round(time.perf_counter() - started, 1))
        if args.step == "build":
            print(json.dumps(header))
            return 0
    n_subjects = len(list((args.root / "bids").glob("sub-*")))
    atoms_args = ["--n-atoms", str(args.atoms)] + (
        ["--no-atom-stability"] if args.no_atom_stability else [])
    record = {**header, **measure(args.root, n_subjects, atoms_args, args.reuse_atoms,
                                         not args.no_nilearn, args.prewarm_gb)}
    log = record.pop("log_last")
    print(json.dumps(record))
    if args.json:
        args.json.write_text(json.dumps(record, indent=1))
        args.json.with_suffix(".log").write_text(log)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
