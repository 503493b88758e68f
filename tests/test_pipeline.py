"""End to end on the synthetic datasets: planted truth recovered, null gives nothing,
outputs form a BIDS-Derivatives dataset that pybids indexes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

#: end-to-end runs of the whole pipeline (minutes): `pytest -m "not slow"` skips them
pytestmark = pytest.mark.slow


def _assignments(output: Path) -> pd.DataFrame:
    return pd.read_csv(output / "group" / "desc-minilm_assignments.tsv", sep="\t")


def test_planted_networks_are_coupled_and_only_them(planted_run):
    bids_dir, output = planted_run
    truth = json.loads((bids_dir / "sourcedata" / "llmfbn_truth.json").read_text())
    planted = {n["network"] for n in truth["networks"]}
    assert len(planted) == 3
    coupled = set(_assignments(output)["network"]) - {"none"}
    assert coupled == planted
    # brain-side intervals: the group chain redone on 200 resamples of the 6 subjects
    metrics = json.loads((output / "group" / "desc-minilm_metrics.json").read_text())
    intervals = metrics["diversity"]["ci95"]
    assert set(intervals) == {"n_coupled_atoms", "n_networks_covered",
                              "fraction_networks_covered", "normalised_entropy"}
    assert all(0 <= low <= high for low, high in intervals.values()), intervals
    assert intervals["n_networks_covered"][1] <= 13


def test_null_dataset_couples_no_atom(null_run):
    _, output = null_run
    assignments = _assignments(output)
    assert len(assignments) == 64
    assert (assignments["network"] == "none").all()
    metrics = json.loads((output / "group" / "desc-minilm_metrics.json").read_text())
    assert metrics["diversity"]["n_coupled_atoms"] == 0
    assert metrics["diversity"]["ci95"]["n_coupled_atoms"][0] == 0
    # nor a network through the network-prediction test
    prediction = pd.read_csv(output / "group" / "desc-minilm_networkprediction.tsv", sep="\t")
    assert len(prediction) == 13 and not prediction["coupled"].any(), prediction
    networks = pd.read_csv(output / "group" / "desc-minilm_networksubgroups.tsv", sep="\t")
    assert networks.empty
    # run with --no-reports: no HTML anywhere, the maps and tables all there
    assert not list(output.rglob("*.html"))
    assert len(list(output.glob("sub-*/func/*_desc-minilm_stat-t_statmap.nii.gz"))) == 6


def _recovery(planted_run):
    from bids_app.recovery import recovery_table

    bids_dir, output = planted_run
    truth = json.loads((bids_dir / "sourcedata" / "llmfbn_truth.json").read_text())
    members = pd.read_csv(output / "group" / "desc-minilm_members.tsv", sep="\t")
    scores = pd.read_csv(output / "group" / "desc-minilm_scores.tsv", sep="\t")
    return recovery_table(truth, members, scores), output


def test_planted_ans_rank_first_in_their_networks_scores(planted_run):
    """Every planted network has scores; its planted ANs rank first among all ANs (rank AUC
    >= 0.95, issue 9's target; measured 0.997-1.000 with the defaults); the members table's
    sidecar states the rule; the planted sub-groups are coherent (>= 3/4 of their ANs in
    their functional truth, as the generator guarantees)."""
    table, output = _recovery(planted_run)
    assert len(table) == 3 and table["coupled"].all(), table
    assert (table["auc"] >= 0.95).all(), table
    side = json.loads((output / "group" / "desc-minilm_members.json").read_text())
    assert side["MembershipThreshold"] == 0.6 and "joint effects" in side["MembershipRule"]
    assert "AN prior" in side["MembershipRule"]
    assert side["NullSurrogates"] == 1000 and "standardised" in side["CouplingNull"]
    assert "first half" in side["NetworkPrediction"] and "0.025" in side["NetworkPrediction"]
    networks = pd.read_csv(output / "group" / "desc-minilm_networksubgroups.tsv", sep="\t")
    assert set(networks["ridge"]) <= {0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 0.3, 1.0}
    truth = json.loads((planted_run[0] / "sourcedata" / "llmfbn_truth.json").read_text())
    for entry in truth["networks"]:
        inside = set(entry["neurons"]) & set(entry["functional_truth"])
        assert len(inside) >= 0.75 * len(entry["neurons"]), entry["network"]


def test_planted_subgroups_recover_the_functional_truth(planted_run):
    """Issue 9's targets at the demo's SNR: for every planted network, F1 >= 0.7 against the
    functional truth, rank AUC of the planted ANs >= 0.95, sub-group <= 3 x the truth
    (measured 2026-12-03 with the v4 learner: F1 0.89 / 0.81 / 0.88; six generator seeds
    of the demo meet them, docs/metrics.md, "Status")."""
    table, _ = _recovery(planted_run)
    assert (table["f1"] >= 0.7).all(), table
    assert (table["auc"] >= 0.95).all(), table
    assert (table["n_members"] <= 3 * table["n_truth"]).all(), table


def test_second_planted_dataset_runs_end_to_end(second_run):
    """The second planted dataset (one run, TR 2.0 s, 6 mm): both levels run with the
    defaults; one run means no cross-validated map; its networks are scored."""
    bids_dir, output = second_run
    sidecar = json.loads(next((output / "sub-001" / "func").glob(
        "*_desc-minilm_stat-t_statmap.json")).read_text())
    assert sidecar["Tasks"] == ["orchard"]
    assert not list(output.glob("sub-*/func/*_stat-cvr_statmap.nii.gz"))
    assert len(list(output.glob("sub-*/func/*_desc-minilm_networkeffects.tsv"))) == 6
    effects = pd.read_csv(next(output.glob("sub-001/func/*_networkeffects.tsv")), sep="\t")
    assert {"DefaultMode", "DefaultMode_given"} <= set(effects.columns)
    # the network-prediction tables: the atoms, then 100 surrogate blocks, per subject
    tables = sorted(output.glob("sub-*/func/*_desc-minilm_networkprediction.tsv"))
    assert len(tables) == 6
    prediction = pd.read_csv(tables[0], sep="\t")
    assert prediction["block"].tolist()[:2] == ["atoms", "null0001"] and len(prediction) == 101
    sidecar = json.loads(tables[0].with_suffix(".json").read_text())
    assert sidecar["SurrogateBlocks"] == 100 and sidecar["Ridge"] == 1.0
    table, _ = _recovery(second_run)
    # every planted network coupled: DefaultMode only through the statistic given the other
    # atoms (one 202-frame run; alone, its best atoms' null p are 6e-4 and 8e-4, above the
    # Bonferroni 3e-5; given the others 1e-6 and 2e-5)
    assert len(table) == 3 and table["coupled"].all(), table
    # the composites (AN prior, ridge by the one-standard-error rule with a 1 % margin):
    # rank AUC 0.992-0.998
    # (FrontoParietal: 0.42 on the old generator's dataset with the plain ridge at its best
    # left-out-subject error, which chose 0)
    assert (table["auc"] >= 0.95).all(), table


def test_second_planted_dataset_meets_the_targets(second_run):
    """Issue 9: a second planted dataset with another TR, grid and story meets the demo's
    targets (every planted network coupled, F1 >= 0.7, AUC >= 0.95, size <= 3 x truth;
    measured 2026-12-03 with the v4 learner: F1 0.88 / 0.86 / 0.77). Not on every generator
    seed of this profile (4 of 5 meet every target): docs/metrics.md, "Status"."""
    table, _ = _recovery(second_run)
    assert table["coupled"].all(), table
    assert (table["f1"] >= 0.7).all(), table
    assert (table["auc"] >= 0.95).all(), table
    assert (table["n_members"] <= 3 * table["n_truth"]).all(), table


def test_network_prediction_couples_only_planted_networks(planted_run, second_run):
    """The network-level test (all atoms together, split-half prediction against surrogate
    blocks, averaged over subjects as Fisher z): on both planted datasets it couples every
    planted network and no other (measured 2026-12-02 23:40 UTC: all three on all 11
    planted datasets; with the mean of r before, the demo's Auditory, r 0.90, was coupled
    by its atom only); every planted network has a sub-group."""
    for bids_dir, output in (planted_run, second_run):
        truth = json.loads((bids_dir / "sourcedata" / "llmfbn_truth.json").read_text())
        planted = {n["network"] for n in truth["networks"]}
        prediction = pd.read_csv(output / "group" / "desc-minilm_networkprediction.tsv",
                                 sep="\t")
        predicted = set(prediction.loc[prediction["coupled"], "network"])
        assert predicted == planted, prediction
        assert (prediction.loc[prediction["coupled"], "r"] > 0.8).all(), prediction
        networks = pd.read_csv(output / "group" / "desc-minilm_networksubgroups.tsv",
                               sep="\t")
        assert set(networks["network"]) == planted
        assert set(networks["coupled_by"]) <= {"atoms", "prediction", "atoms+prediction"}


def test_a_network_no_atom_passes_for_is_recovered_by_the_prediction_test(planted_run,
                                                                        tmp_path):
    """The planted run's group level again with ``--min-iou 1``, so that no atom passes
    for any network (an atom's group map would have to be the network itself): the
    network-prediction test alone couples every planted network and no other, and their
    sub-groups recover the functional truth to issue 9's targets (F1 0.89 / 0.80 / 0.87,
    AUC >= 0.997 on 2026-12-03). Real runs take this route when a network's signal is
    shared by several collinear atoms, none of whose maps overlaps it by the 0.1 gate (the
    demo profile's seed 4 and FrontoParietal with the v4 and v5 learners); forcing it
    keeps the test independent of which dataset a learner version happens to put there."""
    import shutil

    from bids_app.cli.run import main

    bids_dir, output = planted_run
    copy = tmp_path / "llmfbn"
    shutil.copytree(output, copy)
    assert main([str(bids_dir), str(copy), "group", "-w", str(tmp_path / "work"),
                 "--nprocs", "2", "--no-reports", "--min-iou", "1"]) == 0
    assignments = pd.read_csv(copy / "group" / "desc-minilm_assignments.tsv", sep="\t")
    assert (assignments["network"] == "none").all(), assignments
    networks = pd.read_csv(copy / "group" / "desc-minilm_networksubgroups.tsv", sep="\t")
    routes = dict(zip(networks["network"], networks["coupled_by"]))
    truth = json.loads((bids_dir / "sourcedata" / "llmfbn_truth.json").read_text())
    assert set(routes) == {n["network"] for n in truth["networks"]}, routes
    assert set(routes.values()) == {"prediction"}, routes
    table, _ = _recovery((bids_dir, copy))
    assert set(routes) == set(table["network"]), routes
    assert (table["f1"] >= 0.7).all() and (table["auc"] >= 0.95).all(), table
    assert (table["n_members"] <= 3 * table["n_truth"]).all(), table


def test_group_level_on_participant_outputs_without_prediction_tables(second_run, tmp_path,
                                                                      capsys):
    """Participant outputs from before the network-prediction test: the group level warns,
    writes no prediction table (a former run's is removed) and couples by the atom tests
    only."""
    import shutil

    from bids_app.cli.run import main

    bids_dir, output = second_run
    copy = tmp_path / "llmfbn"
    shutil.copytree(output, copy)
    for table in copy.glob("sub-*/func/*_networkprediction.*"):
        table.unlink()
    assert (copy / "group" / "desc-minilm_networkprediction.tsv").is_file()
    code = main([str(bids_dir), str(copy), "group", "-w", str(tmp_path / "work"),
                 "--nprocs", "2", "--no-reports"])
    assert code == 0
    assert "No network-prediction table" in capsys.readouterr().err
    assert not (copy / "group" / "desc-minilm_networkprediction.tsv").exists()
    networks = pd.read_csv(copy / "group" / "desc-minilm_networksubgroups.tsv", sep="\t")
    assert set(networks["coupled_by"]) == {"atoms"}


def test_derivatives_dataset_is_indexed_by_pybids(planted_run):
    from bids_app.bids.describe import derivatives_layout

    _, output = planted_run
    description = json.loads((output / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "llmfbn"
    assert description["GeneratedBy"][0]["Version"]
    assert description["SourceDatasets"]
    layout = derivatives_layout(output)
    indexed = {Path(f.path) for f in layout.get(extension=[".nii.gz"])}
    on_disk = set(output.rglob("*.nii.gz"))
    assert on_disk and on_disk == indexed
    # every map has a JSON sidecar recording the model and settings; the nuisance maps
    # (no model label) record the frames, confounds and nuisance regressors
    for path in on_disk:
        sidecar = json.loads(Path(str(path).replace(".nii.gz", ".json")).read_text())
        nuisance = "_desc-wordrate_" in path.name or "_desc-envelope_" in path.name
        for key in (("Frames", "ConfoundStrategy", "Nuisance", "NuisanceHRF") if nuisance
                    else ("Model", "NumberOfAtoms", "SparsityLambda", "HRF",
                          "ConfoundStrategy", "Seed", "Frames", "Nuisance")):
            assert key in sidecar, (path.name, key)
    # participant maps carry standard entities, and stat with the shipped configuration
    tmaps = layout.get(subject="001", suffix="statmap", extension=".nii.gz")
    assert {f.entities.get("space") for f in tmaps} == {"MNI152NLin2009cAsym"}
    assert {f.entities["stat"] for f in tmaps} == {"effect", "t", "rsquare", "cvr"}
    masks = layout.get(subject="001", suffix="mask", extension=".nii.gz")
    assert {f.entities["task"] for f in masks} == {"lighthouse", "market"}
    assert not list(output.rglob(".*.tmp*")), "temporary files left behind"


def test_participant_maps_shapes(planted_run):
    _, output = planted_run
    func = output / "sub-001" / "func"
    stem = "sub-001_space-MNI152NLin2009cAsym_desc-minilm"
    effect = nib.load(func / f"{stem}_stat-effect_statmap.nii.gz")
    t = nib.load(func / f"{stem}_stat-t_statmap.nii.gz")
    r2 = nib.load(func / f"{stem}_stat-rsquare_statmap.nii.gz")
    assert effect.shape[3] == 64 and t.shape == effect.shape and r2.ndim == 3
    r2_data = np.asarray(r2.dataobj)
    assert np.all((r2_data >= 0) & (r2_data <= 1))
    atoms = pd.read_csv(output / "atoms" / "desc-minilm_atoms.tsv", sep="\t")
    assert list(atoms.columns[:6]) == ["acquisition", "task", "run", "frame", "time_s", "used"]
    assert atoms.shape[1] == 6 + 64
    assert (output / "atoms" / "desc-minilm_stability.json").is_file()
    logs = list((output / "logs").glob("config_participant_*.json"))
    assert logs and json.loads(logs[0].read_text())["model"] == ["minilm"]
    assert (output / "logs" / "CITATION.md").is_file()
    assert (output / "group" / "desc-minilm_report.html").stat().st_size > 10_000


def test_rerun_reuses_cache_and_keeps_outputs(planted_run, capsys):
    """A second participant run reuses the cached atoms, rewrites identical maps, removes
    the temporaries of killed runs (owner gone) and keeps those of live ones."""
    from bids_app.atomic import host_label
    from bids_app.cli.run import main

    bids_dir, output = planted_run
    path = output / "sub-002" / "func" / \
        "sub-002_space-MNI152NLin2009cAsym_desc-minilm_stat-t_statmap.nii.gz"
    before = np.asarray(nib.load(path).dataobj).copy()
    work = output.parent.parent.parent / "work"
    dead = 2 ** 22 + 12345                      # above the kernel's default pid_max
    stale = [path.with_name(f".{path.name}.tmp-{host_label()}-{dead}-abcdefgh.nii.gz"),
             work / "llmfbn" / "responses" / f".0123abcd.tmp-{host_label()}-{dead}-zz"]
    stale[0].write_bytes(b"half a map")
    stale[1].mkdir(parents=True)
    (stale[1] / "x.npy").write_bytes(b"half an array")
    live = output / f".notes.txt.tmp-{host_label()}-{os.getpid()}-abcdefgh"
    live.write_text("a live run's file")
    code = main([str(bids_dir), str(output), "participant", "--participant-label", "002",
                 "-w", str(work)])
    assert code == 0
    np.testing.assert_array_equal(np.asarray(nib.load(path).dataobj), before)
    assert not any(p.exists() for p in stale) and live.exists()
    live.unlink()


def test_story_frames_and_nuisance_maps(dataset_copy, tmp_path):
    """--frames story --nuisance wordrate envelope: the atoms TSV marks the story frames
    (every frame listed, n/a atoms elsewhere), the GLM uses used and steady-state volumes
    only, and each subject has word-rate and envelope maps from the synthetic WAV files."""
    from bids_app.cli.run import main
    from bids_app.responses import frame_times_s, story_frames
    from bids_app.stimulus import read_word_timings, story_onset_s
    from bids_app.synthetic import START_TIME_S, T_R_S

    bids_dir, output = dataset_copy, tmp_path / "out"
    assert main([str(bids_dir), str(output), "participant", "-w", str(tmp_path / "work"),
                 "--nprocs", "2", "--n-atoms", "8", "--no-atom-stability", "--frames",
                 "story", "--nuisance", "wordrate", "envelope"]) == 0
    atoms = pd.read_csv(output / "atoms" / "desc-minilm_atoms.tsv", sep="\t")
    for task, frames in atoms.groupby("task"):
        words = read_word_timings(bids_dir / "stimuli" / "gentle" / task / "align.csv")
        onset = story_onset_s(bids_dir / "sub-001" / "func" /
                              f"sub-001_task-{task}_events.tsv", task)
        used = story_frames([onset + words.onsets_s],
                            frame_times_s(len(frames), T_R_S, START_TIME_S))
        np.testing.assert_array_equal(frames["used"].to_numpy(bool), used)
        assert 0 < used.sum() < used.size
        assert frames.loc[~used, "atom01"].isna().all()
        assert frames.loc[used, "atom01"].notna().all()
    design = pd.read_csv(output / "sub-001" / "func" / "sub-001_desc-minilm_design.tsv", sep="\t")
    side = json.loads((output / "sub-001" / "func" /
                       "sub-001_space-MNI152NLin2009cAsym_desc-minilm_stat-t_statmap.json"
                       ).read_text())
    assert side["Frames"] == "story" and side["VolumesUsed"] == len(design) == atoms["used"].sum()
    for record in side["VolumesUsedPerRun"].values():
        assert record["Ranges"][0][0] >= 3         # after the non-steady-state volumes
    assert {"task-lighthouse_wordrate", "task-market_envelope"} <= set(design.columns)
    for name in ("wordrate", "envelope"):
        for stat in ("effect", "t"):
            path = (output / "sub-001" / "func" /
                    f"sub-001_space-MNI152NLin2009cAsym_desc-{name}_stat-{stat}_statmap.nii.gz")
            assert nib.load(path).ndim == 3, path
