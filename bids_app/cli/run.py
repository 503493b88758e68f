"""Entry point of the ``llmfbn`` command: parse, check at the door, run a level."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from bids_app.caches import use_writable_caches
from bids_app.cli.parser import parse_args
from bids_app.config import Config
from bids_app.errors import LlmfbnError

LOGGER = logging.getLogger("llmfbn")


def setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose >= 2 else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s [llmfbn] %(message)s", "%H:%M:%S"))
    LOGGER.handlers[:] = [handler]
    LOGGER.setLevel(level)
    LOGGER.propagate = False


def _inside(path: Path, parent: Path) -> bool:
    try:
        path.resolve().relative_to(parent.resolve())
    except ValueError:
        return False
    return True


def check_paths(config: Config) -> None:
    """Checks at the door, before anything is read or written."""
    bids_dir = config.bids_dir
    if not bids_dir.is_dir():
        raise LlmfbnError(
            "the BIDS dataset folder does not exist",
            expected="BIDS_DIR to be the root folder of a BIDS dataset (with "
            "dataset_description.json and sub-*/ folders)",
            found=f"no folder at {bids_dir}",
            todo="check the first argument (inside a container, check the -v/-B bind mount)",
        )
    if config.output_dir.resolve() == bids_dir.resolve():
        raise LlmfbnError(
            "the output folder is the input BIDS folder; llmfbn never writes into the raw data",
            found=f"OUTPUT_DIR = BIDS_DIR = {bids_dir}",
            todo=f"use a separate folder, e.g. {bids_dir / 'derivatives' / 'llmfbn'}",
        )
    if _inside(bids_dir, config.output_dir):
        raise LlmfbnError(
            "the BIDS folder lies inside the output folder",
            found=f"BIDS_DIR {bids_dir} inside OUTPUT_DIR {config.output_dir}",
            todo="choose an output folder outside the input dataset or under its derivatives/",
        )
    in_raw = not _inside(config.work_dir, bids_dir / "derivatives")
    if _inside(config.work_dir, bids_dir) and in_raw:
        raise LlmfbnError(
            "the work directory is inside the input BIDS folder",
            found=f"--work-dir {config.work_dir}",
            todo="pass --work-dir outside the dataset (e.g. a scratch folder)",
        )
    if config.output_dir.exists() and not config.output_dir.is_dir():
        raise LlmfbnError("the output path exists and is not a folder",
                          found=str(config.output_dir), todo="choose a folder path")


def run(config: Config) -> int:
    from bids_app import workflow

    config.resolve_paths()
    check_paths(config)
    if config.analysis_level == "participant":
        workflow.run_participant(config)
    else:
        workflow.run_group(config)
    return 0


def main(argv=None) -> int:
    config = parse_args(argv)
    setup_logging(config.verbose)
    # before matplotlib, transformers or templateflow is imported: they read these at import
    use_writable_caches()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return run(config)
    except LlmfbnError as err:
        print(f"llmfbn: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("llmfbn: interrupted; completed outputs are intact, unfinished ones were not "
              "written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
