"""The responses stage: every AN's temporal response on each acquisition's TR grid.

:func:`write_responses` fills a folder with

- ``frames.tsv`` (acquisition, task, run, frame, time_s, used): every frame of every
  acquisition, acquisitions in sorted order; ``used`` (0/1) marks the frames that enter
  dictionary learning and the GLM (``frames="story"``: the frames that carry a story, see
  :func:`~bids_app.responses.frames.story_frames`; ``frames="all"``: every frame);
- ``x.npy`` (n_rows, n_used_frames) float32: one row per AN (per AN and FIR delay for
  ``huth``), its response at the used frames, in the order of the used rows of
  ``frames.tsv``: z-scored within each acquisition over its used frames, then scaled to unit
  L2 norm (silent ANs: zero rows);
- ``neurons.tsv`` (layer, unit[, delay_trs]) describing the rows.

Each story's words are run through the model once per group of layers, and the linear map
from its words to the TRs of every acquisition it is heard in (:func:`response_operator`) is
applied on the model's device as the words are completed, so only TR-level responses come
back. Layers are processed in groups that fit ``mem_gb``, and rows are written straight to
the on-disk array.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bids_app.errors import LlmfbnError
from bids_app.responses.frames import DROP_OUTSIDE_S, FRAME_RULES, story_frames
from bids_app.responses.operators import (
    n_response_columns,
    response_column_labels,
    response_operator,
    zscore_time,
)

LOGGER = logging.getLogger("llmfbn")


def layer_chunks(layer_sizes: list[int], bytes_per_unit: int,
                 mem_gb: float) -> list[list[int]]:
    """Groups of layers whose working arrays (``bytes_per_unit`` per AN) fit in a quarter
    of the budget."""
    budget = mem_gb * 1e9 / 4
    chunks, current, size = [], [], 0
    for layer, units in enumerate(layer_sizes):
        need = units * bytes_per_unit
        if current and size + need > budget:
            chunks.append(current)
            current, size = [], 0
        current.append(layer)
        size += need
    return chunks + [current]


def frames_table(plan: dict, used: dict | None = None) -> pd.DataFrame:
    """One row per frame of every acquisition (sorted): acquisition, task, run, frame,
    time_s, used (0/1; every frame when ``used`` is None, else ``used[key]`` (n_frames,)
    bool). The used rows, in order, are the columns of ``x.npy``."""
    return pd.concat([pd.DataFrame({
        "acquisition": key, "task": a.task, "run": a.run if a.run is not None else "n/a",
        "frame": np.arange(a.n_frames), "time_s": a.frame_times_s(),
        "used": (np.ones(a.n_frames, bool) if used is None else used[key]).astype(int)})
        for key, a in sorted(plan.items())], ignore_index=True)


def used_frames(plan: dict, words: dict, frames: str) -> dict[str, np.ndarray]:
    """{acquisition: (n_frames,) bool} the frames the ``frames`` rule keeps.

    ``plan`` maps acquisition keys to acquisitions (``frame_times_s()``, ``stories``);
    ``words`` maps each story's timing file to its :class:`~bids_app.stimulus.WordTimings`;
    ``frames`` is a key of :data:`~bids_app.responses.frames.FRAME_RULES`. Raises
    :class:`LlmfbnError` when fewer than two frames of an acquisition are used.
    """
    if frames not in FRAME_RULES:
        raise LlmfbnError("unknown frames rule", expected=" or ".join(FRAME_RULES),
                          found=repr(frames))
    used = {}
    for key, acq in sorted(plan.items()):
        used[key] = np.ones(acq.n_frames, bool) if frames == "all" else story_frames(
            [p.onset_s + words[p.timings].onsets_s for p in acq.stories], acq.frame_times_s())
        if used[key].sum() < 2:
            raise LlmfbnError(
                f"fewer than two frames of {key} carry a story",
                expected="a story heard for at least two frames of the run",
                found=f"{int(used[key].sum())} of {acq.n_frames} frames",
                todo="check the story onsets, or use --frames all")
    return used


def _story_name(path: Path) -> str:
    return path.parent.name if path.name.startswith("align") else path.stem


class _Stories:
    """The stories of a plan, their words, and the acquisitions each one is heard in."""

    def __init__(self, plan: dict, read_words, hrf_model: str):
        self.plan, self.hrf_model = plan, hrf_model
        self.paths = sorted({p.timings for a in plan.values() for p in a.stories})
        self.words = {path: read_words(path) for path in self.paths}
        self.heard_in = {path: [(key, acq, placement) for key, acq in sorted(plan.items())
                                for placement in acq.stories if placement.timings == path]
                         for path in self.paths}

    def operator(self, path: Path) -> tuple[np.ndarray, list[tuple[str, int]]]:
        """Stacked (n_cols * n_frames, n_words) maps, with (key, n_frames) per block.

        Built when used (cheap next to the forward passes), not kept for all stories.
        """
        blocks = [response_operator(placement.onset_s + self.words[path].onsets_s,
                                    acq.frame_times_s(), hrf_model=self.hrf_model,
                                    drop_outside_s=DROP_OUTSIDE_S)
                  for _, acq, placement in self.heard_in[path]]
        targets = [(key, acq.n_frames) for key, acq, _ in self.heard_in[path]]
        return np.concatenate([op.reshape(-1, op.shape[2]) for op in blocks]), targets

    def max_rows_out(self, n_cols: int) -> int:
        """The most TR-level rows one story's projection produces."""
        return max(n_cols * sum(acq.n_frames for _, acq, _ in heard)
                   for heard in self.heard_in.values())


def _chunk_responses(lm, stories: _Stories, layers: list[int], n_units: int, n_cols: int,
                     whole_model: bool, settings: dict, progress: str) -> dict:
    """{acquisition: (n_frames, n_units * n_cols) float64} responses of ``layers``,
    summed over the stories heard in each acquisition; columns AN-major."""
    from bids_app.features import word_activations

    resp = {key: np.zeros((acq.n_frames, n_units * n_cols))
            for key, acq in stories.plan.items()}
    for path in stories.paths:
        LOGGER.info("Story %s: %d words -> layers %d-%d of %s", _story_name(path),
                    len(stories.words[path].words), layers[0], layers[-1], progress)
        project, targets = stories.operator(path)
        out = word_activations(
            lm, stories.words[path].words, context_tokens=settings["context_tokens"],
            pooling=settings["word_pooling"], progress=True, project=project,
            **({} if whole_model else {"layers": layers}))
        start = 0
        for key, n_frames in targets:
            part = out[start:start + n_cols * n_frames]
            start += n_cols * n_frames
            # (slot, frame, AN) -> columns AN-major: AN * n_cols + slot
            resp[key].reshape(n_frames, n_units, n_cols)[...] += \
                part.reshape(n_cols, n_frames, n_units).transpose(1, 2, 0)
        del out, project
    return resp


def _write_rows(x: np.ndarray, rows: slice, resp: dict, used: dict) -> None:
    """z-score each acquisition's responses over its used frames, write them as rows of
    ``x``, then scale each row to unit L2 norm (zero rows stay zero)."""
    column = 0
    for key in sorted(used):
        n_used = int(used[key].sum())
        x[rows, column:column + n_used] = zscore_time(resp[key][used[key]]).T
        column += n_used
    block = np.asarray(x[rows], dtype=np.float64)
    norms = np.linalg.norm(block, axis=1, keepdims=True)
    x[rows] = np.divide(block, norms, out=np.zeros_like(block), where=norms > 0)


def _neuron_rows(lm, hrf_model: str) -> pd.DataFrame:
    """Layer and unit of each row of ``x.npy`` (and the FIR delay for ``huth``)."""
    from bids_app.features import neuron_table

    neurons = neuron_table(lm)
    if n_response_columns(1, hrf_model) > 1:   # one row per (AN, FIR delay), AN-major
        labels = response_column_labels(len(neurons), hrf_model)
        neurons = neurons.iloc[labels[:, 0]].reset_index(drop=True)
        neurons["delay_trs"] = labels[:, 1]
    return neurons


def write_responses(folder: Path, lm, plan: dict, read_words, *, hrf_model: str,
                    context_tokens: int, word_pooling: str, mem_gb: float,
                    label: str, frames: str = "story") -> None:
    """Write ``x.npy``, ``frames.tsv`` and ``neurons.tsv`` of model ``lm`` into ``folder``.

    ``plan`` maps acquisition keys to acquisitions (``task``, ``run``, ``n_frames``,
    ``frame_times_s()``, ``stories`` placed at ``onset_s``); ``read_words`` reads a story's
    word timings; ``frames`` ("story" or "all", :data:`FRAME_RULES`) says which frames are
    used.
    """
    started = time.monotonic()
    stories = _Stories(plan, read_words, hrf_model)
    used = used_frames(plan, stories.words, frames)
    table = frames_table(plan, used)
    n_trs = len(table)                              # every frame: the projections' length
    n_used = int(table["used"].sum())
    n_cols = n_response_columns(1, hrf_model)      # response rows per AN
    x = np.lib.format.open_memmap(folder / "x.npy", mode="w+", dtype=np.float32,
                                  shape=(lm.n_neurons * n_cols, n_used))
    offsets = np.concatenate([[0], np.cumsum(lm.layer_sizes)]) * n_cols
    # per AN: float64 responses of all acquisitions + one story's projection (float64
    # on the device, float32 back)
    chunks = layer_chunks(list(lm.layer_sizes),
                          n_trs * n_cols * 8 + stories.max_rows_out(n_cols) * 12, mem_gb)
    settings = {"context_tokens": context_tokens, "word_pooling": word_pooling}
    for index, layers in enumerate(chunks, 1):
        rows = slice(int(offsets[layers[0]]), int(offsets[layers[-1] + 1]))
        n_units = (rows.stop - rows.start) // n_cols
        resp = _chunk_responses(lm, stories, layers, n_units, n_cols, len(chunks) == 1,
                                settings, f"{label} (chunk {index}/{len(chunks)})")
        _write_rows(x, rows, resp, used)
        del resp
    x.flush()
    del x
    table.to_csv(folder / "frames.tsv", sep="\t", index=False)
    _neuron_rows(lm, hrf_model).to_csv(folder / "neurons.tsv", sep="\t", index=False)
    LOGGER.info("Temporal responses of %d ANs on %d of %d frames (--frames %s) done in "
                "%.1f s", lm.n_neurons, n_used, n_trs, frames, time.monotonic() - started)
