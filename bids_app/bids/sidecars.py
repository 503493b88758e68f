"""What every output's JSON sidecar says about the run that made it."""

from __future__ import annotations

from pathlib import Path

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
        "HRF": config.hrf_model, "NumberOfAtoms": config.n_atoms,
        "SparsityLambda": config.sparsity_lambda if config.target_sparsity is None
        else "chosen for TargetSparsity (value in atoms/*_atoms.json, DictionaryLearning)",
        "TargetSparsity": config.target_sparsity, "Seed": config.seed,
        "ConfoundStrategy": config.confound_strategy, "GLM": config.glm,
        "SoftwareVersion": f"llmfbn {config.version}",
    }


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
