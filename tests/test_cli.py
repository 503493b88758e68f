"""Command line: the contract (options, help, version, labels) through ``python -m bids_app``.
Bad inputs, their messages and exit codes: ``tests/test_bad_inputs.py``."""

from __future__ import annotations

import subprocess
import sys

from bids_app import __version__
from bids_app.cli.parser import parse_args


def run_cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bids_app", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=600,
                          env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})


def assert_clean_failure(result, *needles):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert "llmfbn: error:" in result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)


def test_version_and_help():
    result = run_cli("--version")
    assert result.returncode == 0 and __version__ in result.stdout
    result = run_cli("--help")
    for option in ("--participant-label", "--task", "--derivatives", "--space", "--model",
                   "--n-atoms", "--fbn-atlas", "--work-dir", "--device", "--nprocs",
                   "--seed", "--skip-bids-validation", "--verbose"):
        assert option in result.stdout


def test_parser_defaults_and_labels(tmp_path):
    config = parse_args([str(tmp_path), str(tmp_path / "out"), "participant",
                         "--participant-label", "sub-01", "02", "--space",
                         "MNI152NLin2009cAsym:res-2"])
    assert config.participant_label == ["01", "02"]
    assert (config.space, config.res) == ("MNI152NLin2009cAsym", "2")
    assert config.model == ["minilm"] and config.n_atoms == 64 and config.fbn_atlas == "seitzman"
    assert config.device == "auto" and config.seed == 0
    config.resolve_paths()
    assert config.derivatives == tmp_path / "derivatives" / "fmriprep"


def test_bad_option_values_exit_2(tmp_path):
    for bad in (["--space", "MNI:res"], ["--n-atoms", "0"], ["--participant-label", "a_b"],
                ["--device", "tpu"]):
        result = run_cli(tmp_path, tmp_path / "out", "participant", *bad)
        assert result.returncode == 2 and "Traceback" not in result.stderr


def test_unknown_participant_lists_existing(dataset_copy, tmp_path):
    out = tmp_path / "out"
    result = run_cli(dataset_copy, out, "participant", "--participant-label", "042",
                     "-w", tmp_path / "work")
    assert_clean_failure(result, "sub-042", "sub-001, sub-002, sub-003")
    assert not out.exists()


def test_nprocs_holds_every_loaded_thread_pool(tmp_path, monkeypatch):
    """Inside a run, every BLAS/OpenMP pool threadpoolctl sees uses at most --nprocs threads
    (a busy node's other jobs keep their cores)."""
    import numpy as np
    from threadpoolctl import threadpool_info

    from bids_app.cli import run as cli_run
    from bids_app.config import Config

    np.ones((2, 2)) @ np.ones((2, 2))                 # BLAS loaded
    seen = []
    monkeypatch.setattr("bids_app.workflow.run_group",
                        lambda config: seen.extend(p["num_threads"] for p in threadpool_info()))
    config = Config(bids_dir=tmp_path, output_dir=tmp_path / "out", analysis_level="group",
                    nprocs=1)
    assert cli_run.run(config) == 0
    assert seen and max(seen) == 1
