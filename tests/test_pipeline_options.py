"""End-to-end options on the small synthetic dataset: --stimuli for other layouts, several
models side by side, and parallel participant jobs sharing one work directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from bids_app.cli.run import main

#: end-to-end runs of the whole pipeline (minutes): `pytest -m "not slow"` skips them
pytestmark = pytest.mark.slow


def _participant(bids, out, work, *extra, reports=False):
    """The participant level with cheap settings; the HTML reports only when a test reads
    them (their figures are most of a subject's time)."""
    return main([str(bids), str(out), "participant", "-w", str(work), "--nprocs", "2",
                 "--n-atoms", "8", "--no-atom-stability", *map(str, extra),
                 *([] if reports else ["--no-reports"])])


def test_stimuli_table_with_word_tables_gives_the_same_atoms(dataset_copy, tmp_path):
    """The same words as a word-table TSV mapped with --stimuli (no Narratives layout)
    give exactly the atoms of the Gentle files found in the Narratives layout."""
    bids = dataset_copy
    assert _participant(bids, tmp_path / "gentle", tmp_path / "work1",
                        "--participant-label", "001") == 0
    rows = []
    for task in ("lighthouse", "market"):
        gentle = bids / "stimuli" / "gentle" / task / "align.csv"
        table = pd.read_csv(gentle, header=None, names=["word", "aligned", "onset", "offset"],
                            keep_default_na=False)
        target = bids / "stimuli" / "tables" / f"{task}_words.tsv"
        target.parent.mkdir(parents=True, exist_ok=True)
        table[["word", "onset", "offset"]].replace("", "n/a").to_csv(target, sep="\t",
                                                                      index=False)
        rows.append({"task": task, "path": f"stimuli/tables/{task}_words.tsv"})
    shutil.rmtree(bids / "stimuli" / "gentle")
    mapping = tmp_path / "stimuli.tsv"
    pd.DataFrame(rows).to_csv(mapping, sep="\t", index=False)
    assert _participant(bids, tmp_path / "tables", tmp_path / "work2",
                        "--participant-label", "001", "--stimuli", mapping) == 0
    a = pd.read_csv(tmp_path / "gentle" / "atoms" / "desc-minilm_atoms.tsv", sep="\t")
    b = pd.read_csv(tmp_path / "tables" / "atoms" / "desc-minilm_atoms.tsv", sep="\t")
    np.testing.assert_array_equal(a.filter(like="atom").to_numpy(),
                                  b.filter(like="atom").to_numpy())


def _tiny_llama(folder):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaModel

    from bids_app.features import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("minilm").path)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=tokenizer.vocab_size, hidden_size=32,
                         intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=4, max_position_embeddings=512)
    LlamaModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_two_models_side_by_side(dataset_copy, tmp_path, capsys):
    llama = _tiny_llama(tmp_path / "tinyllama")
    out = tmp_path / "out"
    args = ["--model", "minilm", str(llama)]
    assert _participant(dataset_copy, out, tmp_path / "work", *args, reports=True) == 0
    assert main([str(dataset_copy), str(out), "group", "-w", str(tmp_path / "work"),
                 "--n-atoms", "8", *args]) == 0
    table = pd.read_csv(out / "group" / "desc-models_metrics.tsv", sep="\t")
    assert table["label"].tolist() == ["minilm", "tinyllama"]
    assert "diversity_n_coupled_atoms" in table.columns
    for label in ("minilm", "tinyllama"):
        assert (out / "atoms" / f"desc-{label}_atoms.tsv").is_file()
        assert (out / "sub-003" / "func" /
                f"sub-003_space-MNI152NLin2009cAsym_desc-{label}_stat-t_statmap.nii.gz").is_file()
    neurons = pd.read_csv(out / "atoms" / "desc-tinyllama_neurons.tsv", sep="\t")
    assert len(neurons) == 2 * 48
    assert "Models side by side" in capsys.readouterr().out
    assert "mean_consistency_ci_low" in " ".join(table.columns)
    comparison = (out / "group" / "desc-models_report.html").read_text()
    for label in ("minilm", "tinyllama"):
        assert f"href='desc-{label}_report.html'" in comparison
        assert "href='desc-models_report.html'" in (
            out / "group" / f"desc-{label}_report.html").read_text()
    assert comparison.count("<img") == 3 and "networks coupled" in comparison


def test_parallel_participant_jobs_share_the_cache(dataset_copy, tmp_path):
    """Two jobs started together on one work dir: the stimulus stage runs once, both jobs
    finish, and neither reads a half-written cache."""
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "bids_app", str(dataset_copy), str(out), "participant",
           "-w", str(work), "--nprocs", "1", "--n-atoms", "8", "--no-reports",
           "--participant-label"]
    jobs = [subprocess.Popen(cmd + [label], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env) for label in ("001", "002")]
    logs = [job.communicate(timeout=900) for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], [err[-2000:] for _, err in logs]
    stderr = "".join(err for _, err in logs)
    assert stderr.count("Loading language model") == 1
    assert stderr.count("computed by another job") + stderr.count("reusing cached") >= 2
    for label in ("001", "002"):
        assert (out / f"sub-{label}" / "func").is_dir()
    leftovers = [p for p in (work / "llmfbn").rglob(".*") if p.is_dir()]
    assert not leftovers


def test_memory_budget_streams_layers_with_identical_responses(dataset_copy, tmp_path):
    """A small --mem-gb processes layers in groups; the on-disk responses are identical."""
    from bids_app.responses import layer_chunks

    assert layer_chunks([10, 10, 10], bytes_per_unit=400, mem_gb=1e-5) == [[0], [1], [2]]
    assert layer_chunks([10, 10, 10], bytes_per_unit=400, mem_gb=1.0) == [[0, 1, 2]]
    assert layer_chunks([10, 10, 10], bytes_per_unit=1e4, mem_gb=8e-4) == [[0, 1], [2]]
    for name, budget in (("big", "8"), ("tiny", "0.05")):
        assert _participant(dataset_copy, tmp_path / f"out-{name}", tmp_path / f"work-{name}",
                            "--participant-label", "001", "--mem-gb", budget) == 0
    big, tiny = (np.load(next((tmp_path / f"work-{n}").rglob("x.npy"))) for n in ("big", "tiny"))
    frames = pd.read_csv(next((tmp_path / "work-big").rglob("frames.tsv")), sep="\t")
    assert len(frames) == 416 and big.shape == tiny.shape == (9216, frames["used"].sum())
    np.testing.assert_array_equal(big, tiny)
    norms = np.linalg.norm(big, axis=1)
    assert np.allclose(norms[norms > 0], 1.0, atol=1e-5)


def test_wide_atom_names_and_settings_carried_to_the_group(dataset_copy, tmp_path, capsys):
    """--n-atoms 120: one atom name (atom001 ... atom120) in atoms.tsv, design.tsv, every
    sidecar and both reports. The group level takes K and the HRF from the participant level,
    and refuses a contradicting --n-atoms (exit 1, both values named, nothing written)."""
    import json
    import re

    out, work = tmp_path / "out", tmp_path / "work"
    assert _participant(dataset_copy, out, work, "--n-atoms", "120", "--hrf", "glover",
                        reports=True) == 0
    group = [str(dataset_copy), str(out), "group", "-w", str(work)]
    capsys.readouterr()
    assert main(group + ["--n-atoms", "64"]) == 1
    message = capsys.readouterr().err
    assert "--n-atoms" in message and "120" in message and "64" in message
    assert not (out / "group").exists()
    assert main(group) == 0
    names = [f"atom{k:03d}" for k in range(1, 121)]
    atoms = pd.read_csv(out / "atoms" / "desc-minilm_atoms.tsv", sep="\t")
    assert [c for c in atoms.columns if c.startswith("atom")] == names
    design = pd.read_csv(out / "sub-001" / "func" / "sub-001_desc-minilm_design.tsv", sep="\t")
    assert [c for c in design.columns if c.startswith("atom")] == names
    sidecars = [out / "sub-001" / "func" /
                "sub-001_space-MNI152NLin2009cAsym_desc-minilm_stat-t_statmap.json",
                out / "group" / "space-MNI152NLin2009cAsym_desc-minilm_stat-t_statmap.json"]
    for path in sidecars:
        side = json.loads(path.read_text())
        assert side["Atoms"] == names and side["NumberOfAtoms"] == 120
        assert side["HRF"] == "glover"
    methods = (out / "logs" / "CITATION.md").read_text()
    assert "120\nrepresentative" in methods and "GLOVER" in methods
    for report in (out / "sub-001.html", out / "group" / "desc-minilm_report.html"):
        text = re.sub(r"data:[^\"')\s]+", "", report.read_text())   # not inside base64 images
        found = set(re.findall(r"atom\d+", text))
        assert found and all(re.fullmatch(r"atom\d{3}", name) for name in found), report


def test_envelope_map_lights_up_the_planted_auditory_network(tmp_path):
    """A dataset whose Auditory network follows the story's audio envelope (no AN signal):
    the subject's envelope t map is large there and about 0 elsewhere."""
    import nibabel as nib

    from bids_app.atlases import load_fbn_atlas
    from bids_app.synthetic import make_dataset

    bids = make_dataset(tmp_path / "bids", n_subjects=3, planted=False, seed=4,
                        envelope_psc=1.0)
    out = tmp_path / "out"
    assert _participant(bids, out, tmp_path / "work", "--participant-label", "001",
                        "--nuisance", "wordrate", "envelope") == 0
    func = out / "sub-001" / "func"
    t_img = nib.load(func / "sub-001_space-MNI152NLin2009cAsym_desc-envelope_stat-t_statmap.nii.gz")
    mask_img = nib.load(next(func.glob("sub-001_task-*_space-MNI152NLin2009cAsym_desc-minilm_"
                                       "mask.nii.gz")))
    mask = np.asarray(mask_img.dataobj) > 0
    atlas = load_fbn_atlas("seitzman", mask_img)
    auditory = atlas.masks[list(atlas.network_names).index("Auditory")] > 0
    t = np.asarray(t_img.dataobj)[mask]
    assert np.median(t[auditory]) > 5, np.median(t[auditory])
    assert np.median(np.abs(t[~auditory])) < 1.5 and np.quantile(np.abs(t[~auditory]), 0.9) < 3
    # the atoms are not credited with the sound: their largest |t| in the Auditory network
    # is no larger than elsewhere (measured: median 2.3 vs 2.2)
    atoms_t = np.asarray(nib.load(
        func / "sub-001_space-MNI152NLin2009cAsym_desc-minilm_stat-t_statmap.nii.gz").dataobj)
    peak = np.abs(atoms_t[mask]).max(axis=1)
    assert np.median(peak[auditory]) < np.median(peak[~auditory]) + 1.0
