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
from bids_app.bids.layout import DatasetFiles, RunFiles, discover
from bids_app.cache import cache_key, cached_folder, file_digest
from bids_app.config import Config, resolve_device
from bids_app.errors import LlmfbnError

LOGGER = logging.getLogger("llmfbn")
ATOMS_DIR = "atoms"
GROUP_DIR = "group"


# --------------------------------------------------------------------------- stimulus level
@dataclass(frozen=True)
class StoryGrid:
    """One task's story on its run's scanner clock."""

    task: str
    timings_path: Path
    onset_s: float          # story start, seconds from the first volume's acquisition start
    t_r_s: float
    start_time_s: float
    n_frames: int           # longest run of this task across subjects

    def frame_times_s(self) -> np.ndarray:
        from bids_app.responses import frame_times_s

        return frame_times_s(self.n_frames, self.t_r_s, self.start_time_s)


def story_grids(dataset: DatasetFiles) -> dict[str, StoryGrid]:
    """Check that every run of a task shares TR, StartTime and story onset; build the grids."""
    from bids_app.stimulus import read_word_timings, story_onset_s

    grids = {}
    for task, timings_path in sorted(dataset.timings.items()):
        runs = [r for rs in dataset.runs.values() for r in rs if r.task == task]
        if not runs:
            continue
        timings = read_word_timings(timings_path)  # validates the file now, before any write
        onsets = {r.events: story_onset_s(r.events, task) for r in {r.events: r for r in runs}.values()}
        for label, values in (("RepetitionTime", {r.t_r_s for r in runs}),
                              ("StartTime", {r.start_time_s for r in runs}),
                              ("story onset (events.tsv)", set(onsets.values()))):
            if len(values) > 1:
                raise LlmfbnError(
                    f"runs of task '{task}' disagree on {label}",
                    found=", ".join(f"{v:g}" for v in sorted(values)),
                    todo="the stimulus grid is shared by all subjects of a task; analyse "
                    "subjects with different acquisitions separately (--participant-label)")
        grid = StoryGrid(task=task, timings_path=timings_path, onset_s=onsets.popitem()[1],
                         t_r_s=runs[0].t_r_s, start_time_s=runs[0].start_time_s,
                         n_frames=max(r.n_volumes for r in runs))
        duration_s = grid.n_frames * grid.t_r_s
        last_s = grid.onset_s + float(timings.onsets_s[-1])
        if last_s > duration_s:
            raise LlmfbnError(
                f"the words of task '{task}' run past the end of its BOLD runs",
                expected=f"story onset + last word onset <= {duration_s:g} s "
                f"({grid.n_frames} volumes x TR {grid.t_r_s:g} s)",
                found=f"{grid.onset_s:g} s + {float(timings.onsets_s[-1]):g} s from {timings_path}",
                todo="check the story onset in events.tsv and the timing file")
        grids[task] = grid
    return grids


def _stimulus_payload(config: Config, spec, grids: dict[str, StoryGrid]) -> dict:
    return {
        "stage": "responses-v1",
        "model": spec.identity,
        "context_tokens": config.context_tokens,
        "hrf": config.hrf_model,
        "stories": {t: {"timings": file_digest(g.timings_path), "onset_s": g.onset_s,
                        "t_r_s": g.t_r_s, "start_time_s": g.start_time_s,
                        "n_frames": g.n_frames} for t, g in grids.items()},
    }


def compute_responses(config: Config, spec, grids: dict[str, StoryGrid], device: str) -> Path:
    """Every AN's z-scored temporal response on each task's TR grid (cached).

    The cached folder holds ``responses.npy`` (n_trs_total, n_neurons) float32 (tasks stacked
    in sorted order), ``frames.tsv`` (task, frame, time_s) and ``neurons.tsv`` (layer, unit).
    """
    from bids_app.features import load_model, neuron_table, word_activations
    from bids_app.responses import temporal_responses, zscore_time
    from bids_app.stimulus import read_word_timings

    def compute(folder: Path) -> None:
        started = time.monotonic()
        LOGGER.info("Loading language model %s on %s", spec.name, device)
        lm = load_model(spec, device=device)
        LOGGER.info("Model %s: %d layers, %d artificial neurons", spec.label,
                    len(lm.layer_sizes), lm.n_neurons)
        blocks, frames = [], []
        for task, grid in sorted(grids.items()):
            timings = read_word_timings(grid.timings_path)
            LOGGER.info("Story '%s': %d words -> activations of %d ANs", task,
                        len(timings.words), lm.n_neurons)
            acts = word_activations(lm, timings.words, context_tokens=config.context_tokens,
                                    progress=True)
            frame_times = grid.frame_times_s()
            resp = temporal_responses(acts, grid.onset_s + timings.onsets_s, frame_times,
                                      hrf_model=config.hrf_model)
            blocks.append(zscore_time(resp))
            frames.append(pd.DataFrame({"task": task, "frame": np.arange(grid.n_frames),
                                        "time_s": frame_times}))
        np.save(folder / "responses.npy", np.vstack(blocks).astype(np.float32))
        pd.concat(frames).to_csv(folder / "frames.tsv", sep="\t", index=False)
        neuron_table(lm).to_csv(folder / "neurons.tsv", sep="\t", index=False)
        LOGGER.info("Temporal responses done in %.1f s", time.monotonic() - started)

    key = cache_key(_stimulus_payload(config, spec, grids))
    return cached_folder(config.work_dir, "responses", key, compute, "AN temporal responses")


def compute_atoms(config: Config, spec, grids: dict[str, StoryGrid], device: str) -> Path:
    """Atoms and codes of the model's responses (cached): atoms.npy, codes.npz, meta.json."""
    from bids_app.patterns import ALGORITHM_ID, learn_atoms

    responses_dir = compute_responses(config, spec, grids, device)

    def compute(folder: Path) -> None:
        responses = np.load(responses_dir / "responses.npy", mmap_mode="r")
        result = learn_atoms(np.asarray(responses), n_atoms=config.n_atoms,
                             sparsity_lambda=config.sparsity_lambda, seed=config.seed)
        np.save(folder / "atoms.npy", result.atoms)
        sp.save_npz(folder / "codes.npz", result.codes)
        (folder / "meta.json").write_text(json.dumps(
            {"objective": result.objective, "n_silent": result.n_silent}))
        for name in ("frames.tsv", "neurons.tsv"):
            (folder / name).write_bytes((responses_dir / name).read_bytes())

    payload = {"responses": responses_dir.name, "n_atoms": config.n_atoms,
               "lambda": config.sparsity_lambda, "seed": config.seed, "algorithm": ALGORITHM_ID}
    return cached_folder(config.work_dir, "atoms", cache_key(payload), compute, "Atoms")


def model_sidecar(config: Config, spec) -> dict:
    """Settings shared by every output's sidecar (design: recorded in every output)."""
    return {
        "Model": spec.name, "ModelLabel": spec.label, "ModelIdentity": spec.identity,
        "ArtificialNeurons": "inputs of the second linear layer of each feed-forward block",
        "WordPooling": "mean over sub-word tokens", "ContextTokens": config.context_tokens,
        "HRF": config.hrf_model, "NumberOfAtoms": config.n_atoms,
        "SparsityLambda": config.sparsity_lambda, "Seed": config.seed,
        "ConfoundStrategy": config.confound_strategy, "GLM": config.glm,
        "SoftwareVersion": f"llmfbn {config.version}",
    }


def write_atom_outputs(config: Config, spec, atoms_dir: Path) -> None:
    """Atoms TSV + sidecar, sparse codes and the neuron table under OUTPUT_DIR/atoms."""
    folder = config.output_dir / ATOMS_DIR
    atoms = np.load(atoms_dir / "atoms.npy")
    frames = pd.read_csv(atoms_dir / "frames.tsv", sep="\t")
    meta = json.loads((atoms_dir / "meta.json").read_text())
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
                       "(sparse dictionary learning, scikit-learn MiniBatchDictionaryLearning, "
                       "lasso coordinate descent); one column per atom, unit norm over all TRs",
        "Columns": {"task": "story (BIDS task)", "frame": "volume index in the run (0-based)",
                    "time_s": "frame time in seconds (StartTime + frame x RepetitionTime)"},
        "Objective": meta["objective"], "SilentNeurons": meta["n_silent"],
        "NumberOfNeurons": int(codes.shape[0]),
        "CodesFile": f"{stem}_codes.npz (scipy.sparse CSR, n_neurons x n_atoms)",
        "NeuronsFile": f"{stem}_neurons.tsv (row -> layer, unit)",
    })


def atom_name(index: int) -> str:
    return f"atom{index + 1:02d}"


# ------------------------------------------------------------------------ participant level
def _prepare(config: Config):
    """Everything checked before the first write: inputs, timings, model name, device."""
    from bids_app.features import resolve_model

    dataset = discover(config)
    grids = story_grids(dataset)
    spec = resolve_model(config.model)
    device = resolve_device(config.device)
    return dataset, grids, spec, device


def _write_run_log(config: Config) -> None:
    logs = config.output_dir / "logs"
    out.write_text(logs / f"config_{config.analysis_level}_{config.run_id}.json",
                   config.to_json() + "\n")


def run_participant(config: Config) -> None:
    """Stimulus features and atoms (cached), then one encoding model per subject."""
    import torch

    from bids_app import report
    from bids_app.encoding import RunData, cross_validated_r, fit_participant, load_run_confounds

    torch.set_num_threads(config.nprocs)
    dataset, grids, spec, device = _prepare(config)
    confounds = {r.bold: load_run_confounds(r.bold) for rs in dataset.runs.values() for r in rs}
    LOGGER.info("Participant level: %d subject(s) [%s], tasks %s, model %s",
                len(dataset.subjects), ", ".join(dataset.subjects), ", ".join(sorted(grids)),
                spec.name)
    out.write_dataset_description(config.output_dir, config.bids_dir, config.derivatives,
                                  dataset.raw_description, dataset.fmriprep_description)
    _write_run_log(config)
    atoms_dir = compute_atoms(config, spec, grids, device)
    write_atom_outputs(config, spec, atoms_dir)
    atoms = np.load(atoms_dir / "atoms.npy")              # (n_atoms, n_trs_total)
    frames = pd.read_csv(atoms_dir / "frames.tsv", sep="\t")
    atoms_by_task = {task: atoms[:, (frames["task"] == task).to_numpy()].T
                     for task in grids}                  # (n_frames, n_atoms)
    for index, subject in enumerate(dataset.subjects, 1):
        started = time.monotonic()
        runs = [r for r in dataset.runs[subject] if r.task in grids]
        mask_img, mask = _subject_mask(runs)
        run_data = []
        for run in runs:
            bold = _masked_bold(run, mask, mask_img)
            conf, sample_mask = confounds[run.bold]
            run_data.append(RunData(bold=bold, confounds=conf, sample_mask=sample_mask,
                                    atoms=atoms_by_task[run.task][: run.n_volumes],
                                    name=run.name))
        fit = fit_participant(run_data, glm=config.glm)
        cv_r = cross_validated_r(run_data) if len(run_data) > 1 else None
        _write_participant(config, spec, subject, runs, mask_img, mask, fit, cv_r)
        report.write_subject_report(config, spec, subject, fit, mask_img, mask)
        LOGGER.info("[%d/%d] sub-%s: %d runs, %d volumes, %d voxels, median R2 %.3f (%.1f s)",
                    index, len(dataset.subjects), subject, len(runs), fit.n_volumes_used,
                    int(mask.sum()), float(np.median(fit.r2)), time.monotonic() - started)
    LOGGER.info("Participant level done: outputs in %s", config.output_dir)


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
    """Group maps per atom, coupling to networks, AN sub-groups and organisation metrics."""
    from bids_app import group, report
    from bids_app.atlases import load_fbn_atlas
    from bids_app.features import resolve_model

    spec = resolve_model(config.model)
    inputs = _group_inputs(config, spec)
    atlas = load_fbn_atlas(config.fbn_atlas, inputs.mask_img)
    LOGGER.info("Group level: %d subjects, %d atoms, atlas %s (%d networks)",
                len(inputs.subjects), inputs.effects.shape[1], atlas.name,
                len(atlas.network_names))
    _write_run_log(config)
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
    LOGGER.info("Group level done: %s", folder)


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
