"""Group level: per model, group maps per atom, coupling to networks, AN sub-groups and
organisation metrics; with several models, their metrics side by side. Settings come from
the participant level (``logs/config_participant_*.json``). Everything is read and checked
(pre-flight) before the first write; the outputs appear together at the end
(:func:`bids_app.atomic.deferred_replace`)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from bids_app.atomic import deferred_replace, remove_stale_temporaries
from bids_app.bids import derivatives as out
from bids_app.bids import naming
from bids_app.bids.outputs import write_group_outputs, write_run_config
from bids_app.bids.sidecars import model_sidecar, resolution_sidecar
from bids_app.config import Config
from bids_app.report import GroupResult, print_coupled_atoms, print_models_table, write_group_report
from bids_app.workflow.preflight import preflight_group

LOGGER = logging.getLogger("llmfbn")


def run_group(config: Config) -> None:
    """Every model's group analysis; everything is read and checked before the first write."""
    checked = preflight_group(config)
    remove_stale_temporaries(config.output_dir)
    rows = []
    with deferred_replace():
        write_run_config(config)
        for spec in checked.specs:
            label = spec.label
            metrics = _group_model(config, spec, checked.inputs[label], checked.atoms[label],
                                   checked.atlases[label])
            rows.append({"model": spec.name, "label": label,
                         **{f"{section}_{k}": v for section in ("diversity", "consistency")
                            for k, v in metrics[section].items()
                            if not isinstance(v, (list, dict))}})
        if len(checked.specs) > 1:
            table = pd.DataFrame(rows)
            out.write_tsv(naming.models_metrics(config.output_dir), table)
            print_models_table(table)
    LOGGER.info("Group level done: %s", config.output_dir / naming.GROUP_DIR)


def _group_sidecar(config: Config, spec, atlas, subjects: list[str], n_atoms: int) -> dict:
    return {**model_sidecar(config, spec), **resolution_sidecar(config), "Subjects": subjects,
            "FBNAtlas": atlas.name, "FBNAtlasSource": atlas.source,
            "Networks": list(atlas.network_names), "FDRq": config.fdr_q,
            "MinIoU": config.min_iou, "Atoms": naming.atom_names(n_atoms)}


def _group_model(config: Config, spec, inputs, atoms, atlas) -> dict:
    from bids_app import group  # scipy.stats: imported when used

    LOGGER.info("Group level (%s): %d subjects, %d atoms, atlas %s (%d networks)",
                spec.label, len(inputs.subjects), inputs.effects.shape[1], atlas.name,
                len(atlas.network_names))
    t_map, p_map = group.one_sample_t(inputs.effects)
    significant = group.fdr_mask(p_map, q=config.fdr_q)
    coupling = group.coupling_table(t_map, significant, atlas)
    assignments = group.assign_atoms(coupling, n_atoms=t_map.shape[0], min_iou=config.min_iou)
    subj_assign = group.subject_assignments(inputs.subject_t, inputs.dof, atlas, q=config.fdr_q,
                                            min_iou=config.min_iou)
    subj_assign["subject"] = [inputs.subjects[i] for i in subj_assign["subject"]]
    atom_groups, network_groups, overlap = group.subgroups(
        atoms.codes, atoms.neurons["layer"].to_numpy(), assignments)
    metrics = group.organisation_metrics(assignments, subj_assign, atlas.network_names)

    maps = {"t": (t_map, "One-sample t across subjects of each atom's effect map"),
            "tfdr": (np.where(significant, t_map, 0.0),
                     f"Group t map of each atom thresholded at FDR q < {config.fdr_q} "
                     "(two-sided)")}
    tables = {"coupling": coupling, "assignments": assignments, "subgroups": atom_groups,
              "networksubgroups": network_groups, "subjectassignments": subj_assign,
              "overlap": overlap.reset_index(names="network")}
    write_group_outputs(config.output_dir, config.space_entities, spec.label, maps, tables,
                        metrics, inputs,
                        _group_sidecar(config, spec, atlas, inputs.subjects, t_map.shape[0]))
    write_group_report(GroupResult(
        config=config, spec=spec, atlas=atlas, inputs=inputs, atoms=atoms, t_map=t_map,
        significant=significant, coupling=coupling, assignments=assignments,
        atom_groups=atom_groups, metrics=metrics))
    print_coupled_atoms(assignments, atom_groups, spec.label)
    return metrics
