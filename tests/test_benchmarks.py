"""The hand-run benchmark scripts still run (tiny sizes, CPU): a GPU session can then spend
its device time measuring, not debugging. No timings are checked here."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _script(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_features_gpu_runs_tiny_on_cpu(tmp_path):
    out = tmp_path / "result.json"
    assert _script("bench_features_gpu").main(
        ["--tiny", "--device", "cpu", "--words", "1200", "--story-words", "500",
         "--context-tokens", "64", "--work", str(tmp_path / "work"), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["n_stories"] == 3 and result["n_neurons"] == 4 * 176
    # responses on disk: one row per AN, unit norm, over the three runs' TRs
    x = np.load(tmp_path / "work" / "x.npy")
    assert x.shape == (704, result["ours"]["n_trs"])
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-4)
    for part in ("plain_forward", "ours"):
        assert result[part]["seconds"] > 0 and 0 < result[part]["fraction_of_matmul"]


def test_bench_dictionary_runs_tiny(capsys):
    assert _script("bench_dictionary").main(
        ["ours", "--n-neurons", "3000", "--n-trs", "60", "--n-atoms", "8"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["converged"] and record["objective"] > 0
    assert abs(record["objective"] - record["objective_attr"]) <= 1e-6 * record["objective"]


def test_bench_dictionary_epochs_runs_tiny(tmp_path):
    """The default and the v3 (plain) learners on a saved matrix (the two variants run by
    default); the settings are restored after each fit, and the default fit is the
    learner's as it is."""
    from bids_app.atoms import DictionaryLearner, settings
    from tests.planted import planted_rows

    _, x = planted_rows(0, n_neurons=600, n_trs=60)
    path = tmp_path / "x.npy"
    np.save(path, x)
    out = tmp_path / "epochs.jsonl"
    assert _script("bench_dictionary_epochs").main(
        [str(path), "--seeds", "0", "--n-atoms", "8", "--json", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["variant"] for r in records] == ["default", "plain"]
    assert (settings.SEEDING, settings.STEPS, settings.STOP_WINDOW) == \
        ("span-ica", "quasi-newton-search", 4)
    plain = DictionaryLearner(n_atoms=8, alpha=0.1, random_state=0, n_threads=1).fit(x)
    assert records[0]["objective"] == plain.objective_
    assert records[0]["epochs"] == plain.n_iter_
    assert all(r["converged"] and r["shape"] == [600, 60] for r in records)


def test_bench_group_scale_runs_tiny(tmp_path, capsys):
    """5 subjects (3 with their own maps, 2 hard links) on an 8 mm grid: the group level
    runs, reads every subject, and its peak memory and the reading floor are recorded."""
    assert _script("bench_group_scale").main(
        ["--subjects", "5", "--distinct", "3", "--atoms", "4", "--grid", "tiny",
         "--root", str(tmp_path), "--prewarm-gb", "0"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["subjects"] == 5 and record["n_voxels"] > 1000
    assert record["group"]["peak_rss_mb"] > 0 and "bootstrap_s" in record["group"]
    assert (tmp_path / "out" / "sub-005" / "func").is_dir()


def test_bench_scale_builds_tiny(tmp_path):
    """The scale generator at 8 mm: one run per subject, hard links beyond --distinct, the
    series' volume count in its header, confounds and raw series; the floors run on it."""
    bench = _script("bench_scale")
    bids = bench.build(tmp_path, n_subjects=3, distinct=2, n_volumes=215, grid="tiny")
    func = bids / "derivatives" / "fmriprep"
    name = "task-lighthouse_space-MNI152NLin2009cAsym_res-2_desc-preproc_bold.nii.gz"
    bolds = [func / f"sub-{s}" / "func" / f"sub-{s}_{name}" for s in ("001", "002", "003")]
    assert [b.stat().st_nlink for b in bolds] == [2, 1, 2]
    assert nib.load(bolds[1]).shape[3] == 215
    assert not list(bids.rglob("*market*"))
    confounds = func / "sub-003" / "func" / "sub-003_task-lighthouse_desc-confounds_timeseries.tsv"
    assert len(pd.read_csv(confounds, sep="\t")) == 215
    mask = Path(str(bolds[1]).replace("desc-preproc_bold", "desc-brain_mask"))
    assert bench.floor_nibabel(bolds[1], mask)["read_mask_s"] >= 0
    assert bench.floor_gunzip(bolds[1])["bytes"] == 352 + 4 * 215 * int(
        np.prod(nib.load(mask).shape))


def test_bench_null_cost_runs_tiny(tmp_path, capsys):
    """The null's cost benchmark on an 8 mm grid: both modes run in their own process and
    report their steps; the null's steps are there only with the null."""
    out = tmp_path / "r.jsonl"
    assert _script("bench_null_cost").main(["--grid", "tiny", "--surrogates", "100",
                                            "--volumes", "120", "--atoms", "8",
                                            "--json", str(out)]) == 0
    off, on = [json.loads(line) for line in out.read_text().splitlines()]
    assert (off["mode"], on["mode"], on["n_surrogates"]) == ("off", "on", 100)
    assert set(on["seconds"]) == {"atlas", "fit", "surrogates", "total"}
    assert set(off["seconds"]) == {"fit", "total"} and on["peak_mb"] > 0


def test_bench_prediction_cost_runs_small(tmp_path):
    """The network-prediction test's cost benchmark on a small problem: one JSON line with
    both steps' times."""
    out = tmp_path / "r.jsonl"
    assert _script("bench_prediction_cost").main(["--frames", "60", "--atoms", "4",
                                                  "--blocks", "3", "--repeats", "1",
                                                  "--json", str(out)]) == 0
    row = json.loads(out.read_text())
    assert row["blocks"] == 3 and row["prediction_per_subject_s"] > 0
    assert row["draw_blocks_s"] > 0
