"""bids_app.parallel.forked_map: order, writes handed back to the parent's deferred block,
fail fast, no temporaries left behind."""

from __future__ import annotations

import os
import time

import pytest

from bids_app.atomic import atomic_path, deferred_replace
from bids_app.parallel import can_fork, forked_map

pytestmark = pytest.mark.skipif(not can_fork(), reason="forked workers need fork()")


def _write(folder):
    def work(i):
        if i == "slow":
            time.sleep(1.0)
            i = 9
        with atomic_path(folder / f"sub-{i}" / f"f{i}.txt") as tmp:
            tmp.write_text(f"{i} {os.getpid()}")
        return i, os.getpid()
    return work


def test_results_in_order_from_several_processes():
    values = list(forked_map(lambda i: (i * i, os.getpid()), range(12), n_workers=3))
    assert [v for v, _ in values] == [i * i for i in range(12)]
    assert os.getpid() not in {pid for _, pid in values}
    assert len({pid for _, pid in values}) > 1


def test_one_worker_runs_here():
    assert [pid for _, pid in forked_map(lambda i: (i, os.getpid()), range(3), 1)] == \
        [os.getpid()] * 3


def test_writes_of_workers_wait_for_the_parents_deferred_block(tmp_path):
    with deferred_replace():
        done = list(forked_map(_write(tmp_path), range(4), n_workers=2))
        assert [i for i, _ in done] == [0, 1, 2, 3]
        assert not list(tmp_path.rglob("f*.txt"))        # nothing under a final name yet
    assert sorted(p.name for p in tmp_path.rglob("*.txt")) == [f"f{i}.txt" for i in range(4)]
    assert not [p for p in tmp_path.rglob(".*")]          # no temporaries left


def test_a_failure_ends_the_map_and_leaves_nothing(tmp_path):
    """Item 2 fails while item "slow" is still running: the error reaches the parent at
    once, the finished items' writes and the stopped worker's temporaries are removed with
    the parent's block, and the folders created for them too."""
    def work(i):
        if i == 2:
            raise ValueError("subject 2 is damaged")
        return _write(tmp_path)(i)

    started = time.monotonic()
    with pytest.raises(ValueError, match="subject 2 is damaged"):
        with deferred_replace():
            list(forked_map(work, ["slow", 0, 2, 1, 3], n_workers=2))
    assert time.monotonic() - started < 5
    assert list(tmp_path.rglob("*")) == []


def test_sigterm_to_a_worker_removes_its_temporaries(tmp_path):
    """A worker stopped by SIGTERM (the pool after another failure, a scheduler) unwinds:
    the temporary it was writing is removed."""
    import signal

    def work(i):
        with atomic_path(tmp_path / f"f{i}.txt") as tmp:
            tmp.write_text("partial")
            if i == 1:
                os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)
        return i

    with pytest.raises(Exception):  # noqa: B017,PT011 - the pool reports the lost worker
        with deferred_replace():
            list(forked_map(work, [0, 1], n_workers=2))
    assert list(tmp_path.rglob("*")) == []


def test_a_worker_that_finishes_while_the_parent_gives_up_leaves_nothing(tmp_path,
                                                                         monkeypatch):
    """Item 0 finishes, and hands back its writes, just after the parent saw item 1 fail
    (made certain here: the parent's first wait returns only item 1's ends, once item 0's
    process has exited). Nothing adopts item 0's writes, so their temporaries and the
    folder created for them must go: nothing is left under the output folder (the race
    behind a leftover report temporary of a subject in a failed --nprocs 2 run)."""
    import bids_app.parallel as parallel

    real_wait = parallel.wait
    calls = []

    def wait(objects):
        if calls:
            return real_wait(objects)
        calls.append(objects)
        n = len(objects) // 2                  # receiving ends, then sentinels, in order
        real_wait([objects[n]])                # item 0's process has exited...
        real_wait([objects[1]])                # ...and item 1's failure is there
        return [objects[1], objects[n + 1]]    # the parent sees item 1 only

    monkeypatch.setattr(parallel, "wait", wait)

    def work(i):
        if i == 1:
            time.sleep(0.3)
            raise ValueError("subject 1 is damaged")
        return _write(tmp_path)(i)

    with pytest.raises(ValueError, match="subject 1 is damaged"):
        with deferred_replace():
            list(forked_map(work, [0, 1], n_workers=2))
    assert calls, "the patched wait was not used"
    assert list(tmp_path.rglob("*")) == []
