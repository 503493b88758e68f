"""Models larger than one device: ``device_map="auto"`` (accelerate) gives the activations
of the model on one device.

A small random-weight Llama is split between host memory and disk offload by a host-memory
budget (accelerate's ``max_memory`` and ``offload_folder``); its word activations must equal
those of the same checkpoint loaded whole. Both run in float32 on the CPU and accelerate only
moves weights, so the tolerance is float32 rounding: rtol 1e-5, atol 1e-6.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from bids_app.errors import LlmfbnError
from bids_app.features import load_model, resolve_model, word_activations

pytest.importorskip("accelerate")

WORDS = ("once upon a time a lighthouse keeper watched the market boats come home through "
         "the fog while the gulls cried over the harbour").split()
N_LAYERS = 6


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    tokenizer = load_model(resolve_model("minilm")).tokenizer
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, intermediate_size=96,
                         num_hidden_layers=N_LAYERS, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=128,
                         pad_token_id=0, bos_token_id=101, eos_token_id=102)
    folder = tmp_path_factory.mktemp("llama_random")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _budget(whole) -> dict:
    """Host memory for the embeddings and about half of the blocks: the rest goes to disk."""
    def size(module):
        return sum(p.numel() * p.element_size() for p in module.parameters())

    layers = whole.model.layers
    return {"cpu": size(whole.model.embed_tokens) + (N_LAYERS // 2) * size(layers[0])}


def test_host_and_disk_split_gives_the_whole_models_activations(llama_folder, tmp_path):
    spec = resolve_model(str(llama_folder))
    whole = load_model(spec)
    split = load_model(spec, device="cpu", device_map="auto", max_memory=_budget(whole),
                       offload_folder=tmp_path / "offload")
    placed = set(split.model.hf_device_map.values())
    assert {"cpu", "disk"} <= placed, split.model.hf_device_map
    assert split.device == torch.device("cpu")
    assert split.layer_sizes == whole.layer_sizes == [96] * N_LAYERS
    expected = word_activations(whole, WORDS, context_tokens=16, batch_size=2)
    got = word_activations(split, WORDS, context_tokens=16, batch_size=2)
    assert got.shape == (len(WORDS), 96 * N_LAYERS)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_split_model_with_early_stop_and_projection(llama_folder, tmp_path):
    """Recording only the first layers stops the forward pass inside an offloaded model;
    the projected output is the projection of the whole model's activations."""
    spec = resolve_model(str(llama_folder))
    whole = load_model(spec)
    split = load_model(spec, device="cpu", device_map="auto", max_memory=_budget(whole),
                       offload_folder=tmp_path / "offload")
    project = np.random.default_rng(0).normal(size=(5, len(WORDS)))
    for layers in ([0, 1], [N_LAYERS - 1]):
        expected = project @ word_activations(whole, WORDS, context_tokens=16,
                                              layers=layers).astype(np.float64)
        got = word_activations(split, WORDS, context_tokens=16, layers=layers,
                               project=project)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_unknown_device_map(llama_folder):
    with pytest.raises(LlmfbnError, match="device map"):
        load_model(resolve_model(str(llama_folder)), device_map="balanced_low_0")


def test_device_map_option(tmp_path):
    from bids_app.cli.parser import parse_args

    args = [str(tmp_path), str(tmp_path / "out"), "participant"]
    assert parse_args(args).device_map is None
    assert parse_args(args + ["--device-map", "auto"]).device_map == "auto"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_and_host_split_gives_the_whole_models_activations(llama_folder):
    """Half the blocks on the GPU, the rest in host memory (they run on the GPU when
    called). float32 on both sides; GPU and CPU kernels differ in summation order, so the
    tolerance is rtol 1e-4, atol 1e-5."""
    spec = resolve_model(str(llama_folder))
    whole = load_model(spec, device="cpu")
    budget = _budget(whole)["cpu"]
    split = load_model(spec, device="cuda", dtype="float32", device_map="auto",
                       max_memory={0: budget, "cpu": 10 * budget})
    assert {0, "cpu"} <= set(split.model.hf_device_map.values()), split.model.hf_device_map
    assert split.device.type == "cuda"
    expected = word_activations(whole, WORDS, context_tokens=16, batch_size=2)
    got = word_activations(split, WORDS, context_tokens=16, batch_size=2)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
