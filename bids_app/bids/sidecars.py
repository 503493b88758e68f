"""What every output's JSON sidecar says about the run that made it."""

from __future__ import annotations

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
