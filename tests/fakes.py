"""Stand-ins for stimulus-level and participant-level results, written with llmfbn's own
writers, so that the checks of the later stages can be tested in seconds (no model run)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import scipy.sparse as sp

from bids_app.bids.describe import write_dataset_files
from bids_app.bids.images import intersect_masks
from bids_app.bids.outputs import write_atom_outputs, write_participant_outputs, write_run_config
from bids_app.bids.sidecars import image_sidecar, model_sidecar
from bids_app.config import Config
from bids_app.encoding import ParticipantFit
from bids_app.features import resolve_model

TASKS = ("lighthouse", "market")


def fake_atoms_folder(folder: Path, frames: pd.DataFrame, n_atoms: int,
                      n_neurons: int = 60, seed: int = 0) -> Path:
    """A cached atoms folder (atoms.npy, codes.npz, projections.npy, meta.json, frames.tsv,
    neurons.tsv) of random atoms on the clock of ``frames`` (as
    :func:`bids_app.responses.frames_table`; every frame used unless it has ``used``)."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atoms = rng.standard_normal((n_atoms, len(frames))).astype(np.float32)
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    np.save(folder / "atoms.npy", atoms)
    codes = sp.random(n_neurons, n_atoms, density=0.3, format="csr", random_state=seed,
                      dtype=np.float32)
    sp.save_npz(folder / "codes.npz", codes)
    np.save(folder / "projections.npy",
            rng.standard_normal((n_neurons, n_atoms)).astype(np.float32))
    (folder / "meta.json").write_text(json.dumps({"Algorithm": "fake", "Objective": 0.0}))
    if "used" not in frames.columns:                 # every frame used (--frames all)
        frames = frames.assign(used=1)
    frames.to_csv(folder / "frames.tsv", sep="\t", index=False)
    pd.DataFrame({"layer": np.arange(n_neurons) % 3, "unit": np.arange(n_neurons) // 3}
                 ).to_csv(folder / "neurons.tsv", sep="\t", index=False)
    return folder


def _null_table(n_atoms: int, n_surrogates: int, atlas, rng) -> pd.DataFrame:
    """A coupling-null table of random effects (rows atoms then surrogates)."""
    from bids_app.bids.naming import atom_names, surrogate_names

    table = pd.DataFrame(rng.standard_normal((n_atoms + n_surrogates, len(atlas.network_names))),
                         columns=list(atlas.network_names))
    table.insert(0, "regressor", atom_names(n_atoms) + surrogate_names(n_surrogates))
    table.attrs["atlas"] = atlas.name
    return table


def _prediction_table(n_blocks: int, atlas, rng) -> pd.DataFrame:
    """A network-prediction table of random correlations (rows atoms then blocks)."""
    from bids_app.bids.naming import surrogate_names

    table = pd.DataFrame(rng.uniform(-0.3, 0.3, (1 + n_blocks, len(atlas.network_names))),
                         columns=list(atlas.network_names))
    table.insert(0, "block", ["atoms"] + surrogate_names(n_blocks))
    table.attrs["atlas"] = atlas.name
    table.attrs["ridge"] = 1.0
    return table


def _fit(n_atoms: int, n_voxels: int, rng) -> ParticipantFit:
    design = pd.DataFrame(rng.standard_normal((120, n_atoms + 1)),
                          columns=[f"atom{k + 1:02d}" for k in range(n_atoms)] + ["constant"])
    return ParticipantFit(effect=rng.standard_normal((n_atoms, n_voxels)).astype(np.float32),
                          t=rng.standard_normal((n_atoms, n_voxels)).astype(np.float32),
                          r2=rng.random(n_voxels).astype(np.float32), dof=100, design=design,
                          n_volumes_used=120)


def fake_participant_outputs(bids_dir: Path, output_dir: Path, scratch: Path, subjects,
                             n_atoms: int = 4, model: str = "minilm", seed: int = 0,
                             null_surrogates: int = 20) -> Config:
    """Participant-level outputs of ``subjects`` (random maps on the dataset's grid) with
    their settings record, atoms and dataset files; ``scratch`` holds the fake cached atoms.
    With ``null_surrogates`` (> 0) each subject also gets a coupling-null table of random
    effects and a network-prediction table of random correlations (10 blocks) on the
    networks of the default atlas. Returns the participant Config."""
    rng = np.random.default_rng(seed)
    config = Config(bids_dir=bids_dir, output_dir=output_dir, analysis_level="participant",
                    n_atoms=n_atoms, model=[model],
                    null_surrogates=null_surrogates).resolve_paths()
    spec = resolve_model(model)
    write_dataset_files(output_dir, config.bids_dir, config.derivatives, {}, {})
    write_run_config(config)
    func = config.derivatives / "sub-001" / "func"
    masks = sorted(func.glob("*_desc-brain_mask.nii.gz"))
    mask_img, mask = intersect_masks(masks[:1], ["mask"], "", "")
    runs = [SimpleNamespace(bold=Path(str(m).replace("desc-brain_mask", "desc-preproc_bold")),
                            mask=m) for m in masks]
    frames = pd.DataFrame({"acquisition": "task-market", "task": "market", "run": "n/a",
                           "frame": np.arange(30), "time_s": 1.5 * np.arange(30)})
    write_atom_outputs(output_dir, spec.label,
                       fake_atoms_folder(Path(scratch) / "fake-atoms", frames, n_atoms),
                       model_sidecar(config, spec))
    atlas = None
    if null_surrogates:
        from bids_app.atlases import load_fbn_atlas

        atlas = load_fbn_atlas(config.fbn_atlas, mask_img, space=config.space)
    for subject in subjects:
        fit = _fit(n_atoms, int(mask.sum()), rng)
        if atlas is not None:
            fit.network_effect = _null_table(n_atoms, null_surrogates, atlas, rng)
            fit.network_prediction = _prediction_table(10, atlas, rng)
        sidecar = {**model_sidecar(config, spec), **image_sidecar(config, runs),
                   "Tasks": list(TASKS), "DegreesOfFreedom": 100}
        write_participant_outputs(output_dir, subject, config.space_entities, spec.label, fit,
                                  None, mask_img, mask, sidecar)
    return config
