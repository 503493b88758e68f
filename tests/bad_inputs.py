"""Every bad input the tests try: how the synthetic dataset is broken, the exit code and the
message the user gets. ``tests/test_bad_inputs.py`` runs each case;
``docs/bad-inputs.md`` is generated from this list (``python -m tests.bad_inputs >
docs/bad-inputs.md``) and a test checks that it is current.

A case's ``setup(ctx)`` breaks a hard-linked copy of the small synthetic dataset (files are
replaced, never edited in place) and returns extra command-line arguments; ``message`` is a
part of the first line of the error the user sees.
"""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

SPACE = "space-MNI152NLin2009cAsym_res-2"
EXIT = {"input": 1, "usage": 2}


@dataclass
class Ctx:
    """The broken dataset's folders and the command line being built."""

    bids: Path
    tmp: Path
    monkeypatch: object = None
    out: Path = None
    work: Path = None
    level: str = "participant"
    positional: list | None = None     # replaces [BIDS_DIR, OUTPUT_DIR, level]

    def __post_init__(self):
        self.out = self.out or self.bids / "derivatives" / "llmfbn"
        self.work = self.work or self.tmp / "work"

    # ---------------------------------------------------------------- paths
    def fmriprep(self, sub: str, task: str, suffix: str) -> Path:
        """``sub-<sub>_task-<task>_<...>_<suffix>`` in the fMRIPrep folder; suffix e.g.
        ``desc-preproc_bold.nii.gz`` or ``desc-confounds_timeseries.tsv``."""
        space = "" if suffix.startswith("desc-confounds") else f"_{SPACE}"
        return (self.bids / "derivatives" / "fmriprep" / f"sub-{sub}" / "func"
                / f"sub-{sub}_task-{task}{space}_{suffix}")

    def raw(self, sub: str, task: str, suffix: str) -> Path:
        return self.bids / f"sub-{sub}" / "func" / f"sub-{sub}_task-{task}_{suffix}"

    # -------------------------------------------------------------- editing
    def replace(self, path: Path, data) -> None:
        """Write ``data`` (str or bytes) to ``path`` without touching its hard-linked twin."""
        path = Path(path)
        path.unlink(missing_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)

    def edit_json(self, path: Path, change: Callable[[dict], None]) -> None:
        data = json.loads(Path(path).read_text())
        change(data)
        self.replace(path, json.dumps(data))

    def edit_tsv(self, path: Path, change: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
        table = change(pd.read_csv(path, sep="\t", keep_default_na=False, dtype=str))
        self.replace(path, table.to_csv(sep="\t", index=False))

    def save_nifti(self, path: Path, img) -> None:
        Path(path).unlink(missing_ok=True)
        nib.save(img, path)


@dataclass
class Case:
    """One bad input: what is wrong, how to make it, what the user must see."""

    id: str
    what: str
    setup: Callable[[Ctx], list]
    message: str
    code: int = EXIT["input"]
    level: str = "participant"
    needs: tuple = field(default_factory=tuple)   # "unprivileged", "no-cuda"
    #: in the quick suite (``pytest -m "not slow"``): one case per item of issue #12 and per
    #: kind of check; the others run with the whole suite (CI)
    quick: bool = False


# ------------------------------------------------------------------------- helpers
def _labels(*subjects) -> list:
    return ["--participant-label", *subjects]


def _set(attr: str, value: Callable[[Ctx], object], extra=()) -> Callable[[Ctx], list]:
    def setup(ctx: Ctx) -> list:
        setattr(ctx, attr, value(ctx))
        return list(extra)
    return setup


def _a_file(ctx: Ctx) -> Path:
    path = ctx.tmp / "a-file"
    path.write_text("not a folder")
    return path


def _read_only(attr: str) -> Callable[[Ctx], list]:
    def setup(ctx: Ctx) -> list:
        folder = ctx.tmp / f"read-only-{attr}"
        folder.mkdir()
        folder.chmod(0o555)
        setattr(ctx, attr, folder)
        return _labels("001")
    return setup


def _unlink(*parts: Callable[[Ctx], Path], extra=()) -> Callable[[Ctx], list]:
    def setup(ctx: Ctx) -> list:
        for part in parts:
            path = part(ctx)
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        return list(extra) or _labels("001")
    return setup


def _confounds_rows(delta: int) -> Callable[[Ctx], list]:
    def setup(ctx: Ctx) -> list:
        path = ctx.fmriprep("001", "market", "desc-confounds_timeseries.tsv")
        ctx.edit_tsv(path, lambda t: t.iloc[:delta] if delta < 0
                     else pd.concat([t, t.iloc[-delta:]], ignore_index=True))
        return _labels("001")
    return setup


def _drop_tr(ctx: Ctx) -> list:
    for sub in ("001", "002", "003"):
        for task in ("lighthouse", "market"):
            for path in (ctx.fmriprep(sub, task, "desc-preproc_bold.json"),
                         ctx.raw(sub, task, "bold.json")):
                ctx.edit_json(path, lambda d: d.pop("RepetitionTime"))
    for task in ("lighthouse", "market"):
        ctx.edit_json(ctx.bids / f"task-{task}_bold.json", lambda d: d.pop("RepetitionTime"))
    return _labels("001")


def _tr_of(sub: str, t_r: float) -> Callable[[Ctx], None]:
    def change(ctx: Ctx) -> None:
        for task in ("lighthouse", "market"):
            ctx.edit_json(ctx.fmriprep(sub, task, "desc-preproc_bold.json"),
                          lambda d: d.update(RepetitionTime=t_r))
            ctx.edit_json(ctx.raw(sub, task, "bold.json"),
                          lambda d: d.update(RepetitionTime=t_r))
            path = ctx.fmriprep(sub, task, "desc-preproc_bold.nii.gz")
            img = nib.load(path)
            img = nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header)
            img.header["pixdim"][4] = t_r
            ctx.save_nifti(path, img)
    return change


def _header_tr(ctx: Ctx) -> list:
    path = ctx.fmriprep("001", "market", "desc-preproc_bold.nii.gz")
    img = nib.load(path)
    img = nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header)
    img.header["pixdim"][4] = 3.0
    ctx.save_nifti(path, img)
    return _labels("001")


def _other_tr_sub2(ctx: Ctx) -> list:
    _tr_of("002", 2.0)(ctx)
    return _labels("001", "002")


def _truncate(part: Callable[[Ctx], Path], keep: float = 0.6) -> Callable[[Ctx], list]:
    def setup(ctx: Ctx) -> list:
        path = part(ctx)
        data = path.read_bytes()
        ctx.replace(path, data[: int(len(data) * keep)])
        return _labels("001")
    return setup


def _flip_bytes(ctx: Ctx) -> list:
    path = ctx.fmriprep("001", "market", "desc-preproc_bold.nii.gz")
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(255 - b for b in data[middle:middle + 64])
    ctx.replace(path, bytes(data))
    return _labels("001")


def _bold_3d(ctx: Ctx) -> list:
    path = ctx.fmriprep("001", "market", "desc-preproc_bold.nii.gz")
    img = nib.load(path)
    ctx.save_nifti(path, nib.Nifti1Image(np.asarray(img.dataobj)[..., 0], img.affine))
    return _labels("001")


def _mask(shape_change: Callable[[np.ndarray], np.ndarray]) -> Callable[[Ctx], list]:
    def setup(ctx: Ctx) -> list:
        path = ctx.fmriprep("001", "market", "desc-brain_mask.nii.gz")
        img = nib.load(path)
        ctx.save_nifti(path, nib.Nifti1Image(shape_change(np.asarray(img.dataobj)),
                                             img.affine))
        return _labels("001")
    return setup


def _raw_shorter(ctx: Ctx) -> list:
    path = ctx.raw("001", "market", "bold.nii.gz")
    img = nib.load(path)
    ctx.save_nifti(path, nib.Nifti1Image(np.asarray(img.dataobj)[..., :-5], img.affine,
                                         img.header))
    return _labels("001")


def _events(rows: dict) -> Callable[[Ctx], list]:
    def setup(ctx: Ctx) -> list:
        ctx.replace(ctx.raw("001", "market", "events.tsv"),
                    pd.DataFrame(rows).to_csv(sep="\t", index=False))
        return _labels("001")
    return setup


def _bad_timing_line(ctx: Ctx) -> list:
    path = ctx.bids / "stimuli" / "gentle" / "market" / "align.csv"
    lines = path.read_text().splitlines()
    lines[4] = "word,word,abc,1.0"
    ctx.replace(path, "\n".join(lines) + "\n")
    return _labels("001")


def _stimuli_table(text: Callable[[Ctx], str]) -> Callable[[Ctx], list]:
    def setup(ctx: Ctx) -> list:
        path = ctx.tmp / "stimuli.tsv"
        path.write_text(text(ctx))
        return [*_labels("001"), "--stimuli", str(path)]
    return setup


def _no_disk(ctx: Ctx) -> list:
    usage = shutil.disk_usage(ctx.tmp)
    ctx.monkeypatch.setattr(shutil, "disk_usage",
                            lambda _path: usage._replace(free=1024))
    return _labels("001")


def _outputs(subjects=("001", "002", "003"), then=None,
             null: bool = True) -> Callable[[Ctx], list]:
    """Participant outputs (fake maps written by llmfbn's writers; with the coupling null's
    tables unless ``null`` is False), then ``then(ctx)``."""
    def setup(ctx: Ctx) -> list:
        from tests.fakes import fake_participant_outputs

        fake_participant_outputs(ctx.bids, ctx.out, ctx.tmp, subjects,
                                 null_surrogates=20 if null else 0)
        return then(ctx) if then else []
    return setup


def _atlas(shift_mm: float, tsv: bool = True) -> Callable[[Ctx], list]:
    def setup(ctx: Ctx) -> list:
        mask = nib.load(ctx.fmriprep("001", "market", "desc-brain_mask.nii.gz"))
        affine = mask.affine.copy()
        affine[:3, 3] += shift_mm
        labels = (np.asarray(mask.dataobj) > 0).astype(np.int16)
        path = ctx.tmp / "tpl-MNI152NLin2009cAsym_atlas-test_dseg.nii.gz"
        nib.save(nib.Nifti1Image(labels, affine), path)
        if tsv:
            path.with_name(path.name.replace(".nii.gz", ".tsv")).write_text(
                "index\tname\n1\tWhole\n")
        return ["--fbn-atlas", str(path)]
    return setup


def _gz_cut_t_map(ctx: Ctx) -> list:
    path = next((ctx.out / "sub-002" / "func").glob("*_stat-t_statmap.nii.gz"))
    with gzip.open(path, "rb") as stream:
        data = stream.read()
    ctx.replace(path, gzip.compress(data)[:-400])
    return []


def _prediction_path(ctx: Ctx):
    return next((ctx.out / "sub-002" / "func").glob("*_networkprediction.tsv"))


def _damaged_prediction(ctx: Ctx) -> list:
    path = _prediction_path(ctx)
    table = pd.read_csv(path, sep="\t")
    table.iloc[0, 1] = 1.5
    table.to_csv(path, sep="\t", index=False)
    return []


def _fewer_blocks(ctx: Ctx) -> list:
    path = _prediction_path(ctx)
    pd.read_csv(path, sep="\t").iloc[:-2].to_csv(path, sep="\t", index=False)
    return []


def _gone(pattern: str) -> Callable[[Ctx], list]:
    def then(ctx: Ctx) -> list:
        next((ctx.out / "sub-002" / "func").glob(pattern)).unlink()
        return []
    return then


CASES = [
    # --- folders and the command line
    Case("bids-missing", "BIDS_DIR does not exist",
         _set("positional", lambda c: [c.tmp / "nope", c.out, "participant"]),
         "the BIDS dataset folder does not exist", quick=True),
    Case("output-is-input", "OUTPUT_DIR is BIDS_DIR",
         _set("out", lambda c: c.bids), "the output folder is the input BIDS folder"),
    Case("output-inside-raw", "OUTPUT_DIR inside the raw dataset, not under derivatives/",
         _set("out", lambda c: c.bids / "results"),
         "the output folder lies inside the raw BIDS dataset", quick=True),
    Case("input-inside-output", "BIDS_DIR inside OUTPUT_DIR",
         _set("out", lambda c: c.bids.parent), "the BIDS folder lies inside the output folder"),
    Case("work-inside-raw", "--work-dir inside the raw dataset",
         _set("work", lambda c: c.bids / "work"),
         "the work directory is inside the input BIDS folder"),
    Case("output-is-file", "OUTPUT_DIR is a file",
         _set("out", _a_file), "the output folder path exists and is not a folder"),
    Case("work-is-file", "--work-dir is a file",
         _set("work", _a_file), "the work directory path exists and is not a folder"),
    Case("output-read-only", "OUTPUT_DIR is read-only", _read_only("out"),
         "the output folder cannot be written", needs=("unprivileged",), quick=True),
    Case("work-read-only", "--work-dir is read-only", _read_only("work"),
         "the work directory cannot be written", needs=("unprivileged",)),
    Case("no-space-left", "too little free disk for the estimated outputs", _no_disk,
         "not enough free disk space for this run"),
    Case("n-atoms-zero", "--n-atoms 0", lambda c: ["--n-atoms", "0"],
         "argument --n-atoms: expected a positive whole number, found '0'", EXIT["usage"],
         quick=True),
    Case("space-malformed", "--space MNI:res", lambda c: ["--space", "MNI:res"],
         "argument --space: --space 'MNI:res': expected SPACE or SPACE:res-N", EXIT["usage"]),
    Case("label-malformed", "--participant-label a_b", lambda c: _labels("a_b"),
         "participant label 'a_b' is not a BIDS label", EXIT["usage"]),
    Case("unknown-option", "an option llmfbn does not have", lambda c: ["--frobnicate"],
         "unrecognized arguments: --frobnicate", EXIT["usage"]),
    Case("level-missing", "no analysis level",
         _set("positional", lambda c: [c.bids, c.out]),
         "the following arguments are required: analysis_level", EXIT["usage"]),
    Case("device-unknown", "--device tpu", lambda c: ["--device", "tpu"],
         "argument --device: invalid choice: 'tpu'", EXIT["usage"]),
    # --- the raw dataset
    Case("no-description", "no dataset_description.json in BIDS_DIR",
         _unlink(lambda c: c.bids / "dataset_description.json"),
         "has no dataset_description.json"),
    Case("description-not-json", "dataset_description.json is not JSON",
         lambda c: (c.replace(c.bids / "dataset_description.json", "{"), _labels("001"))[1],
         "cannot read"),
    Case("unknown-subject", "--participant-label of a subject not in the dataset",
         lambda c: _labels("042"), "unknown participant label(s): sub-042", quick=True),
    Case("unknown-task", "--task of a task not in the dataset",
         lambda c: [*_labels("001"), "--task", "nosuch"], "unknown task(s): nosuch"),
    Case("events-missing", "a run without events.tsv",
         _unlink(lambda c: c.raw("001", "market", "events.tsv")), "missing events.tsv"),
    Case("events-no-story", "events.tsv without the story's row",
         _events({"onset": [1.0, 5.0], "duration": [2.0, 2.0], "trial_type": ["a", "b"]}),
         "Cannot tell the story onset from events file"),
    Case("events-onset-text", "events.tsv story onset is not a number",
         _events({"onset": ["soon"], "duration": [2.0], "trial_type": ["market"]}),
         "story onset is not a number"),
    Case("story-outside-run", "the story's words fall after the end of the run",
         _events({"onset": [1000.0], "duration": [2.0], "trial_type": ["market"]}),
         "fall outside the run task-market"),
    Case("raw-volumes-differ", "raw BOLD series shorter than fMRIPrep's", _raw_shorter,
         "the raw and preprocessed BOLD series of task-market of sub-001 have different "
         "lengths"),
    # --- word timings and --stimuli
    Case("timings-missing", "no word timings for a task given with --task",
         _unlink(lambda c: c.bids / "stimuli" / "gentle" / "market",
                 extra=[*_labels("001"), "--task", "market"]),
         "missing word timings for task 'market'"),
    Case("no-timings", "no task has word timings",
         _unlink(lambda c: c.bids / "stimuli" / "gentle"), "no task has word timings"),
    Case("timings-malformed", "align.csv with a non-numeric time on line 5", _bad_timing_line,
         "align.csv, line 5"),
    Case("stimuli-missing", "--stimuli file does not exist",
         lambda c: [*_labels("001"), "--stimuli", str(c.tmp / "none.tsv")],
         "the --stimuli file does not exist"),
    Case("stimuli-columns", "--stimuli table with wrong columns",
         _stimuli_table(lambda c: "story\tfile\nmarket\tx\n"), "has the wrong columns"),
    Case("stimuli-task", "--stimuli names a task not in the dataset",
         _stimuli_table(lambda c: "task\tpath\nnosuch\tstimuli/gentle/market/align.csv\n"),
         "names task(s) not in the dataset: nosuch"),
    Case("stimuli-timings-missing", "--stimuli names a timing file that does not exist",
         _stimuli_table(lambda c: "task\tpath\nmarket\tstimuli/none.csv\n"),
         "word-timing file not found"),
    Case("stimuli-audio-unreadable", "--stimuli names an audio file that is not a WAV file",
         _stimuli_table(lambda c: "task\tpath\taudio\nmarket\tstimuli/gentle/market/align.csv"
                        "\tstimuli/gentle/market/align.csv\n"),
         "cannot read the audio file"),
    Case("envelope-audio-missing", "--nuisance envelope and a story's WAV file is missing",
         _unlink(lambda c: c.bids / "stimuli" / "market_audio.wav",
                 extra=[*_labels("001"), "--nuisance", "wordrate", "envelope"]),
         "audio file not found"),
    # --- fMRIPrep outputs
    Case("fmriprep-missing", "--derivatives folder does not exist",
         lambda c: [*_labels("001"), "--derivatives", str(c.tmp / "nofmriprep")],
         "the fMRIPrep derivatives folder does not exist"),
    Case("fmriprep-description", "fMRIPrep folder without dataset_description.json",
         _unlink(lambda c: c.bids / "derivatives" / "fmriprep" / "dataset_description.json"),
         "has no dataset_description.json"),
    Case("space-absent", "--space of which fMRIPrep wrote no series",
         lambda c: [*_labels("001"), "--space", "MNI152NLin6Asym"],
         "missing fMRIPrep preprocessed BOLD for sub-001_task-lighthouse"),
    *[Case(f"{key}-missing", f"a run without fMRIPrep's {what}",
           _unlink(lambda c, suffix=suffix: c.fmriprep("001", "market", suffix)),
           f"missing fMRIPrep {what} for sub-001_task-market")
      for key, what, suffix in (("bold", "preprocessed BOLD", "desc-preproc_bold.nii.gz"),
                                ("mask", "brain mask", "desc-brain_mask.nii.gz"),
                                ("confounds", "confounds", "desc-confounds_timeseries.tsv"))],
    Case("confounds-sidecar-missing", "confounds TSV without its JSON (CompCor masks)",
         _unlink(lambda c: c.fmriprep("001", "market", "desc-confounds_timeseries.json")),
         "Cannot load the confounds of"),
    Case("confounds-column-missing", "confounds without trans_x",
         lambda c: (c.edit_tsv(c.fmriprep("001", "market", "desc-confounds_timeseries.tsv"),
                               lambda t: t.drop(columns="trans_x")), _labels("001"))[1],
         "Cannot load the confounds of"),
    Case("confounds-short", "confounds 30 rows shorter than the BOLD series",
         _confounds_rows(-30),
         "the confounds of task-market of sub-001 do not match its BOLD series", quick=True),
    Case("confounds-long", "confounds 5 rows longer than the BOLD series", _confounds_rows(5),
         "the confounds of task-market of sub-001 do not match its BOLD series"),
    Case("tr-missing", "RepetitionTime in no sidecar (fMRIPrep, raw, root)", _drop_tr,
         "no RepetitionTime for"),
    Case("tr-inconsistent", "fMRIPrep's RepetitionTime differs from the raw one",
         lambda c: (c.edit_json(c.fmriprep("001", "market", "desc-preproc_bold.json"),
                                lambda d: d.update(RepetitionTime=2.0)), _labels("001"))[1],
         "inconsistent RepetitionTime for"),
    Case("tr-header", "NIfTI header step (pixdim[4], s) differs from RepetitionTime",
         _header_tr, "disagrees with its RepetitionTime", quick=True),
    Case("tr-across-subjects", "two subjects' runs of a task have different TRs",
         _other_tr_sub2, "the runs of task-lighthouse disagree on RepetitionTime"),
    Case("bold-truncated", "preprocessed BOLD .nii.gz cut short",
         _truncate(lambda c: c.fmriprep("001", "market", "desc-preproc_bold.nii.gz")),
         "the file is damaged, incomplete or not an image", quick=True),
    Case("bold-corrupt", "preprocessed BOLD .nii.gz with damaged bytes", _flip_bytes,
         "the file is damaged, incomplete or not an image"),
    Case("bold-3d", "preprocessed BOLD is a 3-D image", _bold_3d, "is not a 4-D BOLD series"),
    Case("mask-grid", "brain mask on another grid than the BOLD series",
         _mask(lambda d: d[:-2]), "are on different grids", quick=True),
    Case("mask-4d", "brain mask with two volumes",
         _mask(lambda d: np.stack([d, d], axis=3)), "is not 3-D"),
    Case("mask-truncated", "brain mask .nii.gz cut short",
         _truncate(lambda c: c.fmriprep("001", "market", "desc-brain_mask.nii.gz"), 0.5),
         "the file is damaged, incomplete or not an image"),
    # --- models, atoms and resources
    Case("model-unknown", "--model that is neither bundled, a path nor cached",
         lambda c: [*_labels("001"), "--model", "no-such-org/no-such-model"],
         "unknown model 'no-such-org/no-such-model'"),
    Case("model-twice", "two --model entries with one file label",
         lambda c: [*_labels("001"), "--model", "minilm", "MiniLM"],
         "two --model entries have the same file label"),
    Case("cuda-missing", "--device cuda on a machine without CUDA",
         lambda c: [*_labels("001"), "--device", "cuda"],
         "--device cuda was requested but CUDA is not available", needs=("no-cuda",)),
    Case("n-atoms-above-neurons", "--n-atoms larger than the model's ANs",
         lambda c: [*_labels("001"), "--n-atoms", "10000"],
         "--n-atoms 10000 exceeds the number of artificial neurons of minilm"),
    Case("n-atoms-above-volumes", "--n-atoms larger than the GLM's volumes allow",
         lambda c: [*_labels("001"), "--n-atoms", "500"],
         "--n-atoms 500 is too many for the volumes of sub-001"),
    Case("mem-too-small", "--mem-gb below the dictionary learner's minimum",
         lambda c: [*_labels("001"), "--mem-gb", "0.001"],
         "--mem-gb 0.001 is too small for minilm", quick=True),
    # --- group level
    Case("group-first", "group level before any participant run", lambda c: [],
         "no participant-level run in this output folder", level="group", quick=True),
    Case("group-contradicts", "group --n-atoms other than the participant level's",
         _outputs(then=lambda c: ["--n-atoms", "32"]),
         "--n-atoms contradicts the setting the participant level ran with", level="group"),
    Case("group-two-subjects", "participant outputs of only two subjects",
         _outputs(("001", "002")), "the group level needs at least 3 subjects",
         level="group"),
    Case("group-map-missing", "a subject's t map is missing",
         _outputs(then=_gone("*_stat-t_statmap.nii.gz")),
         "participant-level maps of sub-002 are missing", level="group"),
    Case("group-mask-missing", "a subject's mask is missing",
         _outputs(then=_gone("*_task-lighthouse_*_mask.nii.gz")),
         "participant-level maps of sub-002 are missing", level="group"),
    Case("group-design-missing", "a subject's design matrix TSV is missing",
         _outputs(then=_gone("*_design.tsv")), "the design matrix of sub-002 is missing",
         level="group"),
    Case("group-mem-too-small", "--mem-gb below what the group level's bootstrap needs",
         _outputs(then=lambda c: ["--mem-gb", "0.0001"]),
         "--mem-gb 0.0001 is too small for the group level of minilm", level="group"),
    Case("group-map-truncated", "a subject's t map .nii.gz cut short",
         _outputs(then=_gz_cut_t_map), "the file is damaged, incomplete or not an image",
         level="group"),
    Case("group-null-missing", "a subject's coupling-null table is missing",
         _outputs(then=_gone("*_networkeffects.tsv")),
         "the coupling-null table of sub-002 is missing", level="group"),
    Case("group-prediction-damaged", "a subject's network-prediction table holds a "
         "correlation above 1", _outputs(then=_damaged_prediction),
         "the network-prediction table of sub-002 is not what the participant level writes",
         level="group"),
    Case("group-prediction-blocks", "the subjects' network-prediction tables hold different "
         "numbers of surrogate blocks", _outputs(then=_fewer_blocks),
         "network-prediction tables hold different numbers of surrogate blocks",
         level="group"),
    Case("group-null-atlas", "group --fbn-atlas other than the one the participant level fitted "
         "the null on", _outputs(then=lambda c: ["--fbn-atlas", "yeo7"]),
         "--fbn-atlas contradicts the setting the participant level ran with", level="group",
         quick=True),
    # the atlas cases: participant outputs without the null, so the group level may choose
    Case("atlas-missing", "--fbn-atlas file does not exist",
         _outputs(then=lambda c: ["--fbn-atlas", str(c.tmp / "none.nii.gz")], null=False),
         "is neither a known atlas name nor an existing file", level="group"),
    Case("atlas-no-table", "3-D label atlas without its TSV",
         _outputs(then=_atlas(0.0, tsv=False), null=False), "has no label table next to it",
         level="group"),
    Case("atlas-nowhere", "atlas entirely outside the brain mask (shifted 150 mm)",
         _outputs(then=_atlas(150.0), null=False), "has no network inside the brain mask",
         level="group"),
    Case("atlas-outside", "atlas in another field of view (shifted 60 mm on each axis: 15 % "
         "inside the brain mask)", _outputs(then=_atlas(60.0), null=False),
         "lies mostly outside the analysed brain mask", level="group", quick=True),
]


def render_table(cases=CASES) -> str:
    """``docs/bad-inputs.md``: one row per case."""
    lines = [
        "# Bad inputs and what llmfbn says",
        "",
        "Generated from `tests/bad_inputs.py` (`python -m tests.bad_inputs > "
        "docs/bad-inputs.md`); `tests/test_bad_inputs.py` runs every case and checks the "
        "exit code, that the message contains the text below, that no traceback is "
        "printed and that no file is written or changed (`pytest -m \"not slow\"` runs the "
        "cases marked *quick*, the whole suite and CI all of them). Exit codes: 1 bad input "
        "data or environment, 2 bad usage (see the README).",
        "",
        f"{len(cases)} cases.",
        "",
        "| # | case | level | bad input | exit | message (part of the first line) |",
        "|---|---|---|---|---|---|",
    ]
    for number, case in enumerate(cases, 1):
        message = case.message.replace("|", "\\|")
        name = f"`{case.id}`" + (" *quick*" if case.quick else "")
        lines.append(f"| {number} | {name} | {case.level} | {case.what} | {case.code} "
                     f"| {message} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_table(), end="")
