"""Benchmark: torch DictionaryLearner vs scikit-learn MiniBatchDictionaryLearning.

Run by hand (not part of the tests)::

    python benchmarks/bench_dictionary.py ours --n-neurons 100000      # our learner
    python benchmarks/bench_dictionary.py sklearn --n-neurons 100000   # the reference
    python benchmarks/bench_dictionary.py stream --n-neurons 100000 --mem-gb 0.25

Each command runs in its own process, so its peak RSS (``ru_maxrss``) is its own, and
prints one JSON line: wall time, final objective ``0.5 ||X - A D||^2 + alpha ||A||_1``
(for scikit-learn with codes from ``sparse_encode(lasso_cd)``, computed with the same
function as ours), peak RSS. ``stream`` writes X as a float64 .npy, opens it with
``mmap_mode="r"`` and fits with ``mem_gb``.

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


def spm_hrf(tr_s: float, length_s: float = 32.0) -> np.ndarray:
    """SPM canonical HRF (double gamma, peak 6 s, undershoot 16 s, ratio 1/6)."""
    from scipy.stats import gamma

    t_s = np.arange(0, length_s, tr_s)
    hrf = gamma.pdf(t_s, 6) - gamma.pdf(t_s, 16) / 6.0
    return hrf / hrf.sum()


def make_data(n_neurons=100_000, n_trs=300, n_sources=64, tr_s=1.5, noise=0.5, seed=0,
              chunk=20_000) -> np.ndarray:
    """X (n_neurons, n_trs) float32, unit-norm z-scored rows (see module docstring)."""
    rng = np.random.default_rng(seed)
    hrf = spm_hrf(tr_s)
    events = rng.standard_normal((n_sources, n_trs + len(hrf))) \
        * (rng.random((n_sources, n_trs + len(hrf))) < 0.3)
    sources = np.array([np.convolve(e, hrf)[len(hrf):len(hrf) + n_trs] for e in events])
    sources -= sources.mean(1, keepdims=True)
    sources /= sources.std(1, keepdims=True)
    X = np.empty((n_neurons, n_trs), dtype=np.float32)
    for start in range(0, n_neurons, chunk):
        m = min(chunk, n_neurons - start)
        weights = np.zeros((m, n_sources))
        n_used = rng.integers(1, 5, size=m)
        for i in range(m):
            used = rng.choice(n_sources, size=n_used[i], replace=False)
            weights[i, used] = rng.standard_normal(n_used[i])
        block = weights @ sources + noise * rng.standard_normal((m, n_trs))
        block -= block.mean(1, keepdims=True)
        block /= block.std(1, keepdims=True)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        X[start:start + m] = block
    return X


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20   # kB on Linux


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", choices=["ours", "sklearn", "stream", "prepare"])
    parser.add_argument("--path", help="prepare: where to write X (.npy, float64)")
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
    args = parser.parse_args(argv)

    import torch

    from bids_app.dictionary import DictionaryLearner, dictionary_objective

    if args.which == "prepare":             # the memory-mapped input of "stream"
        np.save(args.path, make_data(args.n_neurons, args.n_trs, seed=args.seed)
                .astype(np.float64))
        return 0
    if args.which == "stream":
        # X is written by a child process, so this process's peak RSS never held it
        path = os.path.join(tempfile.mkdtemp(), "X.npy")
        subprocess.run([sys.executable, __file__, "prepare", "--path", path,
                        "--n-neurons", str(args.n_neurons), "--n-trs", str(args.n_trs),
                        "--seed", str(args.seed)], check=True)
        X = np.load(path, mmap_mode="r")
    else:
        X = make_data(args.n_neurons, args.n_trs, seed=args.seed)
    rss_data = peak_rss_gb()
    record = dict(which=args.which, n_neurons=args.n_neurons, n_trs=args.n_trs,
                  n_atoms=args.n_atoms, alpha=args.alpha, torch=torch.__version__,
                  threads=args.threads or torch.get_num_threads(),
                  python=platform.python_version(),
                  rss_after_data_gb=round(rss_data, 3))
    if args.which == "sklearn":
        from sklearn.decomposition import MiniBatchDictionaryLearning, sparse_encode
        import sklearn

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
    else:
        source = X
        if args.which == "stream":
            record["x_on_disk_gb"] = round(os.path.getsize(path) / 2 ** 30, 3)
            record["x_dtype"] = str(X.dtype)
            record["mem_gb"] = args.mem_gb
        rss_before = peak_rss_gb()
        t0, c0 = time.perf_counter(), cpu_s()
        model = DictionaryLearner(n_atoms=args.n_atoms, alpha=args.alpha, device=args.device,
                                  random_state=args.seed, n_threads=args.threads,
                                  mem_gb=args.mem_gb if args.which == "stream" else None)
        model.fit(source)
        record["wall_s"] = time.perf_counter() - t0
        record["cpu_s"] = cpu_s() - c0
        record["peak_rss_before_fit_gb"] = round(rss_before, 3)
        record["peak_rss_rise_fit_gb"] = round(peak_rss_gb() - rss_before, 3)
        record["epochs"] = model.n_iter_
        record["converged"] = model.converged_
        record["objective"] = dictionary_objective(source, model.codes_, model.components_,
                                                   args.alpha)
        record["objective_attr"] = model.objective_
        record["mean_nonzero"] = model.codes_.nnz / model.codes_.shape[0]
        record["history"] = [round(h["objective"], 3) for h in model.history_]

    record["peak_rss_gb"] = round(peak_rss_gb(), 3)
    record["load_avg"] = os.getloadavg()
    print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
