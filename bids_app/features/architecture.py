"""Where the artificial neurons (ANs) are: the second FFN layer of every transformer block.

The blocks are found by the structure of the network (a list of blocks that all hold one of
the layouts in :data:`FFN_PATHS`), not by the model's name, so any checkpoint of the BERT,
Llama or GPT-2 families works.
"""

from __future__ import annotations

from bids_app.errors import LlmfbnError

#: Known FFN layouts, tried in this order inside each transformer block:
#: (family, path of the FFN's second linear layer, a sibling path that must also exist).
FFN_PATHS = (
    ("bert", "output.dense", "intermediate"),
    ("llama", "mlp.down_proj", None),
    ("gpt2", "mlp.c_proj", "mlp.c_fc"),
    ("gpt2", "mlp.fc2", "mlp.fc1"),
    ("llama", "feed_forward.w2", "feed_forward.w1"),
)
_FAMILIES = ("bert", "llama", "gpt2")


def _submodule(module, path: str):
    try:
        return module.get_submodule(path)
    except AttributeError:
        return None


def _in_features(module) -> int | None:
    if hasattr(module, "in_features"):
        return int(module.in_features)
    weight = getattr(module, "weight", None)
    if weight is not None and getattr(module, "nx", None) is not None:
        return int(module.nx)  # transformers' Conv1D (GPT-2): weight is (in, out)
    if weight is not None and type(module).__name__ == "Conv1D" and weight.dim() == 2:
        return int(weight.shape[0])
    return None


def find_ffn_layers(model) -> tuple[str, list, list[int]]:
    """Find the second FFN linear layer of every transformer block, by module structure.

    The transformer blocks are the children of an ``nn.ModuleList`` whose every block
    holds one of the layouts in :data:`FFN_PATHS` (the longest such list wins).

    Parameters
    ----------
    model : torch.nn.Module
        Any network; usually the base model of a Hugging Face checkpoint.

    Returns
    -------
    family : {"bert", "llama", "gpt2"}
        Which layout matched.
    modules : list of torch.nn.Module, length n_layers
        The FFN's second linear layer of each block, in block order.
    layer_sizes : list of int, length n_layers
        Input width of each of those modules = number of ANs per layer.

    Raises
    ------
    LlmfbnError
        When no list of blocks with a known FFN layout exists.
    """
    import torch

    best = None
    for list_name, module_list in model.named_modules():
        if not isinstance(module_list, torch.nn.ModuleList) or len(module_list) == 0:
            continue
        for family, path, sibling in FFN_PATHS:
            found = []
            for block in module_list:
                second = _submodule(block, path)
                if second is None or (sibling and _submodule(block, sibling) is None):
                    break
                width = _in_features(second)
                if width is None:
                    break
                found.append((second, width))
            if len(found) == len(module_list):
                if best is None or len(found) > len(best[2]):
                    best = (family, list_name, found)
                break
    if best is None:
        layouts = "; ".join(f"{fam}: <block>.{path}" for fam, path, _ in FFN_PATHS)
        raise LlmfbnError(
            f"unsupported model architecture {type(model).__name__}: no transformer blocks "
            "with a known feed-forward layout",
            expected=f"a model of the supported families {', '.join(_FAMILIES)} "
                     f"(BERT/RoBERTa, Llama/Mistral/Qwen2, GPT-2), whose blocks hold {layouts}",
            found=f"{type(model).__name__} with modules "
                  f"{', '.join(sorted({type(m).__name__ for m in model.modules()})[:12])}",
            todo="use a model of a supported family (e.g. --model minilm)",
        )
    family, _, found = best
    return family, [m for m, _ in found], [w for _, w in found]
