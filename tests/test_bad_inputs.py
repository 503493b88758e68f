"""Every bad input of ``tests/bad_inputs.py``: the documented exit code, a message that says
what is wrong (no traceback), and nothing written or changed (input, output, work folder)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bids_app.cli.run import main
from tests.bad_inputs import CASES, Ctx, render_table

ROOT = Path(__file__).resolve().parents[1]


def _snapshot(folder: Path) -> dict:
    """{relative path: (size, mtime)} of every file under ``folder``, and its folders (the
    check that a folder is writable creates and removes a file: its mtime may change)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            if p.is_file() else "folder" for p in folder.rglob("*") if not p.is_symlink()}


def _unprivileged_prefix() -> list:
    """A command prefix under which permission bits apply (root ignores them)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("unshare") and subprocess.run(["unshare", "--user", "true"],
                                                  capture_output=True).returncode == 0:
        return ["unshare", "--user"]   # root without capabilities: owner bits apply
    pytest.skip("running as root without user namespaces: permissions cannot be tested")


def _run(argv: list, case, capsys) -> tuple[int, str]:
    if "unprivileged" in case.needs:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(ROOT), os.environ.get("PYTHONPATH", "")])}
        result = subprocess.run([*_unprivileged_prefix(), sys.executable, "-m", "bids_app",
                                 *argv], capture_output=True, text=True, env=env,
                                timeout=600)
        return result.returncode, result.stderr
    try:
        code = main(argv)
    except SystemExit as exit_:       # argparse
        code = exit_.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=() if c.quick
                                               else pytest.mark.slow) for c in CASES])
def test_bad_input(case, dataset_copy, tmp_path, monkeypatch, capsys):
    if "no-cuda" in case.needs:
        import torch

        if torch.cuda.is_available():
            pytest.skip("CUDA is available here")
    def let_through(*_args, **_kwargs):
        raise AssertionError(f"the pre-flight let the bad input {case.id!r} through")

    monkeypatch.setattr("bids_app.workflow.participant.compute_atoms", let_through)
    ctx = Ctx(bids=dataset_copy, tmp=tmp_path, monkeypatch=monkeypatch, level=case.level)
    extra = [str(a) for a in case.setup(ctx)]
    positional = ctx.positional or [ctx.bids, ctx.out, case.level]
    argv = [*map(str, positional), "-w", str(ctx.work), *extra]
    before = _snapshot(tmp_path)
    try:
        code, stderr = _run(argv, case, capsys)
    finally:
        for folder in tmp_path.glob("read-only-*"):
            folder.chmod(0o755)
    assert code == case.code, stderr
    assert "Traceback" not in stderr, stderr
    assert "llmfbn: error:" in stderr, stderr
    first = stderr[stderr.rindex("llmfbn: error:"):].splitlines()[0]
    assert case.message in first, (case.message, stderr)
    assert _snapshot(tmp_path) == before, "the failed run wrote or changed files"


def test_at_least_40_bad_inputs_and_ids_unique():
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


def test_bad_inputs_doc_is_current():
    """docs/bad-inputs.md is generated from the cases (python -m tests.bad_inputs)."""
    assert (ROOT / "docs" / "bad-inputs.md").read_text() == render_table()
