"""Frames that carry the stimulus (--frames): the rule, the responses stage, the atoms table
and the volumes of the GLM."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from bids_app.bids.acquisitions import Acquisition
from bids_app.bids.layout import StoryPlacement
from bids_app.bids.outputs import atoms_table, write_atom_outputs
from bids_app.bids.sidecars import volumes_used
from bids_app.encoding import RunData, design_matrix, used_volumes
from bids_app.errors import LlmfbnError
from bids_app.responses import STORY_TAIL_S, frame_times_s, story_frames


def _reference_frames(onsets_per_story, frame_times, tail_s):
    """Frame by frame: a frame is used when some story's first word <= t <= last + tail."""
    return np.array([any(len(o) and min(o) <= t <= max(o) + tail_s for o in onsets_per_story)
                     for t in frame_times])


@pytest.mark.parametrize("seed", range(5))
def test_story_frames_against_a_frame_by_frame_rule(seed):
    rng = np.random.default_rng(seed)
    frame_times = frame_times_s(int(rng.integers(40, 200)), rng.uniform(0.7, 2.5),
                                rng.uniform(0, 1.5))
    stories = []
    for _ in range(int(rng.integers(1, 4))):
        start = rng.uniform(-60, frame_times[-1])      # negative: a split story's later run
        stories.append(np.sort(start + np.cumsum(rng.uniform(0.1, 0.8, rng.integers(0, 80)))))
    tail = rng.choice([STORY_TAIL_S, rng.uniform(0, 30)])
    np.testing.assert_array_equal(story_frames(stories, frame_times, tail),
                                  _reference_frames(stories, frame_times, tail))


def test_story_frames_cover_the_story_and_its_tail():
    frames = frame_times_s(100, 1.0, 0.5)                  # 0.5 ... 99.5 s
    used = story_frames([np.array([10.2, 20.0, 30.0])], frames)
    assert frames[used].min() == 10.5 and frames[used].max() == 45.5   # 30 + 16 s
    assert story_frames([np.array([])], frames).sum() == 0


def _gentle(path: Path, n_words: int, step=0.4) -> Path:
    words = ("the sea was calm that night and the keeper climbed the stairs".split()
             * n_words)[:n_words]
    path.write_text("\n".join(f"{w},{w},{0.5 + i * step:.2f},{0.8 + i * step:.2f}"
                              for i, w in enumerate(words)) + "\n")
    return path


def _unit_rows(rows):
    rows = rows - rows.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)


def test_responses_stage_keeps_the_story_frames(tmp_path):
    """x.npy holds the used frames only, z-scored per acquisition over them and unit-norm
    rows; frames.tsv lists every frame with `used` (story: first word .. last + 16 s)."""
    from bids_app.config import Config
    from bids_app.features import load_model, resolve_model, word_activations
    from bids_app.responses import temporal_responses
    from bids_app.stimulus import read_word_timings
    from bids_app.workflow import compute_responses

    first, second = _gentle(tmp_path / "a.csv", 40), _gentle(tmp_path / "b.csv", 30)
    plan = {"task-a": Acquisition("task-a", "a", None, 1.5, 0.75, 90,
                                  (StoryPlacement(first, 6.0), StoryPlacement(second, 70.0))),
            "task-b": Acquisition("task-b", "b", None, 2.0, 0.0, 40,
                                  (StoryPlacement(second, 12.0),))}
    lm = load_model(resolve_model("minilm"))
    expected_x, expected_used = [], []
    for key in sorted(plan):
        acq = plan[key]
        times = acq.frame_times_s()
        total, onsets = 0, []
        for placement in acq.stories:
            timings = read_word_timings(placement.timings)
            acts = word_activations(lm, timings.words, context_tokens=64)
            onsets.append(placement.onset_s + timings.onsets_s)
            total = total + temporal_responses(acts, onsets[-1], times, drop_outside_s=32.0)
        used = _reference_frames(onsets, times, 16.0)
        part = total[used].astype(np.float64)
        expected_x.append((part - part.mean(0)) / np.where(part.std(0) > 0, part.std(0), 1))
        expected_used.append(used)
    expected_used = np.concatenate(expected_used)
    assert 0 < expected_used.sum() < expected_used.size                # silence is dropped
    for frames in ("story", "all"):
        config = Config(bids_dir=tmp_path, output_dir=tmp_path / "out",
                        analysis_level="participant", work_dir=tmp_path / f"w-{frames}",
                        context_tokens=64, frames=frames)
        folder = compute_responses(config, resolve_model("minilm"), plan, "cpu")
        x = np.load(folder / "x.npy")
        table = pd.read_csv(folder / "frames.tsv", sep="\t")
        assert len(table) == 130 and list(table.columns[-1:]) == ["used"]
        if frames == "story":
            np.testing.assert_array_equal(table["used"].to_numpy(bool), expected_used)
            np.testing.assert_allclose(x, _unit_rows(np.vstack(expected_x).T), atol=2e-5)
        else:
            assert table["used"].all() and x.shape == (lm.n_neurons, 130)
    assert folder.parent.name == "responses" and len(list(folder.parent.iterdir())) >= 2


def _cached_atoms(folder: Path, used: np.ndarray, stability: dict | None) -> np.ndarray:
    folder.mkdir()
    n_used = int(used.sum())
    atoms = np.random.default_rng(0).standard_normal((3, n_used)).astype(np.float32)
    np.save(folder / "atoms.npy", atoms)
    sp.save_npz(folder / "codes.npz", sp.csr_matrix(np.eye(5, 3, dtype=np.float32)))
    np.save(folder / "projections.npy", np.zeros((5, 3), np.float32))
    meta = {"Algorithm": "x", "ConvergenceLog": []}
    if stability is not None:
        meta["stability"] = stability
    (folder / "meta.json").write_text(json.dumps(meta))
    pd.DataFrame({"acquisition": "task-a", "task": "a", "run": "n/a",
                  "frame": np.arange(used.size), "time_s": np.arange(used.size) * 1.5,
                  "used": used.astype(int)}).to_csv(folder / "frames.tsv", sep="\t",
                                                   index=False)
    pd.DataFrame({"layer": [0] * 5, "unit": range(5)}).to_csv(folder / "neurons.tsv",
                                                              sep="\t", index=False)
    return atoms


def test_atoms_tsv_keeps_every_frame_with_used_and_na(tmp_path):
    used = np.zeros(20, bool)
    used[4:15] = True
    stability = {"median_seed_vs_seed": 0.9, "median_half_vs_half": 0.8, "seconds": 12.5,
                 "seed_vs_seed": [0.9], "half_vs_half": [0.8]}
    atoms = _cached_atoms(tmp_path / "cache", used, stability)
    write_atom_outputs(tmp_path / "out", "m", tmp_path / "cache",
                       {"Frames": "story", "FramesRule": "rule"})
    table = pd.read_csv(tmp_path / "out" / "atoms" / "desc-m_atoms.tsv", sep="\t")
    text = (tmp_path / "out" / "atoms" / "desc-m_atoms.tsv").read_text()
    assert len(table) == 20 and "n/a" in text
    np.testing.assert_allclose(table.loc[used, ["atom01", "atom02", "atom03"]].to_numpy().T,
                               atoms, rtol=1e-5)        # TSV: 6 significant digits
    assert table.loc[~used, "atom01"].isna().all()
    sidecar = json.loads((tmp_path / "out" / "atoms" / "desc-m_atoms.json").read_text())
    assert sidecar["Frames"] == "story" and "used" in sidecar["Columns"]
    assert (sidecar["UsedFrames"], sidecar["TotalFrames"]) == (11, 20)
    assert sidecar["AtomStability"]["Done"] and sidecar["AtomStability"]["Seconds"] == 12.5
    assert (tmp_path / "out" / "atoms" / "desc-m_stability.json").is_file()
    # without the refits: the sidecar says so and a former stability record is removed
    _cached_atoms(tmp_path / "cache2", used, None)
    write_atom_outputs(tmp_path / "out", "m", tmp_path / "cache2", {})
    sidecar = json.loads((tmp_path / "out" / "atoms" / "desc-m_atoms.json").read_text())
    assert sidecar["AtomStability"] == {"Done": False, "Option": "--no-atom-stability"}
    assert not (tmp_path / "out" / "atoms" / "desc-m_stability.json").exists()
    # the table helper: atoms on used rows
    assert atoms_table(atoms, pd.read_csv(tmp_path / "cache" / "frames.tsv", sep="\t")
                       )["atom03"].notna().sum() == 11


def test_used_volumes_are_steady_and_used():
    used = np.zeros(12, bool)
    used[2:9] = True
    np.testing.assert_array_equal(used_volumes(np.arange(3, 12), used), np.arange(3, 9))
    np.testing.assert_array_equal(used_volumes(np.arange(12), np.ones(12, bool)),
                                  np.arange(12))          # --frames all: today's sample mask


def test_design_on_used_volumes_and_their_record():
    """The design keeps the used volumes of each run; the sidecar records count and ranges."""
    rng = np.random.default_rng(0)
    runs = []
    for name, volumes in (("task-a", np.r_[3:10, 14:20]), ("task-b", np.arange(2, 18))):
        confounds = pd.DataFrame(rng.standard_normal((20, 2)), columns=["c1", "c2"])
        runs.append(RunData(bold=rng.standard_normal((20, 4)).astype(np.float32),
                            confounds=confounds.iloc[volumes], sample_mask=volumes,
                            atoms=rng.standard_normal((20, 2)), name=name))
    design = design_matrix(runs)
    assert len(design) == 13 + 16
    record = volumes_used(design)
    assert record["VolumesUsed"] == 29
    assert record["VolumesUsedPerRun"]["task-a"] == {"Count": 13, "Ranges": [[3, 9], [14, 19]]}
    assert record["VolumesUsedPerRun"]["task-b"] == {"Count": 16, "Ranges": [[2, 17]]}


def test_a_run_without_story_frames_is_an_error(tmp_path):
    from bids_app.responses.stage import used_frames
    from bids_app.stimulus import read_word_timings

    story = _gentle(tmp_path / "a.csv", 3)
    acq = Acquisition("task-a", "a", None, 10.0, 0.0, 3, (StoryPlacement(story, 25.0),))
    words = {story: read_word_timings(story)}
    with pytest.raises(LlmfbnError, match="carry a story"):
        used_frames({"task-a": acq}, words, "story")
    assert used_frames({"task-a": acq}, words, "all")["task-a"].all()
    with pytest.raises(LlmfbnError, match="frames rule"):
        used_frames({"task-a": acq}, words, "some")
