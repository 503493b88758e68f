"""The two analysis levels, wiring the stages together.

Data flows one way: stimulus (word timings) -> features (AN activations per word) ->
responses (HRF, TR grid) -> patterns (atoms) -> encoding (participant maps) -> group
(coupling with networks) -> report. Stimulus-level results are computed once per story set and
model and cached in the work directory; participant jobs running in parallel share them.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import scipy.sparse as sp

from bids_app.bids import derivatives as out
from bids_app.bids.layout import DatasetFiles, RunFiles, StoryPlacement, discover
from bids_app.cache import cache_key, cached_folder, file_digest
from bids_app.config import Config, resolve_device
from bids_app.errors import LlmfbnError

LOGGER = logging.getLogger("llmfbn")
ATOMS_DIR = "atoms"
GROUP_DIR = "group"


# --------------------------------------------------------------------------- stimulus level
@dataclass(frozen=True)
class Acquisition:
    """One task/run's scanner clock, shared by all subjects, and the stories played in it."""

    key: str                               # "task-x" or "task-x_run-N"
    task: str
    run: int | None
    t_r_s: float
    start_time_s: float
    n_frames: int                          # longest run across subjects
    stories: tuple[StoryPlacement, ...]

    def frame_times_s(self) -> np.ndarray:
        from bids_app.responses import frame_times_s

        return frame_times_s(self.n_frames, self.t_r_s, self.start_time_s)


def plan_acquisitions(dataset: DatasetFiles) -> dict[str, Acquisition]:
    """Group the subjects' runs by task/run; check they share TR, StartTime and stories.

    Also reads every word-timing file once (validating it) and checks that a story played
    in a single run fits inside it.
    """
    from bids_app.stimulus import read_word_timings

    by_key: dict[str, list[RunFiles]] = {}
    for run in dataset.all_runs:
        by_key.setdefault(run.acquisition, []).append(run)
    timings = {p.timings: read_word_timings(p.timings)
               for run in dataset.all_runs for p in run.stories}
    uses: dict[Path, int] = {}
    plan = {}
    for key, runs in sorted(by_key.items()):
        for label, values in (("RepetitionTime", {r.t_r_s for r in runs}),
                              ("StartTime", {r.start_time_s for r in runs}),
                              ("story onsets (events.tsv / --stimuli)",
                               {tuple(p.onset_s for p in r.stories) for r in runs}),
                              ("stories", {tuple(p.timings for p in r.stories) for r in runs})):
            if len(values) > 1:
                raise LlmfbnError(
                    f"the runs of {key} disagree on {label} across subjects",
                    found="; ".join(sorted(map(str, values)))[:500],
                    todo="the stimulus is shared by all subjects of a task/run; analyse "
                    "subjects with different acquisitions separately (--participant-label)")
        acq = Acquisition(key=key, task=runs[0].task, run=runs[0].run, t_r_s=runs[0].t_r_s,
                          start_time_s=runs[0].start_time_s,
                          n_frames=max(r.n_volumes for r in runs), stories=runs[0].stories)
        for placement in acq.stories:
            uses[placement.timings] = uses.get(placement.timings, 0) + 1
        plan[key] = acq
    for acq in plan.values():
        duration_s = acq.n_frames * acq.t_r_s
        for placement in acq.stories:
            words = timings[placement.timings]
            first_s = placement.onset_s + float(words.onsets_s[0])
            last_s = placement.onset_s + float(words.onsets_s[-1])
            split = uses[placement.timings] > 1      # a story spread over several runs
            if (not split and (last_s > duration_s or first_s < 0)) or \
                    (split and (last_s < 0 or first_s > duration_s)):
                raise LlmfbnError(
                    f"the words of {placement.timings} fall outside the run {acq.key}",
                    expected=f"word onsets between 0 and the run's duration {duration_s:g} s "
                    f"({acq.n_frames} volumes x TR {acq.t_r_s:g} s)",
                    found=f"story onset {placement.onset_s:g} s + words from "
                    f"{float(words.onsets_s[0]):g} to {float(words.onsets_s[-1]):g} s",
                    todo="check the story onset (events.tsv or --stimuli) and the timing file")
    return plan


def _stimulus_payload(config: Config, spec, plan: dict[str, Acquisition]) -> dict:
    digests = {}
    return {
        "stage": "responses-v2",
        "model": spec.identity,
        "context_tokens": config.context_tokens,
        "pooling": config.word_pooling,
        "hrf": config.hrf_model,
        "acquisitions": {
            key: {"t_r_s": a.t_r_s, "start_time_s": a.start_time_s, "n_frames": a.n_frames,
                  "stories": [(digests.setdefault(p.timings, file_digest(p.timings)), p.onset_s)
                              for p in a.stories]}
            for key, a in plan.items()},
    }


def _layer_chunks(layer_sizes: list[int], bytes_per_unit: int,
                  mem_gb: float) -> list[list[int]]:
    """Groups of layers whose working arrays (``bytes_per_unit`` per AN) fit in a quarter
    of the budget."""
    budget = mem_gb * 1e9 / 4
    chunks, current, size = [], [], 0
    for layer, units in enumerate(layer_sizes):
        need = units * bytes_per_unit
        if current and size + need > budget:
            chunks.append(current)
            current, size = [], 0
        current.append(layer)
        size += need
    return chunks + [current]


def compute_responses(config: Config, spec, plan: dict[str, Acquisition], device: str) -> Path:
    """Every AN's temporal response on each acquisition's TR grid (cached).

    The cached folder holds ``x.npy`` (n_neurons, n_trs_total) float32 on disk: one row per
    AN, its response z-scored within each acquisition, acquisitions concatenated in sorted
    order, then scaled to unit L2 norm (silent ANs: zero rows); ``frames.tsv``
    (acquisition, task, run, frame, time_s); ``neurons.tsv`` (layer, unit). Each story's
    words are run through the model once per layer group, and the HRF (or Lanczos + FIR)
    map from its words to the TRs of every acquisition it is heard in is applied on the
    model's device as the words are completed, so only TR-level responses come back;
    layers are processed in groups that fit ``--mem-gb``, and rows are written straight
    to the on-disk array.
    """
    from bids_app.features import load_model, neuron_table, word_activations
    from bids_app.responses import (n_response_columns, response_column_labels,
                                    response_operator, zscore_time)
    from bids_app.stimulus import read_word_timings

    def compute(folder: Path) -> None:
        started = time.monotonic()
        LOGGER.info("Loading language model %s on %s", spec.name, device)
        lm = load_model(spec, device=device)
        LOGGER.info("Model %s: %d layers, %d artificial neurons", spec.label,
                    len(lm.layer_sizes), lm.n_neurons)
        stories = sorted({p.timings for a in plan.values() for p in a.stories})
        words = {path: read_word_timings(path) for path in stories}
        frames = pd.concat([pd.DataFrame({
            "acquisition": key, "task": a.task, "run": a.run if a.run is not None else "n/a",
            "frame": np.arange(a.n_frames), "time_s": a.frame_times_s()})
            for key, a in sorted(plan.items())], ignore_index=True)
        n_trs = len(frames)
        n_cols = n_response_columns(1, config.hrf_model)      # response rows per AN
        x = np.lib.format.open_memmap(folder / "x.npy", mode="w+", dtype=np.float32,
                                      shape=(lm.n_neurons * n_cols, n_trs))
        offsets = np.concatenate([[0], np.cumsum(lm.layer_sizes)]) * n_cols
        # Each story's words -> TR-level responses of every acquisition it is heard in,
        # as one linear map applied where the activations are (on the GPU, if used):
        # the words x ANs activations never leave the device. The maps are built when
        # used (cheap next to the forward passes), not kept for all stories at once.
        heard_in = {path: [(key, acq, placement) for key, acq in sorted(plan.items())
                           for placement in acq.stories if placement.timings == path]
                    for path in stories}

        def story_operator(path):
            """Stacked (n_cols * n_frames, n_words) maps, with (key, n_frames) per block."""
            blocks = [response_operator(placement.onset_s + words[path].onsets_s,
                                        acq.frame_times_s(), hrf_model=config.hrf_model,
                                        drop_outside_s=32.0)
                      for _, acq, placement in heard_in[path]]
            targets = [(key, acq.n_frames) for key, acq, _ in heard_in[path]]
            return np.concatenate([op.reshape(-1, op.shape[2]) for op in blocks]), targets

        max_out = max(n_cols * sum(acq.n_frames for _, acq, _ in heard)
                      for heard in heard_in.values())
        # per AN: float64 responses of all acquisitions + one story's projection (float64
        # on the device, float32 back)
        chunks = _layer_chunks(list(lm.layer_sizes), n_trs * n_cols * 8 + max_out * 12,
                               config.mem_gb)
        for chunk_index, layers in enumerate(chunks, 1):
            rows = slice(int(offsets[layers[0]]), int(offsets[layers[-1] + 1]))
            n_units = (rows.stop - rows.start) // n_cols
            resp = {key: np.zeros((acq.n_frames, n_units * n_cols))
                    for key, acq in plan.items()}
            for path in stories:
                LOGGER.info("Story %s: %d words -> layers %d-%d of %s (chunk %d/%d)",
                            path.parent.name if path.name.startswith("align") else path.stem,
                            len(words[path].words), layers[0], layers[-1], spec.label,
                            chunk_index, len(chunks))
                project, targets = story_operator(path)
                out = word_activations(
                    lm, words[path].words, context_tokens=config.context_tokens,
                    pooling=config.word_pooling, progress=True, project=project,
                    **({"layers": layers} if len(chunks) > 1 else {}))
                start = 0
                for key, n_frames in targets:
                    part = out[start:start + n_cols * n_frames]
                    start += n_cols * n_frames
                    # (slot, frame, AN) -> columns AN-major: AN * n_cols + slot
                    resp[key].reshape(n_frames, n_units, n_cols)[...] += \
                        part.reshape(n_cols, n_frames, n_units).transpose(1, 2, 0)
                del out, project
            column = 0
            for key, acq in sorted(plan.items()):
                x[rows, column:column + acq.n_frames] = zscore_time(resp[key]).T
                column += acq.n_frames
            del resp
            block = np.asarray(x[rows], dtype=np.float64)
            norms = np.linalg.norm(block, axis=1, keepdims=True)
            x[rows] = np.divide(block, norms, out=np.zeros_like(block), where=norms > 0)
        x.flush()
        del x
        frames.to_csv(folder / "frames.tsv", sep="\t", index=False)
        neurons = neuron_table(lm)
        if n_cols > 1:       # huth: one row per (AN, FIR delay), AN-major like the columns
            labels = response_column_labels(len(neurons), config.hrf_model)
            neurons = neurons.iloc[labels[:, 0]].reset_index(drop=True)
            neurons["delay_trs"] = labels[:, 1]
        neurons.to_csv(folder / "neurons.tsv", sep="\t", index=False)
        LOGGER.info("Temporal responses of %d ANs x %d TRs done in %.1f s", lm.n_neurons,
                    n_trs, time.monotonic() - started)

    key = cache_key(_stimulus_payload(config, spec, plan))
    return cached_folder(config.work_dir, "responses", key, compute,
                         f"AN temporal responses ({spec.label})")


def compute_atoms(config: Config, spec, plan: dict[str, Acquisition], device: str) -> Path:
    """Atoms and codes of the model's responses (cached): atoms.npy, codes.npz, meta.json."""
    from bids_app.patterns import ALGORITHM_ID, learn_atoms

    responses_dir = compute_responses(config, spec, plan, device)

    def compute(folder: Path) -> None:
        x = np.load(responses_dir / "x.npy", mmap_mode="r")     # (n_neurons, n_trs)
        result = learn_atoms(x, n_atoms=config.n_atoms, sparsity_lambda=config.sparsity_lambda,
                             target_sparsity=config.target_sparsity, seed=config.seed,
                             device=device, mem_gb=config.mem_gb, n_threads=config.nprocs)
        np.save(folder / "atoms.npy", result.atoms)
        sp.save_npz(folder / "codes.npz", result.codes)
        (folder / "meta.json").write_text(json.dumps(result.meta()))
        for name in ("frames.tsv", "neurons.tsv"):
            (folder / name).write_bytes((responses_dir / name).read_bytes())

    payload = {"responses": responses_dir.name, "n_atoms": config.n_atoms,
               "lambda": config.sparsity_lambda, "target_sparsity": config.target_sparsity,
               "seed": config.seed, "algorithm": ALGORITHM_ID}
    return cached_folder(config.work_dir, "atoms", cache_key(payload), compute,
                         f"Atoms ({spec.label})")


def model_sidecar(config: Config, spec) -> dict:
    """Settings shared by every output's sidecar (design: recorded in every output)."""
    return {
        "Model": spec.name, "ModelLabel": spec.label, "ModelIdentity": spec.identity,
        "ArtificialNeurons": "inputs of the second linear layer of each feed-forward block",
        "WordPooling": {"mean": "mean over the word's sub-word tokens",
                        "last": "the word's last sub-word token"}[config.word_pooling],
        "ContextTokens": config.context_tokens,
        "HRF": config.hrf_model, "NumberOfAtoms": config.n_atoms,
        "SparsityLambda": config.sparsity_lambda if config.target_sparsity is None
        else "chosen for TargetSparsity (value in atoms/*_atoms.json, DictionaryLearning)",
        "TargetSparsity": config.target_sparsity, "Seed": config.seed,
        "ConfoundStrategy": config.confound_strategy, "GLM": config.glm,
        "SoftwareVersion": f"llmfbn {config.version}",
    }


def write_atom_outputs(config: Config, spec, atoms_dir: Path) -> None:
    """Atoms TSV + sidecar, sparse codes and the neuron table under OUTPUT_DIR/atoms."""
    folder = config.output_dir / ATOMS_DIR
    atoms = np.load(atoms_dir / "atoms.npy")
    frames = pd.read_csv(atoms_dir / "frames.tsv", sep="\t")
    meta = json.loads((atoms_dir / "meta.json").read_text())
    stability = meta.pop("stability", None)
    table = frames.copy()
    for k in range(atoms.shape[0]):
        table[atom_name(k)] = atoms[k]
    stem = f"desc-{spec.label}"
    out.write_tsv(folder / f"{stem}_atoms.tsv", table)
    codes = sp.load_npz(atoms_dir / "codes.npz")
    neurons = pd.read_csv(atoms_dir / "neurons.tsv", sep="\t")
    neurons.insert(0, "row", np.arange(len(neurons)))
    neurons["n_atoms_used"] = np.diff(codes.indptr)
    with out.atomic_path(folder / f"{stem}_codes.npz") as tmp:
        sp.save_npz(tmp, codes)
    out.write_tsv(folder / f"{stem}_neurons.tsv", neurons)
    out.write_json(folder / f"{stem}_atoms.json", {
        **model_sidecar(config, spec),
        "Description": "Representative temporal patterns (atoms) of all artificial neurons "
                       "(sparse dictionary learning); one column per atom, unit norm over all "
                       "TRs",
        "Columns": {"acquisition": "task/run whose clock the row is on",
                    "task": "BIDS task", "run": "BIDS run (n/a when the task has no runs)",
                    "frame": "volume index in the run (0-based)",
                    "time_s": "frame time in seconds (StartTime + frame x RepetitionTime)"},
        "DictionaryLearning": meta,
        "NumberOfNeurons": int(codes.shape[0]),
        "CodesFile": f"{stem}_codes.npz (scipy.sparse CSR, n_neurons x n_atoms)",
        "NeuronsFile": f"{stem}_neurons.tsv (row -> layer, unit)",
    })
    if stability is not None:
        out.write_json(folder / f"{stem}_stability.json", {
            "Description": "Atom stability: learned atoms matched (Hungarian, |r|) between "
                           "fits with different seeds and between fits on split halves of "
                           "the artificial neurons", **stability})


def atom_name(index: int) -> str:
    return f"atom{index + 1:02d}"


# ------------------------------------------------------------------------ participant level
def _prepare(config: Config):
    """Everything checked before the first write: inputs, timings, model names, device."""
    from bids_app.features import resolve_model

    dataset = discover(config)
    plan = plan_acquisitions(dataset)
    specs = [resolve_model(name) for name in config.model]
    labels = [spec.label for spec in specs]
    if len(set(labels)) != len(labels):
        raise LlmfbnError("two --model entries have the same file label",
                          found=", ".join(f"{s.name} -> {s.label}" for s in specs),
                          todo="pass each model once")
    device = resolve_device(config.device)
    return dataset, plan, specs, device


def _write_run_log(config: Config) -> None:
    logs = config.output_dir / "logs"
    out.write_text(logs / f"config_{config.analysis_level}_{config.run_id}.json",
                   config.to_json() + "\n")


def run_participant(config: Config) -> None:
    """Stimulus features and atoms (cached, per model), then one encoding model per subject."""
    import torch

    from bids_app.encoding import load_run_confounds

    torch.set_num_threads(config.nprocs)
    dataset, plan, specs, device = _prepare(config)
    confounds = {r.bold: load_run_confounds(r.bold) for r in dataset.all_runs}
    LOGGER.info("Participant level: %d subject(s) [%s], %d task/run clock(s) [%s], model(s) %s",
                len(dataset.subjects), ", ".join(dataset.subjects), len(plan),
                ", ".join(plan), ", ".join(s.name for s in specs))
    out.write_dataset_description(config.output_dir, config.bids_dir, config.derivatives,
                                  dataset.raw_description, dataset.fmriprep_description)
    _write_run_log(config)
    for spec in specs:
        atoms_dir = compute_atoms(config, spec, plan, device)
        write_atom_outputs(config, spec, atoms_dir)
        _participant_maps(config, spec, dataset, atoms_dir, confounds)
    LOGGER.info("Participant level done: outputs in %s", config.output_dir)


def _participant_maps(config, spec, dataset, atoms_dir: Path, confounds) -> None:
    from bids_app import report
    from bids_app.encoding import RunData, cross_validated_r, fit_participant

    atoms = np.load(atoms_dir / "atoms.npy")              # (n_atoms, n_trs_total)
    frames = pd.read_csv(atoms_dir / "frames.tsv", sep="\t")
    atoms_by_acq = {key: atoms[:, (frames["acquisition"] == key).to_numpy()].T
                    for key in frames["acquisition"].unique()}   # (n_frames, n_atoms)
    for index, subject in enumerate(dataset.subjects, 1):
        started = time.monotonic()
        runs = dataset.runs[subject]
        mask_img, mask = _subject_mask(runs)
        run_data = []
        for run in runs:
            conf, sample_mask = confounds[run.bold]
            run_data.append(RunData(bold=_masked_bold(run, mask, mask_img), confounds=conf,
                                    sample_mask=sample_mask,
                                    atoms=atoms_by_acq[run.acquisition][: run.n_volumes],
                                    name=run.name))
        fit = fit_participant(run_data, glm=config.glm)
        cv_r = cross_validated_r(run_data) if len(run_data) > 1 else None
        _write_participant(config, spec, subject, runs, mask_img, mask, fit, cv_r)
        report.write_subject_report(config, spec, subject, fit, mask_img, mask)
        LOGGER.info("[%d/%d] sub-%s (%s): %d runs, %d volumes, %d voxels, median R2 %.3f, "
                    "median CV r %s (%.1f s)", index, len(dataset.subjects), subject,
                    spec.label, len(runs), fit.n_volumes_used, int(mask.sum()),
                    float(np.median(fit.r2)),
                    "n/a" if cv_r is None else f"{float(np.median(cv_r)):.3f}",
                    time.monotonic() - started)


def _subject_mask(runs: list[RunFiles]):
    """Intersection of the subject's fMRIPrep brain masks (all runs on one grid)."""
    ref = nib.load(runs[0].mask)
    mask = np.asarray(ref.dataobj) > 0
    for run in runs[1:]:
        img = nib.load(run.mask)
        if img.shape != ref.shape or not np.allclose(img.affine, ref.affine, atol=1e-3):
            raise LlmfbnError(
                f"the runs of sub-{run.subject} are on different grids",
                found=f"{runs[0].mask.name} {ref.shape} vs {run.mask.name} {img.shape}",
                todo="use one --space/res for all runs")
        mask &= np.asarray(img.dataobj) > 0
    return nib.Nifti1Image(mask.astype(np.uint8), ref.affine), mask


def _masked_bold(run: RunFiles, mask: np.ndarray, mask_img) -> np.ndarray:
    """(n_volumes, n_voxels) float32 BOLD inside ``mask``."""
    img = nib.load(run.bold)
    if img.shape[:3] != mask.shape or not np.allclose(img.affine, mask_img.affine, atol=1e-3):
        raise LlmfbnError(f"{run.bold.name} and its brain mask are on different grids",
                          found=f"{img.shape[:3]} vs {mask.shape}",
                          todo="re-run fMRIPrep or check --space")
    data = np.asarray(img.dataobj, dtype=np.float32)
    return np.ascontiguousarray(data[mask].T)


def _unmask(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(n_maps, n_voxels) or (n_voxels,) -> 4-D (x, y, z, n_maps) or 3-D float32 volume."""
    values = np.asarray(values, dtype=np.float32)
    if values.ndim == 1:
        vol = np.zeros(mask.shape, np.float32)
        vol[mask] = values
        return vol
    vol = np.zeros(mask.shape + (values.shape[0],), np.float32)
    vol[mask] = values.T
    return vol


def participant_stem(config: Config, spec, subject: str) -> dict:
    return {"sub": subject, **config.space_entities, "desc": spec.label}


def _write_participant(config, spec, subject, runs, mask_img, mask, fit, cv_r) -> None:
    folder = config.output_dir / f"sub-{subject}" / "func"
    ents = participant_stem(config, spec, subject)
    affine = mask_img.affine
    common = {
        **model_sidecar(config, spec),
        "Sources": [str(r.bold.relative_to(config.derivatives)) for r in runs],
        "Tasks": sorted({r.task for r in runs}),
        "VolumesUsed": fit.n_volumes_used, "DegreesOfFreedom": int(fit.dof),
        "Atoms": [atom_name(k) for k in range(fit.effect.shape[0])],
        "AtomsFile": f"{ATOMS_DIR}/desc-{spec.label}_atoms.tsv",
    }
    maps = {
        "effect": (fit.effect, "Effect size (OLS beta) of each atom on BOLD in percent signal "
                               "change per unit of the unit-norm atom; volume k = atom k+1"),
        "t": (fit.t, "t statistic of each atom's effect (OLS, confounds in the model); "
                     "volume k = atom k+1"),
        "rsquare": (fit.r2, "Partial R2 of the atoms: 1 - RSS(full) / RSS(confounds only), "
                            "in-sample (chance level about n_atoms / n_volumes)"),
    }
    if cv_r is not None:
        maps["cvr"] = (cv_r, "Leave-one-run-out prediction correlation of the joint atom "
                             "model (confounds projected out per run); chance level 0")
    for stat, (values, description) in maps.items():
        path = folder / out.bids_name("statmap", ".nii.gz", **ents, stat=stat)
        out.write_nifti(path, nib.Nifti1Image(_unmask(values, mask), affine))
        out.write_json(path.with_name(path.name.replace(".nii.gz", ".json")),
                       {**common, "Description": description, "Statistic": stat})
    mask_path = folder / out.bids_name("mask", ".nii.gz", **ents)
    out.write_nifti(mask_path, mask_img)
    out.write_json(mask_path.with_name(mask_path.name.replace(".nii.gz", ".json")),
                   {**common, "Description": "Voxels analysed: intersection of the runs' "
                                            "fMRIPrep brain masks"})
    out.write_tsv(folder / out.bids_name("design", ".tsv", sub=subject, desc=spec.label),
                  fit.design)


# ------------------------------------------------------------------------------ group level
def run_group(config: Config) -> None:
    """Per model: group maps per atom, coupling to networks, AN sub-groups, organisation
    metrics; with several models, a side-by-side table of their metrics."""
    from bids_app.atlases import load_fbn_atlas
    from bids_app.features import resolve_model

    specs = [resolve_model(name) for name in config.model]
    inputs = {spec.label: _group_inputs(config, spec) for spec in specs}   # checks all first
    atlases = {label: load_fbn_atlas(config.fbn_atlas, inp.mask_img)
               for label, inp in inputs.items()}
    _write_run_log(config)
    rows = []
    for spec in specs:
        metrics = _group_model(config, spec, inputs[spec.label], atlases[spec.label])
        rows.append({"model": spec.name, "label": spec.label,
                     **{f"{section}_{k}": v for section in ("diversity", "consistency")
                        for k, v in metrics[section].items()
                        if not isinstance(v, (list, dict))}})
    if len(specs) > 1:
        table = pd.DataFrame(rows)
        out.write_tsv(config.output_dir / GROUP_DIR / "desc-models_metrics.tsv", table)
        print("Models side by side:")
        print(table.to_string(index=False))
    LOGGER.info("Group level done: %s", config.output_dir / GROUP_DIR)


def _group_model(config: Config, spec, inputs: GroupInputs, atlas) -> dict:
    from bids_app import group, report

    LOGGER.info("Group level (%s): %d subjects, %d atoms, atlas %s (%d networks)",
                spec.label, len(inputs.subjects), inputs.effects.shape[1], atlas.name,
                len(atlas.network_names))
    t_map, p_map = group.one_sample_t(inputs.effects)
    significant = group.fdr_mask(p_map, q=config.fdr_q)
    coupling = group.coupling_table(t_map, significant, atlas)
    assignments = group.assign_atoms(coupling, n_atoms=t_map.shape[0], min_iou=config.min_iou)
    subj_assign = group.subject_assignments(inputs.subject_t, inputs.dof, atlas, q=config.fdr_q,
                                            min_iou=config.min_iou)
    subj_assign["subject"] = [inputs.subjects[i] for i in subj_assign["subject"]]
    codes = sp.load_npz(inputs.atoms_folder / f"desc-{spec.label}_codes.npz")
    neurons = pd.read_csv(inputs.atoms_folder / f"desc-{spec.label}_neurons.tsv", sep="\t")
    atom_groups, network_groups, overlap = group.subgroups(codes, neurons["layer"].to_numpy(),
                                                          assignments)
    metrics = group.organisation_metrics(assignments, subj_assign, atlas.network_names)

    folder = config.output_dir / GROUP_DIR
    ents = {**config.space_entities, "desc": spec.label}
    sidecar = {**model_sidecar(config, spec), "Subjects": inputs.subjects,
               "FBNAtlas": atlas.name, "FBNAtlasSource": atlas.source,
               "Networks": list(atlas.network_names), "FDRq": config.fdr_q,
               "MinIoU": config.min_iou,
               "Atoms": [atom_name(k) for k in range(t_map.shape[0])]}
    mask = inputs.mask
    for stat, values, description in (
            ("t", t_map, "One-sample t across subjects of each atom's effect map"),
            ("tfdr", np.where(significant, t_map, 0.0),
             f"Group t map of each atom thresholded at FDR q < {config.fdr_q} (two-sided)")):
        path = folder / out.bids_name("statmap", ".nii.gz", **ents, stat=stat)
        out.write_nifti(path, nib.Nifti1Image(_unmask(values, mask), inputs.mask_img.affine))
        out.write_json(path.with_name(path.name.replace(".nii.gz", ".json")),
                       {**sidecar, "Description": description, "Statistic": stat,
                        "DegreesOfFreedom": len(inputs.subjects) - 1})
    stem = f"desc-{spec.label}"
    tables = {"coupling": coupling, "assignments": assignments, "subgroups": atom_groups,
              "networksubgroups": network_groups,
              "subjectassignments": subj_assign}
    for suffix, table in tables.items():
        out.write_tsv(folder / f"{stem}_{suffix}.tsv", table)
    out.write_tsv(folder / f"{stem}_overlap.tsv", overlap.reset_index(names="network"))
    out.write_json(folder / f"{stem}_metrics.json", {**metrics, "Settings": sidecar})
    report.write_group_report(config, spec, folder, atlas, assignments, coupling, atom_groups,
                              metrics, t_map, significant, inputs)
    print_coupled_atoms(assignments, atom_groups, spec.label)
    return metrics


@dataclass
class GroupInputs:
    subjects: list[str]
    effects: np.ndarray        # (n_subjects, n_atoms, n_voxels)
    subject_t: np.ndarray      # (n_subjects, n_atoms, n_voxels)
    dof: np.ndarray            # (n_subjects,)
    mask: np.ndarray           # 3-D bool, voxels analysed in every subject
    mask_img: nib.Nifti1Image
    atoms_folder: Path


def _group_inputs(config: Config, spec) -> GroupInputs:
    root = config.output_dir
    found = sorted(p.name[4:] for p in root.glob("sub-*") if p.is_dir()) if root.is_dir() else []
    subjects = config.participant_label or found
    todo = "run the participant level first with the same --model and --space"
    atoms_folder = root / ATOMS_DIR
    if not (atoms_folder / f"desc-{spec.label}_codes.npz").is_file():
        raise LlmfbnError(f"no participant-level outputs of model '{spec.label}' in {root}",
                          expected=str(atoms_folder / f"desc-{spec.label}_codes.npz"),
                          found="no such file", todo=todo)
    paths = {}
    for subject in subjects:
        ents = participant_stem(config, spec, subject)
        folder = root / f"sub-{subject}" / "func"
        paths[subject] = {s: folder / out.bids_name("statmap", ".nii.gz", **ents, stat=s)
                          for s in ("effect", "t")}
        paths[subject]["mask"] = folder / out.bids_name("mask", ".nii.gz", **ents)
        missing = [p for p in paths[subject].values() if not p.is_file()]
        if missing:
            raise LlmfbnError(f"participant-level maps of sub-{subject} are missing",
                              expected=str(missing[0]), found="no such file",
                              todo=todo + (" for this subject" if found else ""))
    if len(subjects) < 3:
        raise LlmfbnError("the group level needs at least 3 subjects",
                          found=f"{len(subjects)}: " + ", ".join(subjects),
                          todo="run the participant level on more subjects")
    ref = nib.load(paths[subjects[0]]["mask"])
    mask = np.asarray(ref.dataobj) > 0
    for subject in subjects[1:]:
        img = nib.load(paths[subject]["mask"])
        if img.shape != ref.shape or not np.allclose(img.affine, ref.affine, atol=1e-3):
            raise LlmfbnError("participant maps are on different grids",
                              found=f"sub-{subjects[0]} {ref.shape}, sub-{subject} {img.shape}",
                              todo="use one --space for every subject")
        mask &= np.asarray(img.dataobj) > 0
    effects, tmaps, dofs = [], [], []
    for subject in subjects:
        effects.append(np.asarray(nib.load(paths[subject]["effect"]).dataobj,
                                  dtype=np.float32)[mask].T)
        tmaps.append(np.asarray(nib.load(paths[subject]["t"]).dataobj, dtype=np.float32)[mask].T)
        side = json.loads(paths[subject]["t"].with_name(
            paths[subject]["t"].name.replace(".nii.gz", ".json")).read_text())
        dofs.append(side["DegreesOfFreedom"])
    mask_img = nib.Nifti1Image(mask.astype(np.uint8), ref.affine)
    return GroupInputs(subjects=list(subjects), effects=np.stack(effects),
                       subject_t=np.stack(tmaps), dof=np.asarray(dofs), mask=mask,
                       mask_img=mask_img, atoms_folder=atoms_folder)


def print_coupled_atoms(assignments: pd.DataFrame, atom_groups: pd.DataFrame,
                        label: str) -> None:
    """The demo's closing table: atoms coupled to networks, on standard output."""
    coupled = assignments[assignments["network"] != "none"]
    print(f"\nAtoms of model '{label}' coupled to functional brain networks "
          f"({len(coupled)} of {len(assignments)}):")
    if coupled.empty:
        print("  (none)")
        return
    sizes = atom_groups.set_index("atom")["n_neurons"]
    table = pd.DataFrame({
        "atom": [atom_name(a - 1) for a in coupled["atom"]],
        "network": coupled["network"].to_numpy(),
        "sign": coupled["sign"].to_numpy(),
        "IoU": coupled["iou"].round(3).to_numpy(),
        "voxels": coupled["n_atom_voxels"].to_numpy(),
        "AN sub-group": [int(sizes.get(a, 0)) for a in coupled["atom"]],
    })
    print(table.to_string(index=False))
    print()
