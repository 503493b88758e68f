"""The group report of one model: ``group/desc-<model>_report.html``."""

from __future__ import annotations

import html
import logging
from pathlib import Path

import pandas as pd

from bids_app.bids import derivatives as out
from bids_app.bids import naming
from bids_app.report.figures import (
    convergence_figure,
    coupled_atom_figure,
    coupling_figure,
    stability_figure,
)
from bids_app.report.html import methods, page, table
from bids_app.report.methods import citation_text

LOGGER = logging.getLogger("llmfbn")
MAX_BRAINS = 12


def _metrics_table(metrics: dict) -> str:
    return table(pd.DataFrame([{k: v for k, v in metrics.get(section, {}).items()
                                if not isinstance(v, (list, dict))}
                               for section in ("diversity", "consistency")],
                              index=["diversity", "consistency"]).reset_index(names="metric"))


def _atoms_sections(result) -> list[str]:
    """Stability and convergence of the dictionary, when recorded."""
    parts = []
    data = result.atoms.stability
    if data is not None:
        parts += ["<h2>Atom stability</h2>",
                  f"<p>Median matched |r|: {data['median_seed_vs_seed']:.3f} between seeds, "
                  f"{data['median_half_vs_half']:.3f} between split halves of the ANs. Atoms "
                  "with low values are not reproducible: interpret them with care.</p>",
                  stability_figure(data)]
    history = result.atoms.convergence_log
    if any(h.get("phase") == "batch" for h in history):
        parts.append(convergence_figure(history))
    return parts


def _files_section(result) -> list[str]:
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
    return ["<h2>Stimulus-level files</h2>", "<ul>" + "".join(items) + "</ul>"]


def write_group_report(result) -> Path:
    """Coupling matrix, atom maps, tables and methods of a :class:`GroupResult`."""
    config, spec, atlas = result.config, result.spec, result.atlas
    assignments = result.assignments
    coupled = assignments[assignments["network"] != naming.NO_NETWORK]
    parts = [
        f"<h1>llmfbn group report: model {html.escape(spec.name)}</h1>",
        f"<p>{len(result.inputs.subjects)} subjects; atlas {html.escape(atlas.name)}; "
        f"{len(coupled)} of {len(assignments)} atoms coupled to a network.</p>",
        "<h2>Organisation metrics</h2>", _metrics_table(result.metrics),
        "<h2>Atoms coupled to networks</h2>",
        table(coupled.assign(atom=[naming.atom_name(a - 1, result.n_atoms)
                                   for a in coupled["atom"]])),
        "<h2>Coupling matrix</h2>",
        coupling_figure(result.coupling, result.n_atoms, atlas.network_names),
        "<h2>Coupled atoms: group maps, time courses, AN sub-groups</h2>",
        *[coupled_atom_figure(result, row) for row in coupled.head(MAX_BRAINS).itertuples()],
        *_atoms_sections(result),
        *_files_section(result),
        *methods(citation_text(config, spec, atlas.name)),
    ]
    path = naming.group_file(config.output_dir, spec.label, "report", ".html")
    out.write_text(path, page("llmfbn group", parts))
    out.write_text(naming.citation_file(config.output_dir),
                   citation_text(config, spec, atlas.name))
    LOGGER.info("Group report: %s", path)
    return path
