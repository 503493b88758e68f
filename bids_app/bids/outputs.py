"""Writing each level's results into the derivatives: maps, tables and their sidecars.

File names come from :mod:`bids_app.bids.naming`; every write is atomic.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from bids_app.bids import derivatives as out
from bids_app.bids import naming

ATOMS_COLUMNS = {"acquisition": "task/run whose clock the row is on",
                 "task": "BIDS task", "run": "BIDS run (n/a when the task has no runs)",
                 "frame": "volume index in the run (0-based)",
                 "time_s": "frame time in seconds (StartTime + frame x RepetitionTime)",
                 "used": "1 if the frame entered dictionary learning and the participant GLM "
                         "(see Frames and FramesRule), else 0; atom values are n/a on unused "
                         "frames"}

SUBJECT_MAPS = {
    "effect": "Effect size (OLS beta) of each atom on BOLD in percent signal change per unit "
              "of the unit-norm atom; volume k = atom k+1",
    "t": "t statistic of each atom's effect (OLS, confounds in the model); volume k = atom k+1",
    "rsquare": "Partial R2 of the atoms: 1 - RSS(full) / RSS(confounds only), in-sample "
               "(chance level about n_atoms / n_volumes)",
    "cvr": "Leave-one-run-out prediction correlation of the joint atom model (confounds "
           "projected out per run); chance level 0",
}


def write_map(path: Path, values: np.ndarray, mask: np.ndarray, affine: np.ndarray,
              sidecar: dict) -> Path:
    """A (n_maps, n_voxels) or (n_voxels,) array as a NIfTI map with its JSON sidecar
    (written a volume at a time: :func:`~bids_app.bids.derivatives.write_masked_nifti`)."""
    out.write_masked_nifti(path, values, mask, affine)
    out.write_json(naming.sidecar_path(path), sidecar)
    return path


def _stability_summary(stability: dict | None, stem: str) -> dict:
    """The atoms sidecar's ``AtomStability`` entry: done or not, and at what cost."""
    if stability is None:
        return {"Done": False, "Option": "--no-atom-stability"}
    return {"Done": True, "Refits": 3, "Seconds": stability.get("seconds"),
            "MedianSeedVsSeed": stability["median_seed_vs_seed"],
            "MedianHalfVsHalf": stability["median_half_vs_half"],
            "File": f"{stem}_stability.json"}


def atoms_table(atoms: np.ndarray, frames: pd.DataFrame) -> pd.DataFrame:
    """``frames`` (one row per frame of every acquisition, ``used`` 0/1) with one column per
    atom: ``atoms`` (n_atoms, n_used_frames) on the used rows, NaN (``n/a``) elsewhere."""
    used = frames["used"].to_numpy(bool)
    values = np.full((len(frames), atoms.shape[0]), np.nan)
    values[used] = atoms.T
    courses = pd.DataFrame(values, index=frames.index, columns=naming.atom_names(atoms.shape[0]))
    return pd.concat([frames, courses], axis=1)


def write_atom_outputs(output_dir: Path, label: str, cached: Path, sidecar: dict) -> None:
    """Atoms TSV + sidecar, sparse codes, the neuron table and the stability record of the
    cached atoms folder ``cached`` (atoms.npy, codes.npz, meta.json, frames.tsv,
    neurons.tsv) under ``OUTPUT_DIR/atoms``."""
    atoms = np.load(cached / "atoms.npy")
    meta = json.loads((cached / "meta.json").read_text())
    stability = meta.pop("stability", None)
    table = atoms_table(atoms, pd.read_csv(cached / "frames.tsv", sep="\t"))

    def path(suffix: str, extension: str) -> Path:
        return naming.atoms_file(output_dir, label, suffix, extension)

    out.write_tsv(path("atoms", ".tsv"), table)
    codes = sp.load_npz(cached / "codes.npz")
    neurons = pd.read_csv(cached / "neurons.tsv", sep="\t")
    neurons.insert(0, "row", np.arange(len(neurons)))
    neurons["n_atoms_used"] = np.diff(codes.indptr)
    with out.atomic_path(path("codes", ".npz")) as tmp:
        sp.save_npz(tmp, codes)
    with out.atomic_path(path("projections", ".npy")) as tmp:
        np.save(tmp, np.load(cached / "projections.npy"))
    out.write_tsv(path("neurons", ".tsv"), neurons)
    stem = naming.model_desc(label)
    out.write_json(path("atoms", ".json"), {
        **sidecar,
        "Description": "Representative temporal patterns (atoms) of all artificial neurons "
                       "(sparse dictionary learning); one row per frame of every run, one "
                       "column per atom, unit norm over the used frames",
        "Columns": ATOMS_COLUMNS,
        "UsedFrames": int(table["used"].sum()), "TotalFrames": len(table),
        "DictionaryLearning": meta,
        "AtomStability": _stability_summary(stability, stem),
        "NumberOfNeurons": int(codes.shape[0]),
        "CodesFile": f"{stem}_codes.npz (scipy.sparse CSR, n_neurons x n_atoms)",
        "NeuronsFile": f"{stem}_neurons.tsv (row -> layer, unit)",
        "ProjectionsFile": f"{stem}_projections.npy (n_neurons x n_atoms float32: inner "
                           "product of each unit-norm response with each atom, X D^T; gives "
                           "the exact correlation of a response with any composite of atoms)",
    })
    if stability is None:
        path("stability", ".json").unlink(missing_ok=True)   # a former run's, now stale
    else:
        out.write_json(path("stability", ".json"), {
            "Description": "Atom stability: learned atoms matched (Hungarian, |r|) between "
                           "fits with different seeds and between fits on split halves of "
                           "the artificial neurons", **stability})


def write_participant_outputs(output_dir: Path, subject: str, space_entities: dict,
                              label: str, fit, cv_r, mask_img, mask, sidecar: dict) -> None:
    """A subject's effect, t, R² (and CV r) maps, masks and design matrix, with sidecars.

    ``sidecar["Tasks"]`` lists the tasks analysed: the mask is written once per task (the
    BIDS schema requires the ``task`` entity of a ``func/`` mask).
    """
    maps = {"effect": fit.effect, "t": fit.t, "rsquare": fit.r2}
    if cv_r is not None:
        maps["cvr"] = cv_r
    for stat, values in maps.items():
        write_map(naming.subject_map(output_dir, subject, space_entities, label, stat),
                  values, mask, mask_img.affine,
                  {**sidecar, "Description": SUBJECT_MAPS[stat], "Statistic": stat})
    tasks = sidecar["Tasks"]
    for task in tasks:
        mask_path = naming.subject_mask(output_dir, subject, space_entities, label, task)
        out.write_nifti(mask_path, mask_img)
        out.write_json(naming.sidecar_path(mask_path), {
            **sidecar, "Type": "Brain",
            "Description": "Voxels analysed: intersection of the fMRIPrep brain masks of all "
                           "the subject's runs (tasks " + ", ".join(tasks) + "); the same "
                           "mask is written once per task"})
    out.write_tsv(naming.subject_design(output_dir, subject, label), fit.design)
    if fit.network_effect is not None:
        path = naming.subject_network_effects(output_dir, subject, label)
        out.write_tsv(path, fit.network_effect)
        n_atoms = fit.effect.shape[0]
        out.write_json(naming.sidecar_path(path), {
            **sidecar, "Description": NETWORK_EFFECTS_TEXT,
            "FBNAtlas": fit.network_effect.attrs.get("atlas"),
            "Networks": fit.network_effect.attrs.get(
                "networks", list(fit.network_effect.columns[1:])),
            "Columns": {"<network>": "alone with the confounds",
                        "<network>_given": "given the other atoms"},
            "NumberOfAtoms": n_atoms,
            "NullSurrogates": int(len(fit.network_effect) - n_atoms),
            "Units": "percent signal change (effect per unit of regressor x the regressor's "
                     "norm after the rest of its model is projected out; unit-noise "
                     "standard errors)"})
    if fit.network_prediction is not None:
        path = naming.subject_network_prediction(output_dir, subject, label)
        out.write_tsv(path, fit.network_prediction)
        out.write_json(naming.sidecar_path(path), {
            **sidecar, "Description": NETWORK_PREDICTION_TEXT,
            "FBNAtlas": fit.network_prediction.attrs.get("atlas"),
            "Networks": fit.network_prediction.attrs.get(
                "networks", list(fit.network_prediction.columns[1:])),
            "NumberOfAtoms": fit.effect.shape[0],
            "SurrogateBlocks": int(len(fit.network_prediction) - 1),
            "Ridge": fit.network_prediction.attrs.get("ridge"),
            "Units": "Pearson correlation"})


NETWORK_PREDICTION_TEXT = (
    "The network-prediction test's table: one row per block of regressors (the atoms, then "
    "multivariate phase-randomised surrogate blocks null0001, ..., each the atoms with the "
    "same random Fourier phases within each run), one column per network of the atlas: the "
    "split-half prediction correlation of the network's mean signal (confounds and "
    "nuisance regressors projected out) by all regressors of the block in one ridge model, "
    "fitted on the first half of each run's kept volumes and scored on the second, and the "
    "other way round (mean of the two folds)")


NETWORK_EFFECTS_TEXT = (
    "The coupling null's table: one row per regressor (the atoms, then the phase-randomised "
    "surrogate atoms null0001, ..., surrogate s standing for atom s mod n_atoms); for each "
    "network of the atlas two columns of standardised effects on the network's mean signal "
    "(the BOLD in percent signal change averaged over the subject's voxels in the network), "
    "each an OLS effect divided by its standard error per unit noise, so that atoms and "
    "surrogates have the same spread under the null however much of them the rest of the "
    "model explains: '<network>', the regressor alone with the confounds and nuisance "
    "regressors, fitted as an atom is fitted voxel by voxel (the same design, --glm); "
    "'<network>_given', the regressor given the other atoms (all atoms in one model, a "
    "surrogate in place of its own atom)")


NUISANCE_MAPS = {
    "effect": "Effect of the stimulus nuisance regressor in the model without atoms "
              "(confounds + nuisance regressors + run intercepts): percent signal change per "
              "standard deviation of the regressor, averaged over the runs that have it",
    "t": "t statistic of that effect (OLS fixed-effects contrast over runs)",
}


def write_nuisance_outputs(output_dir: Path, subject: str, space_entities: dict, maps,
                           mask_img, mask, sidecar: dict) -> None:
    """Effect and t map of each stimulus nuisance regressor of a subject
    (:class:`~bids_app.encoding.NuisanceMaps`), with sidecars."""
    for name in maps.effect:
        for stat, values in (("effect", maps.effect[name]), ("t", maps.t[name])):
            write_map(naming.subject_nuisance_map(output_dir, subject, space_entities, name,
                                                  stat),
                      values, mask, mask_img.affine,
                      {**sidecar, "Description": NUISANCE_MAPS[stat], "Statistic": stat,
                       "Regressor": name, "Runs": maps.runs[name],
                       "DegreesOfFreedom": maps.dof})


def write_group_outputs(output_dir: Path, space_entities: dict, label: str, maps: dict,
                        tables: dict, metrics: dict, inputs, sidecar: dict) -> None:
    """Group maps ({stat: (values, description)}), tables ({suffix: DataFrame}) and the
    metrics JSON of one model."""
    for stat, (values, description) in maps.items():
        write_map(naming.group_map(output_dir, space_entities, label, stat), values,
                  inputs.mask, inputs.mask_img.affine,
                  {**sidecar, "Description": description, "Statistic": stat,
                   "DegreesOfFreedom": len(inputs.subjects) - 1})
    for suffix, table in tables.items():
        out.write_tsv(naming.group_file(output_dir, label, suffix, ".tsv"), table)
    out.write_json(naming.group_file(output_dir, label, "metrics", ".json"),
                   {**metrics, "Settings": sidecar})


def write_run_config(config) -> Path:
    """``logs/config_<level>_<run_id>.json``: every setting of this run."""
    return out.write_text(naming.run_config(config.output_dir, config.analysis_level,
                                            config.run_id), config.to_json() + "\n")


MEMBERS_COLUMNS = {
    "network": "functional brain network whose sub-group the AN belongs to",
    "neuron": "AN index: row of atoms/desc-<model>_neurons.tsv (without FIR delays)",
    "layer": "transformer block (0 = first)", "unit": "unit of the block's FFN input",
    "score": "Pearson correlation of the AN's response with the network's atom composite",
}


def write_members_sidecar(output_dir: Path, label: str, sidecar: dict) -> None:
    """The JSON sidecar of ``group/desc-<model>_members.tsv``: columns and the rule."""
    out.write_json(naming.group_file(output_dir, label, "members", ".json"), {
        **sidecar, "Description": "AN sub-groups: one row per (network, member AN)",
        "Columns": MEMBERS_COLUMNS})
