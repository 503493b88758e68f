"""Command line: contract, and bad input -> clear message, non-zero exit, no output."""

from __future__ import annotations

import subprocess
import sys

import pytest

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


def test_missing_bids_dir(tmp_path):
    result = run_cli(tmp_path / "nope", tmp_path / "out", "participant")
    assert_clean_failure(result, "does not exist", str(tmp_path / "nope"))
    assert not (tmp_path / "out").exists()


def test_output_equal_to_input(dataset_copy):
    result = run_cli(dataset_copy, dataset_copy, "participant")
    assert_clean_failure(result, "output folder is the input")


def test_unknown_participant_lists_existing(dataset_copy, tmp_path):
    out = tmp_path / "out"
    result = run_cli(dataset_copy, out, "participant", "--participant-label", "042",
                     "-w", tmp_path / "work")
    assert_clean_failure(result, "sub-042", "sub-001, sub-002, sub-003")
    assert not out.exists()


def test_missing_fmriprep_for_a_subject(dataset_copy, tmp_path):
    import shutil

    shutil.rmtree(dataset_copy / "derivatives" / "fmriprep" / "sub-002")
    out = tmp_path / "out"
    result = run_cli(dataset_copy, out, "participant", "-w", tmp_path / "work")
    assert_clean_failure(result, "sub-002", "desc-preproc_bold", "fMRIPrep")
    assert not out.exists()


def test_missing_fmriprep_folder(dataset_copy, tmp_path):
    out = tmp_path / "out"
    result = run_cli(dataset_copy, out, "participant", "-w", tmp_path / "work",
                     "--derivatives", tmp_path / "nofmriprep")
    assert_clean_failure(result, "fMRIPrep derivatives folder does not exist")
    assert not out.exists()


def test_missing_word_timings(dataset_copy, tmp_path):
    for name in ("align.csv", "align.json"):
        (dataset_copy / "stimuli" / "gentle" / "market" / name).unlink()
    out = tmp_path / "out"
    result = run_cli(dataset_copy, out, "participant", "--task", "market", "lighthouse",
                     "-w", tmp_path / "work")
    assert_clean_failure(result, "word timings", "stimuli/gentle/market/align.csv")
    assert not out.exists()


def test_unknown_model(dataset_copy, tmp_path):
    out = tmp_path / "out"
    result = run_cli(dataset_copy, out, "participant", "--model", "no-such-org/no-such-model",
                     "-w", tmp_path / "work")
    assert_clean_failure(result, "no-such-org/no-such-model", "minilm")
    assert not out.exists()


def test_corrupt_timing_file_names_line(dataset_copy, tmp_path):
    path = dataset_copy / "stimuli" / "gentle" / "market" / "align.csv"
    lines = path.read_text().splitlines()
    lines[4] = "word,word,abc,1.0"
    path.unlink()                      # hard-linked: replace, do not edit in place
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    result = run_cli(dataset_copy, out, "participant", "-w", tmp_path / "work")
    assert_clean_failure(result, "align.csv", "5")
    assert not out.exists()


def test_group_before_participant(dataset_copy, tmp_path):
    result = run_cli(dataset_copy, tmp_path / "out", "group")
    assert_clean_failure(result, "participant level first")


def test_cuda_without_cuda(dataset_copy, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    out = tmp_path / "out"
    result = run_cli(dataset_copy, out, "participant", "--device", "cuda",
                     "-w", tmp_path / "work")
    assert_clean_failure(result, "CUDA")
    assert not out.exists()
