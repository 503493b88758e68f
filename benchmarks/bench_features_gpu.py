"""GPU benchmark: words -> TR-level responses of a Llama-3-8B-shaped model, end to end.

Run by hand on a machine with a CUDA GPU (not part of the tests)::

    python benchmarks/bench_features_gpu.py --json features_gpu.json
    python benchmarks/bench_features_gpu.py --tiny --device cpu       # smoke test (CPU)

What it builds (no download): a Llama model with random weights in bf16, created directly
on the device, shaped like Llama-3-8B (32 layers, hidden 4,096, FFN 14,336 -> 458,752 ANs,
32 query / 8 key-value heads, vocabulary 128,256). The text is the bundled stories
repeated to ``--words`` (43,000, Narratives' size), cut into stories of ``--story-words``
words, each "spoken" at 2.5 words/s (one word every 0.4 s) in a run of its own (TR 1.5 s,
the run ending 20 s after the last word). Tokens come from the bundled MiniLM fast
tokenizer (30,522 ids, all valid for the model): the cost depends on the token count,
not on which tokenizer made it.

What it measures, one after the other:

1. ``matmul``: the card's bf16 matmul rate (8,192^3 products, after a warm-up).
2. ``plain_forward``: a plain Hugging Face forward over the same windows the pipeline uses
   (``--context-tokens`` tokens, stride half of it, ``--batch-size`` windows per pass),
   with a do-nothing forward pre-hook on every ``down_proj``: the reference rate.
3. ``ours``: for every story, :func:`bids_app.features.word_activations` with
   ``project=`` the story's :func:`bids_app.responses.response_operator` (pooling to
   words, HRF convolution and TR sampling on the device), then per-run z-scoring, unit
   norm per AN and the write into an on-disk ``x.npy`` (n_ANs, n_TRs) float32 memory map,
   as the pipeline's responses stage does: wall time from text to responses on disk.

Reported: seconds, words/s, tokens/s, the forward FLOPs (2 x non-embedding parameters per
token plus causal attention, 2 x n_layers x T x hidden per token on average) divided by
each wall time, as a fraction of the measured matmul rate, and the peak GPU memory. The
issue's targets: ``ours`` >= 60 % of the matmul rate and < 30 s for 43,000 words.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
STORIES = sorted((REPO / "bids_app" / "data").glob("story_*.txt"))
LLAMA3_8B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                 max_position_embeddings=8192, rope_theta=500000.0, rms_norm_eps=1e-5)
TINY = dict(hidden_size=64, intermediate_size=176, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=2, vocab_size=30522,
            max_position_embeddings=1024, rms_norm_eps=1e-5)


def _log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _sync(torch, device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_tflops(torch, device, dtype, n=8192, repeats=20) -> float:
    a = torch.randn((n, n), device=device, dtype=dtype)
    b = torch.randn((n, n), device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(torch, device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(torch, device)
    return 2 * n ** 3 * repeats / (time.perf_counter() - t0) / 1e12


def build_model(torch, shape, device, dtype):
    """A random-weight LlamaModel (no LM head), created on ``device`` in ``dtype``."""
    from transformers import LlamaConfig, LlamaModel

    config = LlamaConfig(**shape)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaModel(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval().requires_grad_(False)


def forward_flops_per_token(shape, mean_context) -> float:
    d, f, n_layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    kv = d * shape["num_key_value_heads"] // shape["num_attention_heads"]
    params = n_layers * (2 * d * d + 2 * d * kv + 3 * d * f)
    return 2 * params + 2 * 2 * n_layers * mean_context * d


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="a 4-layer toy model (smoke test)")
    parser.add_argument("--words", type=int, default=43_000)
    parser.add_argument("--story-words", type=int, default=2_150)
    parser.add_argument("--context-tokens", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--work", type=Path, help="folder for x.npy (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    import torch
    import transformers

    from bids_app.features import (
        LanguageModel,
        ModelSpec,
        load_model,
        plan_windows,
        resolve_model,
        word_activations,
    )
    from bids_app.features.windows import special_affixes
    from bids_app.responses import frame_times_s, response_operator, zscore_time

    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    shape = TINY if args.tiny else LLAMA3_8B
    result = dict(date=datetime.datetime.now().isoformat(timespec="seconds"),
                  python=platform.python_version(), torch=torch.__version__,
                  transformers=transformers.__version__, device=str(device),
                  dtype=str(dtype), shape=shape, words=args.words,
                  context_tokens=args.context_tokens, batch_size=args.batch_size)
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)

    _log("matmul rate")
    result["matmul_tflops"] = matmul_tflops(torch, device, dtype,
                                            n=1024 if args.tiny else 8192)
    _log(f"matmul {result['matmul_tflops']:.1f} TFLOP/s; building the model")
    t0 = time.perf_counter()
    model = build_model(torch, shape, device, dtype)
    tokenizer = load_model(resolve_model("minilm")).tokenizer
    spec = ModelSpec(name="random-llama", label="randomllama", path="(random weights)",
                     gguf_file=None, identity="random-llama")
    lm = LanguageModel(spec, model, tokenizer, device, weights_path="(random weights)")
    result.update(build_s=time.perf_counter() - t0, n_neurons=lm.n_neurons)

    pool = [w for path in STORIES for w in path.read_text(encoding="utf-8").split()]
    words = [pool[i % len(pool)] for i in range(args.words)]
    stories = [words[i:i + args.story_words] for i in range(0, len(words), args.story_words)]
    t_r = 1.5
    n_tokens = len(tokenizer(" ".join(words), add_special_tokens=False)["input_ids"])
    result.update(n_stories=len(stories), n_tokens=n_tokens)

    # 2. plain forward over exactly the pipeline's windows (reference rate)
    prefix, suffix = special_affixes(tokenizer)
    window = min(args.context_tokens, lm.max_positions - len(prefix) - len(suffix))
    windows = []
    for story in stories:
        ids = tokenizer(" ".join(story), add_special_tokens=False)["input_ids"]
        starts, _ = plan_windows(len(ids), window, causal=True)
        length = min(window, len(ids))
        windows += [np.asarray(prefix + ids[s:s + length] + suffix) for s in starts]
    n_window_tokens = sum(len(w) for w in windows)
    handles = [m.register_forward_pre_hook(lambda _m, _a: None) for m in lm.ffn_modules]
    try:
        with torch.inference_mode():
            first = torch.as_tensor(np.stack(windows[:args.batch_size]), device=device)
            model(input_ids=first)                                         # warm-up
            _sync(torch, device)
            t0 = time.perf_counter()
            by_length = {}
            for w in windows:
                by_length.setdefault(len(w), []).append(w)
            for group in by_length.values():
                for b in range(0, len(group), args.batch_size):
                    batch = torch.as_tensor(np.stack(group[b:b + args.batch_size]),
                                            device=device)
                    model(input_ids=batch)
            _sync(torch, device)
            plain_s = time.perf_counter() - t0
    finally:
        for handle in handles:
            handle.remove()
    flops = forward_flops_per_token(shape, np.mean([len(w) for w in windows]) / 2) \
        * n_window_tokens
    result["plain_forward"] = dict(seconds=plain_s, window_tokens=n_window_tokens,
                                   tokens_per_s=n_window_tokens / plain_s,
                                   tflops=flops / plain_s / 1e12,
                                   fraction_of_matmul=flops / plain_s / 1e12
                                   / result["matmul_tflops"])
    _log(f"plain forward {plain_s:.1f} s ({result['plain_forward']['tflops']:.0f} TFLOP/s)")

    # 3. ours: text -> responses on disk
    work = args.work or Path(tempfile.mkdtemp())
    work.mkdir(parents=True, exist_ok=True)
    runs = []
    for story in stories:
        onsets = 2.0 + 0.4 * np.arange(len(story))
        n_frames = int(np.ceil((onsets[-1] + 20.0) / t_r))
        runs.append((story, onsets, frame_times_s(n_frames, t_r, 0.0)))
    n_trs = sum(len(r[2]) for r in runs)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    x = np.lib.format.open_memmap(work / "x.npy", mode="w+", dtype=np.float32,
                                  shape=(lm.n_neurons, n_trs))
    column = 0
    for story, onsets, frames in runs:
        operator = response_operator(onsets, frames, "spm", drop_outside_s=32.0)[0]
        responses = word_activations(lm, story, context_tokens=args.context_tokens,
                                     batch_size=args.batch_size, project=operator)
        x[:, column:column + len(frames)] = zscore_time(responses).T
        column += len(frames)
    for start in range(0, lm.n_neurons, 65536):
        block = np.asarray(x[start:start + 65536], dtype=np.float64)
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        x[start:start + 65536] = np.divide(block, norms, out=np.zeros_like(block),
                                           where=norms > 0)
    x.flush()
    del x
    ours_s = time.perf_counter() - t0
    result["ours"] = dict(seconds=ours_s, words_per_s=len(words) / ours_s,
                          n_trs=n_trs, x_gib=lm.n_neurons * n_trs * 4 / 2 ** 30,
                          tflops=flops / ours_s / 1e12,
                          fraction_of_matmul=flops / ours_s / 1e12 / result["matmul_tflops"])
    if device.type == "cuda":
        result["peak_gpu_gib"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
    if args.work is None:
        os.remove(work / "x.npy")
    _log(f"ours {ours_s:.1f} s for {len(words)} words")
    print(json.dumps(result), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
