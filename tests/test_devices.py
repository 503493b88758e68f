"""Tests for bids_app.devices: the one place where --device becomes a torch device."""

from __future__ import annotations

import pytest
import torch

from bids_app.devices import driver_requirement, resolve_device, torch_device
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


# --------------------------------------------------------------------------------------------
# --device auto says what it chose and why (torch.cuda monkeypatched: these run on the CPU)


def _too_old_driver():
    import warnings

    warnings.warn("CUDA initialization: The NVIDIA driver on your system is too old "
                  "(found version 12040).", UserWarning, stacklevel=2)
    return False


def test_auto_on_a_cpu_only_torch_says_so(monkeypatch, caplog):
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.version, "hip", None, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level("INFO", logger="llmfbn"):
        assert resolve_device("auto") == "cpu"
    [record] = [r for r in caplog.records if r.name == "llmfbn"]
    assert record.levelname == "INFO"
    assert "Device: cpu" in record.message and "CPU-only build" in record.message


def test_auto_warns_when_a_cuda_build_finds_no_gpu(monkeypatch, caplog):
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", _too_old_driver)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with caplog.at_level("INFO", logger="llmfbn"):
        assert resolve_device("auto") == "cpu"
    [record] = [r for r in caplog.records if r.name == "llmfbn"]
    assert record.levelname == "WARNING"
    text = record.message
    assert "Device: cpu" in text and "CUDA 13.0 build" in text
    assert "driver on your system is too old (found version 12040)" in text  # torch's reason
    assert "driver >= 580" in text and "--gpus all" in text and "--nv" in text


def test_auto_names_a_hidden_gpu(monkeypatch, caplog):
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with caplog.at_level("INFO", logger="llmfbn"):
        assert resolve_device("auto") == "cpu"
    text = caplog.records[-1].message
    assert "CUDA_VISIBLE_DEVICES=''" in text and "driver >= 525" in text


def test_auto_logs_the_gpu_it_chose(monkeypatch, caplog):
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "NVIDIA H200")
    with caplog.at_level("INFO", logger="llmfbn"):
        assert resolve_device("auto") == "cuda"
    [record] = [r for r in caplog.records if r.name == "llmfbn"]
    assert record.levelname == "INFO"
    assert "Device: cuda" in record.message and "2 GPU(s)" in record.message
    assert "NVIDIA H200" in record.message and "CUDA 13.0" in record.message


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_auto_on_a_real_gpu_says_cuda(caplog):
    with caplog.at_level("INFO", logger="llmfbn"):
        assert resolve_device("auto") == "cuda"
    assert "Device: cuda" in caplog.records[-1].message
    assert torch.cuda.get_device_name(0) in caplog.records[-1].message


def test_explicit_cpu_and_resolved_names_log_nothing(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with caplog.at_level("INFO", logger="llmfbn"):
        resolve_device("cpu")
        resolve_device("cuda")  # the stages call this with the resolved name, many times
    assert not [r for r in caplog.records if r.name == "llmfbn"]


def test_cuda_requested_on_a_cuda_build_without_gpu_gives_the_reason(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", _too_old_driver)
    with pytest.raises(LlmfbnError) as err:
        resolve_device("cuda")
    text = str(err.value)
    assert "too old (found version 12040)" in text and "driver >= 580" in text


def test_driver_requirement_follows_the_cuda_major():
    assert "580" in driver_requirement("13.0")
    assert "CUDA Version: 13.0" in driver_requirement("13.2")
    assert "525" in driver_requirement("12.4")
    assert driver_requirement("99.1") == "an NVIDIA driver that supports CUDA 99.1"
