"""Forked worker processes for ``--nprocs``: one item (a subject, a report section) per
process, results handed back in the order of the items.

Each item runs in a process forked for it, so the shared inputs (atoms, confounds, a group
result) are not pickled and whatever a figure library leaks goes with the process; each
worker runs its libraries on one thread (``--nprocs`` counts the workers). Files a worker
writes inside the parent's :func:`bids_app.atomic.deferred_replace` block are handed back
and moved by the parent at the end of its block, so a failed run still leaves no file
under a final name. The first failure ends the map at once: the other workers are sent
SIGTERM, unwind and remove their temporaries, and the error is raised in the parent (with
the worker's traceback as its cause). A worker that dies without an answer (killed, out of
memory) is such a failure too. A worker that finished while the parent was giving up
(its result not yet read) hands back writes that no block will adopt: their temporaries
are removed as well.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import wait
from typing import Any

from bids_app.atomic import adopt_writes, discard_writes, handed_back_writes


class WorkerTraceback(Exception):
    """The traceback of an error raised in a worker process (the cause of that error as
    raised in the parent)."""


class WorkerDied(RuntimeError):
    """A worker process ended without handing back a result."""


def can_fork() -> bool:
    """Whether this platform starts processes by fork (Linux, and what the maps need)."""
    return "fork" in mp.get_all_start_methods()


def _exit_on_sigterm(signum, _frame):
    raise SystemExit(128 + signum)


def _worker(func: Callable, item, conn) -> None:
    """Run ``func(item)`` on one thread and send ``(ok, payload, traceback text)``."""
    from threadpoolctl import threadpool_limits

    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    threadpool_limits(1)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    try:
        with handed_back_writes() as handed:
            value = func(item)
        message = (True, (value, handed), "")
    except Exception as err:  # noqa: BLE001 - handed to the parent, which raises it
        message = (False, err, traceback.format_exc())
    try:
        try:
            conn.send(message)
        except Exception:  # noqa: BLE001 - an unpicklable error: send its text
            conn.send((False, RuntimeError(repr(message[1])), message[2]))
    except BaseException:
        # SIGTERM while sending (the parent gave up after another failure): no block will
        # adopt this item's writes, so their temporaries go now
        if message[0]:
            discard_writes(*message[1][1])
        raise
    conn.close()


def forked_map(func: Callable[[Any], Any], items: Iterable, n_workers: int) -> Iterator:
    """``func(item)`` for every item, yielded in the items' order.

    With ``n_workers`` >= 2 (and more than one item, on a platform that forks) at most that
    many items run at once, each in a forked process; otherwise they run here one after
    another. Either way an exception of ``func`` is raised here, and the writes of the calls
    that succeeded belong to this process (see the module docstring).
    """
    items = list(items)
    n_workers = min(int(n_workers or 1), len(items))
    if n_workers < 2 or not can_fork():
        for item in items:
            yield func(item)
        return
    ctx = mp.get_context("fork")
    running: dict[int, tuple] = {}           # index: (process, receiving end)
    done: dict[int, Any] = {}
    started = 0
    try:
        for index in range(len(items)):
            while index not in done:
                while started < len(items) and len(running) < n_workers:
                    receive, send = ctx.Pipe(duplex=False)
                    process = ctx.Process(target=_worker, args=(func, items[started], send),
                                          daemon=True)
                    process.start()
                    send.close()
                    running[started] = (process, receive)
                    started += 1
                ready = set(wait([c for _, c in running.values()]
                                 + [p.sentinel for p, _ in running.values()]))
                for key, (process, receive) in list(running.items()):
                    if receive not in ready and process.sentinel not in ready:
                        continue
                    message = receive.recv() if receive.poll() else None
                    process.join()
                    receive.close()
                    del running[key]
                    if message is None:
                        raise WorkerDied(f"the worker process of item {key + 1} of "
                                         f"{len(items)} ended without a result (exit code "
                                         f"{process.exitcode}; killed, or out of memory?)")
                    ok, payload, text = message
                    if not ok:
                        raise payload from WorkerTraceback(text)
                    value, (pairs, folders) = payload
                    adopt_writes(pairs, folders)   # now, so that a later failure removes them
                    done[key] = value
            yield done.pop(index)
    finally:
        for process, _ in running.values():
            process.terminate()
        for process, receive in running.values():
            process.join()
            _discard_unread(receive)
            receive.close()


def _discard_unread(receive) -> None:
    """A worker that finished, and handed back its writes, while the parent was giving up
    (another item failed first): those writes are not adopted, so their temporaries are
    removed here."""
    try:
        message = receive.recv() if receive.poll() else None
    except (EOFError, OSError):          # nothing, or half a message of a stopped worker
        return
    if message is not None and message[0]:
        discard_writes(*message[1][1])
