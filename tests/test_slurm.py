"""The SLURM job scripts in slurm/: participant array, dependent group job, submit.sh.

- Every script is valid bash (and shellcheck-clean when shellcheck is installed).
- The scripts run with stand-ins for ``llmfbn``, ``apptainer`` and ``sbatch`` that record
  their command lines: the plain-install and the Apptainer variants pass the right arguments
  and bind mounts, and submit.sh wires the group job to the array. (Apptainer itself cannot
  be installed on the CI machine, so its variant is checked this way only.)
- ``test_submit_on_a_real_slurm_equals_a_serial_run`` (slow) starts a real single-node SLURM,
  submits the plain-install variant on the synthetic dataset and checks that the outputs equal
  a serial run's and that the stimulus stage ran once for all array tasks.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.slurm_cluster import local_slurm, missing_tools

REPO = Path(__file__).resolve().parents[1]
SLURM = REPO / "slurm"
SCRIPTS = ("participant_array.sbatch", "group.sbatch", "submit.sh")
#: cheap settings for the end-to-end run: this checks the scripts, not the science
CHEAP = ["--n-atoms", "8", "--no-atom-stability", "--no-reports"]


# --------------------------------------------------------------------------------------------
# static checks


@pytest.mark.parametrize("name", SCRIPTS)
def test_scripts_are_valid_executable_bash(name):
    path = SLURM / name
    assert os.access(path, os.X_OK), f"{name} is not executable"
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
    if shutil.which("shellcheck"):
        result = subprocess.run(["shellcheck", "-x", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("name", ["participant_array.sbatch", "group.sbatch"])
def test_sbatch_directives_come_before_the_first_command(name):
    """sbatch stops reading #SBATCH lines at the first command; a late one is ignored."""
    lines = (SLURM / name).read_text().splitlines()
    assert lines[0] == "#!/bin/bash"
    first_command = next(i for i, line in enumerate(lines)
                         if line.strip() and not line.lstrip().startswith("#"))
    directives = [i for i, line in enumerate(lines) if line.startswith("#SBATCH")]
    assert directives and max(directives) < first_command
    assert not any("--gres" in lines[i] for i in directives), \
        "a GPU request must be the user's choice (it never starts on a cluster without GPUs)"


# --------------------------------------------------------------------------------------------
# the scripts run with recording stand-ins


def _recorder(folder: Path, name: str, output: str = "") -> Path:
    """A program ``name`` in ``folder`` that appends its arguments (one per line, then a
    blank line) to ``folder/<name>.calls`` and prints ``output``."""
    folder.mkdir(exist_ok=True)
    program = folder / name
    program.write_text(f'#!/bin/bash\nprintf "%s\\n" "$@" "" >> "{folder}/{name}.calls"\n'
                       f'printf "%s" "{output}"\n')
    program.chmod(0o755)
    return program


def _calls(folder: Path, name: str) -> list[list[str]]:
    text = (folder / f"{name}.calls").read_text()
    return [block.split("\n") for block in text.split("\n\n") if block]


@pytest.fixture
def layout(tmp_path):
    bids = tmp_path / "bids"
    bids.mkdir()
    (bids / "participants.tsv").write_text("participant_id\tage\nsub-001\t20\nsub-002\t21\n"
                                           "sub-003\t22\n\n")
    stand_ins = tmp_path / "bin"
    _recorder(stand_ins, "llmfbn")
    _recorder(stand_ins, "apptainer")
    env = {"PATH": f"{stand_ins}:/usr/bin:/bin", "SLURM_CPUS_PER_TASK": "3"}
    return bids, tmp_path / "out", tmp_path / "work", stand_ins, env


def _run(script: str, args, env, task: str | None = None) -> subprocess.CompletedProcess:
    if task is not None:
        env = {**env, "SLURM_ARRAY_TASK_ID": task}
    return subprocess.run(["bash", str(SLURM / script), *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=60)


def test_plain_participant_task_runs_its_participant(layout):
    bids, out, work, stand_ins, env = layout
    result = _run("participant_array.sbatch", [bids, out, work, *CHEAP], env, task="2")
    assert result.returncode == 0, result.stderr
    assert out.is_dir() and work.is_dir(), "bind/mount sources must be created"
    assert _calls(stand_ins, "llmfbn") == [[
        str(bids), str(out), "participant", "--participant-label", "002", "-w", str(work),
        "--nprocs", "3", *CHEAP]]


def test_apptainer_participant_task_binds_the_three_folders(layout):
    bids, out, work, stand_ins, env = layout
    env = {**env, "LLMFBN_SIF": "/images/llmfbn.sif"}
    assert _run("participant_array.sbatch", [bids, out, work], env, task="3").returncode == 0
    [call] = _calls(stand_ins, "apptainer")
    assert call == ["run", "--cleanenv", "--nv", "-B", f"{bids}:{bids}:ro", "-B", str(out),
                    "-B", str(work), "/images/llmfbn.sif", str(bids), str(out), "participant",
                    "--participant-label", "003", "-w", str(work), "--nprocs", "3"]
    assert not (stand_ins / "llmfbn.calls").exists()


def test_apptainer_options_replace_the_gpu_default(layout):
    bids, out, work, stand_ins, env = layout
    env = {**env, "LLMFBN_SIF": "x.sif", "LLMFBN_APPTAINER_ARGS": "--env HF_HOME=/hf -B /h:/hf"}
    assert _run("participant_array.sbatch", [bids, out, work], env, task="1").returncode == 0
    [call] = _calls(stand_ins, "apptainer")
    assert call[:7] == ["run", "--cleanenv", "--env", "HF_HOME=/hf", "-B", "/h:/hf", "-B"]
    env["LLMFBN_APPTAINER_ARGS"] = ""
    assert _run("participant_array.sbatch", [bids, out, work], env, task="1").returncode == 0
    assert "--nv" not in _calls(stand_ins, "apptainer")[1]


def test_participant_list_file_and_out_of_range_task(layout, tmp_path):
    bids, out, work, stand_ins, env = layout
    labels = tmp_path / "labels.txt"
    labels.write_text("sub-07\n09\n")
    env = {**env, "LLMFBN_PARTICIPANTS": str(labels)}
    assert _run("participant_array.sbatch", [bids, out, work], env, task="2").returncode == 0
    assert _calls(stand_ins, "llmfbn")[0][4] == "09"
    result = _run("participant_array.sbatch", [bids, out, work], env, task="3")
    assert result.returncode == 2 and "no participant on that line" in result.stderr


def test_group_job_runs_the_group_level_without_a_gpu(layout):
    bids, out, work, stand_ins, env = layout
    assert _run("group.sbatch", [bids, out, work, *CHEAP], env).returncode == 0
    assert _calls(stand_ins, "llmfbn") == [[str(bids), str(out), "group", "-w", str(work),
                                            "--nprocs", "3", *CHEAP]]
    env = {**env, "LLMFBN_SIF": "x.sif"}
    assert _run("group.sbatch", [bids, out, work], env).returncode == 0
    assert "--nv" not in _calls(stand_ins, "apptainer")[0]


def test_submit_queues_the_array_and_the_dependent_group_job(layout):
    bids, out, work, stand_ins, env = layout
    _recorder(stand_ins, "sbatch", output="4242")
    env = {**env, "PARTICIPANT_SBATCH_ARGS": "--gres=gpu:1 -p gpu", "GROUP_SBATCH_ARGS": "-p cpu"}
    result = _run("submit.sh", [bids, out, work, *CHEAP], env)
    assert result.returncode == 0, result.stderr
    array, group = _calls(stand_ins, "sbatch")
    assert "--array=1-3" in array and "--parsable" in array
    assert array[-5:] == [str(SLURM / "participant_array.sbatch"), str(bids), str(out),
                          str(work), *CHEAP][-5:]
    assert "--gres=gpu:1" in array and "--gres=gpu:1" not in group
    listed = next(a for a in array if a.startswith("--export=ALL,LLMFBN_PARTICIPANTS="))
    assert Path(listed.split("=", 2)[2]).read_text() == (bids / "participants.tsv").read_text()
    assert "--dependency=afterok:4242" in group and "--kill-on-invalid-dep=yes" in group
    assert "-p" in group and group[-3 - len(CHEAP):-len(CHEAP)] == [str(bids), str(out), str(work)]
    assert "4242" in result.stdout


def test_submit_without_participants_tsv_uses_the_subject_folders(layout):
    bids, out, work, stand_ins, env = layout
    (bids / "participants.tsv").unlink()
    for label in ("sub-01", "sub-02"):
        (bids / label).mkdir()
    _recorder(stand_ins, "sbatch", output="7")
    assert _run("submit.sh", [bids, out, work], env).returncode == 0
    assert "--array=1-2" in _calls(stand_ins, "sbatch")[0]
    result = _run("submit.sh", [bids], env)
    assert result.returncode == 2 and "BIDS_DIR OUTPUT_DIR WORK_DIR" in result.stderr


# --------------------------------------------------------------------------------------------
# a real SLURM cluster


@pytest.fixture
def slurm_cluster():
    required = os.environ.get("LLMFBN_REQUIRE_SLURM") == "1"
    problem = None
    if os.geteuid() != 0:
        problem = "starting slurmctld/slurmd/munged needs root"
    elif missing_tools():
        problem = ("not installed: " + ", ".join(missing_tools())
                   + " (apt-get install slurmctld slurmd slurm-client munge)")
    if problem:
        if required:
            pytest.fail(problem + "; LLMFBN_REQUIRE_SLURM=1 asks for this test to run")
        pytest.skip(problem)
    with local_slurm() as cluster:
        yield cluster


def _outputs(folder: Path) -> dict[str, Path]:
    """Maps and tables of a derivatives folder (logs and HTML reports hold run times)."""
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name.endswith((".nii.gz", ".tsv"))
            and "logs" not in p.relative_to(folder).parts}


@pytest.mark.slow
def test_submit_on_a_real_slurm_equals_a_serial_run(slurm_cluster, small_dataset, tmp_path):
    from bids_app.cli.run import main

    bids = small_dataset
    serial_out, serial_work = tmp_path / "serial" / "out", tmp_path / "serial" / "work"
    for level in ("participant", "group"):
        assert main([str(bids), str(serial_out), level, "-w", str(serial_work),
                     "--nprocs", "2", *CHEAP]) == 0

    out, work = tmp_path / "slurm-out", tmp_path / "slurm-work"
    env = {**slurm_cluster.env,
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",  # the plain install
           "PYTHONPATH": str(REPO),
           "PARTICIPANT_SBATCH_ARGS": "--cpus-per-task=1 --mem=2000M --time=30:00",
           "GROUP_SBATCH_ARGS": "--cpus-per-task=1 --mem=2000M --time=30:00"}
    # --nprocs 2 as in the serial run: the atoms are the same bits for the same number of
    # torch threads; each array task then fits its one subject in this process, the serial
    # run two subjects at a time in worker processes, and their maps must be the same bits
    submitted = subprocess.run([str(SLURM / "submit.sh"), str(bids), str(out), str(work),
                                *CHEAP, "--nprocs", "2"], env=env, capture_output=True,
                               text=True, timeout=120, cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stderr
    array, group = _job_ids(submitted.stdout)
    slurm_cluster.wait([array, group], timeout_s=1800)
    logs = {p.name: p.read_text() for p in sorted((work / "slurm").glob("*.log"))}
    report = "\n".join(f"--- {name}\n{text[-3000:]}" for name, text in logs.items())
    assert slurm_cluster.states(array) == ["COMPLETED"] * 3, report
    assert slurm_cluster.states(group) == ["COMPLETED"], report

    # each step of the stimulus stage ran in one task and the two others waited for it
    # and reused it (not necessarily the same task for both steps: the responses and the
    # atoms have their own locks, so one task may compute the responses and another, which
    # waited for them, the atoms)
    task_logs = [text for name, text in logs.items() if "participant" in name]
    assert len(task_logs) == 3
    assert sum("Dictionary learning" in text for text in task_logs) == 1, report
    assert sum("Loading language model" in text for text in task_logs) == 1, report
    for step in ("AN temporal responses (minilm)", "Atoms (minilm)"):
        assert sum(f"{step}: computed by another job, reusing" in text
                   or f"{step}: reusing cached result" in text
                   for text in task_logs) == 2, (step, report)
    assert len([p for p in (work / "llmfbn" / "atoms").iterdir() if p.is_dir()]) == 1

    # the same maps and tables as the serial run
    ours, theirs = _outputs(out), _outputs(serial_out)
    assert ours.keys() == theirs.keys() and len(ours) > 10
    for name, path in ours.items():
        if name.endswith(".tsv"):
            assert path.read_bytes() == theirs[name].read_bytes(), name
        else:
            a, b = nib.load(path), nib.load(theirs[name])
            assert np.array_equal(a.affine, b.affine), name
            assert np.array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj)), name


def _job_ids(stdout: str) -> list[str]:
    """The two job ids submit.sh prints: 'participant array job A (...), group job G ...'."""
    return re.findall(r"\bjob (\d+)", stdout)
