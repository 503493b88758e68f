"""Running the model: AN activations per token, and pooled per word.

A word's activation is the mean over the sub-word tokens that overlap the word's characters
(``pooling="mean"``, the default) or the activation of its last sub-word token
(``pooling="last"``). Token activations are summed in float64 on the model's device and the
returned activations are float32 whatever the weights' precision.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bids_app.errors import LlmfbnError
from bids_app.features.hooks import StopForward, ffn_hooks
from bids_app.features.loading import LanguageModel
from bids_app.features.windows import BatchPairs, TokenPlan, plan_tokens

#: How a word's sub-word tokens are pooled into one activation per AN.
POOLINGS = ("mean", "last")

#: Precision of ``word_activations(project=...)`` per device type (others: float32):
#: float64 is cheap on CPUs, slow on most GPUs.
PROJECT_DTYPE = {"cpu": "float64"}


def token_activations(lm: LanguageModel, input_ids, attention_mask=None) -> np.ndarray:
    """AN activations of every token of a ready-made input (no windowing, no averaging).

    Parameters
    ----------
    lm : LanguageModel
    input_ids : array-like of int, shape (batch, n_tokens)
        Token ids, special tokens included as the model expects them.
    attention_mask : array-like of {0, 1}, shape (batch, n_tokens), optional

    Returns
    -------
    activations : ndarray of float32, shape (batch, n_tokens, n_neurons)
        Columns as in :func:`neuron_table`.
    """
    import torch

    ids = torch.as_tensor(np.asarray(input_ids), dtype=torch.long, device=lm.device)
    if ids.dim() == 1:
        ids = ids[None]
    mask = (torch.ones_like(ids) if attention_mask is None else
            torch.as_tensor(np.asarray(attention_mask), dtype=torch.long,
                            device=lm.device).reshape(ids.shape))
    captured: dict[int, np.ndarray] = {}

    def keep(layer, tensor):
        captured[layer] = tensor.detach().float().cpu().numpy()

    with ffn_hooks(lm, keep), torch.inference_mode():
        lm.model(input_ids=ids, attention_mask=mask)
    return np.concatenate([captured[i] for i in range(len(lm.ffn_modules))], axis=-1)


def word_activations(lm: LanguageModel, words: Sequence[str], context_tokens: int = 256,
                     batch_size: int = 8, progress: bool = False,
                     pooling: str = "mean", layers: Sequence[int] | None = None,
                     project=None) -> np.ndarray:
    """Activation of every AN for every word of a story (or a linear map of them).

    The words are joined with single spaces and tokenized once (no special tokens), with
    character offsets. A token belongs to every word whose characters it overlaps, so
    punctuation, casing and words split into several sub-word tokens map correctly; a
    word's activation is the mean over its tokens (``pooling="mean"``, ours) or the
    activation of its last token (``pooling="last"``). A word that produces no token
    at all gets the activation of the nearest previous token (of the first token at the
    story start); no error is raised for it.

    The token sequence is cut into windows of ``W = min(context_tokens, max_positions -
    n_special)`` tokens with a stride of ``W // 2`` (see :func:`plan_windows`); each
    window gets the model's special tokens. Decoders read each token from the earliest
    window that holds it (>= W/2 previous tokens except for the first W tokens), encoders
    from the window in which it is most central.

    Parameters
    ----------
    lm : LanguageModel
        From :func:`load_model`.
    words : sequence of str, length n_words
        The story's words in spoken order (as in the word-timing file).
    context_tokens : int, default 256
        Window length W in tokens (capped by the model's maximum input length).
    batch_size : int, default 8
        Windows per forward pass (right-padded, with an attention mask).
    progress : bool, default False
        Show a progress bar over batches.
    pooling : {"mean", "last"}, default "mean"
        How a word's sub-word tokens become one value per AN: their mean, or the last
        token's activation (for decoders the one that has seen the whole word).
    layers : sequence of int or None
        Record only these layers (memory: a big model's words x ANs may not fit). The
        forward pass stops after the last of them.
    project : array of shape (n_out, n_words) or None
        If given, return ``project @ activations`` instead of the activations, computed
        on the model's device as words are completed (float64 on the CPU, float32 on a
        GPU), so that the words x ANs activations never leave the device and never exist
        in full: with :func:`bids_app.responses.response_operator` as ``project``, only
        TR-level responses come back.

    Returns
    -------
    activations : ndarray of float32, shape (n_words, n_neurons)
        Columns as in :func:`neuron_table` (restricted to ``layers``, in layer order).
        Token activations are summed in float64
        (on the model's device) whatever the weights' precision.
        With ``project``: shape (n_out, n_neurons) instead.

    Raises
    ------
    LlmfbnError
        Words that are not strings, an unknown pooling, or a story without any token.
    """
    words = _checked_words(words)
    _check_options(pooling, batch_size)
    layers = _checked_layers(lm, layers)
    n_columns = int(sum(lm.layer_sizes[layer] for layer in layers))
    project = _checked_project(project, len(words))
    if not words:
        n_rows = 0 if project is None else project.shape[0]
        return np.zeros((n_rows, n_columns), dtype=np.float32)
    plan = plan_tokens(lm, words, context_tokens, pooling)
    output = (_DenseOutput(len(words), n_columns) if project is None
              else _ProjectedOutput(project, n_columns, lm.device))
    _WordPooler(lm, plan, layers, output).run(int(batch_size), progress)
    return output.result()


def _checked_words(words) -> list[str]:
    if isinstance(words, str):
        raise LlmfbnError("words must be a sequence of words, not one string",
                          expected="a list of str", found="a str",
                          todo="split the text into words first")
    words = list(words)
    bad = [i for i, w in enumerate(words) if not isinstance(w, str)]
    if bad:
        raise LlmfbnError("every word must be a string", expected="a list of str",
                          found=f"{type(words[bad[0]]).__name__} at position {bad[0]}",
                          todo="convert the words to str (missing words: drop them)")
    return words


def _check_options(pooling: str, batch_size: int) -> None:
    if pooling not in POOLINGS:
        raise LlmfbnError(f"unknown pooling {pooling!r}",
                          expected=" or ".join(repr(p) for p in POOLINGS),
                          found=repr(pooling),
                          todo='use pooling="mean" (default) or pooling="last"')
    if int(batch_size) < 1:
        raise LlmfbnError("batch_size must be at least 1", expected=">= 1",
                          found=str(batch_size), todo="use the default 8")


def _checked_layers(lm: LanguageModel, layers: Sequence[int] | None) -> list[int]:
    """The wanted layers, sorted and unique (all layers when None)."""
    n_layers = len(lm.layer_sizes)
    if layers is None:
        return list(range(n_layers))
    layers = sorted({int(layer) for layer in layers})
    if not layers or layers[0] < 0 or layers[-1] >= n_layers:
        raise LlmfbnError("layers out of range", expected=f"indices 0..{n_layers - 1}",
                          found=str(layers))
    return layers


def _checked_project(project, n_words: int) -> np.ndarray | None:
    """``project`` as a finite float64 array of shape (n_out, n_words), or None."""
    if project is None:
        return None
    project = np.asarray(project, dtype=np.float64)
    if project.ndim != 2 or project.shape[1] != n_words:
        raise LlmfbnError("project must map the story's words",
                          expected=f"an array of shape (n_out, {n_words})",
                          found=f"shape {project.shape}")
    if not np.all(np.isfinite(project)):
        raise LlmfbnError("project holds NaN or infinite values")
    return project


def _progress(batches: range, show: bool, label: str):
    """``batches``, wrapped in a tqdm progress bar when ``show`` (and tqdm is installed)."""
    if show:
        try:
            from tqdm.auto import tqdm
            return tqdm(batches, desc=f"{label} windows", unit="batch")
        except ImportError:  # pragma: no cover
            pass
    return batches


class _DenseOutput:
    """Word activations, float32, shape (n_words, n_columns), written as words complete."""

    def __init__(self, n_words: int, n_columns: int):
        self.activations = np.zeros((n_words, n_columns), dtype=np.float32)

    def start_batch(self, touched: np.ndarray, complete: np.ndarray, counts: np.ndarray):
        """Words of the next batch (n_touched,), whether they complete in it, token counts."""
        self.touched, self.complete, self.counts = touched, complete, counts

    def add_layer(self, sums, cols: slice) -> np.ndarray:
        """Write one layer's complete words; return the float64 sums of the others.

        ``sums``: torch tensor of float64, shape (n_touched, n_layer_neurons), the batch's
        token sums per touched word. Returns shape (n_incomplete, n_layer_neurons).
        """
        sums = sums.cpu().numpy()
        done = self.complete
        self.activations[self.touched[done], cols] = (
            sums[done] / self.counts[done, None]).astype(np.float32)
        return sums[~done]

    def add_word(self, word: int, mean: np.ndarray) -> None:
        """A word completed across batches: its float64 mean, shape (n_columns,)."""
        self.activations[word] = mean.astype(np.float32)

    def result(self) -> np.ndarray:
        return self.activations


class _ProjectedOutput:
    """``project @ activations``, accumulated on the model's device as words complete.

    Words completed inside one batch are projected on the device (float64 on the CPU,
    float32 elsewhere, see :data:`PROJECT_DTYPE`); words that span batches are projected
    in float64 on the host. Result: float32, shape (n_out, n_columns).
    """

    def __init__(self, project: np.ndarray, n_columns: int, device):
        import torch

        self.project, self.device = project, device
        self.dtype = getattr(torch, PROJECT_DTYPE.get(device.type, "float32"))
        self.project_dev = torch.as_tensor(project, dtype=self.dtype, device=device)
        self.projected = torch.zeros((project.shape[0], n_columns), dtype=self.dtype,
                                     device=device)
        self.projected_host = np.zeros((project.shape[0], n_columns))  # words across batches

    def start_batch(self, touched: np.ndarray, complete: np.ndarray, counts: np.ndarray):
        """As :meth:`_DenseOutput.start_batch`; copies them to the device."""
        import torch

        self.complete = complete
        self.done_t = torch.as_tensor(complete, device=self.device)
        self.touched_t = torch.as_tensor(touched, device=self.device)
        self.counts_t = torch.as_tensor(counts, device=self.device)

    def add_layer(self, sums, cols: slice) -> np.ndarray | None:
        """As :meth:`_DenseOutput.add_layer`; only the incomplete words leave the device."""
        done_t = self.done_t
        means = sums[done_t] / self.counts_t[done_t, None]
        self.projected[:, cols] += (self.project_dev[:, self.touched_t[done_t]]
                                    @ means.to(self.dtype))
        if self.complete.all():
            return None
        return sums[~done_t].cpu().numpy()

    def add_word(self, word: int, mean: np.ndarray) -> None:
        self.projected_host += np.outer(self.project[:, word], mean)

    def result(self) -> np.ndarray:
        return (self.projected.cpu().double().numpy() + self.projected_host).astype(np.float32)


class _WordPooler:
    """Per-call state of :func:`word_activations`: pools hooked tokens into words.

    Words finished inside one batch go straight to the output; only words whose tokens span
    batches keep a float64 running sum (memory: big models have ~10^5-10^6 ANs).

    Parameters
    ----------
    lm : LanguageModel
    plan : TokenPlan
        The story's tokens, windows and (word, token) pairs.
    layers : list of int
        Recorded layers, sorted; their ANs are the output's columns, in layer order.
    output : _DenseOutput or _ProjectedOutput
        Where completed words go.
    """

    def __init__(self, lm: LanguageModel, plan: TokenPlan, layers: list[int], output):
        self.lm, self.plan, self.layers, self.output = lm, plan, layers, output
        sizes = [lm.layer_sizes[layer] for layer in layers]
        self.column_of_layer = dict(zip(layers, np.concatenate([[0], np.cumsum(sizes)])[:-1]))
        self.n_columns = int(sum(sizes))
        self.pending_sums: dict[int, np.ndarray] = {}
        self.pending_counts: dict[int, int] = {}

    def run(self, batch_size: int, progress: bool) -> None:
        """Forward every window, ``batch_size`` at a time, with the FFN hooks on."""
        import torch

        n_windows = len(self.plan.starts)
        batches = _progress(range(0, n_windows, batch_size), progress, self.lm.spec.label)
        stop_early = self.layers[-1] < len(self.lm.layer_sizes) - 1
        with ffn_hooks(self.lm, self.accumulate, self.layers, stop_after_last=stop_early), \
                torch.inference_mode():
            for first in batches:
                self._forward(np.arange(first, min(first + batch_size, n_windows)))
        if self.pending_sums:  # pragma: no cover - every token is owned by exactly one window
            raise RuntimeError(f"{len(self.pending_sums)} words were not completed")

    def _forward(self, batch_windows: np.ndarray) -> None:
        import torch

        device = self.lm.device
        input_ids = self.plan.input_ids(batch_windows)
        attention_mask = np.ones_like(input_ids)
        self._start_batch(self.plan.batch_pairs(batch_windows))
        try:
            self.lm.model(input_ids=torch.as_tensor(input_ids, device=device),
                          attention_mask=torch.as_tensor(attention_mask, device=device))
        except StopForward:
            pass
        self._finish_batch()

    def _start_batch(self, pairs: BatchPairs) -> None:
        """Which touched words complete in this batch; their index tensors on the device."""
        import torch

        device = self.lm.device
        n_tokens_of_word = self.plan.n_tokens_of_word
        complete = np.array([pairs.counts_here[i] == n_tokens_of_word[w]
                             and int(w) not in self.pending_sums
                             for i, w in enumerate(pairs.touched)], dtype=bool)
        for w in pairs.touched[~complete]:
            self.pending_sums.setdefault(int(w), np.zeros(self.n_columns, dtype=np.float64))
        self.pairs, self.complete = pairs, complete
        self.rows_t = torch.as_tensor(pairs.rows, device=device)
        self.positions_t = torch.as_tensor(pairs.positions, device=device)
        self.pair_row_t = torch.as_tensor(pairs.pair_row, device=device)
        self.pair_sel_t = torch.as_tensor(pairs.pair_sel, device=device)
        self.output.start_batch(pairs.touched, complete,
                                n_tokens_of_word[pairs.touched].astype(np.float64))

    def accumulate(self, layer: int, tensor) -> None:
        """Hook: sum one layer's input, shape (n_batch, n_positions, n_layer_neurons), per word."""
        import torch

        rows, positions = self.rows_t, self.positions_t
        if tensor.device != rows.device:    # a block placed on another GPU (device map)
            rows, positions = rows.to(tensor.device), positions.to(tensor.device)
        selected = tensor[rows, positions].to(device=self.rows_t.device, dtype=torch.float64)
        sums = torch.zeros((self.pairs.touched.size, selected.shape[1]), dtype=torch.float64,
                           device=selected.device)
        sums.index_add_(0, self.pair_row_t, selected[self.pair_sel_t])
        start = int(self.column_of_layer[layer])
        cols = slice(start, start + self.lm.layer_sizes[layer])
        pending = self.output.add_layer(sums, cols)
        for i, row in enumerate(np.flatnonzero(~self.complete)):
            self.pending_sums[int(self.pairs.touched[row])][cols] += pending[i]

    def _finish_batch(self) -> None:
        """Count the tokens of words that span batches; emit those now complete."""
        n_tokens_of_word = self.plan.n_tokens_of_word
        for i, w in enumerate(self.pairs.touched):
            if not self.complete[i]:
                w = int(w)
                self.pending_counts[w] = (self.pending_counts.get(w, 0)
                                          + int(self.pairs.counts_here[i]))
                if self.pending_counts[w] == n_tokens_of_word[w]:
                    mean = self.pending_sums.pop(w) / n_tokens_of_word[w]
                    self.output.add_word(w, mean)
                    del self.pending_counts[w]
