"""GGUF checkpoints: dequantised once, then read from a cached safetensors copy.

``transformers`` dequantises a GGUF file slowly (~20 s for SmolLM2-135M on 2 cores), so the
first load re-saves the model and its tokenizer as safetensors in
``$LLMFBN_CACHE/models/<label>-<key>`` (default ``$XDG_CACHE_HOME/llmfbn``, else
``~/.cache/llmfbn``), where ``key`` hashes the GGUF file's name, size and mtime; later
loads read that copy (< 1 s). The model's identity stays keyed to the GGUF file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from pathlib import Path

from bids_app.atomic import atomic_folder
from bids_app.errors import LlmfbnError
from bids_app.features.models import ModelSpec, weight_files

LOGGER = logging.getLogger("llmfbn")

_GGUF_CACHE_VERSION = "1"
_GGUF_CACHE_MARKER = "llmfbn_source.json"


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


def cached_copy_ok(folder: Path, spec: ModelSpec) -> bool:
    """Whether ``folder`` holds a complete safetensors copy of the GGUF model ``spec``.

    Complete means: the marker file written last names ``spec.gguf_file``, and the folder
    holds ``config.json``, ``tokenizer.json`` and weight files.
    """
    try:
        marker = json.loads((folder / _GGUF_CACHE_MARKER).read_text())
    except (OSError, ValueError):
        return False
    return (marker.get("gguf_file") == spec.gguf_file
            and (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
            and bool(weight_files(folder)))


def _missing_gguf_packages(spec: ModelSpec) -> None:
    missing = [pkg for pkg in ("gguf", "accelerate") if importlib.util.find_spec(pkg) is None]
    if missing:
        raise LlmfbnError(
            f"loading the GGUF model {spec.name!r} needs the packages "
            f"{' and '.join(missing)}",
            found=f"{', '.join(missing)} not installed",
            todo=f"pip install {' '.join(missing)}")


def dequantised_gguf(spec: ModelSpec):
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


def write_gguf_copy(spec: ModelSpec, folder: Path, tokenizer, causal) -> bool:
    """Save a dequantised GGUF model + tokenizer atomically into ``folder``.

    The copy is written to a temporary folder beside ``folder`` and renamed into place
    (:func:`bids_app.atomic.atomic_folder`), with the marker file last, so concurrent runs
    never see half a copy.

    Returns
    -------
    written : bool
        True when ``folder`` now holds a valid copy (also when another process won the
        race to write it); False (with a warning) when the cache cannot be written: the
        caller then uses the model in memory.
    """
    try:
        with atomic_folder(folder) as temporary:
            causal.save_pretrained(temporary)
            tokenizer.save_pretrained(temporary)
            gguf = Path(spec.path) / spec.gguf_file
            (temporary / _GGUF_CACHE_MARKER).write_text(json.dumps(
                {"gguf_file": spec.gguf_file, "gguf_path": str(gguf),
                 "identity": spec.identity, "cache_version": _GGUF_CACHE_VERSION}, indent=2))
        return True
    except OSError as exc:
        if cached_copy_ok(folder, spec):  # another process won the race with a valid copy
            return True
        LOGGER.warning("Could not cache a safetensors copy of %s in %s (%s); loading the "
                       "GGUF file directly (set LLMFBN_CACHE to a writable folder to "
                       "load in < 1 s next time)", spec.gguf_file, folder, exc)
        return False


def gguf_source(spec: ModelSpec, dtype):
    """Where to read a GGUF model from; dequantises and caches it on first use.

    Parameters
    ----------
    spec : ModelSpec
        A resolved GGUF model (``spec.gguf_file`` set).
    dtype : torch.dtype
        Weight precision, used only for the in-memory model returned when no copy could
        be cached.

    Returns
    -------
    source : str
        The cached safetensors copy (:func:`gguf_cache_folder`), or the GGUF file itself
        when the cache is not writable.
    tokenizer, model : transformers objects or None
        None when the model is to be read from ``source``; otherwise the dequantised
        tokenizer and base model (no LM head) in ``dtype``.
    """
    folder = gguf_cache_folder(spec)
    if cached_copy_ok(folder, spec):
        return str(folder), None, None
    LOGGER.info("Dequantising %s once; caching a safetensors copy in %s",
                spec.gguf_file, folder)
    tokenizer, causal = dequantised_gguf(spec)
    if write_gguf_copy(spec, folder, tokenizer, causal):
        return str(folder), None, None
    # LlamaForCausalLM.model
    return str(Path(spec.path) / spec.gguf_file), tokenizer, causal.base_model.to(dtype)
