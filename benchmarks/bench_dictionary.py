"""Benchmark: torch DictionaryLearner vs scikit-learn MiniBatchDictionaryLearning.

Run by hand (not part of the tests)::

    python benchmarks/bench_dictionary.py ours --n-neurons 100000      # our learner
    python benchmarks/bench_dictionary.py sklearn --n-neurons 100000   # the reference
    python benchmarks/bench_dictionary.py ours --repeat 5                # median of 5 fits
    python benchmarks/bench_dictionary.py stream --n-neurons 100000 --mem-gb 0.25
    python benchmarks/bench_dictionary.py stream --n-neurons 2300000 --n-trs 3000 \
        --dtype float32 --mem-gb 8 --path /big/disk/X.npy --keep        # LLM scale
    python benchmarks/bench_dictionary.py ours --device cuda --n-neurons 458752 \
        --n-trs 1000                              # GPU: Llama-3-8B's ANs (peak GPU memory too)

Each command runs in its own process, so its peak RSS (``ru_maxrss``) is its own, and
prints one JSON line: wall time, final objective ``0.5 ||X - A D||^2 + alpha ||A||_1``
(for scikit-learn with codes from ``sparse_encode(lasso_cd)``, computed with the same
function as ours), peak RSS. ``stream`` has a child process write X to a .npy file
(float64 unless ``--dtype float32``; chunk by chunk, so X never sits in memory), opens it
with ``mmap_mode="r"`` and fits with ``mem_gb``; ``--keep`` leaves the file for a re-run
(an existing file of the right shape is reused).

Data: n_neurons rows x n_trs TRs, each a sparse combination (1-4 of 64 sources) of smooth
signals (random event trains convolved with the SPM canonical HRF, TR 1.5 s) plus noise,
z-scored then scaled to unit norm, as the pipeline's AN responses are.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np


def make_data(n_neurons=100_000, n_trs=300, n_sources=64, tr_s=1.5, noise=0.5, seed=0,
              chunk=20_000, out=None) -> np.ndarray:
    """X (n_neurons, n_trs) float32, unit-norm z-scored rows (see module docstring).

    ``out``: an array (e.g. a memory-mapped .npy) to write the rows into, chunk by chunk.
    """
    from bids_app.synthetic import source_mixtures

    def progress(line):
        print(f"  {line}", file=sys.stderr, flush=True)

    return source_mixtures(n_neurons, n_trs, n_sources, tr_s, noise, seed, chunk, out,
                           progress if out is not None else None)[0]


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20   # kB on Linux


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=["ours", "sklearn", "stream", "prepare"])
    parser.add_argument("--path", help="prepare/stream: where X is written (.npy)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float64",
                        help="prepare/stream: dtype of X on disk")
    parser.add_argument("--keep", action="store_true", help="stream: keep the X file")
    parser.add_argument("--max-epochs", type=int, default=100, help="our max_epochs")
    parser.add_argument("--no-objective-pass", action="store_true",
                        help="skip the independent float64 objective pass over X (the "
                             "learner's objective_ is still reported)")
    parser.add_argument("--verbose", action="store_true", help="log every epoch")
    parser.add_argument("--repeat", type=int, default=1,
                        help="ours: fits to run (the median wall time is reported)")
    parser.add_argument("--n-neurons", type=int, default=100_000)
    parser.add_argument("--n-trs", type=int, default=300)
    parser.add_argument("--n-atoms", type=int, default=64)
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--sklearn-epochs", type=int, default=10,
                        help="max_iter (epochs) of MiniBatchDictionaryLearning")
    parser.add_argument("--no-early-stopping", action="store_true",
                        help="sklearn: tol=0, max_no_improvement=None (run all epochs)")
    parser.add_argument("--mem-gb", type=float, default=0.25)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="our n_threads")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def _prepare(args) -> int:
    """The memory-mapped input of "stream", written chunk by chunk."""
    out = np.lib.format.open_memmap(args.path + ".part", mode="w+", dtype=args.dtype,
                                    shape=(args.n_neurons, args.n_trs))
    make_data(args.n_neurons, args.n_trs, seed=args.seed, out=out)
    out.flush()
    del out
    os.replace(args.path + ".part", args.path)
    return 0


def _stream_input(args):
    """(X memory map, path, reused, seconds to prepare): X is written by a child process,
    so this process's peak RSS never held it."""
    path = args.path or os.path.join(tempfile.mkdtemp(), "X.npy")
    reuse = False
    if os.path.exists(path):
        old = np.load(path, mmap_mode="r")
        reuse = old.shape == (args.n_neurons, args.n_trs) and old.dtype == args.dtype
        del old
    t_prep = time.perf_counter()
    if not reuse:
        subprocess.run([sys.executable, __file__, "prepare", "--path", path,
                        "--n-neurons", str(args.n_neurons), "--n-trs", str(args.n_trs),
                        "--seed", str(args.seed), "--dtype", args.dtype], check=True)
    prepare_s = time.perf_counter() - t_prep
    return np.load(path, mmap_mode="r"), path, reuse, prepare_s


def _run_sklearn(args, X, record):
    """Fit scikit-learn's MiniBatchDictionaryLearning, then its lasso codes, into ``record``."""
    import sklearn
    from sklearn.decomposition import MiniBatchDictionaryLearning, sparse_encode

    from bids_app.atoms import dictionary_objective

    record["sklearn"] = sklearn.__version__
    x64 = X.astype(np.float64)
    t0, c0 = time.perf_counter(), cpu_s()
    model = MiniBatchDictionaryLearning(
        n_components=args.n_atoms, alpha=args.alpha, fit_algorithm="cd", batch_size=256,
        max_iter=args.sklearn_epochs, random_state=args.seed,
        transform_algorithm="lasso_cd", transform_alpha=args.alpha,
        **(dict(tol=0.0, max_no_improvement=None) if args.no_early_stopping else {}))
    model.fit(x64)
    record["fit_s"] = time.perf_counter() - t0
    codes = sparse_encode(x64, model.components_, algorithm="lasso_cd", alpha=args.alpha)
    record["wall_s"] = time.perf_counter() - t0
    record["cpu_s"] = cpu_s() - c0
    record["epochs"] = model.n_iter_
    record["objective"] = dictionary_objective(X, codes, model.components_, args.alpha)
    record["mean_nonzero"] = float((codes != 0).sum(1).mean())


def _run_ours(args, source, record):
    """Fit our DictionaryLearner (``--repeat`` times), into ``record``."""
    import torch

    from bids_app.atoms import DictionaryLearner, dictionary_objective

    rss_before = peak_rss_gb()
    if args.device.startswith("cuda"):
        record["gpu"] = torch.cuda.get_device_name()
        torch.cuda.reset_peak_memory_stats()
    walls, cpus = [], []
    for _ in range(max(1, args.repeat)):
        t0, c0 = time.perf_counter(), cpu_s()
        model = DictionaryLearner(n_atoms=args.n_atoms, alpha=args.alpha,
                                  device=args.device, random_state=args.seed,
                                  n_threads=args.threads, max_epochs=args.max_epochs,
                                  mem_gb=args.mem_gb if args.which == "stream" else None)
        model.fit(source)
        walls.append(time.perf_counter() - t0)
        cpus.append(cpu_s() - c0)
    record["wall_s"] = float(np.median(walls))
    record["cpu_s"] = float(np.median(cpus))
    if len(walls) > 1:
        record["wall_s_all"] = [round(w, 3) for w in walls]
    if args.device.startswith("cuda"):
        record["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 3)
    record["peak_rss_before_fit_gb"] = round(rss_before, 3)
    record["peak_rss_rise_fit_gb"] = round(peak_rss_gb() - rss_before, 3)
    record["epochs"] = model.n_iter_
    record["converged"] = model.converged_
    if not args.no_objective_pass:
        record["objective"] = dictionary_objective(source, model.codes_,
                                                   model.components_, args.alpha)
    record["objective_attr"] = model.objective_
    record["mean_nonzero"] = model.codes_.nnz / model.codes_.shape[0]
    record["history"] = [round(h["objective"], 3) for h in model.history_]


def main(argv=None):
    args = _parser().parse_args(argv)

    import torch

    if args.verbose:
        import logging
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    if args.which == "prepare":
        return _prepare(args)
    if args.which == "stream":
        X, path, reuse, prepare_s = _stream_input(args)
    else:
        X = make_data(args.n_neurons, args.n_trs, seed=args.seed)
    rss_data = peak_rss_gb()
    record = dict(which=args.which, n_neurons=args.n_neurons, n_trs=args.n_trs,
                  n_atoms=args.n_atoms, alpha=args.alpha, torch=torch.__version__,
                  threads=args.threads or torch.get_num_threads(),
                  python=platform.python_version(),
                  rss_after_data_gb=round(rss_data, 3))
    if args.which == "sklearn":
        _run_sklearn(args, X, record)
    else:
        if args.which == "stream":
            record["x_on_disk_gb"] = round(os.path.getsize(path) / 2 ** 30, 3)
            record["x_dtype"] = str(X.dtype)
            record["mem_gb"] = args.mem_gb
            record["prepare_s"] = round(prepare_s, 1)
            record["x_reused"] = reuse
        _run_ours(args, X, record)
        if args.which == "stream" and not args.keep:
            del X
            os.remove(path)

    record["peak_rss_gb"] = round(peak_rss_gb(), 3)
    record["load_avg"] = os.getloadavg()
    print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
