"""How well could any composite recover a planted network's functional truth? (issue 9)

For a synthetic dataset (``sourcedata/llmfbn_truth.json``) and llmfbn's outputs on it, per
planted network:

- ``removed``: the share of the planted signal's variance (over the frames the atoms were
  learned on) that lies in the span of a subject's confounds and nuisance regressors (its
  design matrix without the atoms): the BOLD cannot show that part at all;
- ``span_r``: the correlation of the planted signal with its best approximation by the
  atoms (the most any composite of atoms can reach);
- ``oracle_f1`` / ``oracle_r``: F1 against the functional truth, and correlation with the
  planted signal, of the composite fitted to the *noise-free* planted signal as the BOLD
  shows it (the planted signal with the subject's confounds projected out, regressed on the
  atoms with those confounds, ridge as llmfbn's over its grid, best F1 kept): what the
  membership rule can reach with infinitely many subjects and no noise;
- ``achieved_f1`` / ``achieved_r``: the same for the composite llmfbn estimated (recovered
  from ``scores.tsv`` and ``projections.npy``).

The AN responses are recomputed with the generator's own functions (the model runs once).

Usage::

    python benchmarks/recovery_ceiling.py BIDS_DIR OUTPUT_DIR [--model minilm]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bids_app.synthetic import on_story  # noqa: E402  (after the path set-up)


def _responses(bids: Path, truth: dict, model: str):
    """{task: (responses (n_frames, n_neurons) z-scored, story frames (n_frames,) bool)}."""
    import nibabel as nib

    from bids_app.features import load_model, resolve_model, word_activations
    from bids_app.responses import frame_times_s, story_frames, temporal_responses, zscore_time
    from bids_app.stimulus import read_word_timings
    from bids_app.synthetic import PROFILES

    acq = PROFILES[truth.get("profile", "demo")]
    lm = load_model(resolve_model(model), device="cpu")
    out = {}
    for task in truth["tasks"]:
        timings = read_word_timings(bids / "stimuli" / "gentle" / task / "align.csv")
        bold = sorted((bids / "derivatives" / "fmriprep" / "sub-001" / "func").glob(
            f"*task-{task}*desc-preproc_bold.nii.gz"))[0]
        frames = frame_times_s(nib.load(bold).shape[3], acq.t_r_s, acq.start_time_s)
        onsets = acq.onsets_s[task] + timings.onsets_s
        out[task] = (zscore_time(temporal_responses(word_activations(lm, timings.words),
                                                    onsets, frames)),
                     story_frames([onsets], frames))
    return out


def _f1(found: np.ndarray, real: np.ndarray) -> float:
    hits = int((found & real).sum())
    if not hits:
        return 0.0
    precision, recall = hits / found.sum(), hits / real.sum()
    return float(2 * precision * recall / (precision + recall))


def ceiling(bids: Path, output: Path, model: str = "minilm", threshold: float = 0.6):
    from bids_app.group.subgroups import RIDGE_GRID

    truth = json.loads((bids / "sourcedata" / "llmfbn_truth.json").read_text())
    responses = _responses(bids, truth, model)
    story = {t: s for t, (_, s) in responses.items()}
    x = on_story({t: r for t, (r, _) in responses.items()}, story)     # (T, n_neurons)
    atoms_table = pd.read_csv(output / "atoms" / f"desc-{model}_atoms.tsv", sep="\t")
    used = atoms_table["used"].astype(bool) if "used" in atoms_table else slice(None)
    atoms = atoms_table.loc[used, [c for c in atoms_table if c.startswith("atom")]
                            ].to_numpy(np.float64).T                   # (K, T)
    n_atoms = len(atoms)
    projections = np.load(output / "atoms" / f"desc-{model}_projections.npy").astype(float)
    scores = pd.read_csv(output / "group" / f"desc-{model}_scores.tsv", sep="\t")
    design = pd.read_csv(output / "sub-001" / "func" / f"sub-001_desc-{model}_design.tsv",
                         sep="\t").to_numpy(np.float64)
    if len(design) != atoms.shape[1]:
        raise SystemExit("sub-001's design rows are not the atoms' frames (non-steady-state "
                         "volumes inside the story frames): not supported here")
    confounds, regressors = design[:, n_atoms:], design[:, :n_atoms]
    resid = np.eye(len(confounds)) - confounds @ np.linalg.pinv(confounds)
    gram = atoms @ atoms.T
    rows = []
    for entry in truth["networks"]:
        network, members = entry["network"], entry["neurons"]
        signal = on_story({t: r[:, members].mean(axis=1, keepdims=True)
                            for t, (r, _) in responses.items()}, story)[:, 0]
        real = x.T @ signal >= threshold
        row = {"network": network, "n_truth": int(real.sum()),
               "removed": float(1 - np.sum((resid @ signal) ** 2)
                                / np.sum((signal - signal.mean()) ** 2)),
               "span_r": float(np.corrcoef(atoms.T @ np.linalg.lstsq(
                   atoms.T, signal, rcond=None)[0], signal)[0, 1])}
        best = (0.0, np.nan)
        for ridge in RIDGE_GRID:
            w = np.linalg.solve(regressors.T @ resid @ regressors + ridge * gram,
                                regressors.T @ resid @ signal)
            composite = atoms.T @ w
            composite = (composite - composite.mean()) / np.linalg.norm(
                composite - composite.mean())
            best = max(best, (_f1(x.T @ composite >= threshold, real),
                              float(np.corrcoef(composite, signal)[0, 1])))
        row["oracle_f1"], row["oracle_r"] = best
        if network in scores:
            weights = np.linalg.lstsq(projections, scores[network].to_numpy(), rcond=None)[0]
            composite = weights @ atoms
            row["achieved_r"] = float(np.corrcoef(composite, signal)[0, 1])
            row["achieved_f1"] = _f1(scores[network].to_numpy() >= threshold, real)
        else:
            row["achieved_r"] = row["achieved_f1"] = float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bids_dir", type=Path)
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--model", default="minilm")
    args = parser.parse_args(argv)
    table = ceiling(args.bids_dir, args.output_dir, args.model)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
