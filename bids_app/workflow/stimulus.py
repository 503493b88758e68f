"""Stimulus level: per model the cached AN responses and atoms (computed once, shared by
parallel participant jobs, written only to the work directory), and the stimulus nuisance
regressors of each acquisition."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from bids_app.bids.acquisitions import Acquisition
from bids_app.cache import cache_key, cached_folder, file_digest, is_cached
from bids_app.config import Config
from bids_app.features import load_model
from bids_app.stimulus import audio_envelope, read_word_timings, usable_audio

LOGGER = logging.getLogger("llmfbn")
#: Identifies the responses stage's algorithm in cache keys: change it with the algorithm.
RESPONSES_STAGE_ID = "responses-v3"


def _responses_payload(config: Config, spec, plan: dict[str, Acquisition]) -> dict:
    digests = {}
    return {
        "stage": RESPONSES_STAGE_ID,
        "model": spec.identity,
        "context_tokens": config.context_tokens,
        "pooling": config.word_pooling,
        "hrf": config.hrf_model,
        "frames": config.frames,
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
        LOGGER.info("Loading language model %s on %s", spec.name,
                    device if config.device_map is None
                    else f"{device}, sharded (--device-map {config.device_map})")
        lm = load_model(spec, device=device, device_map=config.device_map,
                        offload_folder=config.work_dir / "offload" / spec.label)
        LOGGER.info("Model %s: %d layers, %d artificial neurons", spec.label,
                    len(lm.layer_sizes), lm.n_neurons)
        if getattr(lm.model, "hf_device_map", None):
            LOGGER.info("Model %s placed by accelerate: %s", spec.label,
                        lm.model.hf_device_map)
        write_responses(folder, lm, plan, read_word_timings, hrf_model=config.hrf_model,
                        context_tokens=config.context_tokens,
                        word_pooling=config.word_pooling, mem_gb=config.mem_gb,
                        label=spec.label, frames=config.frames)

    key = cache_key(_responses_payload(config, spec, plan))
    return cached_folder(config.work_dir, "responses", key, compute,
                         f"AN temporal responses ({spec.label})")


def compute_atoms(config: Config, spec, plan: dict[str, Acquisition], device: str) -> Path:
    """Atoms and codes of the model's responses (cached folder): atoms.npy, codes.npz,
    meta.json, and the responses' frames.tsv and neurons.tsv."""
    from bids_app.atoms import learn_atoms, response_projections  # torch: imported when used

    responses_dir = compute_responses(config, spec, plan, device)

    def compute(folder: Path) -> None:
        x = np.load(responses_dir / "x.npy", mmap_mode="r")     # (n_neurons, n_trs)
        result = learn_atoms(x, n_atoms=config.n_atoms, sparsity_lambda=config.sparsity_lambda,
                             target_sparsity=config.target_sparsity, seed=config.seed,
                             device=device, mem_gb=config.mem_gb, n_threads=config.nprocs,
                             stability=config.atom_stability)
        np.save(folder / "atoms.npy", result.atoms)
        np.save(folder / "projections.npy", response_projections(x, result.atoms))
        sp.save_npz(folder / "codes.npz", result.codes)
        (folder / "meta.json").write_text(json.dumps(result.meta()))
        for name in ("frames.tsv", "neurons.tsv"):
            (folder / name).write_bytes((responses_dir / name).read_bytes())

    return cached_folder(config.work_dir, "atoms",
                         cache_key(_atoms_payload(config, responses_dir.name)), compute,
                         f"Atoms ({spec.label})")


def _atoms_payload(config: Config, responses_name: str) -> dict:
    from bids_app.atoms import ALGORITHM_ID  # torch: imported when used

    return {"responses": responses_name, "n_atoms": config.n_atoms,
            "lambda": config.sparsity_lambda, "target_sparsity": config.target_sparsity,
            "seed": config.seed, "algorithm": ALGORITHM_ID,
            "stability": config.atom_stability, "outputs": ["projections"]}


def atoms_cached(config: Config, spec, plan: dict[str, Acquisition]) -> bool:
    """Whether the work directory already holds this model's atoms for ``plan`` (then no
    long stimulus-level step runs before the subjects are read)."""
    responses = cache_key(_responses_payload(config, spec, plan))
    return (is_cached(config.work_dir, "responses", responses)
            and is_cached(config.work_dir, "atoms", cache_key(_atoms_payload(config, responses))))


def nuisance_regressors(config: Config, plan: dict[str, Acquisition]
                        ) -> dict[str, pd.DataFrame]:
    """{acquisition: (n_frames, n_regressors)} the stimulus nuisance regressors of the GLM
    (``--nuisance``); the envelope where every story of the run has a readable WAV file
    (an error instead when ``--nuisance envelope`` is given explicitly)."""
    from bids_app.responses import acquisition_nuisance  # nilearn: imported when used

    kinds = config.nuisance
    if not kinds:
        return {key: pd.DataFrame(index=pd.RangeIndex(a.n_frames)) for key, a in plan.items()}
    required = "nuisance" in config.explicit_options and "envelope" in kinds
    placements = {p for a in plan.values() for p in a.stories}
    words = {p.timings: read_word_timings(p.timings) for p in placements}
    envelopes = {}
    if "envelope" in kinds:
        for audio, story in sorted({(p.audio, p.timings) for p in placements}, key=str):
            path = usable_audio(audio, required, str(story))
            if path is not None and path not in envelopes:
                envelopes[path] = audio_envelope(path)
                LOGGER.info("Audio envelope of %s from %s (%.0f s)", story, path,
                            envelopes[path][0][-1])
    out = {key: acquisition_nuisance(a, kinds, config.hrf_model, words, envelopes)
           for key, a in sorted(plan.items())}
    for key, table in out.items():
        LOGGER.info("Nuisance regressors of %s: %s", key, ", ".join(table.columns) or "none")
    return out
