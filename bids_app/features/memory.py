"""How much memory a language model's weights need: the model ladder of Sun et al. (2024).

Parameter counts are exact: each model is built from its published architecture (the
numbers of its ``config.json``) on PyTorch's ``meta`` device, which allocates nothing, and
its parameters are counted. llmfbn loads the base model (``AutoModel``: no language-model
head), so the head is not counted. bfloat16 stores 2 bytes per parameter.
"""

from __future__ import annotations

import pandas as pd

#: ``config.json`` fields of the rows of :data:`LADDER`.
FIELDS = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers",
          "num_attention_heads", "num_key_value_heads", "intermediate_size")

#: The paper's ladder (BERT, then Llama 1, 2 and 3): the :data:`FIELDS` of each checkpoint's
#: ``config.json`` (Hugging Face ``google-bert/bert-base-uncased``, ``huggyllama/llama-*``,
#: ``meta-llama/Llama-2-*-hf``, ``meta-llama/Meta-Llama-3-*``).
LADDER = {
    "BERT-base": ("bert", 30522, 768, 12, 12, 12, 3072),
    "Llama-7B": ("llama", 32000, 4096, 32, 32, 32, 11008),
    "Llama-13B": ("llama", 32000, 5120, 40, 40, 40, 13824),
    "Llama-33B": ("llama", 32000, 6656, 60, 52, 52, 17920),
    "Llama-65B": ("llama", 32000, 8192, 80, 64, 64, 22016),
    "Llama-2-7B": ("llama", 32000, 4096, 32, 32, 32, 11008),
    "Llama-2-13B": ("llama", 32000, 5120, 40, 40, 40, 13824),
    "Llama-2-70B": ("llama", 32000, 8192, 80, 64, 8, 28672),
    "Llama-3-8B": ("llama", 128256, 4096, 32, 32, 8, 14336),
    "Llama-3-70B": ("llama", 128256, 8192, 80, 64, 8, 28672),
}


def architecture(name: str) -> dict:
    """The ``config.json`` fields of ladder model ``name`` as a dict."""
    return dict(zip(FIELDS, LADDER[name]))


GIB = 2**30


def parameter_count(fields: dict) -> int:
    """Parameters of the base model (no head) with the ``config.json`` ``fields`` (with
    ``model_type``), counted on the ``meta`` device."""
    import torch
    from transformers import AutoConfig, AutoModel

    settings = dict(fields)
    if settings["model_type"] == "bert":       # BERT has no grouped-query attention
        settings.pop("num_key_value_heads", None)
    config = AutoConfig.for_model(settings.pop("model_type"), **settings)
    with torch.device("meta"):
        model = AutoModel.from_config(config)
    return int(sum(p.numel() for p in model.parameters()))


def ladder_table(bytes_per_parameter: int = 2) -> pd.DataFrame:
    """One row per model of :data:`LADDER`: layers, ANs (layers x FFN width), parameters
    and the GiB its weights take (bfloat16 by default)."""
    rows = []
    for name in LADDER:
        fields = architecture(name)
        n_parameters = parameter_count(fields)
        rows.append({"model": name, "layers": fields["num_hidden_layers"],
                     "ANs": fields["num_hidden_layers"] * fields["intermediate_size"],
                     "parameters": n_parameters,
                     "weights_gib": n_parameters * bytes_per_parameter / GIB})
    return pd.DataFrame(rows)
