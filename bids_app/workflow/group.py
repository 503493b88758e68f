"""Group level: per model, group maps per atom, coupling to networks, AN sub-groups and
organisation metrics; with several models, their metrics side by side. Settings come from
the participant level (``logs/config_participant_*.json``). Everything is read and checked
(pre-flight) before the first write; the outputs appear together at the end
(:func:`bids_app.atomic.deferred_replace`)."""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from bids_app.atomic import deferred_replace, remove_stale_temporaries
from bids_app.bids import derivatives as out
from bids_app.bids import naming
from bids_app.bids.outputs import write_group_outputs, write_members_sidecar, write_run_config
from bids_app.bids.sidecars import model_sidecar, resolution_sidecar
from bids_app.config import Config
from bids_app.report import (
    GroupResult,
    print_coupled_atoms,
    print_coupled_networks,
    print_models_table,
    write_group_report,
)
from bids_app.report.layers import layer_sizes
from bids_app.report.models import ModelSummary, member_layer_counts, write_models_report
from bids_app.workflow.preflight import preflight_group

LOGGER = logging.getLogger("llmfbn")


def run_group(config: Config) -> None:
    """Every model's group analysis; everything is read and checked before the first write."""
    checked = preflight_group(config)
    remove_stale_temporaries(config.output_dir)
    rows = []
    with deferred_replace():
        write_run_config(config)
        several = len(checked.specs) > 1
        summaries = []
        for spec in checked.specs:
            label = spec.label
            summary = _group_model(config, spec, checked.inputs[label], checked.atoms[label],
                                   checked.atlases[label], checked.summaries[label], several)
            summaries.append(summary)
            checked.summaries[label].effects.close()     # its scratch file goes now
            rows.append({"model": spec.name, "label": label,
                         **_metrics_columns(summary.metrics)})
        if several:
            table = pd.DataFrame(rows)
            out.write_tsv(naming.models_metrics(config.output_dir), table)
            print_models_table(table)
            first = checked.specs[0].label
            if config.reports:
                write_models_report(summaries, config.output_dir,
                                    checked.atlases[first].name, checked.inputs[first].subjects)
    if not config.reports:
        LOGGER.info("HTML reports not written (--no-reports)")
    LOGGER.info("Group level done: %s", config.output_dir / naming.GROUP_DIR)


def _metrics_columns(metrics: dict) -> dict:
    """The scalar metrics as ``<section>_<name>`` columns, with ``..._ci_low/_ci_high``."""
    columns = {}
    for section in ("diversity", "consistency", "an_side"):
        values = metrics[section]
        intervals = values.get("ci95") or {}
        for name, value in values.items():
            if isinstance(value, (list, dict)) or name == "reason":
                continue
            columns[f"{section}_{name}"] = value
            if name in intervals:
                low, high = intervals[name] or (None, None)
                columns[f"{section}_{name}_ci_low"] = low
                columns[f"{section}_{name}_ci_high"] = high
    return columns


def _group_sidecar(config: Config, spec, atlas, subjects: list[str], n_atoms: int) -> dict:
    return {**model_sidecar(config, spec), **resolution_sidecar(config), "Subjects": subjects,
            "FBNAtlas": atlas.name, "FBNAtlasSource": atlas.source,
            "Networks": list(atlas.network_names), "FDRq": config.fdr_q,
            "MinIoU": config.min_iou, "CouplingNull": _NULL_TEXT if config.null_surrogates
            else "none: hypergeometric voxel-count test (voxels taken as independent)",
            "NullSurrogates": int(config.null_surrogates),
            "NetworkPrediction": _PREDICTION_TEXT if config.null_surrogates else "none",
            "MembershipThreshold": config.membership_threshold,
            "MembershipRule": MEMBERSHIP_RULE, "Atoms": naming.atom_names(n_atoms)}


_NULL_TEXT = ("phase-randomised surrogate atoms on each network's mean signal; two statistics, "
              "the group mean of each atom's standardised effect on it (effect / unit-noise "
              "standard error) alone with the confounds and given the other atoms (a "
              "surrogate in place of its own atom), each referred to the surrogates' "
              "distribution (Student t, n_surrogates - 1 df) and combined by Bonferroni "
              "(p_null = min(1, 2 min(p_alone, p_given))); Bonferroni over atoms x networks "
              "x signs; an atom goes to the passing network of smallest p with IoU >= MinIoU")
_PREDICTION_TEXT = ("a network is also coupled, and gets a sub-group, when all atoms together "
                    "predict its mean signal out of sample better than surrogate blocks do: "
                    "per subject a ridge (1, regressors at unit norm) on the first half of "
                    "each run's volumes predicts the second and vice versa (Pearson r, "
                    "confounds projected out); the group mean of the atoms' Fisher z "
                    "(arctanh r) against those of multivariate phase-randomised blocks "
                    "(Student t, n_blocks - 1 df, "
                    "one-sided), Bonferroni over networks at 0.025 (half of 0.05: either route "
                    "couples a network) (networkprediction.tsv)")
MEMBERSHIP_RULE = ("an AN is a member of a coupled network's sub-group when the Pearson "
                   "correlation, over the frames the atoms were learned on, between its "
                   "response and the network's composite is at least MembershipThreshold; the "
                   "composite is the network's mean signal as all atoms describe it together: "
                   "the atoms weighted by their joint effects on it (exact from each subject's "
                   "separate effects and design matrix; a ridge whose matrix is the inverse "
                   "second moment of the ANs' own coordinates in the atoms' span (the AN "
                   "prior), its size chosen per network by leave-one-subject-out prediction "
                   "with the one-standard-error rule and a 1 % margin (the largest ridge "
                   "within one standard error of the best or explaining at most 1 % less "
                   "of the network's signal), column 'ridge' of networksubgroups.tsv), "
                   "averaged over subjects; with FIR delays (--hrf huth) the AN's best delay")


def _coupling(config: Config, atlas, summaries):
    """Group t map, FDR mask, coupling table (with the surrogate null's columns when fitted)
    and assignments, from the streamed subjects' summaries."""
    from bids_app import group  # scipy.stats: imported when used

    return group.group_coupling(
        summaries.effects, atlas, q=config.fdr_q, min_iou=config.min_iou,
        network_means=summaries.null_atom_means,
        null_network_means=summaries.null_network_means)


def _network_prediction(inputs, atlas) -> pd.DataFrame | None:
    """The network-level coupling test (:func:`bids_app.group.prediction_table`) from the
    participant level's network-prediction tables, or None without them."""
    from bids_app import group
    from bids_app.group.streaming import prediction_arrays

    atom_r, null_r = prediction_arrays(inputs, atlas)
    if atom_r is None:
        return None
    table = group.prediction_table(atom_r, null_r, atlas.network_names)
    passed = table[table["coupled"]]
    LOGGER.info("Network-prediction test (all atoms together, split-half r against %d "
                "surrogate blocks, Bonferroni over %d networks, p_fwe < %g): %s",
                null_r.shape[1], len(table), group.PREDICTION_ALPHA,
                ", ".join(f"{n} (r {r:.2f}, p_fwe {p:.2g})" for n, r, p in zip(
                    passed["network"], passed["r"], passed["p_fwe"])) or "no network")
    return table


def _subgroups(config: Config, inputs, atoms, atlas, assignments, subj_assign, summaries,
               predicted=()):
    """The AN sub-groups and the brain- and AN-side organisation metrics, with their
    bootstrap intervals over subjects, from the streamed subjects' ``summaries``: the
    maps' network means weight the composites; the coupling-null tables' standardised
    effects test the coupling in each resample as in the point estimate."""
    from bids_app import group
    from bids_app.encoding.design import residual_atom_gram

    means, null_means = summaries.network_means, summaries.null_network_means
    # the composites' weights: each subject's joint effects of all atoms on each network's
    # signal, exact from its separate effects and its design, with the AN prior as the
    # ridge's matrix and the ridge chosen per network by leave-one-subject-out prediction
    # (one-standard-error rule with a 1 % margin; bids_app.group.subgroups)
    courses = np.asarray(atoms.courses, dtype=np.float64)
    grams = np.stack([residual_atom_gram(d, len(courses)) for d in inputs.designs])
    separate = (group.separate_network_effects(means, grams) if config.glm == "joint"
                else means)          # --glm joint maps hold joint effects: back to separate
    penalty = group.an_prior_penalty(courses, atoms.projections)
    ridge = group.choose_ridge(separate, grams, penalty)
    names = list(atlas.network_names)
    joint = group.joint_network_effects(separate, grams, penalty, ridge)
    groups = group.SubGroups(atoms.projections, atoms.courses, atoms.neurons, assignments,
                             joint.mean(axis=0), atlas.network_names,
                             config.membership_threshold, extra_networks=predicted)
    groups.networks.insert(3, "ridge", [float(ridge[names.index(n)])
                                        for n in groups.networks["network"]])
    metrics = group.organisation_metrics(assignments, subj_assign, atlas.network_names,
                                         seed=config.seed)
    started = time.monotonic()
    metrics["diversity"]["ci95"] = group.bootstrap_diversity(
        summaries.effects, atlas, q=config.fdr_q, min_iou=config.min_iou,
        network_means=summaries.null_atom_means, null_network_means=null_means,
        seed=config.seed, n_workers=config.nprocs,
        block_bytes=group_block_bytes(config.mem_gb))
    LOGGER.info("Bootstrap intervals of the coverage and entropy (%d resamples of the "
                "subjects, the group t, FDR and coupling redone on each; %d process(es)): "
                "%.1f s", group.N_BOOTSTRAP, config.nprocs, time.monotonic() - started)
    an_side = group.an_metrics(atoms.projections, atoms.courses,
                               groups.scores[list(groups.weights)], groups.sets,
                               groups.neuron_of_row)
    an_side["ci95"] = group.bootstrap_an_metrics(
        atoms.projections, atoms.courses, atoms.neurons, assignments, joint,
        atlas.network_names, config.membership_threshold, seed=config.seed,
        extra_networks=predicted)
    metrics["an_side"] = an_side
    return groups, metrics


def group_block_bytes(mem_gb: float) -> int:
    """The bootstrap's block of atoms: a quarter of --mem-gb, at most 256 MiB (larger blocks
    gain nothing)."""
    return int(min(mem_gb * 2 ** 30 / 4, 256 * 2 ** 20))


def _group_model(config: Config, spec, inputs, atoms, atlas, summaries,
                 several: bool) -> ModelSummary:

    LOGGER.info("Group level (%s): %d subjects, %d atoms, atlas %s (%d networks)",
                spec.label, len(inputs.subjects), inputs.n_atoms, atlas.name,
                len(atlas.network_names))
    t_map, significant, coupling, assignments = _coupling(config, atlas, summaries)
    prediction = _network_prediction(inputs, atlas)
    predicted = ([] if prediction is None
                 else prediction.loc[prediction["coupled"], "network"].tolist())
    subj_assign = summaries.subject_assign
    groups, metrics = _subgroups(config, inputs, atoms, atlas, assignments, subj_assign,
                                 summaries, predicted)

    maps = {"t": (t_map, "One-sample t across subjects of each atom's effect map"),
            "tfdr": (np.where(significant, t_map, 0.0),
                     f"Group t map of each atom thresholded at FDR q < {config.fdr_q} "
                     "(two-sided)")}
    tables = {"coupling": coupling, "assignments": assignments, "subgroups": groups.atoms,
              "networksubgroups": groups.networks, "subjectassignments": subj_assign,
              "overlap": groups.overlap.reset_index(names="network"),
              "members": groups.members, "scores": groups.scores}
    if prediction is not None:
        tables["networkprediction"] = prediction
    else:          # a former run's, now stale
        naming.group_file(config.output_dir, spec.label, "networkprediction",
                          ".tsv").unlink(missing_ok=True)
    sidecar = _group_sidecar(config, spec, atlas, inputs.subjects, t_map.shape[0])
    write_group_outputs(config.output_dir, config.space_entities, spec.label, maps, tables,
                        metrics, inputs, sidecar)
    write_members_sidecar(config.output_dir, spec.label, sidecar)
    report = None if not config.reports else write_group_report(GroupResult(
        config=config, spec=spec, atlas=atlas, inputs=inputs, atoms=atoms, t_map=t_map,
        significant=significant, coupling=coupling, assignments=assignments,
        atom_groups=groups.atoms, metrics=metrics, networks=groups.networks,
        prediction=prediction,
        models_report=(naming.models_report(config.output_dir)
                       if several else None)))
    print_coupled_atoms(assignments, groups.atoms, spec.label)
    print_coupled_networks(groups.networks, spec.label)
    sizes = layer_sizes(atoms.neurons)
    return ModelSummary(
        name=spec.name, label=spec.label, metrics=metrics,
        coupled=assignments[assignments["network"] != naming.NO_NETWORK],
        networks=groups.networks, member_counts=member_layer_counts(groups.members, sizes.size),
        layer_sizes=sizes, report=report)
