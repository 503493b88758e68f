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


def test_explicit_envelope_needs_the_audio(dataset_copy, tmp_path):
    """--nuisance envelope with a story's WAV missing: a clear error naming the file,
    before anything is written."""
    (dataset_copy / "stimuli" / "market_audio.wav").unlink()
    out = tmp_path / "out"
    result = run_cli(dataset_copy, out, "participant", "--nuisance", "wordrate", "envelope",
                     "-w", tmp_path / "work")
    assert_clean_failure(result, "market_audio.wav", "audio file not found")
    assert not out.exists()


def test_implicit_envelope_skips_a_missing_audio_with_a_log_line(dataset_copy, tmp_path,
                                                                 caplog):
    import logging

    from bids_app.workflow import nuisance_regressors, prepare

    audio = dataset_copy / "stimuli" / "market_audio.wav"
    audio.unlink()                     # hard-linked: replace, do not edit in place
    audio.write_bytes(b"not a wav")
    config = parse_args([str(dataset_copy), str(tmp_path / "out"), "participant"])
    config.resolve_paths()
    # the regressors asked for in a Config but not on the command line (the CLI's default
    # is none: an explicit --nuisance envelope makes a missing audio an error, tested above)
    config.nuisance = ["wordrate", "envelope"]
    _, plan, _, _ = prepare(config)
    with caplog.at_level(logging.INFO, logger="llmfbn"):
        regressors = nuisance_regressors(config, plan)
    assert list(regressors["task-lighthouse"].columns) == ["wordrate", "envelope"]
    assert list(regressors["task-market"].columns) == ["wordrate"]
    assert "market_audio.wav" in caplog.text and "envelope regressor is skipped" in caplog.text
    none = parse_args([str(dataset_copy), str(tmp_path / "out"), "participant", "--nuisance",
                       "none"])
    assert all(t.shape[1] == 0 for t in nuisance_regressors(none, plan).values())


def test_stimuli_table_audio_must_be_readable(dataset_copy, tmp_path):
    table = tmp_path / "stimuli.tsv"
    table.write_text("task\tpath\taudio\n"
                     "market\tstimuli/gentle/market/align.csv\tstimuli/gentle/market/align.csv\n"
                     "lighthouse\tstimuli/gentle/lighthouse/align.csv\t\n")
    result = run_cli(dataset_copy, tmp_path / "out", "participant", "--stimuli", table,
                     "-w", tmp_path / "work")
    assert_clean_failure(result, "cannot read the audio file", "align.csv")
