"""Pre-flight and late failures: inputs found with BIDS inheritance, nothing written before
every check has passed, and a failure met late (a damaged file, a full disk) leaves no new
file under a final name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bids_app.bids.layout import discover, subject_filter
from bids_app.cli.parser import EXIT_CODES, build_parser, parse_args
from bids_app.cli.run import main
from bids_app.errors import LlmfbnError
from tests.bad_inputs import Ctx
from tests.fakes import fake_atoms_folder

ROOT = Path(__file__).resolve().parents[1]


def _config(bids_dir: Path, tmp_path: Path, *extra):
    return parse_args([str(bids_dir), str(tmp_path / "out"), "participant", "-w",
                       str(tmp_path / "work"), *extra]).resolve_paths()


def test_repetition_time_from_the_raw_sidecar(dataset_copy, tmp_path):
    """No RepetitionTime in fMRIPrep's sidecars: the raw series' sidecar gives it."""
    ctx = Ctx(bids=dataset_copy, tmp=tmp_path)
    for task in ("lighthouse", "market"):
        ctx.edit_json(ctx.fmriprep("001", task, "desc-preproc_bold.json"),
                      lambda d: d.pop("RepetitionTime"))
    dataset = discover(_config(dataset_copy, tmp_path, "--participant-label", "001"))
    assert {r.t_r_s for r in dataset.all_runs} == {1.5}


def test_repetition_time_inherited_from_the_root(dataset_copy, tmp_path):
    """Only task-<task>_bold.json at the dataset root gives it (BIDS inheritance)."""
    ctx = Ctx(bids=dataset_copy, tmp=tmp_path)
    for task in ("lighthouse", "market"):
        ctx.edit_json(ctx.fmriprep("001", task, "desc-preproc_bold.json"),
                      lambda d: d.pop("RepetitionTime"))
        ctx.edit_json(ctx.raw("001", task, "bold.json"), lambda d: d.pop("RepetitionTime"))
    dataset = discover(_config(dataset_copy, tmp_path, "--participant-label", "001"))
    assert {r.t_r_s for r in dataset.all_runs} == {1.5}


def test_subject_filter_ignores_every_other_subject():
    """The pybids ignore pattern keeps the chosen subjects' files (and only theirs: no
    prefix confusion between 01 and 011)."""
    pattern = subject_filter(["01", "1"])
    kept = ["/sub-01/func/sub-01_task-a_bold.nii.gz", "/sub-1/anat/x.nii.gz", "/sub-01.html",
            "/sub-01", "/dataset_description.json", "/task-a_bold.json"]
    dropped = ["/sub-011/func/sub-011_task-a_bold.nii.gz", "/sub-02", "/sub-10.html",
               "/sub-2/func/x.json"]
    assert not [p for p in kept if pattern.search(p)]
    assert [p for p in dropped if pattern.search(p)] == dropped
    assert subject_filter([]) is None


def test_participant_label_indexes_only_those_subjects(dataset_copy, tmp_path, monkeypatch):
    """With --participant-label, pybids indexes the chosen subject's files only, in the raw
    dataset and in fMRIPrep's folder; unknown labels are still named against every
    subject's folder."""
    from bids_app.bids import layout as layout_module

    seen = []
    original = layout_module._layout

    def spy(root, validate, derivative, subjects=None):
        result = original(root, validate, derivative, subjects)
        seen.append((derivative, sorted(result.get_subjects())))
        return result

    monkeypatch.setattr(layout_module, "_layout", spy)
    dataset = discover(_config(dataset_copy, tmp_path, "--participant-label", "002"))
    assert dataset.subjects == ["002"]
    assert seen == [(False, ["002"]), (True, ["002"])]
    seen.clear()
    assert discover(_config(dataset_copy, tmp_path)).subjects == ["001", "002", "003"]
    assert seen == [(False, ["001", "002", "003"]), (True, ["001", "002", "003"])]
    with pytest.raises(LlmfbnError, match="unknown participant label.*sub-009") as err:
        discover(_config(dataset_copy, tmp_path, "--participant-label", "009"))
    assert "sub-001, sub-002, sub-003" in str(err.value)


def _fake_atoms(tmp_path: Path, n_atoms: int):
    """A stand-in for the stimulus level: random atoms on the plan's clock."""
    def compute_atoms(config, spec, plan, device):
        from bids_app.responses import frames_table

        return fake_atoms_folder(tmp_path / "fake-atoms", frames_table(plan), n_atoms)
    return compute_atoms


def _final_files(folder: Path) -> list:
    """Everything under ``folder`` (files and folders)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) \
        if folder.exists() else []


@pytest.mark.parametrize("nprocs", ["1", "2"])
def test_damaged_bold_met_late_leaves_no_final_file(dataset_copy, tmp_path, monkeypatch,
                                                    capsys, nprocs):
    """sub-002's BOLD is cut after the pre-flight (simulated by skipping its byte check):
    sub-001's maps are computed, sub-002's read fails; the message names the file, the
    exit code is 1, and nothing is left in OUTPUT_DIR, neither under a final name
    (sub-001's included) nor as a temporary. With --nprocs 2 the two subjects run in two
    worker processes: sub-001's worker hands its files back or is stopped, either way
    nothing of it remains."""
    ctx = Ctx(bids=dataset_copy, tmp=tmp_path)
    bold = ctx.fmriprep("002", "market", "desc-preproc_bold.nii.gz")
    ctx.replace(bold, bold.read_bytes()[:-200_000])
    monkeypatch.setattr("bids_app.workflow.preflight.check_run_inputs", lambda run: None)
    monkeypatch.setattr("bids_app.workflow.preflight.atoms_cached", lambda *a: True)
    monkeypatch.setattr("bids_app.workflow.participant.compute_atoms", _fake_atoms(tmp_path, 3))
    out = tmp_path / "out"
    code = main([str(dataset_copy), str(out), "participant", "-w", str(tmp_path / "work"),
                 "--participant-label", "001", "002", "--n-atoms", "3", "--nprocs", nprocs])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert f"cannot read {bold}" in err and "damaged, incomplete" in err
    if nprocs == "1":
        assert "[1/2] sub-001" in err      # sub-001's maps were ready before the failure
    assert _final_files(out) == []


@pytest.mark.parametrize("cached", [True, False])
def test_series_read_in_full_only_before_the_atoms_are_computed(dataset_copy, tmp_path,
                                                                monkeypatch, cached):
    """The pre-flight reads every BOLD series to its end (CRC) only when the atoms must be
    computed first (a long step before the series are read); with the atoms cached it
    checks the gzip trailer only, and the one read of the subject meets damaged bytes."""
    from bids_app.workflow import preflight

    read = []
    monkeypatch.setattr(preflight, "atoms_cached", lambda *a: cached)
    monkeypatch.setattr(preflight, "check_image_bytes", lambda path: read.append(path))
    checked = preflight.preflight_participant(
        _config(dataset_copy, tmp_path, "--participant-label", "001", "002"))
    bolds = sorted(r.bold for r in checked.dataset.all_runs)
    assert len(bolds) == 4
    assert sorted(read) == ([] if cached else bolds)


def test_atoms_cached_after_a_participant_run(planted_run):
    """After the demo's participant run, its work directory holds every model's atoms for
    that plan (so a re-run reads no series twice); another --n-atoms does not."""
    from bids_app.bids.acquisitions import plan_acquisitions
    from bids_app.features import resolve_model
    from bids_app.workflow.stimulus import atoms_cached

    bids_dir, output = planted_run
    work = bids_dir.parent / "work"

    def cached(*extra):
        config = parse_args([str(bids_dir), str(output), "participant", "-w", str(work),
                             *extra]).resolve_paths()
        plan = plan_acquisitions(discover(config))
        return [atoms_cached(config, resolve_model(m), plan) for m in config.model]

    assert cached() == [True]
    assert cached("--n-atoms", "7") == [False]


def test_nothing_written_before_the_atoms_exist(dataset_copy, tmp_path, monkeypatch, capsys):
    """A check that can only run on the AN responses (too few responding ANs for K) fails
    before the first output is written: no dataset description, no logs, no atoms."""
    def too_few(*_args, **_kwargs):
        raise LlmfbnError("only 3 artificial neurons respond (vary over time), fewer than "
                          "--n-atoms 8", todo="lower --n-atoms or use longer stories")
    monkeypatch.setattr("bids_app.workflow.participant.compute_atoms", too_few)
    out = tmp_path / "out"
    code = main([str(dataset_copy), str(out), "participant", "-w", str(tmp_path / "work"),
                 "--participant-label", "001", "--n-atoms", "8"])
    assert code == 1 and "only 3 artificial neurons respond" in capsys.readouterr().err
    assert _final_files(out) == []


def test_write_error_is_a_clear_message(dataset_copy, tmp_path, monkeypatch, capsys):
    """An OSError while writing (a full disk, a read-only mount) gives exit 1, the file and
    the reason, no traceback, no file under a final name."""
    import bids_app.atomic

    def full(_src, dst):
        raise OSError(28, "No space left on device", str(dst))
    monkeypatch.setattr(bids_app.atomic.os, "replace", full)
    monkeypatch.setattr("bids_app.workflow.participant.compute_atoms", _fake_atoms(tmp_path, 3))
    monkeypatch.setattr("bids_app.workflow.participant._participant_maps", lambda *a, **k: None)
    out = tmp_path / "out"
    code = main([str(dataset_copy), str(out), "participant", "-w", str(tmp_path / "work"),
                 "--participant-label", "001", "--n-atoms", "3"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "No space left on device" in err and str(out) in err
    assert _final_files(out) == []


def test_exit_codes_are_documented():
    """README and --help give the same exit codes as the code (bad usage 2, bad input 1)."""
    readme = (ROOT / "README.md").read_text()
    table = dict(re.findall(r"^\| (\d+) \| ([^|]+) \|", readme, flags=re.M))
    assert {int(k) for k in table} == set(EXIT_CODES.values())
    assert "bad usage" in table[str(EXIT_CODES["usage"])]
    assert "bad input" in table[str(EXIT_CODES["input"])]
    epilog = build_parser().epilog
    for code in EXIT_CODES.values():
        assert re.search(rf"^\s+{code}\s", epilog, flags=re.M), code


@pytest.mark.parametrize("argv", [["--n-atoms", "0"], ["--mem-gb", "-1"]])
def test_bad_usage_exits_2(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path), str(tmp_path / "out"), "participant", *argv])
    assert exit_.value.code == EXIT_CODES["usage"] == 2
    assert "Traceback" not in capsys.readouterr().err


_TERMINATED_RUN = """
import os, signal, sys
from pathlib import Path
import bids_app.workflow
from bids_app.atomic import deferred_replace
from bids_app.bids import derivatives as out
from bids_app.cli.run import main

def run_participant(config):
    with deferred_replace():
        out.write_text(Path(config.output_dir) / "dataset_description.json", "{}")
        os.kill(os.getpid(), signal.SIGTERM)        # a scheduler's time limit

bids_app.workflow.run_participant = run_participant
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_exits_143_and_writes_nothing(tmp_path):
    """SIGTERM (e.g. SLURM's time limit) ends the run with 143, as documented, and the
    outputs it had not finished are neither under final names nor left as temporaries."""
    import os
    import subprocess
    import sys

    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-c", _TERMINATED_RUN, str(tmp_path), str(out), "participant"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == EXIT_CODES["terminated"] == 143, result.stderr
    assert "terminated (SIGTERM)" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()
