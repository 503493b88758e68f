"""Atomic writes: temporaries record their owner, a failed block leaves no final name, and
the temporaries of killed runs are removed by the next run (only those)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bids_app.atomic import (
    atomic_folder,
    atomic_path,
    deferred_replace,
    host_label,
    remove_stale_temporaries,
    temporary_owner,
)
from bids_app.bids import derivatives as out

ROOT = Path(__file__).resolve().parents[1]


def test_temporary_names_record_host_and_pid(tmp_path):
    with atomic_path(tmp_path / "map.nii.gz") as tmp:
        assert tmp.name.startswith(".map.nii.gz.tmp-") and tmp.name.endswith(".nii.gz")
        assert temporary_owner(tmp) == (host_label(), os.getpid())
        tmp.write_bytes(b"x")
    with atomic_folder(tmp_path / "key") as folder:
        assert temporary_owner(folder) == (host_label(), os.getpid())
    assert temporary_owner(tmp_path / "map.nii.gz") is None


def test_deferred_replace_moves_all_at_the_end(tmp_path):
    with deferred_replace():
        out.write_text(tmp_path / "a.txt", "a")
        out.write_text(tmp_path / "sub" / "b.txt", "b")
        assert not (tmp_path / "a.txt").exists()        # nothing final yet
    assert (tmp_path / "a.txt").read_text() == "a"
    assert (tmp_path / "sub" / "b.txt").read_text() == "b"
    assert not [p for p in tmp_path.rglob(".*")]


def test_deferred_replace_failure_leaves_no_final_name(tmp_path):
    (tmp_path / "old.txt").write_text("kept")
    with pytest.raises(RuntimeError):
        with deferred_replace():
            out.write_text(tmp_path / "new.txt", "new")
            out.write_text(tmp_path / "sub-001" / "func" / "map.json", "{}")
            out.write_text(tmp_path / "old.txt", "overwritten")
            with deferred_replace():                   # nested: belongs to the outer block
                out.write_text(tmp_path / "inner.txt", "inner")
            raise RuntimeError("a damaged input met late")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.txt"]
    assert (tmp_path / "old.txt").read_text() == "kept"


_KILLED_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from bids_app.atomic import atomic_folder, atomic_path
    root = Path(sys.argv[1])
    with atomic_folder(root / "work" / "llmfbn" / "responses" / "key") as folder:
        (folder / "x.npy").write_bytes(b"half an array")
        with atomic_path(root / "out" / "sub-001" / "func" / "map.nii.gz") as tmp:
            tmp.write_bytes(b"half a map")
            print("writing", flush=True)
            time.sleep(600)
""")


def _killed_run(root: Path) -> None:
    """A process killed (SIGKILL) while it writes a file and a cache folder."""
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(root)],
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_temporaries_of_killed_runs_are_removed(tmp_path):
    _killed_run(tmp_path)
    left = sorted(p.name for p in tmp_path.rglob(".*"))
    assert len(left) == 2 and all(".tmp-" in name for name in left)
    # a live process's temporary (this one's) is kept, so is a final file
    (tmp_path / "out" / "final.txt").write_text("result")
    with atomic_path(tmp_path / "out" / "mine.txt") as mine:
        mine.write_text("in progress")
        removed = remove_stale_temporaries(tmp_path / "out")
        removed += remove_stale_temporaries(tmp_path / "work" / "llmfbn")
        assert mine.exists()
    assert sorted(p.name.split(".tmp-")[0] for p in removed) == [".key", ".map.nii.gz"]
    assert not [p for p in tmp_path.rglob(".*")]
    assert (tmp_path / "out" / "final.txt").read_text() == "result"
    assert (tmp_path / "out" / "mine.txt").read_text() == "in progress"


def test_other_hosts_and_old_temporaries_are_left(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("llmfbn"), "propagate", True)
    caplog.set_level(logging.INFO, logger="llmfbn")
    other = tmp_path / ".map.nii.gz.tmp-otherhost-1-abcdefgh.nii.gz"
    old = tmp_path / ".map.nii.gz.k2j3h4g5.tmp.nii.gz"
    for path in (other, old):
        path.write_bytes(b"?")
    assert remove_stale_temporaries(tmp_path) == []
    assert other.exists() and old.exists()
    assert "left in place" in caplog.text
