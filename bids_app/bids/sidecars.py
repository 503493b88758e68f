"""What every output's JSON sidecar says about the run that made it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bids_app.responses import FRAME_RULES, NUISANCE_TEXT, nuisance_hrf

WORD_POOLING_TEXT = {"mean": "mean over the word's sub-word tokens",
                     "last": "the word's last sub-word token"}
AN_DEFINITION = "inputs of the second linear layer of each feed-forward block"


def model_sidecar(config, spec) -> dict:
    """Settings shared by every output's sidecar (design: recorded in every output).

    At the group level ``config`` carries the participant level's settings
    (:func:`bids_app.config.carry_participant_settings`).
    """
    return {
        "Model": spec.name, "ModelLabel": spec.label, "ModelIdentity": spec.identity,
        "ArtificialNeurons": AN_DEFINITION,
        "WordPooling": WORD_POOLING_TEXT[config.word_pooling],
        "ContextTokens": config.context_tokens,
        "HRF": config.hrf_model,
        "Frames": config.frames, "FramesRule": FRAME_RULES.get(config.frames),
        "NumberOfAtoms": config.n_atoms,
        "SparsityLambda": config.sparsity_lambda if config.target_sparsity is None
        else "chosen for TargetSparsity (value in atoms/*_atoms.json, DictionaryLearning)",
        "TargetSparsity": config.target_sparsity, "Seed": config.seed,
        "AtomStability": config.atom_stability,
        "ConfoundStrategy": config.confound_strategy, "GLM": config.glm,
        **nuisance_settings(config),
        "SoftwareVersion": f"llmfbn {config.version}",
    }


def nuisance_settings(config) -> dict:
    """The stimulus nuisance regressors asked for (``--nuisance``), in words."""
    kinds = list(config.nuisance or [])
    return {"Nuisance": kinds, "NuisanceRegressors": {n: NUISANCE_TEXT[n] for n in kinds},
            "NuisanceHRF": nuisance_hrf(config.hrf_model) if kinds else None}


def nuisance_sidecar(config) -> dict:
    """Settings of the nuisance regressors' maps (they do not depend on the language
    model): frames, confounds, nuisance regressors and their HRF."""
    return {"Frames": config.frames, "FramesRule": FRAME_RULES.get(config.frames),
            "ConfoundStrategy": config.confound_strategy, **nuisance_settings(config),
            "SoftwareVersion": f"llmfbn {config.version}"}


def volumes_used(design) -> dict:
    """``VolumesUsed`` (all runs) and, per run, the count and the contiguous ranges
    (first, last; 0-based volume indices) of the volumes in the GLM."""
    per_run = {}
    for run, volumes in design.index.to_frame()["volume"].groupby(level="run", sort=False):
        volumes = volumes.to_numpy()
        breaks = np.flatnonzero(np.diff(volumes) != 1)
        starts = np.concatenate([[0], breaks + 1])
        ends = np.concatenate([breaks, [volumes.size - 1]])
        per_run[run] = {"Count": int(volumes.size),
                        "Ranges": [[int(volumes[a]), int(volumes[b])]
                                   for a, b in zip(starts, ends)]}
    return {"VolumesUsed": int(len(design)), "VolumesUsedPerRun": per_run}
def bids_uri(dataset: str, root: Path, path: Path) -> str:
    """``bids:<dataset>:<path relative to root>``: a BIDS URI into a dataset named in the
    derivatives' ``DatasetLinks`` (:data:`bids_app.bids.describe.DATASET_LINKS`)."""
    return f"bids:{dataset}:{Path(path).relative_to(root).as_posix()}"


def image_sidecar(config, runs) -> dict:
    """What a subject's image says about its inputs: ``Sources`` (the preprocessed BOLD
    series and brain masks), ``SpatialReference`` (the grid of the first run's brain mask)
    and, with a ``res`` entity, ``Resolution``."""
    def uri(path):
        return bids_uri("fmriprep", config.derivatives, path)

    fields = {"Sources": [uri(r.bold) for r in runs] + [uri(r.mask) for r in runs],
              "SpatialReference": uri(runs[0].mask)}
    fields.update(resolution_sidecar(config))
    return fields


def resolution_sidecar(config) -> dict:
    """``{"Resolution": ...}`` when the outputs carry the ``res`` entity (BIDS requires it
    then), else ``{}``."""
    if not config.res:
        return {}
    return {"Resolution": {config.res: f"the grid of fMRIPrep's res-{config.res} BOLD "
                                       "series, on which the maps are computed"}}
