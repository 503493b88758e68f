"""Shared fixtures: synthetic datasets and one full pipeline run per dataset (session-wide)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _run_pipeline(bids_dir: Path, work: Path, *extra: str, both: tuple = ()) -> Path:
    """Both levels; ``extra`` options for the participant level, ``both`` for both."""
    from bids_app.cli.run import main

    output = bids_dir / "derivatives" / "llmfbn"
    for level in ("participant", "group"):
        code = main([str(bids_dir), str(output), level, "-w", str(work), "--nprocs", "2",
                     *(extra if level == "participant" else ()), *both])
        assert code == 0, f"{level} level failed"
    return output


@pytest.fixture(scope="session")
def planted_run(tmp_path_factory):
    """The demo dataset (planted truth) and its llmfbn outputs."""
    from bids_app.synthetic import make_dataset

    root = tmp_path_factory.mktemp("planted")
    bids_dir = make_dataset(root / "bids", planted=True, seed=0)
    return bids_dir, _run_pipeline(bids_dir, root / "work")


@pytest.fixture(scope="session")
def null_run(tmp_path_factory):
    """The null dataset (same generator, no planted signal) and its llmfbn outputs."""
    from bids_app.synthetic import make_dataset

    root = tmp_path_factory.mktemp("null")
    bids_dir = make_dataset(root / "bids", planted=False, seed=1)
    # the atoms' stability refits (the planted run has them) change no coupling; the tests
    # read its tables, not its reports
    return bids_dir, _run_pipeline(bids_dir, root / "work", "--no-atom-stability",
                                   both=("--no-reports",))


@pytest.fixture(scope="session")
def second_run(tmp_path_factory):
    """The second planted dataset (another story in one run, TR 2.0 s, 6 mm voxels) and its
    llmfbn outputs (defaults, without the stability refits and the reports)."""
    from bids_app.synthetic import make_dataset

    root = tmp_path_factory.mktemp("second")
    bids_dir = make_dataset(root / "bids", planted=True, seed=0, profile="second")
    return bids_dir, _run_pipeline(bids_dir, root / "work", "--no-atom-stability",
                                   both=("--no-reports",))


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory):
    """A small null dataset (3 subjects) used as a template for bad-input tests."""
    from bids_app.synthetic import make_dataset

    root = tmp_path_factory.mktemp("small")
    bids_dir = make_dataset(root / "bids", n_subjects=3, planted=False, seed=2)
    before = _fingerprint(bids_dir)
    yield bids_dir
    changed = sorted(set(before.items()) ^ set(_fingerprint(bids_dir).items()))
    assert not changed, (
        "a test changed the shared small dataset through a hard-linked copy (dataset_copy): "
        f"{changed[:5]}; unlink a file before writing a new one in its place")


def _fingerprint(folder: Path) -> dict:
    """{relative path: (size, mtime_ns)} of every file under ``folder``."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def dataset_copy(small_dataset, tmp_path):
    """A cheap writable copy (hard links) of the small dataset, to break on purpose. Its files
    share their contents with ``small_dataset``: unlink one before writing in its place (the
    session checks at its end that the template is unchanged)."""
    target = tmp_path / "bids"
    subprocess.run(["cp", "-al", str(small_dataset), str(target)], check=True)
    return target


@pytest.fixture
def fresh_copy_of(tmp_path):
    def copy(path: Path) -> Path:
        target = tmp_path / path.name
        shutil.copytree(path, target)
        return target
    return copy


@pytest.fixture(scope="session")
def toy_reports(tmp_path_factory):
    """The subject, group and models reports of small results (tests/report_toys.py),
    written once: ``{"subject": path, "group": path, "models": path}``."""
    from bids_app.report import write_group_report, write_subject_report
    from bids_app.report.models import write_models_report
    from tests.report_toys import group_result, model_summaries, subject_result

    root = tmp_path_factory.mktemp("toy_reports")
    return {"subject": write_subject_report(subject_result(root), n_best_atoms=1),
            "group": write_group_report(group_result(root, n_atoms=6, n_coupled=2)),
            "models": write_models_report(model_summaries(root), root, "toyatlas",
                                          ["01", "02", "03"])}
