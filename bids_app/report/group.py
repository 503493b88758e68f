"""The group report of one model: ``group/desc-<model>_report.html``."""

from __future__ import annotations

import html
import logging
from pathlib import Path

from bids_app.bids import derivatives as out
from bids_app.bids import naming
from bids_app.parallel import forked_map
from bids_app.report.coupled import coupled_atom_section, coupled_overview
from bids_app.report.dictionary import (
    convergence_figure,
    coupling_figure,
    coupling_test_name,
    stability_figure,
)
from bids_app.report.html import methods, note, page, section, summary_list, table
from bids_app.report.methods import citation_text
from bids_app.report.tables import metrics_table

LOGGER = logging.getLogger("llmfbn")

#: Coupled atoms whose section is open when the page loads (the others are one click away).
OPEN_ATOMS = 1


def _summary(result, coupled) -> str:
    atlas = result.atlas
    return summary_list({
        "Language model": result.spec.name,
        "Subjects": f"{len(result.inputs.subjects)} ({', '.join(result.inputs.subjects)})",
        "Atlas": f"{atlas.name}, {atlas.n_networks} networks",
        "Group maps": f"one-sample t across subjects (df = {result.dof}), FDR q < "
                      f"{result.config.fdr_q} two-sided",
        "Coupled atoms": f"{len(coupled)} of {result.n_atoms} assigned to a network "
                         "(criteria in Methods)",
    })


def _models_link(result) -> list[str]:
    """A link to the comparison of the run's models, when it analysed several."""
    if result.models_report is None:
        return []
    name = html.escape(Path(result.models_report).name)
    return [f"<p class='note'>This group run analysed several models: see them "
            f"<a href='{name}'>side by side</a>.</p>"]


def _coupled_section(result, coupled) -> str:
    if coupled.empty:
        return section("Coupled atoms", note("No atom is coupled to a network.", "warn"))
    return section(
        "Coupled atoms",
        note(f"All {len(coupled)} coupled atoms; click an atom to show its group map, "
             "clusters, time course and stability."),
        table(coupled_overview(result, coupled), scroll=len(coupled) > 12),
        *atom_sections(result, coupled, n_procs=getattr(result.config, "nprocs", 1)))


def atom_sections(result, coupled, n_procs: int = 1) -> list[str]:
    """The section of every coupled atom, in order; with ``n_procs`` > 1 (``--nprocs``) the
    sections (figures and cluster tables, seconds each) are rendered by that many forked
    worker processes (:func:`bids_app.parallel.forked_map`), giving the same HTML as one
    process."""
    rows = list(enumerate(coupled.itertuples()))
    return list(forked_map(
        lambda item: coupled_atom_section(result, item[1], open_=item[0] < OPEN_ATOMS),
        rows, n_procs))


def network_overview(networks, prediction):
    """One row per network of the atlas: how it is coupled (an assigned atom, the
    network-prediction test, both, or not), its sub-group's size, and the prediction
    test's numbers when the run has them."""
    import pandas as pd

    rows = networks.set_index("network") if networks is not None else pd.DataFrame()
    names = (list(prediction["network"]) if prediction is not None
             else list(rows.index))
    frame = pd.DataFrame({"network": names})
    frame["coupled by"] = [rows.at[n, "coupled_by"] if n in rows.index else "not coupled"
                           for n in names]
    frame["assigned atoms"] = [int(rows.at[n, "n_atoms"]) if n in rows.index else 0
                               for n in names]
    frame["AN sub-group"] = [int(rows.at[n, "n_neurons"]) if n in rows.index else None
                             for n in names]
    if prediction is not None:
        frame["split-half r (atoms)"] = prediction["r"].to_numpy()
        frame["r of surrogate blocks (mean ± sd)"] = [
            f"{m:.3f} ± {s:.3f}" for m, s in zip(prediction["r_null_mean"],
                                                   prediction["r_null_sd"])]
        frame["Fisher z: atoms / blocks (mean ± sd)"] = [
            f"{a:.2f} / {m:.2f} ± {s:.2f}" for a, m, s in zip(
                prediction["fisher_z"], prediction["fisher_z_null_mean"],
                prediction["fisher_z_null_sd"])]
        frame["p_fwe"] = prediction["p_fwe"].to_numpy()
    return frame


def _networks_section(result) -> str:
    if result.networks is None and result.prediction is None:
        return ""
    text = ("Each network with an AN sub-group is coupled by an assigned atom (its test "
            "above), by the network-prediction test, or both. The network-prediction test "
            "asks whether all atoms together predict the network's mean signal out of "
            "sample (a ridge fitted on the first half of each run's volumes predicts the "
            "second, and vice versa; Pearson r, averaged over subjects as Fisher z, "
            "arctanh r) better than blocks "
            "of surrogate atoms with the same spectra and correlations (Bonferroni over "
            "networks, p_fwe < 0.025, half of 0.05 since either route couples a network). "
            "It catches a network whose signal several collinear "
            "atoms share, so that no atom passes alone.")
    if result.prediction is None:
        text = ("Each network with an AN sub-group has an assigned atom. The "
                "network-prediction test did not run (no coupling null, or participant "
                "outputs from before it).")
    return section("Networks", note(text),
                   table(network_overview(result.networks, result.prediction),
                         scroll=result.atlas.n_networks > 14))


def _dictionary_section(result, coupled) -> str:
    """Stability and convergence of the dictionary, when recorded."""
    parts = []
    data = result.atoms.stability
    if data is not None:
        parts += [note(f"Median matched |r|: {data['median_seed_vs_seed']:.3f} between seeds, "
                       f"{data['median_half_vs_half']:.3f} between split halves of the ANs. "
                       "Atoms with low values are not reproducible: interpret them with "
                       "care."),
                  stability_figure(data, coupled["atom"].astype(int))]
    else:
        parts.append(note("Atom stability was not computed for this dictionary."))
    history = result.atoms.convergence_log
    if any(h.get("phase") == "batch" for h in history):
        parts.append(convergence_figure(history))
    return section("Dictionary", *parts)


def _files_section(result) -> str:
    label = result.spec.label
    items = []
    for suffix, ext, what in (("atoms", ".tsv", "atom time courses (+ .json sidecar)"),
                              ("codes", ".npz", "sparse codes, neurons x atoms (scipy.sparse)"),
                              ("neurons", ".tsv", "code row -> layer, unit"),
                              ("stability", ".json", "matched atom correlations")):
        path = naming.atoms_file(result.config.output_dir, label, suffix, ext)
        if suffix != "stability" or result.atoms.stability is not None:
            items.append(f"<li><a href='../{naming.ATOMS_DIR}/{path.name}'>"
                         f"{naming.ATOMS_DIR}/{path.name}</a>: {what}</li>")
    return section("Stimulus-level files", "<ul>" + "".join(items) + "</ul>")


def write_group_report(result) -> Path:
    """Metrics, every coupled atom, coupling matrix, dictionary and methods of a
    :class:`GroupResult`."""
    config, spec, atlas = result.config, result.spec, result.atlas
    coupled = result.assignments[result.assignments["network"] != naming.NO_NETWORK]
    parts = [
        f"<h1>llmfbn group report: model {html.escape(spec.name)}</h1>",
        _summary(result, coupled),
        *_models_link(result),
        section("Organisation metrics", table(metrics_table(result.metrics))),
        _coupled_section(result, coupled),
        _networks_section(result),
        section("Coupling matrix",
                note("Best IoU of each atom's thresholded group map (either sign) with each "
                     "network; dots: pairs whose coupling test passes ("
                     f"{coupling_test_name(result.coupling)}, Bonferroni over atoms × "
                     f"networks × signs, p < 0.05) with IoU ≥ {config.min_iou:g}; red boxes: "
                     "the network each atom is assigned to (the passing pair of highest "
                     "IoU)."),
                coupling_figure(result.coupling, result.n_atoms, atlas.network_names,
                                atlas.name, coupled, min_iou=config.min_iou)),
        _dictionary_section(result, coupled),
        _files_section(result),
        *methods(citation_text(config, spec, atlas.name)),
    ]
    path = naming.group_file(config.output_dir, spec.label, "report", ".html")
    out.write_text(path, page("llmfbn group", parts))
    out.write_text(naming.citation_file(config.output_dir),
                   citation_text(config, spec, atlas.name))
    LOGGER.info("Group report: %s", path)
    return path
