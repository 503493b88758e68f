"""Stimulus level: per model the cached AN responses and atoms (computed once, shared by
parallel participant jobs, written only to the work directory)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from bids_app.bids.acquisitions import Acquisition
from bids_app.cache import cache_key, cached_folder, file_digest, is_cached
from bids_app.config import Config
from bids_app.features import load_model
from bids_app.stimulus import read_word_timings

LOGGER = logging.getLogger("llmfbn")
#: Identifies the responses stage's algorithm in cache keys: change it with the algorithm.
RESPONSES_STAGE_ID = "responses-v2"


def _responses_payload(config: Config, spec, plan: dict[str, Acquisition]) -> dict:
    digests = {}
    return {
        "stage": RESPONSES_STAGE_ID,
        "model": spec.identity,
        "context_tokens": config.context_tokens,
        "pooling": config.word_pooling,
        "hrf": config.hrf_model,
        "acquisitions": {
            key: {"t_r_s": a.t_r_s, "start_time_s": a.start_time_s, "n_frames": a.n_frames,
                  "stories": [(digests.setdefault(p.timings, file_digest(p.timings)), p.onset_s)
                              for p in a.stories]}
            for key, a in plan.items()},
    }


def responses_cached(config: Config, spec, plan: dict[str, Acquisition]) -> bool:
    """Whether the work directory already holds this model's responses for ``plan``."""
    return is_cached(config.work_dir, "responses",
                     cache_key(_responses_payload(config, spec, plan)))


def compute_responses(config: Config, spec, plan: dict[str, Acquisition], device: str) -> Path:
    """Every AN's temporal response on each acquisition's TR grid (cached folder; see
    :func:`bids_app.responses.write_responses` for its files)."""
    from bids_app.responses import write_responses  # nilearn, torch: imported when used

    def compute(folder: Path) -> None:
        LOGGER.info("Loading language model %s on %s", spec.name, device)
        lm = load_model(spec, device=device)
        LOGGER.info("Model %s: %d layers, %d artificial neurons", spec.label,
                    len(lm.layer_sizes), lm.n_neurons)
        write_responses(folder, lm, plan, read_word_timings, hrf_model=config.hrf_model,
                        context_tokens=config.context_tokens,
                        word_pooling=config.word_pooling, mem_gb=config.mem_gb,
                        label=spec.label)

    key = cache_key(_responses_payload(config, spec, plan))
    return cached_folder(config.work_dir, "responses", key, compute,
                         f"AN temporal responses ({spec.label})")


def compute_atoms(config: Config, spec, plan: dict[str, Acquisition], device: str) -> Path:
    """Atoms and codes of the model's responses (cached folder): atoms.npy, codes.npz,
    meta.json, and the responses' frames.tsv and neurons.tsv."""
    from bids_app.atoms import ALGORITHM_ID, learn_atoms  # torch: imported when used

    responses_dir = compute_responses(config, spec, plan, device)

    def compute(folder: Path) -> None:
        x = np.load(responses_dir / "x.npy", mmap_mode="r")     # (n_neurons, n_trs)
        result = learn_atoms(x, n_atoms=config.n_atoms, sparsity_lambda=config.sparsity_lambda,
                             target_sparsity=config.target_sparsity, seed=config.seed,
                             device=device, mem_gb=config.mem_gb, n_threads=config.nprocs)
        np.save(folder / "atoms.npy", result.atoms)
        sp.save_npz(folder / "codes.npz", result.codes)
        (folder / "meta.json").write_text(json.dumps(result.meta()))
        for name in ("frames.tsv", "neurons.tsv"):
            (folder / name).write_bytes((responses_dir / name).read_bytes())

    payload = {"responses": responses_dir.name, "n_atoms": config.n_atoms,
               "lambda": config.sparsity_lambda, "target_sparsity": config.target_sparsity,
               "seed": config.seed, "algorithm": ALGORITHM_ID}
    return cached_folder(config.work_dir, "atoms", cache_key(payload), compute,
                         f"Atoms ({spec.label})")
