"""The models side by side (the paper's model ladder): ``group/desc-models_report.html``.

Written by the group level when it analyses several ``--model`` in one run, and linked from
each model's own report. For each model: the atoms coupled to networks, the size of each
network's AN sub-group, the brain- and AN-side organisation metrics with their 95 %
bootstrap intervals, and where the sub-groups lie in the model (layer profiles on relative
depth, overlaid).
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bids_app.bids import derivatives as out
from bids_app.bids import naming
from bids_app.report.figures import png, pyplot
from bids_app.report.html import note, page, section, summary_list, table
from bids_app.report.layers import profiles_figure
from bids_app.report.tables import interval_text

LOGGER = logging.getLogger("llmfbn")

#: The metrics compared across models: (section, name, axis label).
COMPARED_METRICS = (
    ("diversity", "n_coupled_atoms", "coupled atoms"),
    ("diversity", "normalised_entropy", "normalised entropy over networks"),
    ("consistency", "mean_consistency", "mean consistency across subjects"),
    ("an_side", "an_diversity", "AN-side diversity (participation ratio)"),
    ("an_side", "an_specialisation", "AN specialisation"),
    ("an_side", "an_overlap", "sub-group overlap (Jaccard)"),
)


@dataclass
class ModelSummary:
    """What the comparison shows of one model's group results.

    Attributes
    ----------
    name, label : str
        The model as given to ``--model`` and its file label.
    metrics : dict
        The group level's metrics (``desc-<label>_metrics.json``).
    coupled : pandas.DataFrame
        The assignments of the coupled atoms (``atom``, ``network``, ``sign``, ...).
    networks : pandas.DataFrame
        One row per coupled network: ``network``, ``n_atoms``, ``n_neurons`` (its AN
        sub-group) and ``layerNN`` counts.
    member_counts : numpy.ndarray of shape (n_layers,)
        ANs of each layer in at least one network's sub-group.
    layer_sizes : numpy.ndarray of shape (n_layers,)
        ANs of each layer.
    report : pathlib.Path
        The model's own group report.
    """

    name: str
    label: str
    metrics: dict
    coupled: pd.DataFrame
    networks: pd.DataFrame
    member_counts: np.ndarray
    layer_sizes: np.ndarray
    report: Path

    @property
    def n_neurons(self) -> int:
        return int(np.sum(self.layer_sizes))

    def metric(self, section: str, name: str):
        """(value, [low, high] or None); value None when missing."""
        values = self.metrics.get(section, {})
        value = values.get(name)
        if isinstance(value, float) and not np.isfinite(value):
            value = None
        return value, (values.get("ci95") or {}).get(name)


def member_layer_counts(members: pd.DataFrame, n_layers: int) -> np.ndarray:
    """(n_layers,) distinct ANs (``neuron``) of the members table per layer."""
    unique = members.drop_duplicates("neuron")
    return np.bincount(unique["layer"].to_numpy(np.int64), minlength=n_layers)[:n_layers]


def _networks_coupled(model: ModelSummary) -> str:
    """The model's coupled networks (those with a sub-group: by an atom or by the
    network-prediction test, marked "(prediction)" when no atom is assigned to it),
    sorted."""
    networks = model.networks
    routes = dict(zip(networks.get("network", []),
                      networks.get("coupled_by", ["atoms"] * len(networks))))
    return ", ".join(n + (" (prediction)" if routes[n] == "prediction" else "")
                     for n in sorted(routes)) or "(none)"


def overview_table(models: list[ModelSummary]) -> pd.DataFrame:
    """One row per model: its size, coupled atoms and networks, sub-group sizes."""
    rows = []
    for m in models:
        sizes = m.networks.set_index("network")["n_neurons"] if len(m.networks) else {}
        rows.append({
            "model": m.name, "layers": len(m.layer_sizes), "ANs": m.n_neurons,
            "coupled atoms": len(m.coupled),
            "networks coupled": _networks_coupled(m),
            "AN sub-group per network": "; ".join(
                f"{n} {int(s):,} ({100 * s / max(m.n_neurons, 1):.1f} %)"
                for n, s in dict(sizes).items()) or "(none)",
        })
    return pd.DataFrame(rows)


def metrics_side_by_side(models: list[ModelSummary]) -> pd.DataFrame:
    """One row per compared metric, one column per model: ``value (low – high)``; a missing
    value says so."""
    rows = []
    for section_name, name, label in COMPARED_METRICS:
        row = {"metric": label}
        for m in models:
            value, interval = m.metric(section_name, name)
            if value is None:
                row[m.name] = "missing (see the model's report)"
                continue
            shown = f"{value:.3g}" if isinstance(value, float) else str(value)
            ci = interval_text(interval)
            row[m.name] = shown + (f" ({ci})" if ci else "")
        rows.append(row)
    return pd.DataFrame(rows)


def metrics_figure(models: list[ModelSummary]) -> str:
    """One panel per compared metric: each model's value with its 95 % interval."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(10.5, 5.6), layout="constrained")
    x = np.arange(len(models))
    for ax, (section_name, name, label) in zip(axes.ravel(), COMPARED_METRICS):
        for i, m in enumerate(models):
            value, interval = m.metric(section_name, name)
            if value is None:
                ax.text(i, 0.5, "missing", ha="center", va="center", fontsize=7, color="0.4",
                        transform=ax.get_xaxis_transform())
                continue
            if interval and interval_text(interval):
                # a percentile interval need not contain the point (e.g. a count that
                # most resamples change): drawn as a capped line, not as error bars
                ax.plot([i, i], interval, "-", color="C0", lw=1.2)
                ax.plot([i, i], interval, "_", color="C0", ms=7)
            ax.plot(i, value, "o", color="C0", ms=4)
        ax.set_xticks(x, [m.name.split("/")[-1] for m in models], rotation=20, fontsize=7,
                      ha="right")
        ax.set_xlim(-0.6, len(models) - 0.4)
        ax.set_ylim(bottom=0, top=max(ax.get_ylim()[1], 1e-9) * 1.1)   # every metric is >= 0
        ax.set_title(label, fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
    return png(fig, "Organisation metrics of each model with their 95 % bootstrap intervals "
                    "(over subjects; points without bars have no interval)")


def subgroup_figure(models: list[ModelSummary]) -> str:
    """Each coupled network's AN sub-group as a percent of the model's ANs, per model."""
    plt = pyplot()
    networks = sorted({n for m in models for n in m.networks.get("network", [])})
    fig, ax = plt.subplots(figsize=(max(5.0, 1.0 + 0.6 * len(networks) * len(models)), 2.8))
    width = 0.8 / max(len(models), 1)
    for i, m in enumerate(models):
        sizes = dict(zip(m.networks.get("network", []), m.networks.get("n_neurons", [])))
        share = [100 * sizes.get(n, 0) / max(m.n_neurons, 1) for n in networks]
        ax.bar(np.arange(len(networks)) + (i - (len(models) - 1) / 2) * width, share, width,
               label=m.name)
    ax.set_xticks(range(len(networks)), networks or [], fontsize=8)
    ax.set_ylabel("sub-group, % of the model's ANs", fontsize=8)
    ax.set_xlabel("coupled network", fontsize=8)
    ax.legend(fontsize=7, frameon=False)
    ax.tick_params(labelsize=7)
    return png(fig, "Size of each coupled network's AN sub-group, as a percent of the model's "
                    "ANs, per model")


def write_models_report(models: list[ModelSummary], output_dir: Path, atlas_name: str,
                        subjects: list[str]) -> Path:
    """``group/desc-models_report.html``: the models of one group run side by side."""
    links = "".join(f"<li><a href='{html.escape(m.report.name)}'>{html.escape(m.name)}</a>"
                    "</li>" for m in models)
    parts = [
        "<h1>llmfbn group report: models side by side</h1>",
        summary_list({"Models": ", ".join(m.name for m in models),
                      "Subjects": f"{len(subjects)} ({', '.join(subjects)})",
                      "Atlas": atlas_name}),
        section("Each model's report", f"<ul>{links}</ul>"),
        section("Coupled atoms and AN sub-groups",
                note("A network's AN sub-group: the ANs whose response correlates with the "
                     "network's composite of coupled atoms at least at the membership "
                     "threshold (Methods of each model's report); percent of the model's "
                     "ANs in brackets."),
                table(overview_table(models)), subgroup_figure(models)),
        section("Organisation metrics",
                note("Value (95 % bootstrap interval over subjects, where the metric has "
                     "one). Definitions: each model's report and docs/metrics.md."),
                table(metrics_side_by_side(models)), metrics_figure(models)),
        section("Where the sub-groups lie",
                note("ANs in any network's sub-group as a share of each layer's ANs, on "
                     "relative depth (0 = first layer, 1 = last), so that models with "
                     "different numbers of layers can be compared."),
                profiles_figure({m.name: (m.member_counts, m.layer_sizes) for m in models},
                                "AN sub-groups by relative depth")),
    ]
    path = naming.models_report(output_dir)
    out.write_text(path, page("llmfbn models", parts))
    LOGGER.info("Models report: %s", path)
    return path
