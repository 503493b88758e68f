"""Entry point of the ``llmfbn`` command: parse, run a level, turn failures into exit codes.

Exit codes (:data:`EXIT_CODES`, also in ``--help`` and the README): 0 success; 1 bad input
data or environment (a clear message, no traceback, nothing written under a final name);
2 bad usage (the command line: unknown option, malformed value; argparse's convention);
3 internal error (a bug: the traceback is printed); 130 interrupted (Ctrl-C); 143
terminated (SIGTERM, e.g. a scheduler's time limit). The checks before anything is written
are the levels' pre-flight (:mod:`bids_app.workflow.preflight`).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import traceback
import warnings

from bids_app.caches import use_writable_caches
from bids_app.cli.parser import EXIT_CODES, parse_args
from bids_app.config import Config
from bids_app.errors import LlmfbnError

__all__ = ["EXIT_CODES", "main", "run", "setup_logging"]

LOGGER = logging.getLogger("llmfbn")


def setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose >= 2 else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s [llmfbn] %(message)s", "%H:%M:%S"))
    LOGGER.handlers[:] = [handler]
    LOGGER.setLevel(level)
    LOGGER.propagate = False
    warnings.showwarning = _log_warning


def _log_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings (e.g. an atlas resampled onto the data's grid) go to the run's log."""
    LOGGER.warning("warning: %s", message)


def run(config: Config) -> int:
    """Run one analysis level with every thread pool loaded (NumPy/SciPy's BLAS, OpenMP)
    held to ``--nprocs`` threads; torch's own threads are set by the stages that use it."""
    from threadpoolctl import threadpool_limits

    from bids_app import workflow

    config.resolve_paths()
    with threadpool_limits(config.nprocs):
        if config.analysis_level == "participant":
            workflow.run_participant(config)
        else:
            workflow.run_group(config)
    return 0


def _terminated(signum, _frame):
    raise SystemExit(128 + signum)


def _os_error_text(err: OSError) -> str:
    where = f" {err.filename}" if err.filename else ""
    return (f"cannot access{where}: {err.strerror or err}. What to do: check that the "
            "folder exists, is writable and has free space (inside a container, check the "
            "bind mounts)")


def main(argv=None) -> int:
    config = parse_args(argv)
    setup_logging(config.verbose)
    # before matplotlib, transformers or templateflow is imported: they read these at import
    use_writable_caches()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        previous = signal.signal(signal.SIGTERM, _terminated)
    except ValueError:      # not the main thread: leave signals alone
        previous = None
    try:
        return run(config)
    except LlmfbnError as err:
        print(f"llmfbn: error: {err}", file=sys.stderr)
        return EXIT_CODES["input"]
    except OSError as err:
        print(f"llmfbn: error: {_os_error_text(err)}", file=sys.stderr)
        return EXIT_CODES["input"]
    except MemoryError:
        print("llmfbn: error: out of memory. What to do: lower --mem-gb or run on a machine "
              "with more memory", file=sys.stderr)
        return EXIT_CODES["input"]
    except KeyboardInterrupt:
        print("llmfbn: interrupted; completed outputs are intact, unfinished ones were not "
              "written", file=sys.stderr)
        return EXIT_CODES["interrupted"]
    except SystemExit as exit_:
        if exit_.code == 128 + signal.SIGTERM:
            print("llmfbn: terminated (SIGTERM); unfinished outputs were not written",
                  file=sys.stderr)
        raise
    except Exception:  # noqa: BLE001 - anything else is a bug: show where it happened
        traceback.print_exc()
        print("llmfbn: internal error (a bug in llmfbn): please report it with the "
              "traceback above", file=sys.stderr)
        return EXIT_CODES["internal"]
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    raise SystemExit(main())
