"""Windows over a story's tokens, and which tokens make which word.

A story's words are joined with single spaces and tokenized once, with character offsets; a
token belongs to every word whose characters it overlaps. The token sequence is cut into
overlapping windows of ``W`` tokens with a stride of ``W // 2``; decoders read each token
from the earliest window that holds it, encoders from the window in which it is most
central. :class:`TokenPlan` holds all of this for one story.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from bids_app.errors import LlmfbnError


def plan_windows(n_tokens: int, window_tokens: int, causal: bool) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping windows over a token sequence and the window each token is read from.

    Windows hold ``W = window_tokens`` tokens and start every ``W // 2`` tokens; the last
    one is shifted to end at the last token so that every window is full. A sequence no
    longer than ``W`` is one window.

    Parameters
    ----------
    n_tokens : int
        Length of the whole sequence (N).
    window_tokens : int
        Window length W (>= 2).
    causal : bool
        True: each token is read from the **earliest** window that holds it, so token
        ``t >= W`` sees at least ``W / 2`` previous tokens. False: from the window in which
        it is **most central** (largest distance to the nearer window edge; ties go to the
        earlier window).

    Returns
    -------
    starts : ndarray of int, shape (n_windows,)
        First token of each window; window ``k`` is ``[starts[k], starts[k] + min(W, N))``.
    owner : ndarray of int, shape (n_tokens,)
        Window each token is read from.
    """
    n_tokens, window = int(n_tokens), int(window_tokens)
    if window < 2:
        raise ValueError(f"window_tokens must be >= 2, got {window}")
    if n_tokens <= window:
        return np.zeros(1, dtype=np.int64), np.zeros(n_tokens, dtype=np.int64)
    stride = window // 2
    starts = np.array(list(range(0, n_tokens - window, stride)) + [n_tokens - window],
                      dtype=np.int64)
    tokens = np.arange(n_tokens)
    inside = (tokens[:, None] >= starts[None]) & (tokens[:, None] < starts[None] + window)
    if causal:
        owner = np.argmax(inside, axis=1)
    else:
        centrality = np.minimum(tokens[:, None] - starts[None],
                                starts[None] + window - 1 - tokens[:, None])
        owner = np.argmax(np.where(inside, centrality, -1), axis=1)
    return starts, owner.astype(np.int64)


def special_affixes(tokenizer) -> tuple[list[int], list[int]]:
    """Special tokens the tokenizer puts before and after one sequence (e.g. [CLS], [SEP])."""
    probe = tokenizer("hello", add_special_tokens=False)["input_ids"]
    build = getattr(tokenizer, "build_inputs_with_special_tokens", None)
    if callable(build):  # transformers 4.x
        built = list(build(list(probe)))
        mask = tokenizer.get_special_tokens_mask(built, already_has_special_tokens=True)
    else:  # transformers 5.x: the tokenizer's post-processor adds them
        encoded = tokenizer("hello", add_special_tokens=True, return_special_tokens_mask=True)
        built, mask = list(encoded["input_ids"]), list(encoded["special_tokens_mask"])
    n_prefix = next((i for i, m in enumerate(mask) if not m), len(mask))
    if built[n_prefix:n_prefix + len(probe)] != list(probe):
        raise LlmfbnError(
            f"cannot tell which special tokens {type(tokenizer).__name__} adds",
            expected="special tokens only before and after the text",
            found=f"{built} for the text ids {list(probe)}",
            todo="use a model whose tokenizer wraps a sequence as [prefix] text [suffix]")
    return built[:n_prefix], built[n_prefix + len(probe):]


def _join_words(words: Sequence[str]) -> tuple[str, np.ndarray]:
    spans = np.zeros((len(words), 2), dtype=np.int64)
    position = 0
    for i, word in enumerate(words):
        spans[i] = position, position + len(word)
        position += len(word) + 1
    return " ".join(words), spans


def _word_token_pairs(spans: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (word, token) pairs whose character ranges overlap, plus fall-backs.

    A word that overlaps no token (e.g. made only of characters the tokenizer drops) is
    paired with the nearest previous token (the first token at the story start).
    """
    tok_start, tok_end = offsets[:, 0], offsets[:, 1]
    monotonic = bool(np.all(np.diff(tok_start) >= 0) and np.all(np.diff(tok_end) >= 0))
    word_idx, tok_idx = [], []
    for w, (start, end) in enumerate(spans):
        if monotonic:
            lo = int(np.searchsorted(tok_end, start, side="right"))
            hi = int(np.searchsorted(tok_start, end, side="left"))
            hits = np.arange(lo, max(lo, hi))
            hits = hits[(tok_start[hits] < end) & (tok_end[hits] > start)]
        else:
            hits = np.flatnonzero((tok_start < end) & (tok_end > start))
        if hits.size == 0:
            previous = np.flatnonzero(tok_start < start)
            hits = np.array([previous[-1] if previous.size else 0])
        word_idx.append(np.full(hits.size, w))
        tok_idx.append(hits)
    return np.concatenate(word_idx).astype(np.int64), np.concatenate(tok_idx).astype(np.int64)


class BatchPairs(NamedTuple):
    """Tokens read in one batch of windows, and their (word, token) pairs.

    ``rows[j], positions[j]`` locate the j-th selected token (in story order) in the
    batch's input; pair ``p`` adds selected token ``pair_sel[p]`` to touched word
    ``pair_row[p]``.

    Attributes
    ----------
    rows, positions : ndarray of int64, shape (n_selected,)
        Window (row of the batch) and position in that window's input of each token
        read from the batch.
    touched : ndarray of int64, shape (n_touched,)
        Words (sorted) with at least one pair in the batch.
    pair_row : ndarray of int64, shape (n_batch_pairs,)
        Index into ``touched`` of each pair's word.
    pair_sel : ndarray of int64, shape (n_batch_pairs,)
        Index into the selected tokens of each pair's token.
    counts_here : ndarray of int64, shape (n_touched,)
        Pairs of each touched word in this batch.
    """

    rows: np.ndarray
    positions: np.ndarray
    touched: np.ndarray
    pair_row: np.ndarray
    pair_sel: np.ndarray
    counts_here: np.ndarray


@dataclass(frozen=True)
class TokenPlan:
    """A story's tokens, their windows, and the (word, token) pairs that are pooled.

    Attributes
    ----------
    token_ids : ndarray of int64, shape (n_tokens,)
        The story's tokens, without special tokens.
    prefix, suffix : list of int
        Special tokens put before and after every window.
    starts : ndarray of int64, shape (n_windows,)
        First token of each window (see :func:`plan_windows`).
    owner : ndarray of int64, shape (n_tokens,)
        Window each token is read from.
    length : int
        Tokens per window, ``min(W, n_tokens)`` (special tokens not counted).
    pair_word, pair_token : ndarray of int64, shape (n_pairs,)
        Word and token of each pooled pair, word by word, tokens in increasing order
        (only each word's last token with ``pooling="last"``).
    pair_window : ndarray of int64, shape (n_pairs,)
        Window each pair's token is read from, ``owner[pair_token]``.
    n_tokens_of_word : ndarray of int64, shape (n_words,)
        Pooled tokens per word (>= 1).
    """

    token_ids: np.ndarray
    prefix: list[int]
    suffix: list[int]
    starts: np.ndarray
    owner: np.ndarray
    length: int
    pair_word: np.ndarray
    pair_token: np.ndarray
    pair_window: np.ndarray
    n_tokens_of_word: np.ndarray

    def input_ids(self, batch_windows: np.ndarray) -> np.ndarray:
        """Model input of some windows, special tokens included.

        Every window holds exactly ``length`` tokens (the last one is shifted back to end
        at the story's end), so a batch needs no padding.

        Parameters
        ----------
        batch_windows : ndarray of int, shape (n_batch,)
            Consecutive window indices.

        Returns
        -------
        input_ids : ndarray of int64, shape (n_batch, len(prefix) + length + len(suffix))
        """
        input_ids = np.empty((batch_windows.size,
                              len(self.prefix) + self.length + len(self.suffix)),
                             dtype=np.int64)
        for row, k in enumerate(batch_windows):
            piece = self.token_ids[self.starts[k]:self.starts[k] + self.length]
            input_ids[row] = np.concatenate([self.prefix, piece, self.suffix])
        return input_ids

    def batch_pairs(self, batch_windows: np.ndarray) -> BatchPairs:
        """The tokens read from some consecutive windows and the words they belong to.

        Parameters
        ----------
        batch_windows : ndarray of int, shape (n_batch,)
            Consecutive window indices, as given to :meth:`input_ids`.

        Returns
        -------
        pairs : BatchPairs
        """
        first, last = batch_windows[0], batch_windows[-1]
        selected_tokens = np.flatnonzero((self.owner >= first) & (self.owner <= last))
        rows = self.owner[selected_tokens] - first
        positions = (len(self.prefix) + selected_tokens
                     - self.starts[self.owner[selected_tokens]])
        pairs = np.flatnonzero((self.pair_window >= first) & (self.pair_window <= last))
        touched, pair_row = np.unique(self.pair_word[pairs], return_inverse=True)
        pair_sel = np.searchsorted(selected_tokens, self.pair_token[pairs])
        counts_here = np.bincount(pair_row, minlength=touched.size)
        return BatchPairs(rows=rows, positions=positions, touched=touched,
                          pair_row=pair_row.reshape(-1), pair_sel=pair_sel,
                          counts_here=counts_here)


def _tokenize(tokenizer, words: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token ids (n_tokens,), their character offsets (n_tokens, 2) and word spans."""
    text, spans = _join_words(words)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True,
                         verbose=False)
    token_ids = np.asarray(encoding["input_ids"], dtype=np.int64)
    if token_ids.size == 0:
        raise LlmfbnError("the story produced no tokens", expected="words with text",
                          found=f"{len(words)} words, {len(text.strip())} non-blank "
                                "characters",
                          todo="check the word-timing file")
    offsets = np.asarray(encoding["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    return token_ids, offsets, spans


def plan_tokens(lm, words: list[str], context_tokens: int, pooling: str) -> TokenPlan:
    """Tokenize a story, plan its windows and pair its words with their tokens.

    Parameters
    ----------
    lm : LanguageModel
        Its tokenizer, ``max_positions`` and ``is_decoder`` are used.
    words : list of str, length n_words >= 1
    context_tokens : int
        Window length W in tokens, capped by the model's maximum input length.
    pooling : {"mean", "last"}
        ``"last"`` keeps only each word's last token.

    Returns
    -------
    plan : TokenPlan

    Raises
    ------
    LlmfbnError
        A story without any token, or a window shorter than 2 tokens.
    """
    token_ids, offsets, spans = _tokenize(lm.tokenizer, words)
    prefix, suffix = special_affixes(lm.tokenizer)
    window = min(int(context_tokens), lm.max_positions - len(prefix) - len(suffix))
    if window < 2:
        raise LlmfbnError("the context window is too short",
                          expected="context_tokens >= 2 and within the model's "
                                   f"{lm.max_positions} positions",
                          found=f"context_tokens={context_tokens}",
                          todo="use a larger context (default 256)")
    starts, owner = plan_windows(token_ids.size, window, causal=lm.is_decoder)
    pair_word, pair_token = _word_token_pairs(spans, offsets)
    if pooling == "last":  # pairs come word by word, tokens in increasing order
        last = np.r_[pair_word[1:] != pair_word[:-1], True]
        pair_word, pair_token = pair_word[last], pair_token[last]
    return TokenPlan(token_ids=token_ids, prefix=prefix, suffix=suffix, starts=starts,
                     owner=owner, length=min(window, token_ids.size), pair_word=pair_word,
                     pair_token=pair_token, pair_window=owner[pair_token],
                     n_tokens_of_word=np.bincount(pair_word, minlength=len(words)))
