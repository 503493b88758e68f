"""CPU benchmark of the features stage: ``word_activations`` vs a naive Hugging Face loop.

Run by hand (not part of the test suite)::

    python benchmarks/bench_features.py                      # minilm and smollm2
    python benchmarks/bench_features.py --models minilm --baseline-words 300

What is measured, per model, on ~2,000 words (the bundled stories, repeated):

* **ours** -- :func:`bids_app.features.word_activations` over the whole text (windows of
  ``W`` tokens, stride ``W // 2``, forward pre-hooks, batched).
* **naive baseline** -- written here without any llmfbn code: one forward pass per word,
  each with its own context window of ``W`` tokens (decoders: the ``W`` tokens ending with
  the word, run on to ``W`` tokens when fewer precede it -- later tokens cannot change a
  causal model's activations at the word; encoders: ``W`` tokens centred on the word),
  FFN activations read with
  ordinary forward hooks on the layers *before* the hooked one (BERT ``intermediate``;
  Llama ``act(gate_proj) * up_proj``), pooled the same way (mean or last token of the
  word). Its cost per word does not depend on the other words, so it is timed on words
  spread evenly over the whole text (``--baseline-words``) and reported in words/s.
* **identity check** -- on the first ``--check-words`` words as a story of their own (they
  fit one window, where both methods define exactly the same quantity), both poolings:
  max absolute difference, and the same relative to the largest activation. For decoders
  also the naive loop with windows cut at the word (the text up to and including it, so
  every pass has another length) against the naive loop above: the float32 rounding of
  Hugging Face's own forward passes when only the sequence length changes.
* **peak memory** -- resident set size (RSS) of this process sampled every 2 ms during
  each phase: the peak, and its rise over the RSS at the phase's start.

Write the numbers into benchmarks/results/features.md by hand.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
STORIES = sorted((REPO / "bids_app" / "data").glob("story_*.txt"))


# --------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------
def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Sample this process's RSS every ``interval_s`` while the block runs."""

    def __init__(self, interval_s: float = 0.002):
        self.interval_s = interval_s
        self.start = self.peak = 0
        self._stop = threading.Event()

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.interval_s)

    def __enter__(self):
        self.start = self.peak = _rss_bytes()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())

    @property
    def rise(self) -> int:
        return self.peak - self.start


def story_words(n_words: int) -> list[str]:
    """The bundled stories, one after the other and repeated, cut at ``n_words``."""
    pool = [w for path in STORIES for w in path.read_text(encoding="utf-8").split()]
    return [pool[i % len(pool)] for i in range(n_words)]


# --------------------------------------------------------------------------------------
# Naive baseline: one forward pass per word (no llmfbn code)
# --------------------------------------------------------------------------------------
class NaiveFFN:
    """Per-word forward passes of a Hugging Face base model, FFN activations by hooks."""

    def __init__(self, model, tokenizer):
        import torch
        from transformers.activations import ACT2FN

        self.model, self.tokenizer, self.torch = model, tokenizer, torch
        config = model.config
        if hasattr(model, "encoder"):  # BERT: ANs = output of `intermediate` (GELU(W1 x))
            self.decoder = False
            self.blocks = list(model.encoder.layer)
            self.sources = [[b.intermediate] for b in self.blocks]
            self.combine = lambda outs: outs[0]
        else:  # Llama: ANs = act(gate_proj x) * up_proj x
            self.decoder = True
            self.blocks = list(model.layers)
            self.sources = [[b.mlp.gate_proj, b.mlp.up_proj] for b in self.blocks]
            act = ACT2FN[config.hidden_act]
            self.combine = lambda outs: act(outs[0]) * outs[1]
        probe = tokenizer("hello", add_special_tokens=False)["input_ids"]
        wrapped = tokenizer("hello", add_special_tokens=True)["input_ids"]
        at = next(i for i in range(len(wrapped)) if wrapped[i:i + len(probe)] == probe)
        self.prefix, self.suffix = wrapped[:at], wrapped[at + len(probe):]

    def tokens_of_words(self, words):
        """Token ids of the text and, per word, the positions of its own tokens."""
        tok = self.tokenizer
        per_word = [tok((" " if i else "") + w, add_special_tokens=False)["input_ids"]
                    for i, w in enumerate(words)]
        ids = [t for tokens in per_word for t in tokens]
        if ids != tok(" ".join(words), add_special_tokens=False)["input_ids"]:
            raise RuntimeError("word-by-word tokens do not rebuild the text's tokens")
        own, position = [], 0
        for tokens in per_word:
            # A token that is only a space (byte-level BPE, before digits) is context, not
            # part of the word; a word without tokens takes the previous token.
            mine = [position + j for j, t in enumerate(tokens)
                    if tok.decode([t]).strip() != ""]
            own.append(mine or [max(position - 1, 0)])
            position += len(tokens)
        return np.asarray(ids), own

    def forward(self, input_ids):
        torch = self.torch
        outputs, handles = {}, []
        for layer, modules in enumerate(self.sources):
            for k, module in enumerate(modules):
                handles.append(module.register_forward_hook(
                    lambda _m, _a, out, key=(layer, k): outputs.__setitem__(key, out)))
        try:
            with torch.inference_mode():
                ids = torch.as_tensor([input_ids])
                self.model(input_ids=ids, attention_mask=torch.ones_like(ids))
        finally:
            for handle in handles:
                handle.remove()
        return torch.cat([self.combine([outputs[(layer, k)] for k in range(len(mods))])[0]
                          for layer, mods in enumerate(self.sources)], dim=-1)

    def word_activations(self, words, window, pooling="mean", which=None, cut=False):
        """(len(which), n_neurons) float32; one forward pass per word in `which`.

        ``cut`` (decoders): the window ends at the word even when fewer than ``window``
        tokens precede it, so the passes have different lengths.
        """
        ids, own = self.tokens_of_words(words)
        n = len(ids)
        which = range(len(words)) if which is None else which
        rows = []
        for i in which:
            tokens = own[i]
            if self.decoder:  # the last W tokens up to and including the word, run on to
                end = tokens[-1] + 1  # W tokens when fewer precede it (causal: same values)
                start = max(0, end - window)
                if not cut:
                    end = min(n, start + window)
            else:  # W tokens centred on the word
                centre = (tokens[0] + tokens[-1]) / 2
                start = int(min(max(0, round(centre - (window - 1) / 2)), max(0, n - window)))
                end = min(n, start + window)
            acts = self.forward(self.prefix + ids[start:end].tolist() + self.suffix)
            positions = [len(self.prefix) + t - start for t in tokens]
            picked = acts[positions].double()
            rows.append((picked.mean(0) if pooling == "mean" else picked[-1]).float().numpy())
        return np.stack(rows)


# --------------------------------------------------------------------------------------
# Benchmark
# --------------------------------------------------------------------------------------
def _log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def bench_model(name, words, window, batch_size, baseline_words, check_words):

    from bids_app.features import load_model, resolve_model, word_activations

    result = {"model": name}
    t0 = time.perf_counter()
    with PeakRSS() as mem:
        lm = load_model(resolve_model(name), device="cpu")
    result.update(load_s=time.perf_counter() - t0, n_neurons=lm.n_neurons,
                  n_layers=len(lm.layer_sizes), family=lm.family,
                  rss_after_load_mib=_rss_bytes() / 2**20)
    naive = NaiveFFN(lm.model, lm.tokenizer)
    n_tokens = len(lm.tokenizer(" ".join(words), add_special_tokens=False)["input_ids"])
    result.update(n_words=len(words), n_tokens=n_tokens, window=window)

    _log(f"{name}: loaded in {result['load_s']:.1f} s; identity check")
    # Identity on a story that fits one window, both poolings.
    subset = words[:check_words]
    checks = {}
    for pooling in ("mean", "last"):
        ours = word_activations(lm, subset, context_tokens=window, pooling=pooling)
        theirs = naive.word_activations(subset, window, pooling)
        diff = float(np.abs(ours - theirs).max())
        checks[pooling] = {"max_abs_diff": diff,
                           "max_abs_activation": float(np.abs(theirs).max()),
                           "rel_diff": diff / float(np.abs(theirs).max())}
        if naive.decoder:
            cut = naive.word_activations(subset, window, pooling, cut=True)
            hf_diff = float(np.abs(cut - theirs).max())
            checks[pooling].update(naive_cut_vs_naive_max_abs_diff=hf_diff,
                                   naive_cut_vs_naive_rel_diff=hf_diff
                                   / float(np.abs(theirs).max()),
                                   ours_vs_naive_cut_max_abs_diff=float(
                                       np.abs(ours - cut).max()))
    result["check"] = {"n_words": len(subset),
                       "n_tokens": len(lm.tokenizer(" ".join(subset),
                                                    add_special_tokens=False)["input_ids"]),
                       **checks}

    # Ours over the whole text.
    _log(f"{name}: ours over {len(words)} words")
    t0 = time.perf_counter()
    with PeakRSS() as mem:
        ours = word_activations(lm, words, context_tokens=window, batch_size=batch_size)
    ours_s = time.perf_counter() - t0
    result["ours"] = {"seconds": ours_s, "words_per_s": len(words) / ours_s,
                      "peak_rss_mib": mem.peak / 2**20, "rise_mib": mem.rise / 2**20,
                      "output_mib": ours.nbytes / 2**20}

    # Naive baseline on words spread evenly over the whole text.
    _log(f"{name}: ours {ours_s:.1f} s; naive loop on {baseline_words} words")
    which = np.unique(np.linspace(0, len(words) - 1, baseline_words).round().astype(int))
    t0 = time.perf_counter()
    with PeakRSS() as mem:
        theirs = naive.word_activations(words, window, "mean", which=which)
    naive_s = time.perf_counter() - t0
    rate = len(which) / naive_s
    result["naive"] = {"timed_words": int(len(which)), "seconds": naive_s,
                       "words_per_s": rate, "projected_s_all_words": len(words) / rate,
                       "peak_rss_mib": mem.peak / 2**20, "rise_mib": mem.rise / 2**20}
    _log(f"{name}: naive {naive_s:.1f} s")
    result["speedup"] = result["ours"]["words_per_s"] / rate
    # Same words, full text: not identical by design (ours gives a token W/2..W tokens
    # of context, the naive loop always W), so only how close.
    a, b = ours[which].astype(np.float64), theirs.astype(np.float64)
    corr = [np.corrcoef(x, y)[0, 1] for x, y in zip(a, b)]
    result["full_text_vs_naive"] = {"median_word_correlation": float(np.median(corr)),
                                    "min_word_correlation": float(np.min(corr))}
    del ours, theirs, lm, naive
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["minilm", "smollm2"])
    parser.add_argument("--words", type=int, default=2000)
    parser.add_argument("--window", type=int, default=256, help="context tokens W")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--baseline-words", type=int, default=100,
                        help="words timed with the naive loop (spread over the text)")
    parser.add_argument("--check-words", type=int, default=120,
                        help="words of the one-window identity check")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    import torch
    import transformers

    words = story_words(args.words)
    meta = {"date": datetime.date.today().isoformat(), "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "cpu": platform.processor() or platform.machine()}
    print(json.dumps(meta), flush=True)
    results = []
    for name in args.models:
        result = bench_model(name, words, args.window, args.batch_size,
                             args.baseline_words, args.check_words)
        print(json.dumps(result), flush=True)
        results.append(result)
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
