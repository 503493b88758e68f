"""A synthetic naturalistic-listening dataset with planted ground truth.

Laid out like the Narratives dataset (OpenNeuro ds002345) with fMRIPrep derivatives:

    bids/
      dataset_description.json  participants.tsv  README  .bidsignore
      stimuli/<task>_transcript.txt
      stimuli/<task>_audio.wav          (8 kHz mono: noise bursts at the words)
      stimuli/gentle/<task>/{align.csv, align.json, transcript.txt}
      sub-001/func/sub-001_task-<task>_{bold.nii.gz, bold.json, events.tsv}
      derivatives/fmriprep/{dataset_description.json, README, .bidsignore}
      derivatives/fmriprep/sub-001/func/
        sub-001_task-<task>_space-MNI152NLin2009cAsym_res-2_desc-preproc_bold.{nii.gz,json}
        sub-001_task-<task>_space-MNI152NLin2009cAsym_res-2_desc-brain_mask.{nii.gz,json}
        sub-001_task-<task>_desc-confounds_timeseries.{tsv,json}
      sourcedata/llmfbn_truth.json     (the planted truth; ignored by BIDS tools)

Two original stories (``bids_app/data/story_*.txt``) are "spoken" at about 2.5 words/s with
pauses at punctuation; about 2 % of words are left unaligned as Gentle leaves them. The BOLD
series (TR 1.5 s, StartTime 0.75 s) live on a coarse 4 mm grid with the origin of fMRIPrep's
MNI152NLin2009cAsym 2 mm grid, for speed; the files keep fMRIPrep's ``res-2`` names and the
sidecar says the real voxel size. Each run has non-steady-state volumes, slow drifts,
motion that leaks into the signal and physiological noise that the aCompCor columns describe.

Each story's "audio" is a WAV file of noise bursts during its words, louder and softer over
tens of seconds as a speaker's voice is; the events' ``stim_file`` names it (relative to
``stimuli/``, as BIDS has it). With ``envelope_psc`` its HRF-convolved envelope drives the
Auditory network too (a low-level auditory signal, off by default).

Planted truth: for each planted network, a sub-group of artificial neurons of the real model
(a seed AN and the ANs whose responses correlate most with it; coherent and not low-level,
see :func:`choose_subgroups`) drives the BOLD signal of that network of the chosen atlas
(Seitzman 2018 by default), smoothed, with a subject-specific amplitude. ``planted=False``
gives the null dataset: same generator, no planted signal.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

LOGGER = logging.getLogger("llmfbn")

STORIES = {"lighthouse": "story_lighthouse.txt", "market": "story_market.txt"}
STORY_ONSETS_S = {"lighthouse": 12.0, "market": 9.0}
T_R_S = 1.5
START_TIME_S = 0.75
N_NON_STEADY = 3
VOXEL_MM = 4.0
# fMRIPrep's MNI152NLin2009cAsym res-2 grid: 97 x 115 x 97 voxels, origin (-96, -132, -78)
GRID_ORIGIN_MM = (-96.0, -132.0, -78.0)
GRID_EXTENT_MM = (194.0, 230.0, 194.0)
DEFAULT_PLANTED = ("Auditory", "DefaultMode", "FrontoParietal")
SUBGROUP_SIZE = 40


@dataclass(frozen=True)
class Profile:
    """The acquisition and stimuli of a synthetic dataset: TR, slice-timing reference,
    voxel size of the analysis grid, and each story (task: text file, onset in the run)."""

    name: str
    t_r_s: float
    start_time_s: float
    voxel_mm: float
    stories: dict
    onsets_s: dict


#: The demo dataset: two stories, TR 1.5 s, 4 mm voxels.
DEMO = Profile("demo", T_R_S, START_TIME_S, VOXEL_MM, STORIES, STORY_ONSETS_S)
#: A second planted dataset (issue 9): another story, TR 2.0 s, 6 mm voxels, one run.
SECOND = Profile("second", 2.0, 1.0, 6.0, {"orchard": "story_orchard.txt"},
                 {"orchard": 10.0})
PROFILES = {p.name: p for p in (DEMO, SECOND)}
#: An AN is in a planted network's functional truth when its response correlates at least
#: this much with the network's planted signal over the story frames.
FUNCTIONAL_TRUTH_R = 0.6
#: A planted sub-group is coherent: at least this share of its ANs belong to its functional
#: truth (correlate >= FUNCTIONAL_TRUTH_R with the sub-group's mean response).
MIN_COHERENT = 0.75
#: A planted signal is not low-level: the word rate, the audio envelope and the cosine drift
#: basis (fMRIPrep's 128 s high-pass, in every analysis of the run) explain at most this
#: share of its variance over the story frames.
MAX_LOW_LEVEL_R2 = 0.25
#: Sampling rate of the synthetic audio (Hz): low, to keep the files small.
AUDIO_RATE_HZ = 8000
WORD_RE = re.compile(r"[A-Za-z0-9]+(?:['\u2019\-][A-Za-z0-9]+)*")


def story_text(task: str) -> str:
    files = {t: f for p in PROFILES.values() for t, f in p.stories.items()}
    return resources.files("bids_app.data").joinpath(files[task]).read_text(encoding="utf-8")


def speak(text: str, rng: np.random.Generator, words_per_s: float = 2.5,
          unaligned_fraction: float = 0.02) -> pd.DataFrame:
    """Word timings of ``text`` read aloud: word, onset_s, offset_s, aligned.

    Word durations grow with word length; pauses follow commas, dashes and sentence ends;
    everything is scaled to ``words_per_s`` on average.
    """
    rows = []
    for match in WORD_RE.finditer(text):
        follow = text[match.end():match.end() + 3]
        if re.match(r"\s*[.!?]", follow):
            pause = 0.55
        elif re.match(r"\s*[,;:\u2014-]", follow) or "\n" in follow:
            pause = 0.25
        else:
            pause = 0.04
        rows.append((match.group(0), 0.12 + 0.05 * len(match.group(0)), pause))
    words = [r[0] for r in rows]
    dur = np.array([r[1] for r in rows]) * rng.uniform(0.85, 1.15, len(rows))
    gap = np.array([r[2] for r in rows]) * rng.uniform(0.7, 1.3, len(rows))
    scale = (len(words) / words_per_s) / float(np.sum(dur + gap))
    dur, gap = dur * scale, gap * scale
    onsets = np.concatenate([[0.05], 0.05 + np.cumsum(dur + gap)[:-1]])
    aligned = rng.random(len(words)) >= unaligned_fraction
    aligned[0] = aligned[-1] = True
    return pd.DataFrame({"word": words, "onset_s": np.round(onsets, 2),
                         "offset_s": np.round(onsets + dur, 2), "aligned": aligned})


def audio_name(task: str) -> str:
    """The story's audio file under ``stimuli/`` (the events' ``stim_file``)."""
    return f"{task}_audio.wav"


def write_audio(path: Path, timings: pd.DataFrame, seed: int,
                rate: int = AUDIO_RATE_HZ) -> Path:
    """A mono 16-bit WAV of noise bursts at the words of ``timings`` (onset_s, offset_s).

    Each word is a burst of white noise with 10 ms ramps, its loudness the product of a
    random per-word gain (0.6-1) and a slow modulation (period 47 s); a faint noise floor
    fills the pauses. The audio's t = 0 is the story's t = 0.
    """
    from scipy.io import wavfile

    rng = np.random.default_rng([seed, 7])          # its own stream: BOLD is unchanged
    n = int(np.ceil((float(timings["offset_s"].iloc[-1]) + 0.5) * rate))
    sound = 0.003 * rng.standard_normal(n)
    ramp = int(0.01 * rate)
    for onset, offset in zip(timings["onset_s"], timings["offset_s"]):
        first, last = int(onset * rate), min(n, int(offset * rate))
        if last - first <= 2 * ramp:
            continue
        window = np.ones(last - first)
        window[:ramp] = window[-ramp:][::-1] = np.linspace(0.0, 1.0, ramp)
        gain = rng.uniform(0.6, 1.0) * (0.55 + 0.45 * np.sin(2 * np.pi * onset / 47.0))
        sound[first:last] += gain * 0.3 * window * rng.standard_normal(last - first)
    path.parent.mkdir(parents=True, exist_ok=True)
    wavfile.write(path, rate, np.clip(sound * 32767, -32768, 32767).astype(np.int16))
    return path


def write_gentle(folder: Path, timings: pd.DataFrame, transcript: str) -> None:
    """Gentle's ``align.csv`` (no header), ``align.json`` and ``transcript.txt``."""
    folder.mkdir(parents=True, exist_ok=True)
    lines, words_json, cursor = [], [], 0
    for row in timings.itertuples():
        start = transcript.find(row.word, cursor)
        end = start + len(row.word)
        cursor = end
        entry = {"word": row.word, "startOffset": start, "endOffset": end}
        if row.aligned:
            lines.append(f"{row.word},{row.word.lower()},{row.onset_s:.2f},{row.offset_s:.2f}")
            entry.update(alignedWord=row.word.lower(), case="success",
                         start=float(row.onset_s), end=float(row.offset_s))
        else:
            lines.append(f"{row.word},,,")
            entry.update(case="not-found-in-audio")
        words_json.append(entry)
    (folder / "align.csv").write_text("\n".join(lines) + "\n")
    (folder / "align.json").write_text(json.dumps({"transcript": transcript,
                                                   "words": words_json}, indent=1))
    (folder / "transcript.txt").write_text(transcript)


def analysis_grid(voxel_mm: float = VOXEL_MM) -> tuple[nib.Nifti1Image, np.ndarray]:
    """The coarse MNI grid and its brain mask (nilearn's MNI152 mask, nearest resampling)."""
    from nilearn.datasets import load_mni152_brain_mask
    from nilearn.image import resample_img

    shape = tuple(int(np.ceil(e / voxel_mm)) for e in GRID_EXTENT_MM)
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = GRID_ORIGIN_MM
    mni = load_mni152_brain_mask(resolution=2)
    mask_img = resample_img(mni, target_affine=affine, target_shape=shape,
                            interpolation="nearest", force_resample=True, copy_header=True)
    mask = np.asarray(mask_img.dataobj) > 0
    return nib.Nifti1Image(mask.astype(np.uint8), affine), mask


def _smooth(vol: np.ndarray, fwhm_mm: float, voxel_mm: float = VOXEL_MM) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(vol, fwhm_mm / voxel_mm / 2.3548)


def choose_subgroups(responses: dict, story: dict, layers: np.ndarray, n_groups: int,
                     rng: np.random.Generator, size: int = SUBGROUP_SIZE,
                     max_corr: float = 0.3, low_level: dict | None = None,
                     max_low_level_r2: float = MAX_LOW_LEVEL_R2,
                     min_coherent: float = MIN_COHERENT) -> list[np.ndarray]:
    """Sub-groups of ANs with coherent responses whose mean time courses differ.

    ``responses``: ``{task: (n_frames, n_neurons)}``, each run's responses; ``story``:
    ``{task: boolean (n_frames,)}``, the frames each choice is judged on (the story frames).
    A seed AN is drawn (from a different layer for each group when possible); its sub-group
    is the ``size`` ANs most correlated with it, its signal their mean response. A candidate
    is kept only when

    - it is coherent: at least ``min_coherent`` of its ANs correlate >= FUNCTIONAL_TRUTH_R
      with its signal, i.e. belong to its functional truth (a sub-group whose members do
      not follow their own mean is no "sub-group of neurons behind a network", and a truth
      of a few ANs makes F1 a count of coin flips);
    - its signal is not low-level: the ``low_level`` regressors (``{task: (n_frames, k)}``,
      e.g. the word rate, the audio envelope and the drift basis, as the participant GLM
      has them) explain at most ``max_low_level_r2`` of its variance (the GLM credits the
      atoms only with what they do not explain, so a planted "word-rate network", or one
      slower than the high-pass filter, would be removed by design);
    - its signal correlates below ``max_corr`` with every sub-group kept before.
    """
    x = on_story(responses, story)                       # unit-norm columns, story frames
    std = np.concatenate([np.asarray(responses[t])[story[t]] for t in sorted(responses)]
                         ).std(axis=0)
    candidates = np.flatnonzero(std > 0.5)
    unit = x[:, candidates]
    low = None
    if low_level is not None:
        low, _ = np.linalg.qr(on_story(low_level, story))
    groups, signals = [], []
    layer_order = rng.permutation(np.unique(layers))
    for _attempt in range(2000):
        # a layer per group when possible: the next layer after 50 fruitless draws
        layer = layer_order[(len(groups) + _attempt // 50) % len(layer_order)]
        pool = candidates[layers[candidates] == layer]
        seed = rng.choice(pool)
        corr = unit.T @ unit[:, np.searchsorted(candidates, seed)]
        members = np.sort(candidates[np.argsort(-corr)[:size]])
        signal = on_story({t: np.asarray(r)[:, members].mean(axis=1, keepdims=True)
                           for t, r in responses.items()}, story)[:, 0]
        if np.mean(signal @ x[:, members] >= FUNCTIONAL_TRUTH_R) < min_coherent:
            continue
        if low is not None and float(np.sum((low.T @ signal) ** 2)) > max_low_level_r2:
            continue
        if all(abs(float(signal @ s)) < max_corr for s in signals):
            groups.append(members)
            signals.append(signal)
            if len(groups) == n_groups:
                return groups
    raise RuntimeError("could not find distinct, coherent AN sub-groups to plant")


def _motion(n: int, rng) -> pd.DataFrame:
    steps = rng.normal(0, [0.03, 0.03, 0.05, 0.0006, 0.0006, 0.0004], (n, 6))
    params = np.cumsum(steps, axis=0)
    spikes = rng.choice(n, size=3, replace=False)
    params[spikes] += rng.normal(0, [0.3, 0.3, 0.4, 0.004, 0.004, 0.003])
    names = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
    table = pd.DataFrame(params, columns=names)
    for name in names:
        deriv = np.concatenate([[np.nan], np.diff(table[name].to_numpy())])
        table[f"{name}_derivative1"] = deriv
        table[f"{name}_power2"] = table[name] ** 2
        table[f"{name}_derivative1_power2"] = deriv ** 2
    rot = np.abs(np.diff(params[:, 3:], axis=0)) * 50.0
    fd = np.abs(np.diff(params[:, :3], axis=0)).sum(axis=1) + rot.sum(axis=1)
    table["framewise_displacement"] = np.concatenate([[np.nan], fd])
    return table


def _cosines(n: int, t_r_s: float = T_R_S) -> np.ndarray:
    """fMRIPrep's discrete cosine drift basis (128 s high-pass)."""
    n_cos = int(np.floor(2 * n * t_r_s / 128.0))
    t = np.arange(n)
    return np.stack([np.sqrt(2.0 / n) * np.cos(np.pi * (2 * t + 1) * (k + 1) / (2 * n))
                     for k in range(n_cos)], axis=1)


def _ar1(shape, rho, rng) -> np.ndarray:
    noise = rng.standard_normal(shape).astype(np.float32)
    for i in range(1, shape[0]):
        noise[i] = rho * noise[i - 1] + np.sqrt(1 - rho**2) * noise[i]
    return noise


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def make_dataset(bids_dir, n_subjects: int = 6, planted: bool = True, seed: int = 0,
                 model: str = "minilm", networks=DEFAULT_PLANTED,
                 signal_psc: float = 1.0, noise_psc: float = 1.0,
                 envelope_psc: float = 0.0, profile: str = "demo") -> Path:
    """Write the synthetic dataset into ``bids_dir`` (created; must not exist or be empty).

    Parameters
    ----------
    n_subjects : int, at least 3
    planted : bool, plant AN sub-group responses in ``networks`` (False: null dataset)
    signal_psc, noise_psc : float, planted signal and voxel noise std in percent signal change
    envelope_psc : float, std (percent signal change) of the audio envelope's response
        planted in the Auditory network (0: none)
    profile : str, a key of :data:`PROFILES`: ``"demo"`` (two stories, TR 1.5 s, 4 mm) or
        ``"second"`` (another story, TR 2.0 s, 6 mm, one run: the second planted dataset)
    """
    from bids_app.atlases import load_fbn_atlas

    bids_dir = Path(bids_dir)
    if bids_dir.exists() and any(bids_dir.iterdir()):
        raise FileExistsError(f"{bids_dir} exists and is not empty")
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}: one of {', '.join(PROFILES)}")
    acq = PROFILES[profile]
    rng = np.random.default_rng(seed)
    tasks = sorted(acq.stories)
    LOGGER.info("Synthetic dataset: %d subjects, tasks %s, %s", n_subjects, ", ".join(tasks),
                "planted signal in " + ", ".join(networks) if planted else "null (no signal)")

    # stories, timings, run lengths
    timings, n_volumes = {}, {}
    for task in tasks:
        text = story_text(task)
        timings[task] = speak(text, rng)
        end_s = acq.onsets_s[task] + float(timings[task]["offset_s"].iloc[-1]) + 15.0
        n_volumes[task] = max(200, int(np.ceil(end_s / acq.t_r_s)))
        write_gentle(bids_dir / "stimuli" / "gentle" / task, timings[task], text)
        write_audio(bids_dir / "stimuli" / audio_name(task), timings[task], seed)
        (bids_dir / "stimuli" / f"{task}_transcript.txt").write_text(text)

    mask_img, mask = analysis_grid(acq.voxel_mm)
    n_vox = int(mask.sum())
    truth = {"planted": bool(planted), "seed": seed, "model": model, "networks": [],
             "atlas": "seitzman", "n_subjects": n_subjects, "tasks": tasks,
             "t_r_s": acq.t_r_s, "voxel_mm": acq.voxel_mm, "profile": acq.name}
    signals = {task: np.zeros((n_volumes[task], 0), np.float32) for task in tasks}
    weights = np.zeros((0, n_vox), np.float32)
    if planted:
        signals, weights, truth["networks"] = _planted_signals(
            bids_dir, tasks, n_volumes, model, networks, mask_img, mask, rng, load_fbn_atlas,
            acq)
    if envelope_psc:
        signals, weights = _planted_envelope(bids_dir, tasks, n_volumes, mask, signals,
                                             weights, envelope_psc / signal_psc,
                                             load_fbn_atlas(truth["atlas"], mask_img), acq)
        truth["envelope"] = {"network": "Auditory", "psc": envelope_psc}

    _write_raw_metadata(bids_dir, n_subjects, tasks, planted, acq)
    fmriprep = bids_dir / "derivatives" / "fmriprep"
    _write_json(fmriprep / "dataset_description.json", {
        "Name": "fMRIPrep - synthetic llmfbn demo", "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "fMRIPrep", "Version": "23.2.0",
                         "Description": "simulated by llmfbn.synthetic (not a real fMRIPrep run)"}],
    })
    (fmriprep / "README").write_text(
        "Simulated fMRIPrep outputs of the llmfbn synthetic dataset (bids_app.synthetic).\n"
        f"Not a real fMRIPrep run: the BOLD series are simulated on a {acq.voxel_mm:g} mm "
        "grid.\n")
    # the BIDS schema has no rule for fMRIPrep's confounds yet (BEP012)
    (fmriprep / ".bidsignore").write_text("*_desc-confounds_timeseries.*\n")
    baseline = 600.0 + 300.0 * _smooth(rng.random(mask.shape), 12.0, acq.voxel_mm)[mask]
    for s in range(1, n_subjects + 1):
        sub = f"{s:03d}"
        amp = rng.uniform(0.75, 1.25, weights.shape[0])
        for task in tasks:
            _write_run(bids_dir, fmriprep, sub, task, n_volumes[task], signals[task],
                       weights * (signal_psc * amp)[:, None], mask_img, mask, baseline,
                       noise_psc, rng, acq)
        LOGGER.info("Synthetic sub-%s written", sub)
    _write_json(bids_dir / "sourcedata" / "llmfbn_truth.json", truth)
    return bids_dir


def _planted_signals(bids_dir, tasks, n_volumes, model, networks, mask_img, mask, rng,
                     load_fbn_atlas, acq: Profile = DEMO):
    from bids_app.features import load_model, neuron_table, resolve_model, word_activations
    from bids_app.responses import (
        envelope_regressor,
        frame_times_s,
        story_frames,
        temporal_responses,
        word_rate_regressor,
        zscore_time,
    )
    from bids_app.stimulus import audio_envelope, read_word_timings

    lm = load_model(resolve_model(model), device="cpu")
    layers = neuron_table(lm)["layer"].to_numpy()
    per_task, onsets, low_level, story = {}, {}, {}, {}
    for task in tasks:
        # read back the Gentle file just written: the pipeline sees exactly these words and
        # onsets (unaligned words interpolated by the same reader)
        timings = read_word_timings(bids_dir / "stimuli" / "gentle" / task / "align.csv")
        onsets[task] = timings.onsets_s
        acts = word_activations(lm, timings.words)
        frames = frame_times_s(n_volumes[task], acq.t_r_s, acq.start_time_s)
        per_task[task] = zscore_time(temporal_responses(
            acts, acq.onsets_s[task] + timings.onsets_s, frames))
        story[task] = story_frames([acq.onsets_s[task] + onsets[task]], frames)
        times_s, rms = audio_envelope(bids_dir / "stimuli" / audio_name(task))
        low_level[task] = np.column_stack([
            word_rate_regressor(acq.onsets_s[task] + onsets[task], frames),
            envelope_regressor(rms, acq.onsets_s[task] + times_s, frames),
            _cosines(n_volumes[task], acq.t_r_s)])
    groups = choose_subgroups(per_task, story, layers, len(networks), rng,
                              low_level=low_level)
    atlas = load_fbn_atlas("seitzman", mask_img)
    names = list(atlas.network_names)
    weights, truth = [], []
    for name, members in zip(networks, groups):
        vol = np.zeros(mask.shape, np.float32)
        vol[mask] = atlas.masks[names.index(name)]
        smooth = _smooth(vol, 5.0, acq.voxel_mm)[mask]
        weights.append(np.clip(smooth / smooth.max(), 0, None) * (smooth > 0.2 * smooth.max()))
        truth.append({"network": name, "neurons": members.tolist(),
                      "layers": layers[members].tolist(),
                      "n_network_voxels": int(atlas.masks[names.index(name)].sum())})
    signals = {}
    for task, resp in per_task.items():
        sig = np.stack([resp[:, g].mean(axis=1) for g in groups], axis=1)
        signals[task] = ((sig - sig.mean(0)) / sig.std(0)).astype(np.float32)
    for entry, column in zip(truth, functional_truth(per_task, signals, story)):
        entry["functional_truth"] = column
        entry["functional_truth_threshold"] = FUNCTIONAL_TRUTH_R
    return signals, np.asarray(weights, np.float32), truth


def on_story(arrays: dict, story: dict) -> np.ndarray:
    """The runs' story frames stacked (``arrays[task][story[task]]``), each column z-scored
    within each run and the whole scaled to unit norm per column: ``a.T @ b`` of two such
    stacks is the correlation over the story frames."""
    parts = []
    for task in sorted(arrays):
        part = np.asarray(arrays[task], dtype=np.float64)[story[task]]
        sd = part.std(axis=0)
        parts.append((part - part.mean(axis=0)) / np.where(sd > 0, sd, 1.0))
    stacked = np.vstack(parts)
    return stacked / np.sqrt(len(stacked))


def functional_truth(responses: dict, signals: dict, story: dict) -> list[list[int]]:
    """Per planted network, every AN whose response correlates >= FUNCTIONAL_TRUTH_R with
    the network's planted signal over the story frames (each run z-scored on them)."""
    x, s = on_story(responses, story), on_story(signals, story)
    corr = s.T @ x                                   # (n_networks, n_neurons)
    return [np.flatnonzero(row >= FUNCTIONAL_TRUTH_R).tolist() for row in corr]
def _planted_envelope(bids_dir, tasks, n_volumes, mask, signals, weights, scale, atlas,
                      acq: Profile = DEMO):
    """``signals``/``weights`` with one more source: each story's audio envelope (HRF
    convolved, z-scored, times ``scale``) in the Auditory network."""
    from bids_app.responses import envelope_regressor, frame_times_s
    from bids_app.stimulus import audio_envelope

    vol = np.zeros(mask.shape, np.float32)
    vol[mask] = atlas.masks[list(atlas.network_names).index("Auditory")]
    smooth = _smooth(vol, 5.0, acq.voxel_mm)[mask]
    weight = np.clip(smooth / smooth.max(), 0, None) * (smooth > 0.2 * smooth.max())
    out = {}
    for task in tasks:
        times_s, rms = audio_envelope(bids_dir / "stimuli" / audio_name(task))
        course = envelope_regressor(rms, acq.onsets_s[task] + times_s,
                                    frame_times_s(n_volumes[task], acq.t_r_s,
                                                  acq.start_time_s))
        course = scale * (course - course.mean()) / course.std()
        out[task] = np.column_stack([signals[task], course]).astype(np.float32)
    return out, np.vstack([weights, weight[None]]).astype(np.float32)


def _write_raw_metadata(bids_dir: Path, n_subjects: int, tasks, planted: bool,
                        acq: Profile = DEMO) -> None:
    _write_json(bids_dir / "dataset_description.json", {
        "Name": "llmfbn synthetic narratives" + ("" if planted else " (null)"),
        "BIDSVersion": "1.9.0", "DatasetType": "raw", "License": "CC0",
        "Authors": ["llmfbn synthetic generator"],
    })
    pd.DataFrame({"participant_id": [f"sub-{s:03d}" for s in range(1, n_subjects + 1)],
                  "age": 20 + np.arange(n_subjects) % 15,
                  "sex": ["F", "M"] * (n_subjects // 2) + ["F"] * (n_subjects % 2)}
                 ).to_csv(bids_dir / "participants.tsv", sep="\t", index=False)
    (bids_dir / "README").write_text(
        "Synthetic naturalistic-listening dataset generated by llmfbn (bids_app.synthetic).\n"
        "Stories are original texts; BOLD is simulated. Not real data.\n")
    (bids_dir / ".bidsignore").write_text("stimuli/\n")
    for task in tasks:
        _write_json(bids_dir / f"task-{task}_bold.json",
                    {"TaskName": task, "RepetitionTime": acq.t_r_s,
                     "Instructions": "Listen to the story."})


def _save_series(data: np.ndarray, affine: np.ndarray, path: Path,
                 t_r_s: float = T_R_S) -> None:
    """A 4-D series with its units (mm, s) and its volume step (RepetitionTime) in the
    header, as the BIDS validator checks."""
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header["pixdim"][4] = t_r_s
    nib.save(img, path)


def _write_run(bids_dir, fmriprep, sub, task, n, signal, weights, mask_img, mask, baseline,
               noise_psc, rng, acq: Profile = DEMO) -> None:
    n_vox = int(mask.sum())
    motion = _motion(n, rng)
    cosines = _cosines(n, acq.t_r_s)
    physio = _ar1((n, 10), 0.6, rng)
    physio = (physio - physio.mean(0)) / physio.std(0)
    # percent signal change around the baseline, (n, n_vox)
    psc = noise_psc * _ar1((n, n_vox), 0.3, rng)
    if signal.shape[1]:
        psc += signal @ weights
    move = motion[["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]].to_numpy()
    move = move - move.mean(0)
    psc += (move / move.std(0).clip(1e-6)) @ (0.4 * rng.standard_normal((6, n_vox)))
    psc += physio @ (0.3 * rng.standard_normal((10, n_vox)))
    psc += cosines[:, :3] @ rng.normal(0, 4.0, (3, n_vox))
    psc[:N_NON_STEADY] += np.linspace(40.0, 10.0, N_NON_STEADY)[:, None]
    data = np.zeros(mask.shape + (n,), np.float32)
    data[mask] = (baseline[:, None] * (1.0 + psc.T / 100.0)).astype(np.float32)

    raw_func = bids_dir / f"sub-{sub}" / "func"
    raw_func.mkdir(parents=True, exist_ok=True)
    base = f"sub-{sub}_task-{task}"
    # raw series: scanner-like int16 on a coarser grid (stands in for native space)
    raw = np.clip(data[::2, ::2, ::2], 0, 32767).astype(np.int16)
    raw_affine = mask_img.affine.copy()
    raw_affine[:3, :3] *= 2
    _save_series(raw, raw_affine, raw_func / f"{base}_bold.nii.gz", acq.t_r_s)
    # RepetitionTime only here and in task-<task>_bold.json at the root (BIDS inheritance)
    _write_json(raw_func / f"{base}_bold.json", {"RepetitionTime": acq.t_r_s, "TaskName": task})
    story_s = float(n * acq.t_r_s - acq.onsets_s[task] - 15.0)
    # stim_file is relative to stimuli/ and names a file that exists there
    pd.DataFrame({"onset": [acq.onsets_s[task]], "duration": [round(story_s, 2)],
                  "trial_type": [task], "stim_file": [audio_name(task)]}
                 ).to_csv(raw_func / f"{base}_events.tsv", sep="\t", index=False)

    func = fmriprep / f"sub-{sub}" / "func"
    func.mkdir(parents=True, exist_ok=True)
    space = "space-MNI152NLin2009cAsym_res-2"
    _save_series(data, mask_img.affine, func / f"{base}_{space}_desc-preproc_bold.nii.gz",
                 acq.t_r_s)
    resolution = {"Resolution": {"2": f"fMRIPrep's res-2 name kept; the synthetic grid has "
                                      f"{acq.voxel_mm:g} mm voxels"}}
    _write_json(func / f"{base}_{space}_desc-preproc_bold.json", {
        "RepetitionTime": acq.t_r_s, "StartTime": acq.start_time_s, "SkullStripped": False,
        "TaskName": task, "VoxelSizeMm": acq.voxel_mm, **resolution,
        "Sources": [f"bids:raw:sub-{sub}/func/{base}_bold.nii.gz"]})
    mask_out = nib.Nifti1Image(np.asarray(mask_img.dataobj), mask_img.affine)
    mask_out.header.set_xyzt_units("mm")
    nib.save(mask_out, func / f"{base}_{space}_desc-brain_mask.nii.gz")
    _write_json(func / f"{base}_{space}_desc-brain_mask.json", {
        "Type": "Brain", **resolution, "Description": "Brain mask of the synthetic series",
        "Sources": [f"bids:raw:sub-{sub}/func/{base}_bold.nii.gz"]})

    conf = pd.DataFrame({"global_signal": data[mask].mean(0),
                         "csf": physio[:, 0], "white_matter": physio[:, 5]})
    conf = pd.concat([conf, motion], axis=1)
    meta = {}
    comps = physio + 0.1 * rng.standard_normal(physio.shape)
    for k in range(10):
        name = f"a_comp_cor_{k:02d}"
        conf[name] = comps[:, k] / np.linalg.norm(comps[:, k])
        meta[name] = {"Method": "aCompCor", "Mask": "CSF" if k < 5 else "WM", "Retained": True,
                      "SingularValue": float(10 - k), "VarianceExplained": 0.05,
                      "CumulativeVarianceExplained": 0.05 * (k % 5 + 1)}
    for k in range(cosines.shape[1]):
        conf[f"cosine{k:02d}"] = cosines[:, k]
    for k in range(N_NON_STEADY):
        col = np.zeros(n)
        col[k] = 1.0
        conf[f"non_steady_state_outlier{k:02d}"] = col
    conf.to_csv(func / f"{base}_desc-confounds_timeseries.tsv", sep="\t", index=False,
                na_rep="n/a", float_format="%.6g")
    _write_json(func / f"{base}_desc-confounds_timeseries.json", meta)


# --------------------------------------------------------------------------------------
# AN-like responses from known sources (for the dictionary learner's tests and benchmark)
# --------------------------------------------------------------------------------------
def _spm_hrf(tr_s: float, length_s: float = 32.0) -> np.ndarray:
    """SPM canonical HRF sampled every ``tr_s`` s (double gamma, peak 6 s, undershoot 16 s,
    ratio 1/6), summing to 1."""
    from scipy.stats import gamma

    t_s = np.arange(0, length_s, tr_s)
    hrf = gamma.pdf(t_s, 6) - gamma.pdf(t_s, 16) / 6.0
    return hrf / hrf.sum()


def source_mixtures(n_neurons: int = 100_000, n_trs: int = 300, n_sources: int = 64,
                    tr_s: float = 1.5, noise: float = 0.5, seed: int = 0,
                    chunk: int = 20_000, out=None, progress=None):
    """Unit-norm AN-like responses, each a sparse mixture of known smooth sources.

    The sources are random event trains (30 % of the TRs, normal amplitudes) convolved
    with the SPM canonical HRF; each row combines 1-4 of them with normal weights, plus
    white noise of sd ``noise``, and is z-scored and scaled to unit norm, as the
    pipeline's AN responses are. The ground truth for dictionary learning tests and
    benchmarks: with ``n_atoms = n_sources``, the optimal atoms are the sources.

    Parameters
    ----------
    out : array (n_neurons, n_trs) or None
        Written chunk by chunk when given (e.g. a memory-mapped ``.npy``), so X never has
        to fit in memory.
    progress : callable(str) or None
        Called every 50 chunks with a progress line.

    Returns
    -------
    x : ndarray (n_neurons, n_trs), float32 (``out`` when given)
    sources : ndarray (n_sources, n_trs), float64, centred, unit norm
    """
    rng = np.random.default_rng(seed)
    hrf = _spm_hrf(tr_s)
    events = rng.standard_normal((n_sources, n_trs + len(hrf))) \
        * (rng.random((n_sources, n_trs + len(hrf))) < 0.3)
    sources = np.array([np.convolve(e, hrf)[len(hrf):len(hrf) + n_trs] for e in events])
    sources -= sources.mean(1, keepdims=True)
    sources /= sources.std(1, keepdims=True)
    x = np.empty((n_neurons, n_trs), dtype=np.float32) if out is None else out
    for start in range(0, n_neurons, chunk):
        m = min(chunk, n_neurons - start)
        weights = np.zeros((m, n_sources))
        n_used = rng.integers(1, 5, size=m)
        for i in range(m):
            used = rng.choice(n_sources, size=n_used[i], replace=False)
            weights[i, used] = rng.standard_normal(n_used[i])
        block = weights @ sources + noise * rng.standard_normal((m, n_trs))
        if progress is not None and start % (50 * chunk) == 0:
            progress(f"wrote {start:,} of {n_neurons:,} rows")
        block -= block.mean(1, keepdims=True)
        block /= block.std(1, keepdims=True)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        x[start:start + m] = block
    return x, sources / np.linalg.norm(sources, axis=1, keepdims=True)
