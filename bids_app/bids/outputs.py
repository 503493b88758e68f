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
from bids_app.bids.images import unmask_img

ATOMS_COLUMNS = {"acquisition": "task/run whose clock the row is on",
                 "task": "BIDS task", "run": "BIDS run (n/a when the task has no runs)",
                 "frame": "volume index in the run (0-based)",
                 "time_s": "frame time in seconds (StartTime + frame x RepetitionTime)"}

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
    """A (n_maps, n_voxels) or (n_voxels,) array as a NIfTI map with its JSON sidecar."""
    out.write_nifti(path, unmask_img(values, mask, affine))
    out.write_json(naming.sidecar_path(path), sidecar)
    return path


def write_atom_outputs(output_dir: Path, label: str, cached: Path, sidecar: dict) -> None:
    """Atoms TSV + sidecar, sparse codes, the neuron table and the stability record of the
    cached atoms folder ``cached`` (atoms.npy, codes.npz, meta.json, frames.tsv,
    neurons.tsv) under ``OUTPUT_DIR/atoms``."""
    atoms = np.load(cached / "atoms.npy")
    meta = json.loads((cached / "meta.json").read_text())
    stability = meta.pop("stability", None)
    table = pd.read_csv(cached / "frames.tsv", sep="\t")
    for name, course in zip(naming.atom_names(atoms.shape[0]), atoms):
        table[name] = course

    def path(suffix: str, extension: str) -> Path:
        return naming.atoms_file(output_dir, label, suffix, extension)

    out.write_tsv(path("atoms", ".tsv"), table)
    codes = sp.load_npz(cached / "codes.npz")
    neurons = pd.read_csv(cached / "neurons.tsv", sep="\t")
    neurons.insert(0, "row", np.arange(len(neurons)))
    neurons["n_atoms_used"] = np.diff(codes.indptr)
    with out.atomic_path(path("codes", ".npz")) as tmp:
        sp.save_npz(tmp, codes)
    out.write_tsv(path("neurons", ".tsv"), neurons)
    stem = naming.model_desc(label)
    out.write_json(path("atoms", ".json"), {
        **sidecar,
        "Description": "Representative temporal patterns (atoms) of all artificial neurons "
                       "(sparse dictionary learning); one column per atom, unit norm over all "
                       "TRs",
        "Columns": ATOMS_COLUMNS,
        "DictionaryLearning": meta,
        "NumberOfNeurons": int(codes.shape[0]),
        "CodesFile": f"{stem}_codes.npz (scipy.sparse CSR, n_neurons x n_atoms)",
        "NeuronsFile": f"{stem}_neurons.tsv (row -> layer, unit)",
    })
    if stability is not None:
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
