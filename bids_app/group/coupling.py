"""Coupling of thresholded atom maps with functional brain networks (FBNs).

:func:`coupling_table` compares the positive and negative suprathreshold parts of every atom
map with every FBN (IoU, overlap rate, hypergeometric overlap test); :func:`assign_atoms`
assigns each atom to its best passing FBN; :func:`subject_assignments` repeats it per subject.
Atoms are numbered from 1 in tables (atom ``k`` is row ``k - 1`` of the arrays).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from bids_app.atlases import FBNAtlas
from bids_app.bids.naming import NO_NETWORK
from bids_app.group.null import null_table
from bids_app.group.stats import (
    fdr_critical_t,
    fdr_mask,
    fdr_mask_from_t,
    one_sample_t,
)

#: Signs of the suprathreshold parts of an atom map, in table order.
SIGNS = ("+", "-")

COUPLING_COLUMNS = ["atom", "network", "sign", "n_atom_voxels", "n_network_voxels",
                    "n_overlap", "iou", "overlap_rate", "p_overlap"]
ASSIGN_COLUMNS = ["atom", "network", "sign", "iou", "overlap_rate", "p_overlap", "p_fwe",
                  "n_atom_voxels"]


def _signed_parts(t, significant) -> np.ndarray:
    """Suprathreshold parts of each sign, shape (2, n_atoms, n_voxels), order of SIGNS."""
    t = np.asarray(t)                 # compared with 0 only: no float64 copy
    significant = np.asarray(significant, dtype=bool)
    if t.shape != significant.shape or t.ndim != 2:
        raise ValueError(f"t {t.shape} and significant {significant.shape} must both be "
                         "(n_atoms, n_voxels)")
    return np.stack([significant & (t > 0), significant & (t < 0)])


def overlap_arrays(parts, masks):
    """Overlap of suprathreshold parts with networks: counts of each network's voxels in each
    part (exact integers).

    ``parts`` (..., n_voxels) bool, e.g. (2, n_atoms, n_voxels) signs first; ``masks``
    (n_networks, n_voxels) bool. Returns ``overlap`` |A ∩ N|, ``atom_size`` |A|,
    ``network_size`` |N|, ``iou`` (0 when both are empty) and ``overlap_rate`` (0 when A is
    empty), each of shape (..., n_networks).
    """
    parts = np.asarray(parts, dtype=bool)
    network_masks = np.asarray(masks, dtype=bool)
    n_voxels = parts.shape[-1]
    if network_masks.shape[1] != n_voxels:
        raise ValueError(f"the atlas has {network_masks.shape[1]} voxels, the maps {n_voxels}: "
                         "they must be defined on the same brain mask")
    n_networks = network_masks.shape[0]
    flat = parts.reshape(-1, n_voxels)
    label = _voxel_labels(masks)
    if label is not None:
        # disjoint networks (every atlas but overlapping user masks): each suprathreshold
        # voxel counted once under its network's label, one pass over the parts
        rows, cols = np.nonzero(flat)
        overlap = _label_counts(rows, label[cols], flat.shape[0], n_networks)[:, :n_networks]
    else:
        overlap = np.stack([np.count_nonzero(flat[:, m], axis=-1) for m in network_masks],
                           axis=-1)
    overlap = overlap.astype(np.int64).reshape(*parts.shape[:-1], n_networks)
    atom_size = np.broadcast_to(np.count_nonzero(parts, axis=-1)[..., None], overlap.shape)
    network_size = np.broadcast_to(network_masks.sum(axis=1), overlap.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        overlap_rate = np.where(atom_size > 0, overlap / atom_size, 0.0)
    return overlap, atom_size, network_size, _iou(overlap, atom_size, network_size), \
        overlap_rate


def signed_overlaps(t: np.ndarray, significant: np.ndarray, masks,
                    network_size: np.ndarray | None = None):
    """:func:`overlap_arrays` of the positive and negative significant parts of t maps
    (:func:`_signed_parts`): ``overlap``, ``atom_size`` and ``iou``, each (2, n_maps,
    n_networks), the same integers and ratios.

    With disjoint networks it reads the significant voxels once, by index, instead of
    stacking and scanning both whole parts (the bootstrap calls it once per resample and
    atom); ``network_size`` (each network's voxels) may be given so that it is not
    recounted each time."""
    masks = np.asarray(masks, dtype=bool)
    label = _voxel_labels(masks)
    if label is None:
        overlap, atom_size, _, iou, _ = overlap_arrays(_signed_parts(t, significant), masks)
        return overlap, atom_size, iou
    n_maps, n_networks = t.shape[0], masks.shape[0]
    rows, cols = np.nonzero(significant)
    values = t[rows, cols]
    signed = values != 0                          # t = 0 is in neither part
    rows = (values[signed] < 0) * n_maps + rows[signed]      # (sign, map) as one row index
    counts = _label_counts(rows, label[cols[signed]], 2 * n_maps, n_networks)
    counts = counts.reshape(2, n_maps, n_networks + 1)
    overlap = counts[..., :n_networks].astype(np.int64)
    atom_size = np.broadcast_to(counts.sum(axis=-1)[..., None], overlap.shape)
    if network_size is None:
        network_size = masks.sum(axis=1)
    return overlap, atom_size, _iou(overlap, atom_size, network_size)


def _label_counts(rows: np.ndarray, labels: np.ndarray, n_rows: int,
                  n_networks: int) -> np.ndarray:
    """(n_rows, n_networks + 1) counts of each (row, label) pair; label n_networks is no
    network."""
    return np.bincount(rows * (n_networks + 1) + labels,
                       minlength=n_rows * (n_networks + 1)).reshape(n_rows, n_networks + 1)


def _iou(overlap, atom_size, network_size) -> np.ndarray:
    """|A ∩ N| / |A ∪ N|, 0 when both are empty."""
    union = atom_size + network_size - overlap
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, overlap / union, 0.0)


_LABELS: dict = {}


def _voxel_labels(masks) -> np.ndarray | None:
    """(n_voxels,) each voxel's network (n_networks where none) when the networks are
    disjoint, else None; remembered for the last atlas masks seen (the bootstrap asks for
    the same masks hundreds of times)."""
    cached = _LABELS.get("masks")
    if cached is not masks:
        network_masks = np.asarray(masks, dtype=bool)
        disjoint = bool((network_masks.sum(axis=0) <= 1).all())
        _LABELS.update(masks=masks, labels=np.where(
            network_masks.any(axis=0), network_masks.argmax(axis=0),
            network_masks.shape[0]) if disjoint else None)
    return _LABELS["labels"]


def hypergeometric_p(overlap, atom_size, network_size, n_voxels: int) -> np.ndarray:
    """P(X >= overlap), X ~ Hypergeom(n_voxels, network_size, atom_size); 1 where the atom
    part is empty."""
    p = stats.hypergeom.sf(np.asarray(overlap) - 1, n_voxels, network_size, atom_size)
    return np.where(np.asarray(atom_size) > 0, np.clip(p, 0.0, 1.0), 1.0)


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
    overlap, atom_size, network_size, iou, overlap_rate = overlap_arrays(parts, atlas.masks)
    n_networks = overlap.shape[-1]
    p_overlap = hypergeometric_p(overlap, atom_size, network_size, n_voxels)

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
    }, columns=COUPLING_COLUMNS)


def add_null(coupling: pd.DataFrame, r: np.ndarray, p: np.ndarray) -> pd.DataFrame:
    """The coupling table with the surrogate null's columns ``network_effect`` (the group
    mean of the atom's standardised effect on the network's mean signal, alone with the
    confounds), ``network_effect_given`` (the same given the other atoms, when ``r`` has
    it; :mod:`bids_app.group.null`) and ``p_null`` (both tests combined).

    ``r`` (n_atoms, n_networks) or (n_atoms, 2 n_networks) and ``p`` (2, n_atoms,
    n_networks) from :func:`bids_app.group.null.null_table`; rows of ``coupling`` are
    ordered atom, network, sign as :func:`coupling_table` writes them.
    """
    n_atoms, n_networks = p.shape[1:]
    if len(coupling) != n_atoms * n_networks * len(SIGNS) or r.shape[1] % n_networks:
        raise ValueError("the null's arrays do not match the coupling table")
    columns = {}
    for name, block in zip(("network_effect", "network_effect_given"),
                           range(r.shape[1] // n_networks)):
        part = r[:, block * n_networks:(block + 1) * n_networks]
        columns[name] = np.repeat(part.reshape(-1), len(SIGNS))
    columns["p_null"] = np.moveaxis(p, 0, -1).reshape(-1)
    return coupling.assign(**columns)


def coupling_p_fwe(coupling: pd.DataFrame, n_atoms: int) -> np.ndarray:
    """(n_rows,) Bonferroni-corrected p of each row of the coupling table:
    ``min(1, p * n_atoms * n_networks * 2)``, ``p`` the surrogate null's ``p_null`` when the
    table has it, else the hypergeometric ``p_overlap``."""
    n_networks = max(int(coupling["network"].nunique()), 1)
    n_tests = int(n_atoms) * n_networks * len(SIGNS)
    p_column = "p_null" if "p_null" in coupling.columns else "p_overlap"
    return np.minimum(1.0, coupling[p_column].to_numpy(float) * n_tests)


def assign_atoms(coupling: pd.DataFrame, n_atoms: int, min_iou: float = 0.1,
                 alpha: float = 0.05) -> pd.DataFrame:
    """Assign each atom to its best-coupled FBN.

    A (network, sign) passes for an atom when ``iou >= min_iou`` and its Bonferroni
    corrected p value ``p_fwe = min(1, p * n_atoms * n_networks * 2)`` is below ``alpha``,
    where ``p`` is the surrogate null's ``p_null`` when the table has it (:func:`add_null`),
    else the hypergeometric ``p_overlap`` (voxels taken as independent: too liberal for
    smooth maps). The atom goes to the best passing (network, sign) **(ours)**: with the
    surrogate null, the smallest ``p_fwe`` (the network whose mean signal the atom explains
    most surely; ties: higher IoU, then table order); without it, the highest IoU (ties:
    smaller ``p_fwe``, then table order). An atom often reaches two anticorrelated
    networks (one part of each sign); the IoU of a thresholded part depends on the
    network's size and the map's smoothness more than on the atom's effect, so with a null
    that measures the effect it is only a gate.

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
    missing = [c for c in COUPLING_COLUMNS if c not in coupling.columns]
    if missing:
        raise ValueError(f"coupling lacks columns {missing}")
    table = coupling.assign(p_fwe=coupling_p_fwe(coupling, n_atoms),
                            _order=np.arange(len(coupling)))
    passing = table[(table["iou"] >= min_iou) & (table["p_fwe"] < alpha)]
    # with the surrogate null, the network whose signal the atom explains most surely
    # (smallest p); without it, the largest overlap (the voxel-count p only says "not chance")
    keys = (["atom", "p_fwe", "iou", "_order"] if "p_null" in table.columns
            else ["atom", "iou", "p_fwe", "_order"])
    ascending = [True, True, False, True] if "p_null" in table.columns else [
        True, False, True, True]
    best = (passing.sort_values(keys, ascending=ascending)
            .drop_duplicates("atom").set_index("atom"))
    # n_atom_voxels is repeated for every network: one network per (atom, sign) is enough.
    per_sign = table.drop_duplicates(["atom", "sign"])
    total_voxels = per_sign.groupby("atom")["n_atom_voxels"].sum()

    extra = [c for c in ("network_effect", "p_null") if c in table.columns]
    stats_columns = ["iou", "overlap_rate", "p_overlap", "p_fwe", *extra]
    rows = []
    for atom in range(1, n_atoms + 1):
        if atom in best.index:
            b = best.loc[atom]
            rows.append({"atom": atom, "network": str(b["network"]), "sign": str(b["sign"]),
                         **{c: float(b[c]) for c in stats_columns},
                         "n_atom_voxels": int(b["n_atom_voxels"])})
        else:
            rows.append({"atom": atom, "network": NO_NETWORK, "sign": None,
                         **{c: np.nan for c in stats_columns},
                         "n_atom_voxels": int(total_voxels.get(atom, 0))})
    return pd.DataFrame(rows, columns=ASSIGN_COLUMNS + extra)


def group_coupling(effects, atlas: FBNAtlas, q: float = 0.05, min_iou: float = 0.1,
                   network_means=None, null_network_means=None):
    """The group chain from subjects' effect maps to assignments, in one place: the
    one-sample t of each atom across subjects, FDR within each map, the coupling table (with
    the surrogate null's columns when ``null_network_means`` is given) and the assignments.

    Parameters
    ----------
    effects : array-like of shape (n_subjects, n_atoms, n_voxels)
        Each subject's effect map of each atom.
    atlas : FBNAtlas
        Networks over the same voxels.
    q, min_iou : float
        As in :func:`fdr_mask` and :func:`assign_atoms`.
    network_means, null_network_means : array-like, optional
        (n_subjects, n_atoms, n_statistics * n_networks) and (n_subjects, n_surrogates,
        same): each subject's null statistics of each atom (surrogate atom) on each
        network (the participant level's tables, :mod:`bids_app.group.null`); both or
        neither.

    Returns
    -------
    t, significant : ndarray of shape (n_atoms, n_voxels)
    coupling, assignments : pandas.DataFrame
    """
    t, p = one_sample_t(effects)
    significant = fdr_mask(p, q=q)
    coupling = coupling_table(t, significant, atlas)
    if null_network_means is not None:
        if network_means is None:
            raise ValueError("the surrogate null needs the atoms' network means too")
        coupling = add_null(coupling, *null_table(np.mean(network_means, axis=0),
                                                  np.mean(null_network_means, axis=0),
                                                  len(atlas.network_names)))
    assignments = assign_atoms(coupling, n_atoms=t.shape[0], min_iou=min_iou)
    return t, significant, coupling, assignments


def best_networks(iou, p_fwe, min_iou: float = 0.1, alpha: float = 0.05,
                  by_p: bool = False) -> np.ndarray:
    """(..., n_atoms) index of the network each atom goes to, -1 for none: the array form of
    :func:`assign_atoms`' rule (the passing (network, sign) of highest IoU; ties: smaller
    ``p_fwe``, then network order, then sign order; with ``by_p``, as with the surrogate
    null, smallest ``p_fwe`` first, then highest IoU).

    ``iou`` and ``p_fwe`` of shape (..., 2, n_atoms, n_networks), signs ``+`` then ``-``.
    """
    iou = np.asarray(iou, dtype=np.float64)
    p_fwe = np.asarray(p_fwe, dtype=np.float64)
    *lead, n_signs, n_atoms, n_networks = iou.shape
    # (..., n_atoms, n_networks * n_signs): candidates in table order (network, then sign)
    iou = np.moveaxis(iou, -3, -1).reshape(*lead, n_atoms, n_networks * n_signs)
    p_fwe = np.moveaxis(p_fwe, -3, -1).reshape(iou.shape)
    passing = (iou >= min_iou) & (p_fwe < alpha)
    if by_p:     # lexicographic best: smallest p_fwe, then highest IoU, then table order
        key_p = np.where(passing, p_fwe, np.inf)
        best_p = key_p.min(axis=-1, keepdims=True)
        key_iou = np.where(passing & (key_p == best_p), iou, -np.inf)
        first = np.argmax(key_iou == key_iou.max(axis=-1, keepdims=True), axis=-1)
        return np.where(passing.any(axis=-1), first // n_signs, -1)
    # lexicographic best: highest IoU, then smallest p_fwe, then first in table order
    key_iou = np.where(passing, iou, -np.inf)
    best_iou = key_iou.max(axis=-1, keepdims=True)
    key_p = np.where(passing & (key_iou == best_iou), p_fwe, np.inf)
    first = np.argmax(key_p == key_p.min(axis=-1, keepdims=True), axis=-1)
    return np.where(passing.any(axis=-1), first // n_signs, -1)


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
    t_subjects = np.asarray(t_subjects)        # float32 maps stay float32 (no 2x copy)
    if t_subjects.dtype.kind != "f":
        t_subjects = t_subjects.astype(np.float64)
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
        if np.isnan(t).any():
            t = np.nan_to_num(t, nan=0.0)
        # Benjamini-Hochberg on the |t| scale: the same voxels as fdr_mask on the p values
        # without a p value per voxel (the costliest step here)
        significant = fdr_mask_from_t(t, fdr_critical_t(t.shape[-1], df, q))
        coupling = coupling_table(t, significant, atlas)
        assigned = assign_atoms(coupling, n_atoms, min_iou=min_iou, alpha=alpha)
        tables.append(assigned[["atom", "network", "sign"]].assign(subject=label))
    columns = ["subject", "atom", "network", "sign"]
    if not tables:
        return pd.DataFrame(columns=columns)
    return pd.concat(tables, ignore_index=True)[columns]
