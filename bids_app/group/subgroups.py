"""AN sub-groups: the artificial neurons whose own response a network's atoms carry.

The rule **(ours)**, one parameter ``threshold`` (default 0.6):

1. A coupled network's **composite** ``c_n = sum_k w_kn d_k`` is the network's signal as
   the atoms describe it together: ``w_n`` are the atoms' **joint** effects on the network's
   mean signal (all atoms in one model with the confounds and nuisance regressors), averaged
   over subjects. They are exact from what the participant level wrote: each subject's
   separate-model effects averaged over the network's voxels ``b_s`` and the Gram matrix of
   its atoms after its confounds are projected out ``G~_s`` (from its design matrix):
   ``w_s = (G~_s + lambda Omega)^-1 (diag(G~_s) * b_s)``. The atoms are strongly collinear
   and the confounds remove most of some (slow drifts), so the plain joint fit
   (``lambda = 0``) lets noise into directions the data hardly constrain. The ridge's
   matrix ``Omega`` is the **AN prior** (:func:`an_prior_penalty`): the inverse second
   moment of the ANs' own coordinates in the atoms' span, so that the composite is filled
   in, where the confounds hide it, as the ANs' responses are. ``lambda`` is chosen per
   network by leave-one-subject-out prediction of each left-out subject's network signal
   from the others' ``w``, with the **one-standard-error rule** and a 1 % margin
   (:func:`choose_ridge`: the prediction error cannot see the directions the confounds
   nearly span, so among the ridges it cannot tell apart from the best, or that explain
   at most 1 % less of the network's signal, the one leaning most on the prior).
   Separate-model effects ("marginal" weights) are not used: with collinear atoms they mix
   the networks' signals (measured in ``docs/metrics.md``).
2. An AN's **score** for network ``n`` is the Pearson correlation, over the frames the atoms
   were learned on, between the AN's response ``x_i`` and the composite:
   ``r_in = x_i . c_n / ||c_n - mean(c_n)||``. The responses are z-scored within each run
   and have unit norm, so this is exact, and it needs only the projections
   ``P = X D^T`` (n_rows, n_atoms) written by the atoms stage: ``x_i . c_n = P_i w_n``.
3. The AN is a **member** of network ``n``'s sub-group when ``r_in >= threshold``. With
   ``--hrf huth`` an AN has one response per FIR delay; its score is the largest.

Only coupled networks get a composite and a sub-group: those with an assigned atom, and
those the atoms predict as a whole (the network-prediction test,
:func:`bids_app.group.null.prediction_table`, ``extra_networks`` below), which catches a
network whose signal several collinear atoms share so that none passes alone.
An atom's own sub-group uses the same rule with the atom alone as composite (signed as
assigned). "Any non-zero code on the network's atoms" is not used: with ~14 non-zero codes per
AN it selects most of the model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bids_app.bids.naming import NO_NETWORK

#: Smallest correlation between an AN's response and a network's composite for membership.
MEMBERSHIP_THRESHOLD = 0.6


def network_effects(effects: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(n_subjects, n_atoms, n_networks) mean effect of each atom over each network's voxels.

    ``effects`` (n_subjects, n_atoms, n_voxels); ``masks`` (n_networks, n_voxels) bool.
    """
    masks = np.asarray(masks, dtype=np.float64)
    sizes = np.maximum(masks.sum(axis=1), 1.0)
    effects = np.asarray(effects)
    flat = effects.reshape(-1, effects.shape[-1])
    out = np.empty((flat.shape[0], masks.shape[0]))
    # float64 sums, a few maps at a time (no float64 copy of every map at once)
    step = max(1, 2_000_000 // max(flat.shape[1], 1))
    for first in range(0, flat.shape[0], step):
        out[first:first + step] = flat[first:first + step].astype(np.float64) @ masks.T
    return (out / sizes).reshape(effects.shape[:-1] + (masks.shape[0],))


#: Ridge values tried for the joint composite weights, in units of the atoms' energy.
RIDGE_GRID = (0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)

#: Fraction of a network's signal explained in held-out subjects that the ridge may give up
#: to lean more on the AN prior (:func:`choose_ridge`).
RIDGE_MARGIN = 0.01


def joint_network_effects(subject_effects: np.ndarray, grams: np.ndarray, penalty: np.ndarray,
                          ridge) -> np.ndarray:
    """(n_subjects, n_atoms, n_networks) each subject's joint effects of the atoms on each
    network's mean signal, from its separate-model effects.

    ``subject_effects`` (n_subjects, n_atoms, n_networks) separate-model effects averaged
    over each network's voxels (:func:`network_effects`); ``grams`` (n_subjects, n_atoms,
    n_atoms) each subject's residualised atom Gram matrix
    (:func:`bids_app.encoding.design.residual_atom_gram`); ``penalty`` the ridge's
    matrix (``D D^T`` for a plain ridge, :func:`an_prior_penalty` for the pipeline's);
    ``ridge`` a scalar or one value per network. With ``ridge`` 0 this is exactly the
    joint OLS (``--glm joint``) of the network's mean signal.
    """
    subject_effects = np.asarray(subject_effects, dtype=np.float64)
    n_subjects, n_atoms, n_networks = subject_effects.shape
    ridge = np.broadcast_to(np.asarray(ridge, dtype=np.float64), (n_networks,))
    out = np.empty_like(subject_effects)
    for s in range(n_subjects):
        gram = np.asarray(grams[s], dtype=np.float64)
        projected = np.diag(gram)[:, None] * subject_effects[s]     # D~ y~ per network
        for value in np.unique(ridge):
            columns = np.flatnonzero(ridge == value)
            out[s][:, columns] = np.linalg.lstsq(gram + value * penalty,
                                                 projected[:, columns], rcond=None)[0]
    return out


def separate_network_effects(joint_effects: np.ndarray, grams: np.ndarray) -> np.ndarray:
    """The separate-model effects that joint effects (``--glm joint`` maps) correspond to:
    ``b_s = (G~_s w_s) / diag(G~_s)``, the inverse of :func:`joint_network_effects` with
    ridge 0. Shapes as there."""
    return np.stack([(np.asarray(g, dtype=np.float64) @ w) / np.diag(g)[:, None]
                     for g, w in zip(grams, np.asarray(joint_effects, dtype=np.float64))])


def an_prior_penalty(atoms: np.ndarray, projections, rows: int = 200_000) -> np.ndarray:
    """(n_atoms, n_atoms) the ridge's penalty matrix: the inverse second moment of the ANs'
    own coordinates in the atoms' span, scaled to the trace of ``G = D D^T``.

    A response row ``x_i`` is best approximated in the atoms' span by ``a_i D`` with
    ``a_i = G^-1 P_i`` (``P = X D^T``, the projections). Their second moment over the rows is
    ``S = G^-1 (P'P / n) G^-1`` and the penalty ``Omega = S^-1 = G (P'P / n)^-1 G``. As a
    prior ``w ~ N(0, S)`` it says that a network's composite is a time course like the ANs'
    responses: where the confounds hide a direction of the composite, the fit fills it in
    as the ANs' responses tie it to the directions the data see, instead of shrinking it
    to 0 as the plain ridge (``Omega = G``) does. Scaled so that ``trace(Omega) =
    trace(G)``: the grid of ridge values keeps its units. ``projections`` may be a memory
    map of millions of rows (read in blocks).
    """
    atoms = np.asarray(atoms, dtype=np.float64)
    gram = atoms @ atoms.T
    moment = np.zeros_like(gram)
    for first in range(0, len(projections), rows):
        block = np.asarray(projections[first:first + rows], dtype=np.float64)
        moment += block.T @ block
    moment /= max(len(projections), 1)
    penalty = gram @ np.linalg.pinv(moment, hermitian=True) @ gram
    penalty = 0.5 * (penalty + penalty.T)
    trace = np.trace(penalty)
    return penalty * (np.trace(gram) / trace) if trace > 0 else gram


def ridge_errors(subject_effects: np.ndarray, grams: np.ndarray, penalty: np.ndarray,
                 grid=RIDGE_GRID) -> np.ndarray:
    """(n_grid, n_subjects, n_networks) each left-out subject's prediction error of its
    network signals from the other subjects' mean joint effects, for each ridge of ``grid``.

    The squared error of weights ``w`` on subject ``s`` is, up to a constant of the subject,
    ``-2 w . (diag(G~_s) * b_s) + w^T G~_s w`` (its residualised signal's), so no time
    series is needed.
    """
    subject_effects = np.asarray(subject_effects, dtype=np.float64)
    n_subjects, _, n_networks = subject_effects.shape
    grams = np.asarray(grams, dtype=np.float64)
    projected = np.stack([np.diag(g)[:, None] * e for g, e in zip(grams, subject_effects)])
    errors = np.zeros((len(grid), n_subjects, n_networks))
    for i, value in enumerate(grid):
        joint = joint_network_effects(subject_effects, grams, penalty, value)
        total = joint.sum(axis=0)
        for s in range(n_subjects):
            others = (total - joint[s]) / (n_subjects - 1)          # (n_atoms, n_networks)
            errors[i, s] = (-2.0 * np.einsum("kn,kn->n", others, projected[s])
                            + np.einsum("kn,kj,jn->n", others, grams[s], others))
    return errors


def choose_ridge(subject_effects: np.ndarray, grams: np.ndarray, penalty: np.ndarray,
                 grid=RIDGE_GRID, margin: float = RIDGE_MARGIN) -> np.ndarray:
    """(n_networks,) per network, the largest ridge of ``grid`` whose leave-one-subject-out
    prediction error is within one standard error of the smallest, or within ``margin``
    of the network signal the best ridge explains (the one-standard-error rule with a
    margin of practical equivalence).

    The error (:func:`ridge_errors`) only sees what the confounds leave of the BOLD; along
    the directions they nearly span (drifts, word rate, envelope, the same in every
    subject) it is flat, so its minimum says nothing there, and the smallest ridge that
    reaches it lets noise into them. Among the ridges the data cannot tell apart from the
    best, the rule takes the one that leans most on the prior (:func:`an_prior_penalty`).
    The standard error is that of the paired differences with the best ridge over
    subjects (each subject's error has its own constant, which cancels). It can be far
    smaller than what matters: the part of a network's signal outside the atoms' span
    leaks into the hidden directions the same way in every subject, so a gain of 0.02 % of
    the signal can be "significant". ``margin`` bounds that from the other side: a ridge
    whose held-out prediction explains at most ``margin`` (a fraction) less of the
    network's signal than the best one's is as good (the error is, up to each subject's
    constant, minus the explained sum of squares). ``margin=0`` gives the plain
    one-standard-error rule.
    """
    grid = np.asarray(grid, dtype=np.float64)
    errors = ridge_errors(subject_effects, grams, penalty, grid)
    n_subjects = errors.shape[1]
    out = np.empty(errors.shape[2])
    for n in range(errors.shape[2]):
        mean = errors[:, :, n].mean(axis=1)
        best = int(np.argmin(mean))
        diff = errors[:, :, n] - errors[best, :, n]                   # (n_grid, n_subjects)
        se = diff.std(axis=1, ddof=1) / np.sqrt(n_subjects) if n_subjects > 1 else 0.0
        explained = max(-mean[best], 0.0)        # the best ridge's explained sum of squares
        tolerance = np.maximum(se, margin * explained)
        within = np.flatnonzero((diff.mean(axis=1) <= tolerance)
                                & (np.arange(len(grid)) >= best))
        out[n] = grid[within.max()]
    return out


def coupled_networks(assignments: pd.DataFrame, extra_networks=()) -> list[str]:
    """The networks with a sub-group: those with an assigned atom (in the assignments'
    order), then ``extra_networks`` (coupled by the network-prediction test) not yet
    listed."""
    names = [n for n in dict.fromkeys(assignments["network"].astype(str)) if n != NO_NETWORK]
    return names + [str(n) for n in dict.fromkeys(extra_networks) if str(n) not in names]


def composite_weights(assignments: pd.DataFrame, effects: np.ndarray,
                      network_names, extra_networks=()) -> dict[str, tuple[np.ndarray,
                                                                         np.ndarray]]:
    """{network: (atom indices (0-based), weights)} of every coupled network
    (:func:`coupled_networks`): all atoms, weighted by ``effects`` (n_atoms, n_networks),
    the group-mean joint effects of the atoms on each network's signal
    (:func:`joint_network_effects` averaged over subjects)."""
    names = list(map(str, network_names))
    index = np.arange(np.shape(effects)[0])
    out = {}
    for network in coupled_networks(assignments, extra_networks):
        if network == NO_NETWORK:
            continue
        out[network] = (index, np.asarray(effects, dtype=np.float64)[:, names.index(network)])
    return out


def composite_scores(projections: np.ndarray, atoms: np.ndarray,
                     weights: dict[str, tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """(n_rows, n_networks) correlation of every response row with every composite.

    ``projections`` (n_rows, n_atoms) = X D^T; ``atoms`` D (n_atoms, n_frames).
    """
    projections = np.asarray(projections)
    columns = {}
    for network, (index, w) in weights.items():
        composite = w @ np.asarray(atoms, dtype=np.float64)[index]
        norm = np.linalg.norm(composite - composite.mean())
        score = np.asarray(projections[:, index], dtype=np.float64) @ w
        columns[network] = score / norm if norm > 0 else np.zeros(len(score))
    return pd.DataFrame(columns, index=pd.RangeIndex(len(projections), name="row"))


def atom_scores(projections: np.ndarray, atoms: np.ndarray,
                signs: np.ndarray) -> np.ndarray:
    """(n_rows, n_atoms) correlation of every response row with every (signed) atom."""
    atoms = np.asarray(atoms, dtype=np.float64)
    norms = np.linalg.norm(atoms - atoms.mean(axis=1, keepdims=True), axis=1)
    scale = np.where(norms > 0, np.asarray(signs, dtype=np.float64) / np.where(
        norms > 0, norms, 1.0), 0.0)
    return np.asarray(projections, dtype=np.float64) * scale


def per_neuron(row_scores: pd.DataFrame | np.ndarray, neurons: pd.DataFrame):
    """Scores per AN: rows of one AN (FIR delays) reduced to their largest score.

    ``neurons`` is the atoms stage's neuron table (one row per response row: ``layer``,
    ``unit`` and, with ``--hrf huth``, ``delay_trs``). Returns the scores indexed like the
    unique (layer, unit) pairs in order of first appearance, and that AN table.
    """
    frame = pd.DataFrame(np.asarray(row_scores), columns=getattr(row_scores, "columns", None))
    keys = neurons[["layer", "unit"]].reset_index(drop=True)
    if "delay_trs" not in neurons.columns:
        return frame, keys
    grouped = pd.concat([keys, frame], axis=1).groupby(["layer", "unit"], sort=False).max()
    return grouped.reset_index(drop=True), grouped.index.to_frame(index=False)


def members_table(scores: pd.DataFrame, ans: pd.DataFrame,
                  threshold: float = MEMBERSHIP_THRESHOLD) -> pd.DataFrame:
    """One row per (network, member AN): ``network``, ``neuron``, ``layer``, ``unit``,
    ``score``, sorted by network then descending score."""
    rows = []
    for network in scores.columns:
        values = scores[network].to_numpy()
        index = np.flatnonzero(values >= threshold)
        index = index[np.argsort(-values[index], kind="stable")]
        rows.append(pd.DataFrame({"network": network, "neuron": index,
                                  "layer": ans["layer"].to_numpy()[index],
                                  "unit": ans["unit"].to_numpy()[index],
                                  "score": values[index]}))
    columns = ["network", "neuron", "layer", "unit", "score"]
    return pd.concat(rows, ignore_index=True)[columns] if rows else pd.DataFrame(
        columns=columns)


def layer_counts(neuron_sets: dict[str, np.ndarray], layers: np.ndarray) -> pd.DataFrame:
    """ANs of each set per layer: one row per set, columns ``layer00``, ``layer01``, ..."""
    n_layers = int(np.max(layers)) + 1 if len(layers) else 0
    counts = [np.bincount(layers[idx], minlength=n_layers) for idx in neuron_sets.values()]
    return pd.DataFrame(np.asarray(counts, dtype=np.int64).reshape(len(counts), n_layers),
                        columns=[f"layer{i:02d}" for i in range(n_layers)])


def jaccard(neuron_sets: dict[str, np.ndarray]) -> pd.DataFrame:
    """Square Jaccard overlap between sets (0 when both are empty)."""
    names = list(neuron_sets)
    sets = [set(map(int, neuron_sets[n])) for n in names]
    values = [[len(a & b) / len(a | b) if (a | b) else 0.0 for b in sets] for a in sets]
    return pd.DataFrame(values, index=pd.Index(names, name="network"), columns=names)


def network_members(projections, atoms, neurons, assignments, mean_effects, network_names,
                    threshold: float = MEMBERSHIP_THRESHOLD, extra_networks=()):
    """Composite weights, per-AN scores, the AN table, member sets and each row's AN.
    ``mean_effects`` (n_atoms, n_networks): the composites' weights (group-mean joint
    effects, :func:`composite_weights`); ``extra_networks``: networks coupled by the
    network-prediction test (:func:`coupled_networks`).

    Returns ``(weights, scores, ans, sets, neuron_of_row)``: ``scores`` (n_neurons,
    n_coupled) DataFrame, ``ans`` the (layer, unit) of each AN, ``sets`` {network: member AN
    indices}, ``neuron_of_row`` (n_rows,) the AN of each response row.
    """
    weights = composite_weights(assignments, mean_effects, network_names, extra_networks)
    scores, ans = per_neuron(composite_scores(projections, atoms, weights), neurons)
    sets = {n: np.flatnonzero(scores[n].to_numpy() >= threshold) for n in weights}
    if "delay_trs" in neurons.columns:
        keys = pd.MultiIndex.from_frame(neurons[["layer", "unit"]])
        neuron_of_row = pd.MultiIndex.from_frame(ans).get_indexer(keys)
    else:
        neuron_of_row = np.arange(len(neurons))
    return weights, scores, ans, sets, neuron_of_row


class SubGroups:
    """The sub-group tables of one model (see the module's rule).

    Attributes
    ----------
    scores : DataFrame, one row per AN: ``neuron``, ``layer``, ``unit`` and one score column
        per coupled network.
    members : DataFrame, one row per (network, member AN): network, neuron, layer, unit, score.
    atoms : DataFrame, one row per atom: ``atom``, ``network``, ``n_neurons``, layer counts.
    networks : DataFrame, one row per coupled network: ``network``, ``n_atoms`` (assigned
        atoms; 0 for a network coupled by the network-prediction test only), ``coupled_by``
        (``atoms``, ``prediction`` or ``atoms+prediction``), ``n_neurons``, layer counts.
    overlap : DataFrame, Jaccard overlap between the networks' sub-groups.
    """

    def __init__(self, projections, atoms, neurons, assignments, mean_effects,
                 network_names, threshold: float = MEMBERSHIP_THRESHOLD, extra_networks=()):
        self.threshold = float(threshold)
        self.weights, scores, ans, sets, self.neuron_of_row = network_members(
            projections, atoms, neurons, assignments, mean_effects, network_names, threshold,
            extra_networks)
        self.scores = pd.concat([pd.DataFrame({"neuron": np.arange(len(ans))}), ans, scores],
                                axis=1)
        self.members = members_table(scores, ans, threshold)
        self.sets = sets
        layers = ans["layer"].to_numpy(np.int64)
        weights = self.weights
        assigned = assignments["network"].astype(str).value_counts()
        predicted = set(map(str, extra_networks))
        routes = [("atoms" if n in assigned.index else "")
                  + ("+" if n in assigned.index and n in predicted else "")
                  + ("prediction" if n in predicted else "") for n in weights]
        self.networks = pd.concat([pd.DataFrame({
            "network": list(weights), "n_atoms": [int(assigned.get(n, 0)) for n in weights],
            "coupled_by": routes, "n_neurons": [len(s) for s in sets.values()]}),
            layer_counts(sets, layers)], axis=1)
        self.overlap = jaccard(sets)
        self.atoms = self._atom_table(projections, atoms, neurons, assignments, layers)

    def _atom_table(self, projections, atoms, neurons, assignments, layers) -> pd.DataFrame:
        n_atoms = len(atoms)
        network = assignments.set_index("atom")["network"].astype(str)
        sign = assignments.set_index("atom")["sign"]
        signs = np.array([-1.0 if sign.get(k) == "-" else 1.0 for k in range(1, n_atoms + 1)])
        scores, _ = per_neuron(atom_scores(projections, atoms, signs), neurons)
        sets = {k: np.flatnonzero(scores[k].to_numpy() >= self.threshold)
                for k in scores.columns}
        table = pd.DataFrame({"atom": np.arange(1, n_atoms + 1),
                              "network": [network.get(k, NO_NETWORK)
                                          for k in range(1, n_atoms + 1)],
                              "n_neurons": [len(s) for s in sets.values()]})
        return pd.concat([table, layer_counts(sets, layers)], axis=1)
