"""How much memory a language model's weights need: the model ladder of Sun et al. (2024).

Parameter counts are exact: each model is built from its published architecture (the
numbers of its ``config.json``) on PyTorch's ``meta`` device, which allocates nothing, and
its parameters are counted. llmfbn loads the base model (``AutoModel``: no language-model
head), so the head is not counted. bfloat16 stores 2 bytes per parameter.
"""

from __future__ import annotations

import pandas as pd

#: The paper's ladder (BERT, then Llama 1, 2 and 3): ``config.json`` numbers of each
#: checkpoint (Hugging Face ``google-bert/bert-base-uncased``, ``huggyllama/llama-*``,
#: ``meta-llama/Llama-2-*-hf``, ``meta-llama/Meta-Llama-3-*``).
LADDER = {
    "BERT-base": dict(model_type="bert", vocab_size=30522, hidden_size=768,
                      num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "Llama-7B": dict(model_type="llama", vocab_size=32000, hidden_size=4096,
                     num_hidden_layers=32, num_attention_heads=32, intermediate_size=11008),
    "Llama-13B": dict(model_type="llama", vocab_size=32000, hidden_size=5120,
                      num_hidden_layers=40, num_attention_heads=40, intermediate_size=13824),
    "Llama-33B": dict(model_type="llama", vocab_size=32000, hidden_size=6656,
                      num_hidden_layers=60, num_attention_heads=52, intermediate_size=17920),
    "Llama-65B": dict(model_type="llama", vocab_size=32000, hidden_size=8192,
                      num_hidden_layers=80, num_attention_heads=64, intermediate_size=22016),
    "Llama-2-7B": dict(model_type="llama", vocab_size=32000, hidden_size=4096,
                       num_hidden_layers=32, num_attention_heads=32, intermediate_size=11008),
    "Llama-2-13B": dict(model_type="llama", vocab_size=32000, hidden_size=5120,
                        num_hidden_layers=40, num_attention_heads=40,
                        intermediate_size=13824),
    "Llama-2-70B": dict(model_type="llama", vocab_size=32000, hidden_size=8192,
                        num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8,
                        intermediate_size=28672),
    "Llama-3-8B": dict(model_type="llama", vocab_size=128256, hidden_size=4096,
                       num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                       intermediate_size=14336),
    "Llama-3-70B": dict(model_type="llama", vocab_size=128256, hidden_size=8192,
                        num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8,
                        intermediate_size=28672),
}

GIB = 2**30


def parameter_count(architecture: dict) -> int:
    """Parameters of the base model (no head) with ``architecture`` (``config.json``
    numbers, with ``model_type``), counted on the ``meta`` device."""
    import torch
    from transformers import AutoConfig, AutoModel

    settings = dict(architecture)
    config = AutoConfig.for_model(settings.pop("model_type"), **settings)
    with torch.device("meta"):
        model = AutoModel.from_config(config)
    return int(sum(p.numel() for p in model.parameters()))


def ladder_table(ladder: dict = LADDER, bytes_per_parameter: int = 2) -> pd.DataFrame:
    """One row per model: layers, ANs (layers x FFN width), parameters and the GiB its
    weights take (bfloat16 by default)."""
    rows = []
    for name, architecture in ladder.items():
        n_parameters = parameter_count(architecture)
        rows.append({"model": name, "layers": architecture["num_hidden_layers"],
                     "ANs": architecture["num_hidden_layers"]
                     * architecture["intermediate_size"],
                     "parameters": n_parameters,
                     "weights_gib": n_parameters * bytes_per_parameter / GIB})
    return pd.DataFrame(rows)
