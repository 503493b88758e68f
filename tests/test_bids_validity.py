"""Valid BIDS in and out: the official validator (bids-validator-deno, offline) finds no error
in the synthetic dataset nor in llmfbn's derivatives, and pybids reads the derivatives with
the shipped configuration (each statistic selectable, each file's own sidecar)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import nibabel as nib
import pytest

from bids_app.bids import naming
from bids_app.bids.describe import derivatives_layout, pybids_config, readme_text
from tests.fakes import fake_participant_outputs

ROOT = Path(__file__).resolve().parents[1]
#: Warnings the validator may give on llmfbn's derivatives, explained in docs/bids.md.
EXPLAINED_WARNINGS = {"TOO_FEW_AUTHORS"}


def validate(folder: Path) -> list[dict]:
    """The issues the official BIDS validator reports on ``folder``."""
    exe = shutil.which("bids-validator-deno") or str(Path(sys.executable).parent
                                                     / "bids-validator-deno")
    assert Path(exe).exists(), "bids-validator-deno is missing: pip install -e '.[test]'"
    result = subprocess.run([exe, str(folder), "--format", "json"], capture_output=True,
                            text=True, timeout=600)
    assert result.stdout.strip(), result.stderr
    return json.loads(result.stdout)["issues"]["issues"]


def errors(issues: list[dict]) -> Counter:
    return Counter((i["code"], i.get("location")) for i in issues if i["severity"] == "error")


def test_synthetic_dataset_is_valid_bids(small_dataset):
    """The raw dataset and its simulated fMRIPrep outputs: no error (RepetitionTime in the
    header, stim_file relative to stimuli/ and existing, Resolution of res-2 files)."""
    assert errors(validate(small_dataset)) == Counter()
    assert errors(validate(small_dataset / "derivatives" / "fmriprep")) == Counter()


@pytest.fixture
def fake_outputs(dataset_copy, tmp_path):
    """Participant outputs of three subjects written by llmfbn's own writers."""
    output = tmp_path / "derivatives"
    fake_participant_outputs(dataset_copy, output, tmp_path, ("001", "002", "003"))
    return output


def test_participant_outputs_are_valid_bids(fake_outputs):
    issues = validate(fake_outputs)
    assert errors(issues) == Counter()
    assert {i["code"] for i in issues} <= EXPLAINED_WARNINGS


def test_every_map_has_units(fake_outputs):
    maps = list(fake_outputs.rglob("*.nii.gz"))
    assert maps
    for path in maps:
        units = nib.load(path).header.get_xyzt_units()
        assert units[0] == "mm", path.name
        assert len(nib.load(path).shape) == 3 or units[1] == "sec", path.name


def test_pybids_selects_each_statistic_with_its_own_sidecar(fake_outputs):
    layout = derivatives_layout(fake_outputs)
    for stat in ("effect", "t", "rsquare"):
        files = layout.get(stat=stat, desc="minilm", suffix="statmap", extension=".nii.gz")
        assert sorted(f.entities["subject"] for f in files) == ["001", "002", "003"]
        for f in files:
            assert layout.get_metadata(f.path)["Statistic"] == stat, f.filename
    masks = layout.get(subject="001", task="market", suffix="mask", extension=".nii.gz")
    assert len(masks) == 1 and layout.get_metadata(masks[0].path)["Type"] == "Brain"


def test_dataset_files(fake_outputs):
    """README, pybids configuration, .bidsignore patterns the validator matches."""
    assert naming.readme_file(fake_outputs).read_text() == readme_text()
    copy = naming.pybids_config_copy(fake_outputs)
    assert json.loads(copy.read_text()) == json.loads(pybids_config().read_text())
    ignore = (fake_outputs / ".bidsignore").read_text().split()
    assert ignore == list(naming.BIDSIGNORE) and not any(p.endswith("/") for p in ignore)
    description = json.loads((fake_outputs / "dataset_description.json").read_text())
    assert set(description["DatasetLinks"]) == {"raw", "fmriprep"}


def test_bids_doc_explains_the_warnings():
    doc = (ROOT / "docs" / "bids.md").read_text()
    for code in EXPLAINED_WARNINGS:
        assert code in doc


@pytest.mark.slow
def test_derivatives_of_a_run_are_valid_bids(planted_run):
    """The derivatives of a whole run (both levels): no error, only explained warnings."""
    _, output = planted_run
    issues = validate(output)
    assert errors(issues) == Counter()
    assert {i["code"] for i in issues} <= EXPLAINED_WARNINGS


@pytest.mark.slow
def test_pybids_reads_a_run(planted_run):
    """Every statistic of subjects and group selectable; get_metadata gives each file's own
    sidecar (the four maps of a subject and the group's t / tfdr maps differ only in
    ``stat``)."""
    _, output = planted_run
    layout = derivatives_layout(output)
    maps = layout.get(suffix="statmap", extension=".nii.gz")
    assert {f.entities["stat"] for f in maps} == {"effect", "t", "rsquare", "cvr", "tfdr"}
    for f in maps:
        assert layout.get_metadata(f.path)["Statistic"] == f.entities["stat"], f.filename
    group = layout.get(stat="tfdr", suffix="statmap", extension=".nii.gz")
    assert len(group) == 1 and "subject" not in group[0].entities
