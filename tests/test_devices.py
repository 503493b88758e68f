"""Tests for bids_app.devices: the one place where --device becomes a torch device."""

from __future__ import annotations

import pytest
import torch

from bids_app.devices import resolve_device, torch_device
from bids_app.errors import LlmfbnError


@pytest.mark.parametrize("given", ["cpu", " CPU ", torch.device("cpu")])
def test_cpu(given):
    assert resolve_device(given) == "cpu"
    assert torch_device(given) == torch.device("cpu")


def test_auto_follows_cuda_availability(monkeypatch):
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("AUTO") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"


@pytest.mark.parametrize("given", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_cuda(monkeypatch, given):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(LlmfbnError, match="CUDA"):
        resolve_device(given)


def test_cuda_index_checked_against_the_visible_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda") == "cuda"
    assert resolve_device("CUDA:1") == "cuda:1"
    assert torch_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(LlmfbnError, match="no GPU cuda:2"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("given", ["tpu", "", "gpu", "cuda:x", "cuda1", None])
def test_unknown_device(given):
    with pytest.raises(LlmfbnError, match="unknown device"):
        resolve_device(given)
