"""Group level: atom maps across subjects, coupling with FBNs, AN sub-groups, metrics.

The steps follow the design of record (section 4 and 5):

1. :func:`one_sample_t` tests each atom's effect map across subjects, voxel by voxel.
2. :func:`fdr_mask` thresholds each group map (Benjamini-Hochberg within the atom's map).
3. :func:`coupling_table` compares the positive and negative suprathreshold parts of every
   atom map with every FBN (IoU, overlap rate, hypergeometric overlap test) and
   :func:`assign_atoms` assigns each atom to its best passing FBN.
4. :func:`subgroups` turns the assignments into sub-groups of artificial neurons (ANs).
5. :func:`subject_assignments` repeats the coupling per subject and
   :func:`organisation_metrics` summarises diversity and consistency.

Array conventions: ``effects`` (n_subjects, n_atoms, n_voxels); group maps ``t``, ``p``,
``significant`` (n_atoms, n_voxels); voxels are the brain-mask voxels in
``np.flatnonzero(mask)`` order, as in :class:`bids_app.atlases.FBNAtlas`. Atoms are numbered
from 1 in tables (atom ``k`` is row ``k - 1`` of the arrays).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from bids_app.atlases import FBNAtlas
from bids_app.bids.naming import NO_NETWORK
from bids_app.errors import LlmfbnError

__all__ = [
    "one_sample_t", "fdr_mask", "coupling_table", "assign_atoms", "subgroups",
    "subject_assignments", "organisation_metrics", "NO_NETWORK", "SIGNS",
]

#: Network label of an atom that couples to no FBN.
#: Signs of the suprathreshold parts of an atom map, in table order.
SIGNS = ("+", "-")

_COUPLING_COLUMNS = ["atom", "network", "sign", "n_atom_voxels", "n_network_voxels",
                     "n_overlap", "iou", "overlap_rate", "p_overlap"]
_ASSIGN_COLUMNS = ["atom", "network", "sign", "iou", "overlap_rate", "p_overlap", "p_fwe",
                   "n_atom_voxels"]


# --------------------------------------------------------------------------- statistics


def one_sample_t(effects) -> tuple[np.ndarray, np.ndarray]:
    """One-sample t-test of atom effects against zero across subjects.

    Parameters
    ----------
    effects : array-like of shape (n_subjects, n_atoms, n_voxels)
        Each subject's effect (beta) map of each atom, in BOLD units per unit of atom.

    Returns
    -------
    t : ndarray of shape (n_atoms, n_voxels)
        t statistic with n_subjects - 1 degrees of freedom.
    p : ndarray of shape (n_atoms, n_voxels)
        Two-sided p value. Voxels where all subjects have the same value (zero variance),
        or with a non-finite effect, get t = 0 and p = 1.
    """
    effects = np.asarray(effects)
    if effects.ndim != 3:
        raise ValueError(f"effects must be (n_subjects, n_atoms, n_voxels), got {effects.shape}")
    n_subjects, n_atoms, n_voxels = effects.shape
    if n_subjects < 2:
        raise LlmfbnError("The group one-sample test needs at least two subjects",
                          expected="participant-level outputs of >= 2 subjects",
                          found=f"{n_subjects} subject", todo="run the participant level on "
                          "more subjects before the group level")
    t = np.empty((n_atoms, n_voxels), dtype=np.float64)
    bad = np.empty((n_atoms, n_voxels), dtype=bool)
    # One atom at a time keeps the float64 temporaries at (n_subjects, n_voxels).
    for atom in range(n_atoms):
        values = effects[:, atom, :].astype(np.float64)
        mean = values.mean(axis=0)
        sd = values.std(axis=0, ddof=1)
        # Exact test for "all values equal": a variance computed in floating point can be
        # 1e-33 instead of 0 and would give a huge spurious t.
        bad[atom] = (np.ptp(values, axis=0) == 0) | ~np.isfinite(mean) | ~np.isfinite(sd)
        with np.errstate(divide="ignore", invalid="ignore"):
            t[atom] = mean / (sd / np.sqrt(n_subjects))
    t[bad] = 0.0
    p = 2.0 * stats.t.sf(np.abs(t), df=n_subjects - 1)
    p[bad] = 1.0
    return t, np.clip(p, 0.0, 1.0)


def fdr_mask(p, q: float = 0.05) -> np.ndarray:
    """Benjamini-Hochberg FDR threshold, applied within each atom map.

    Parameters
    ----------
    p : array-like of shape (n_atoms, n_voxels)
        p values in [0, 1]; NaN counts as 1.
    q : float, default 0.05
        False discovery rate, in (0, 1).

    Returns
    -------
    ndarray of bool, shape (n_atoms, n_voxels)
        True where the BH-adjusted p value is <= q (the voxels BH rejects).
    """
    if not 0.0 < q < 1.0:
        raise LlmfbnError("The FDR level must be between 0 and 1", expected="0 < q < 1",
                          found=f"q = {q}", todo="pass e.g. --fdr-q 0.05")
    p = np.asarray(p, dtype=np.float64)
    if p.size == 0:
        return np.zeros(p.shape, dtype=bool)
    p = np.clip(np.nan_to_num(p, nan=1.0), 0.0, 1.0)
    return stats.false_discovery_control(p, axis=-1, method="bh") <= q


# --------------------------------------------------------------------------- coupling


def _signed_parts(t, significant) -> np.ndarray:
    """Suprathreshold parts of each sign, shape (2, n_atoms, n_voxels), order of SIGNS."""
    t = np.asarray(t, dtype=np.float64)
    significant = np.asarray(significant, dtype=bool)
    if t.shape != significant.shape or t.ndim != 2:
        raise ValueError(f"t {t.shape} and significant {significant.shape} must both be "
                         "(n_atoms, n_voxels)")
    return np.stack([significant & (t > 0), significant & (t < 0)])


def coupling_table(t, significant, atlas: FBNAtlas) -> pd.DataFrame:
    """Overlap of every thresholded atom map (per sign) with every FBN.

    Parameters
    ----------
    t : array-like of shape (n_atoms, n_voxels)
        Group (or subject) t map of each atom; only its sign is used.
    significant : array-like of bool, shape (n_atoms, n_voxels)
        Suprathreshold voxels (e.g. from :func:`fdr_mask`).
    atlas : FBNAtlas
        Networks over the same voxels (``atlas.masks`` of shape (n_networks, n_voxels)).

    Returns
    -------
    pandas.DataFrame
        One row per (atom, network, sign), atoms 1-based, signs ``"+"`` then ``"-"``.
        Columns: ``atom``, ``network``, ``sign``, ``n_atom_voxels`` (|A|, suprathreshold
        voxels of that sign), ``n_network_voxels`` (|N|), ``n_overlap`` (|A ∩ N|),
        ``iou`` (|A ∩ N| / |A ∪ N|, 0 when both are empty), ``overlap_rate``
        (|A ∩ N| / |A|, 0 when A is empty) and ``p_overlap``, the hypergeometric
        P(X >= |A ∩ N|) with X ~ Hypergeom(n_voxels, |N|, |A|) (1 when A is empty).
    """
    parts = _signed_parts(t, significant)  # (2, n_atoms, n_voxels)
    n_signs, n_atoms, n_voxels = parts.shape
    network_masks = np.asarray(atlas.masks, dtype=bool)
    if network_masks.shape[1] != n_voxels:
        raise ValueError(f"the atlas has {network_masks.shape[1]} voxels, the maps {n_voxels}: "
                         "they must be defined on the same brain mask")
    n_networks = network_masks.shape[0]
    # Counts by a float matrix product (BLAS); exact while counts < 2**53.
    overlap = np.rint(parts.reshape(n_signs * n_atoms, n_voxels).astype(np.float64)
                      @ network_masks.T.astype(np.float64)).astype(np.int64)
    overlap = overlap.reshape(n_signs, n_atoms, n_networks)
    atom_size = np.broadcast_to(parts.sum(axis=2)[:, :, None], overlap.shape)
    network_size = np.broadcast_to(network_masks.sum(axis=1)[None, None, :], overlap.shape)
    union = atom_size + network_size - overlap
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, overlap / union, 0.0)
        overlap_rate = np.where(atom_size > 0, overlap / atom_size, 0.0)
    p_overlap = stats.hypergeom.sf(overlap - 1, n_voxels, network_size, atom_size)
    p_overlap = np.where(atom_size > 0, np.clip(p_overlap, 0.0, 1.0), 1.0)

    # Rows ordered atom, network, sign: move the sign axis last.
    def flat(a):
        return np.moveaxis(np.asarray(a), 0, -1).reshape(-1)

    atom_idx, net_idx, sign_idx = np.meshgrid(np.arange(n_atoms), np.arange(n_networks),
                                              np.arange(n_signs), indexing="ij")
    return pd.DataFrame({
        "atom": atom_idx.reshape(-1) + 1,
        "network": np.asarray(atlas.network_names, dtype=object)[net_idx.reshape(-1)],
        "sign": np.asarray(SIGNS, dtype=object)[sign_idx.reshape(-1)],
        "n_atom_voxels": flat(atom_size).astype(np.int64),
        "n_network_voxels": flat(network_size).astype(np.int64),
        "n_overlap": flat(overlap),
        "iou": flat(iou),
        "overlap_rate": flat(overlap_rate),
        "p_overlap": flat(p_overlap),
    }, columns=_COUPLING_COLUMNS)


def assign_atoms(coupling: pd.DataFrame, n_atoms: int, min_iou: float = 0.1,
                 alpha: float = 0.05) -> pd.DataFrame:
    """Assign each atom to its best-coupled FBN.

    A (network, sign) passes for an atom when ``iou >= min_iou`` and its Bonferroni
    corrected overlap p value ``p_fwe = min(1, p_overlap * n_atoms * n_networks * 2)`` is
    below ``alpha``. The atom goes to the passing (network, sign) with the highest IoU
    (ties: smaller ``p_fwe``, then table order).

    Parameters
    ----------
    coupling : pandas.DataFrame
        Output of :func:`coupling_table`.
    n_atoms : int
        Number of atoms K; atoms 1..K absent from ``coupling`` are unassigned.
    min_iou : float, default 0.1
        Smallest IoU that counts as coupling **(ours)**.
    alpha : float, default 0.05
        Family-wise error level of the overlap test.

    Returns
    -------
    pandas.DataFrame
        One row per atom 1..K: ``atom``, ``network`` (``"none"`` when nothing passes),
        ``sign``, ``iou``, ``overlap_rate``, ``p_overlap``, ``p_fwe`` and ``n_atom_voxels``
        of the chosen (network, sign). Unassigned atoms have ``sign`` None, NaN
        statistics and ``n_atom_voxels`` = all their suprathreshold voxels (both signs).
    """
    n_atoms = int(n_atoms)
    missing = [c for c in _COUPLING_COLUMNS if c not in coupling.columns]
    if missing:
        raise ValueError(f"coupling lacks columns {missing}")
    n_networks = max(int(coupling["network"].nunique()), 1)
    n_tests = n_atoms * n_networks * len(SIGNS)
    table = coupling.assign(
        p_fwe=np.minimum(1.0, coupling["p_overlap"].to_numpy(float) * n_tests),
        _order=np.arange(len(coupling)))
    passing = table[(table["iou"] >= min_iou) & (table["p_fwe"] < alpha)]
    best = (passing.sort_values(["atom", "iou", "p_fwe", "_order"],
                                ascending=[True, False, True, True])
            .drop_duplicates("atom").set_index("atom"))
    # n_atom_voxels is repeated for every network: one network per (atom, sign) is enough.
    per_sign = table.drop_duplicates(["atom", "sign"])
    total_voxels = per_sign.groupby("atom")["n_atom_voxels"].sum()

    rows = []
    for atom in range(1, n_atoms + 1):
        if atom in best.index:
            b = best.loc[atom]
            rows.append({"atom": atom, "network": str(b["network"]), "sign": str(b["sign"]),
                         "iou": float(b["iou"]), "overlap_rate": float(b["overlap_rate"]),
                         "p_overlap": float(b["p_overlap"]), "p_fwe": float(b["p_fwe"]),
                         "n_atom_voxels": int(b["n_atom_voxels"])})
        else:
            rows.append({"atom": atom, "network": NO_NETWORK, "sign": None, "iou": np.nan,
                         "overlap_rate": np.nan, "p_overlap": np.nan, "p_fwe": np.nan,
                         "n_atom_voxels": int(total_voxels.get(atom, 0))})
    return pd.DataFrame(rows, columns=_ASSIGN_COLUMNS)


def subject_assignments(t_subjects, dof, atlas: FBNAtlas, q: float = 0.05,
                        min_iou: float = 0.1, alpha: float = 0.05,
                        subject_labels=None) -> pd.DataFrame:
    """Assign atoms to FBNs in each subject separately (for consistency metrics).

    Parameters
    ----------
    t_subjects : array-like of shape (n_subjects, n_atoms, n_voxels)
        Subject-level t maps of each atom.
    dof : float or array-like of shape (n_subjects,)
        Residual degrees of freedom of each subject's voxel-wise OLS.
    atlas : FBNAtlas
        Networks over the same voxels.
    q, min_iou, alpha : float
        As in :func:`fdr_mask` and :func:`assign_atoms`.
    subject_labels : sequence of str, optional
        Labels for the ``subject`` column; default the subject index 0..n_subjects-1.

    Returns
    -------
    pandas.DataFrame
        Long table, one row per (subject, atom): ``subject``, ``atom``, ``network``,
        ``sign``.
    """
    t_subjects = np.asarray(t_subjects, dtype=np.float64)
    if t_subjects.ndim != 3:
        raise ValueError("t_subjects must be (n_subjects, n_atoms, n_voxels), got "
                         f"{t_subjects.shape}")
    n_subjects, n_atoms, _ = t_subjects.shape
    dof = np.broadcast_to(np.asarray(dof, dtype=np.float64), (n_subjects,))
    if np.any(~np.isfinite(dof)) or np.any(dof <= 0):
        raise ValueError(f"dof must be positive, got {dof}")
    if subject_labels is None:
        subject_labels = list(range(n_subjects))
    elif len(subject_labels) != n_subjects:
        raise ValueError(f"{len(subject_labels)} subject labels for {n_subjects} subjects")
    tables = []
    for label, t, df in zip(subject_labels, t_subjects, dof):
        t = np.nan_to_num(t, nan=0.0)
        p = 2.0 * stats.t.sf(np.abs(t), df=df)
        coupling = coupling_table(t, fdr_mask(p, q), atlas)
        assigned = assign_atoms(coupling, n_atoms, min_iou=min_iou, alpha=alpha)
        tables.append(assigned[["atom", "network", "sign"]].assign(subject=label))
    columns = ["subject", "atom", "network", "sign"]
    if not tables:
        return pd.DataFrame(columns=columns)
    return pd.concat(tables, ignore_index=True)[columns]


# --------------------------------------------------------------------------- sub-groups


def _nonzero_pattern(codes) -> sp.csc_matrix:
    """0/1 int64 sparse matrix (n_neurons, n_atoms) of the non-zero codes."""
    if sp.issparse(codes):
        nz = sp.csc_matrix(codes, copy=True)
        nz.eliminate_zeros()
        nz.data = np.ones_like(nz.data, dtype=np.int64)
        return nz.astype(np.int64)
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be (n_neurons, n_atoms), got {codes.shape}")
    return sp.csc_matrix((codes != 0).astype(np.int64))


def subgroups(codes, layers, assignments: pd.DataFrame
              ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Sub-groups of artificial neurons (ANs) for each atom and each FBN.

    The sub-group of an atom is the set of ANs with a non-zero sparse code on it; the
    sub-group of an FBN is the union of the sub-groups of the atoms assigned to it.

    Parameters
    ----------
    codes : array-like or scipy.sparse matrix of shape (n_neurons, n_atoms)
        Sparse codes A of the dictionary learning.
    layers : array-like of int, shape (n_neurons,)
        Transformer layer (block) index of each AN, from 0.
    assignments : pandas.DataFrame
        Output of :func:`assign_atoms` (columns ``atom`` 1-based and ``network``).

    Returns
    -------
    atom_subgroups : pandas.DataFrame
        One row per atom: ``atom``, ``network``, ``n_neurons``, then ``layer00``,
        ``layer01``, ... (ANs of the sub-group in each layer).
    network_subgroups : pandas.DataFrame
        One row per FBN with at least one atom, in order of its first atom: ``network``,
        ``n_atoms``, ``n_neurons``, layer counts.
    overlap : pandas.DataFrame
        Square Jaccard overlap |S_i ∩ S_j| / |S_i ∪ S_j| between FBN sub-groups
        (0 when both are empty); index and columns are the network names.
    """
    nz = _nonzero_pattern(codes)  # (n_neurons, n_atoms)
    n_neurons, n_atoms = nz.shape
    layers = np.asarray(layers)
    if layers.shape != (n_neurons,):
        raise ValueError(f"layers must be ({n_neurons},), got {layers.shape}")
    if n_neurons and (layers.min() < 0 or not np.all(np.mod(layers, 1) == 0)):
        raise ValueError("layers must be non-negative integers")
    layers = layers.astype(np.int64)
    n_layers = int(layers.max()) + 1 if n_neurons else 0
    layer_columns = [f"layer{i:02d}" for i in range(n_layers)]
    one_hot = sp.csc_matrix((np.ones(n_neurons, dtype=np.int64),
                             (np.arange(n_neurons), layers)), shape=(n_neurons, n_layers))

    network_of = dict(zip(assignments["atom"].astype(int), assignments["network"].astype(str)))
    if any(a < 1 or a > n_atoms for a in network_of):
        raise ValueError(f"assignments name atoms outside 1..{n_atoms}")
    atom_networks = [network_of.get(k, NO_NETWORK) for k in range(1, n_atoms + 1)]

    atom_layers = np.asarray((nz.T @ one_hot).todense()).reshape(n_atoms, n_layers)
    atom_table = pd.DataFrame(atom_layers, columns=layer_columns)
    atom_table.insert(0, "n_neurons", np.asarray(nz.sum(axis=0)).ravel().astype(np.int64))
    atom_table.insert(0, "network", atom_networks)
    atom_table.insert(0, "atom", np.arange(1, n_atoms + 1))

    networks = list(dict.fromkeys(n for n in atom_networks if n != NO_NETWORK))
    membership = np.zeros((n_atoms, len(networks)), dtype=np.int64)  # atom -> network
    for k, n in enumerate(atom_networks):
        if n != NO_NETWORK:
            membership[k, networks.index(n)] = 1
    in_network = (nz @ sp.csc_matrix(membership)).tocsc()  # (n_neurons, n_networks) counts
    in_network.data = (in_network.data > 0).astype(np.int64)
    in_network.eliminate_zeros()
    net_layers = np.asarray((in_network.T @ one_hot).todense()).reshape(len(networks), n_layers)
    net_sizes = np.asarray(in_network.sum(axis=0)).ravel().astype(np.int64)
    network_table = pd.DataFrame(net_layers, columns=layer_columns)
    network_table.insert(0, "n_neurons", net_sizes)
    network_table.insert(0, "n_atoms", membership.sum(axis=0))
    network_table.insert(0, "network", networks)

    inter = np.asarray((in_network.T @ in_network).todense(), dtype=np.float64).reshape(
        len(networks), len(networks))
    union = net_sizes[:, None] + net_sizes[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        jaccard = np.where(union > 0, inter / union, 0.0)
    overlap = pd.DataFrame(jaccard, index=pd.Index(networks, name="network"),
                           columns=networks)
    return atom_table, network_table, overlap


# --------------------------------------------------------------------------- metrics


_DEFINITIONS = {
    "n_coupled_atoms": "Number of atoms assigned to some FBN (network other than 'none').",
    "n_networks_covered": "Number of distinct FBNs with at least one assigned atom.",
    "fraction_networks_covered": "n_networks_covered divided by the number of FBNs in "
                                 "the atlas.",
    "normalised_entropy": "Shannon entropy of the distribution of coupled atoms over the "
                          "atlas's FBNs divided by log(number of FBNs), 0 for one or no "
                          "coupled atom (1 = atoms spread evenly over all FBNs).",
    "consistency_per_atom": "For a coupled atom, the fraction of subjects whose own "
                            "assignment (FBN, and sign when both tables carry it) equals "
                            "the group's; a subject without an assignment counts as a "
                            "mismatch.",
    "mean_consistency": "Mean of consistency_per_atom over coupled atoms (None when no "
                        "atom is coupled or no subject is given).",
    "note": "These metrics are defined by llmfbn (ours): the formulas of Sun et al. "
            "(arXiv 2410.19542) are not public.",
}


def organisation_metrics(assignments: pd.DataFrame, subject_assign: pd.DataFrame | None,
                         network_names) -> dict:
    """Diversity and consistency of the atoms' coupling to FBNs **(ours)**.

    Parameters
    ----------
    assignments : pandas.DataFrame
        Group assignments, output of :func:`assign_atoms` (``atom``, ``network``, and
        optionally ``sign``).
    subject_assign : pandas.DataFrame or None
        Output of :func:`subject_assignments` (``subject``, ``atom``, ``network``,
        optionally ``sign``); None or empty skips consistency.
    network_names : sequence of str
        All FBNs of the atlas (the denominator of coverage and entropy).

    Returns
    -------
    dict
        JSON-serialisable: ``{"diversity": {...}, "consistency": {...},
        "definitions": {...}}`` with plain ints, floats, strings and None.
    """
    network_names = [str(n) for n in network_names]
    n_networks = len(network_names)
    networks = assignments["network"].astype(str)
    coupled = assignments[networks != NO_NETWORK]
    counts = coupled["network"].astype(str).value_counts()
    n_coupled = int(len(coupled))
    if n_coupled <= 1 or n_networks <= 1:
        entropy = 0.0
    else:
        share = counts.to_numpy(np.float64) / n_coupled
        entropy = float(-(share * np.log(share)).sum() / math.log(n_networks))
    diversity = {
        "n_atoms": int(len(assignments)),
        "n_networks": int(n_networks),
        "n_coupled_atoms": n_coupled,
        "n_networks_covered": int(counts.size),
        "fraction_networks_covered": float(counts.size / n_networks) if n_networks else 0.0,
        "normalised_entropy": entropy,
        "atoms_per_network": {n: int(counts.get(n, 0)) for n in network_names},
    }

    per_atom = []
    n_subjects = 0
    if subject_assign is not None and len(subject_assign):
        subjects = pd.unique(subject_assign["subject"])
        n_subjects = int(len(subjects))
        use_sign = "sign" in coupled.columns and "sign" in subject_assign.columns
        keys = ["network", "sign"] if use_sign else ["network"]
        merged = subject_assign.merge(coupled[["atom"] + keys], on="atom",
                                      suffixes=("_subject", "_group"))
        same = np.ones(len(merged), dtype=bool)
        for key in keys:
            same &= (merged[f"{key}_subject"].astype(str).to_numpy()
                     == merged[f"{key}_group"].astype(str).to_numpy())
        # One vote per subject and atom, then divide by all subjects (absent = mismatch).
        matches = (merged.assign(same=same).groupby(["atom", "subject"])["same"].any()
                   .groupby("atom").sum())
        for atom, network in zip(coupled["atom"].astype(int), coupled["network"].astype(str)):
            per_atom.append({"atom": int(atom), "network": network,
                             "consistency": float(matches.get(atom, 0) / n_subjects)})
    mean = (float(np.mean([a["consistency"] for a in per_atom])) if per_atom else None)
    consistency = {"n_subjects": n_subjects, "per_atom": per_atom, "mean_consistency": mean}
    return {"diversity": diversity, "consistency": consistency,
            "definitions": dict(_DEFINITIONS)}
