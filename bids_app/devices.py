"""The one place where ``--device`` becomes a torch device.

Every stage receives the device the workflow resolved here; no stage picks its own.
"""

from __future__ import annotations

import re

from bids_app.errors import LlmfbnError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(device) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (or a ``torch.device``) -> ``"cpu"``,
    ``"cuda"`` or ``"cuda:N"``; ``auto`` is CUDA when torch sees a GPU, else the CPU.

    Raises :class:`LlmfbnError` when CUDA is asked for and not usable, or for an unknown name.
    """
    import torch

    text = str(device).strip().lower()
    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return "cpu"
    if re.fullmatch(r"cuda(:\d+)?", text):
        if not torch.cuda.is_available():
            raise LlmfbnError(
                "--device cuda was requested but CUDA is not available",
                expected="a CUDA GPU visible to PyTorch",
                found=f"torch {torch.__version__} without a usable CUDA device",
                todo="run with --device cpu (or auto), or use a CUDA build of torch on a GPU "
                "node (Singularity: add --nv; Docker: add --gpus all)")
        index = int(text.split(":")[1]) if ":" in text else 0
        if index >= torch.cuda.device_count():
            raise LlmfbnError(f"no GPU {text}",
                              expected=f"cuda:0..cuda:{torch.cuda.device_count() - 1}",
                              found=text, todo="pick an existing GPU")
        return text
    raise LlmfbnError(f"unknown device {device!r}", expected="auto, cpu, cuda or cuda:N",
                      found=repr(device), todo="pass --device auto|cpu|cuda")


def torch_device(device):
    """:func:`resolve_device` as a ``torch.device``."""
    import torch

    return torch.device(resolve_device(device))
