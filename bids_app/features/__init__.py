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

Modules: :mod:`~bids_app.features.models` (resolving a model name to files),
:mod:`~bids_app.features.gguf` (dequantised safetensors cache),
:mod:`~bids_app.features.architecture` (locating the FFN layers),
:mod:`~bids_app.features.loading` (tokenizer + model, precision),
:mod:`~bids_app.features.windows` (windows and word-token alignment),
:mod:`~bids_app.features.hooks` (forward pre-hooks) and
:mod:`~bids_app.features.extraction` (token and word activations).

Typical use::

    spec = resolve_model("minilm")
    lm = load_model(spec, device="cpu")
    activations = word_activations(lm, words)        # (n_words, n_neurons)
    neurons = neuron_table(lm)                       # row i <-> column i
"""

from bids_app.features.architecture import FFN_PATHS, find_ffn_layers
from bids_app.features.extraction import POOLINGS, token_activations, word_activations
from bids_app.features.gguf import gguf_cache_folder
from bids_app.features.loading import LanguageModel, load_model, neuron_table
from bids_app.features.models import BUNDLED_MODELS, ModelSpec, expected_neurons, resolve_model
from bids_app.features.windows import plan_windows

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
    "expected_neurons",
    "resolve_model",
    "token_activations",
    "word_activations",
]
