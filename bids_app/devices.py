"""The one place where ``--device`` becomes a torch device.

Every stage receives the device the workflow resolved here; no stage picks its own.
``--device auto`` says in the log which device it chose and why, and warns when a CUDA build
of torch finds no usable GPU (typically a host driver too old for the wheel's CUDA, or a
container started without ``--gpus all`` / ``--nv``), instead of quietly running on the CPU.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from typing import NamedTuple

from bids_app.errors import LlmfbnError

LOGGER = logging.getLogger("llmfbn")

DEVICE_CHOICES = ("auto", "cpu", "cuda")

#: Oldest NVIDIA Linux driver branch that runs a CUDA build of each major version (NVIDIA's
#: "minor version compatibility": any 13.x runtime on a driver >= 580, any 12.x on >= 525).
MIN_DRIVER_FOR_CUDA = {"11": "450", "12": "525", "13": "580"}


class CudaProbe(NamedTuple):
    """What torch says about CUDA here: ``usable``, ``build`` (e.g. ``"CUDA 13.0"``, or None
    for a CPU-only torch) and ``reason``, a sentence for the log."""

    usable: bool
    build: str | None
    reason: str


def driver_requirement(cuda_version: str | None) -> str:
    """The host driver a torch build for ``cuda_version`` (e.g. ``"13.0"``) needs, in words."""
    major = (cuda_version or "").split(".")[0]
    if major not in MIN_DRIVER_FOR_CUDA:
        return f"an NVIDIA driver that supports CUDA {cuda_version}"
    return (f"an NVIDIA driver >= {MIN_DRIVER_FOR_CUDA[major]} (nvidia-smi shows "
            f"'CUDA Version: {major}.0' or higher)")


def probe_cuda() -> CudaProbe:
    """Ask torch whether a GPU is usable, keeping the reason torch gives when it is not
    (torch reports a too-old driver as a warning and answers False)."""
    import torch

    if torch.version.cuda:
        build = f"CUDA {torch.version.cuda}"
    elif getattr(torch.version, "hip", None):
        build = f"ROCm {torch.version.hip}"
    else:
        build = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    if available:
        try:
            name = torch.cuda.get_device_name(0)
        except Exception:  # the name is for the log only; never fail the run over it
            name = "an unnamed GPU"
        return CudaProbe(True, build, f"torch {torch.__version__} ({build}) sees "
                                      f"{torch.cuda.device_count()} GPU(s); cuda:0 is {name}")
    if build is None:
        return CudaProbe(False, None, f"torch {torch.__version__} is a CPU-only build")
    details = [str(w.message).strip() for w in caught]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        details.append(f"CUDA_VISIBLE_DEVICES={visible!r}")
    return CudaProbe(False, build, f"torch {torch.__version__} is a {build} build but finds no "
                                   f"usable GPU ({'; '.join(details) or 'no GPU visible'})")


def _no_gpu_todo(probe: CudaProbe) -> str:
    cuda = probe.build.split()[-1] if probe.build and probe.build.startswith("CUDA") else None
    needs = driver_requirement(cuda) if cuda else "a GPU supported by this torch build"
    return (f"a GPU needs {needs} on the host, and in a container `--gpus all` (Docker), "
            "`--device nvidia.com/gpu=all` (Podman) or `--nv` (Apptainer/Singularity); "
            "pass --device cpu to run on the CPU on purpose")


def resolve_device(device) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (or a ``torch.device``) -> ``"cpu"``,
    ``"cuda"`` or ``"cuda:N"``; ``auto`` is CUDA when torch sees a GPU, else the CPU, and
    logs its choice and the reason (a warning when a CUDA build of torch finds no GPU).

    Raises :class:`LlmfbnError` when CUDA is asked for and not usable, or for an unknown name.
    """
    import torch

    text = str(device).strip().lower()
    if text == "auto":
        probe = probe_cuda()
        if probe.usable:
            LOGGER.info("Device: cuda (--device auto: %s)", probe.reason)
            return "cuda"
        if probe.build is None:
            LOGGER.info("Device: cpu (--device auto: %s)", probe.reason)
        else:
            LOGGER.warning("Device: cpu, although %s. What to do: %s.", probe.reason,
                           _no_gpu_todo(probe))
        return "cpu"
    if text == "cpu":
        return "cpu"
    if re.fullmatch(r"cuda(:\d+)?", text):
        probe = probe_cuda()
        if not probe.usable:
            raise LlmfbnError(
                "--device cuda was requested but CUDA is not available",
                expected="a CUDA GPU visible to PyTorch", found=probe.reason,
                todo=("install a CUDA build of torch, or " if probe.build is None else "")
                + _no_gpu_todo(probe))
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
