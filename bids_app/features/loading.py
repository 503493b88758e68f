"""Loading a resolved model: fast tokenizer + base model, eval mode, no gradients.

Precision: weights are float32 on the CPU and bfloat16 on CUDA (float16 where the GPU has no
bfloat16) unless ``dtype`` says otherwise.

Models larger than one device: ``device_map="auto"`` lets accelerate place whole transformer
blocks on the visible GPUs, then in host memory, then on disk (``offload_folder``); its hooks
move each block's weights and inputs to where the block runs, so the forward pass and the
FFN hooks see the same tensors as on one device.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bids_app.devices import torch_device
from bids_app.errors import LlmfbnError
from bids_app.features.architecture import find_ffn_layers
from bids_app.features.gguf import gguf_source
from bids_app.features.models import ModelSpec, hf_snapshot

_DTYPE_NAMES = ("float32", "bfloat16", "float16")


class LanguageModel:
    """A loaded language model with its FFN layers located.

    Attributes
    ----------
    spec : ModelSpec
        Where it came from.
    model : torch.nn.Module
        The base model (no LM head), in eval mode, with gradients off.
    tokenizer : transformers.PreTrainedTokenizerBase
        The model's fast tokenizer (needed for character offsets).
    family : {"bert", "llama", "gpt2"}
        FFN layout found in the network.
    is_decoder : bool
        True for causal (left-to-right) models.
    layer_sizes : list of int, length n_layers
        ANs per layer.
    n_neurons : int
        Total number of ANs, ``sum(layer_sizes)``.
    max_positions : int
        Longest input (in tokens, special tokens included) the model accepts.
    device : torch.device
        Where the inputs go and the activations are pooled: the model's device, or with a
        device map the first GPU it uses (the CPU when it uses none).
    dtype : torch.dtype
        Precision of the weights (and of the hooked activations).
    weights_path : str
        What the weights were read from: the model folder or Hugging Face snapshot, or for
        GGUF checkpoints the cached safetensors copy (the GGUF file itself when no copy
        could be written).
    ffn_modules : list of torch.nn.Module
        The hooked module of each layer (its input holds the ANs).
    """

    def __init__(self, spec: ModelSpec, model, tokenizer, device, weights_path: str = ""):
        device = _execution_device(model, device)
        self.spec = spec
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.dtype = next(model.parameters()).dtype
        self.weights_path = str(weights_path or spec.path)
        self.family, self.ffn_modules, self.layer_sizes = find_ffn_layers(model)
        self.n_neurons = int(sum(self.layer_sizes))
        config = getattr(model, "config", None)
        self.is_decoder = bool(getattr(config, "is_decoder", False)) or self.family != "bert"
        self.max_positions = _max_positions(config, tokenizer)

    def __repr__(self) -> str:
        return (f"LanguageModel({self.spec.label!r}, family={self.family!r}, "
                f"decoder={self.is_decoder}, layers={len(self.layer_sizes)}, "
                f"n_neurons={self.n_neurons}, max_positions={self.max_positions}, "
                f"device={str(self.device)!r}, dtype={str(self.dtype).split('.')[-1]!r})")


def _execution_device(model, device):
    """``device``, or for a model dispatched by accelerate (``hf_device_map``) the first GPU
    its blocks run on, else the CPU (blocks offloaded to host memory or disk run there)."""
    import torch

    placement = getattr(model, "hf_device_map", None)
    if not placement:
        return device
    gpus = sorted({d for d in placement.values() if isinstance(d, int)}
                  | {int(str(d).split(":")[1]) for d in placement.values()
                     if str(d).startswith("cuda:")})
    return torch.device(f"cuda:{gpus[0]}") if gpus else torch.device("cpu")


def _max_positions(config, tokenizer) -> int:
    for attr in ("max_position_embeddings", "n_positions", "n_ctx", "max_seq_len"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(tokenizer, "model_max_length", None)
    if isinstance(value, int) and 0 < value < 10**7:
        return value
    return 2048


def torch_dtype(dtype, device):
    """The weights' precision: float32 on CPU, bfloat16 (else float16) on CUDA by default.

    Parameters
    ----------
    dtype : {None, "auto", "float32", "bfloat16", "float16"} or torch.dtype
        What the user asked for; None and ``"auto"`` pick the device's default.
    device : torch.device
        Where the model will run.

    Returns
    -------
    dtype : torch.dtype

    Raises
    ------
    LlmfbnError
        For any other precision.
    """
    import torch

    if dtype is None or (isinstance(dtype, str) and dtype.strip().lower() == "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if isinstance(dtype, torch.dtype):
        name = str(dtype).split(".")[-1]
    else:
        name = str(dtype).strip().lower().removeprefix("torch.")
    if name not in _DTYPE_NAMES:
        raise LlmfbnError(f"unknown dtype {dtype!r}",
                          expected=f"None (float32 on CPU, bfloat16 on CUDA) or one of "
                                   f"{', '.join(_DTYPE_NAMES)}",
                          found=repr(dtype), todo="leave dtype unset, or use float32")
    return getattr(torch, name)


def load_model(spec: ModelSpec, device: str = "cpu", dtype=None, device_map: str | None = None,
               max_memory: dict | None = None, offload_folder=None) -> LanguageModel:
    """Load a resolved model: fast tokenizer + base model, eval mode, no gradients.

    Parameters
    ----------
    spec : ModelSpec
        From :func:`resolve_model`.
    device : {"cpu", "cuda", "cuda:N", "auto"}
        Where to run it. ``"cuda"`` without a GPU raises :class:`LlmfbnError`.
    dtype : {None, "float32", "bfloat16", "float16"} or torch.dtype, optional
        Weight precision. None (or ``"auto"``): float32 on CPU (reproducible
        activations), bfloat16 on CUDA (float16 on GPUs without bfloat16).
    device_map : {None, "auto"}
        None: the whole model on ``device``. ``"auto"``: accelerate shards the model's
        blocks over every visible GPU, then host memory, then disk (for models larger than
        one device); with ``device="cpu"`` over host memory and disk only.
    max_memory : dict, optional
        With ``device_map``: accelerate's budget per device, e.g. ``{0: "70GiB", "cpu":
        "200GiB"}`` (default: what is free on each).
    offload_folder : str or pathlib.Path, optional
        With ``device_map``: where blocks that fit in no memory are written (needed only
        when some do not fit).

    Returns
    -------
    lm : LanguageModel

    Notes
    -----
    A GGUF model is dequantised on its first load and a safetensors copy is cached (see
    :func:`gguf_cache_folder`); later loads read the copy. The copy is written to a
    temporary folder and renamed into place, so concurrent runs never see half a copy.
    """
    where = torch_device(device)
    weights_dtype = torch_dtype(dtype, where)
    placement = _placement(device_map, where, max_memory, offload_folder)
    source, tokenizer, model = _read_checkpoint(spec, weights_dtype, placement)
    if not getattr(tokenizer, "is_fast", False):
        raise LlmfbnError(
            f"the tokenizer of {spec.name!r} is not a fast tokenizer",
            expected="a fast (Rust, tokenizer.json) tokenizer that gives character offsets",
            found=type(tokenizer).__name__,
            todo="save a tokenizer.json next to the model (AutoTokenizer.from_pretrained"
                 "(..., use_fast=True).save_pretrained(folder))")
    model.eval()
    model.requires_grad_(False)
    if not getattr(model, "hf_device_map", None):    # one device (a GGUF read in memory too)
        model.to(where)
    return LanguageModel(spec, model, tokenizer, where, weights_path=source)


def _placement(device_map, where, max_memory, offload_folder) -> dict:
    """Keyword arguments of ``from_pretrained`` that shard the model (empty: one device)."""
    if device_map is None:
        return {}
    if device_map != "auto":
        raise LlmfbnError(f"unknown device map {device_map!r}", expected="None or 'auto'",
                          found=repr(device_map), todo="use --device-map auto")
    if max_memory is None and where.type == "cpu":
        from accelerate.utils import get_max_memory

        max_memory = {"cpu": get_max_memory()["cpu"]}     # no GPU when --device cpu
    placement = {"device_map": "auto", "max_memory": max_memory}
    if offload_folder is not None:
        placement["offload_folder"] = str(offload_folder)
    return placement


def _read_checkpoint(spec: ModelSpec, dtype, placement: dict):
    """``(source, tokenizer, base model)`` of a spec; loading errors become LlmfbnError."""
    from transformers import AutoModel, AutoTokenizer

    where = f"{spec.path}" + (f" ({spec.gguf_file})" if spec.gguf_file else "")
    try:
        model = None
        if spec.gguf_file:
            source, tokenizer, model = gguf_source(spec, dtype)
        else:
            source = hf_snapshot(spec) or spec.path
        if model is None:
            tokenizer = AutoTokenizer.from_pretrained(source, use_fast=True)
            model = AutoModel.from_pretrained(source, dtype=dtype, **placement)
    except LlmfbnError:
        raise
    except (OSError, ValueError, KeyError, TypeError, ImportError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LlmfbnError(
            f"could not load the language model {spec.name!r} from {where}",
            expected="a Hugging Face transformers checkpoint with a tokenizer",
            found=f"{type(exc).__name__}: {first}",
            todo="check that the folder was written by save_pretrained (model and "
                 "tokenizer) and that transformers supports its architecture") from exc
    return source, tokenizer, model


def neuron_table(lm: LanguageModel) -> pd.DataFrame:
    """Which layer and unit each AN column is.

    Parameters
    ----------
    lm : LanguageModel

    Returns
    -------
    neurons : pandas.DataFrame, shape (n_neurons, 2)
        Columns ``layer`` (0-based block index) and ``unit`` (0-based index inside that
        layer's FFN); row ``i`` describes column ``i`` of :func:`word_activations`.
    """
    layers = np.repeat(np.arange(len(lm.layer_sizes), dtype=np.int64), lm.layer_sizes)
    units = np.concatenate([np.arange(n, dtype=np.int64) for n in lm.layer_sizes])
    return pd.DataFrame({"layer": layers, "unit": units})
