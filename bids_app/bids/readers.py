"""Reading the participant level's outputs back for the group level."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import scipy.sparse as sp

from bids_app.bids import naming
from bids_app.bids.images import intersect_masks, load_image, masked_maps
from bids_app.errors import LlmfbnError

LOGGER = logging.getLogger("llmfbn")


@dataclass
class GroupInputs:
    """Every subject's participant-level outputs of one model, inside the common mask.

    The maps are not held: :func:`read_group_inputs` checks their files and headers, and
    :func:`subject_maps` reads one subject's stack when asked (the group level streams over
    subjects; :mod:`bids_app.group.streaming`, which keeps the effect maps on disk).
    """

    subjects: list[str]
    dof: np.ndarray | None     # (n_subjects,)
    mask: np.ndarray           # 3-D bool, voxels analysed in every subject
    mask_img: nib.Nifti1Image
    designs: list[np.ndarray] | None = None  # each (n_volumes_used, n_columns), atoms first
    paths: dict | None = None                # {subject: {stat: path}}
    n_atoms: int = 0
    n_surrogates: int = 0
    #: the coupling null's tables (``sub-<label>_desc-<model>_networkeffects.tsv``): each
    #: subject's effects of the atoms and of the surrogate atoms on each network's mean signal
    network_effects: list[pd.DataFrame] | None = None
    #: the network-prediction test's tables (``..._networkprediction.tsv``), one per subject,
    #: each indexed by block (``atoms``, then the surrogate blocks); None when the null is
    #: off or a subject has none (participant outputs from before 2026-12-02)
    network_predictions: list[pd.DataFrame] | None = None


@dataclass
class AtomOutputs:
    """The stimulus-level outputs of one model (``OUTPUT_DIR/atoms``)."""

    table: pd.DataFrame        # (n_trs, 5 + n_atoms): acquisition ... time_s, atom01..atomK
    codes: sp.csr_matrix       # (n_neurons, n_atoms)
    projections: np.ndarray    # (n_neurons, n_atoms) X D^T, memory-mapped
    neurons: pd.DataFrame      # (n_neurons, ...): row, layer, unit, n_atoms_used
    sidecar: dict              # desc-<model>_atoms.json
    stability: dict | None     # desc-<model>_stability.json, when written
    source: Path               # the atoms TSV the time courses were read from

    @property
    def courses(self) -> np.ndarray:
        """(n_atoms, n_frames) atom time courses over the frames they were learned on."""
        names = [c for c in self.table.columns if c.startswith("atom")]
        rows = self._used()
        return self.table.loc[rows, names].to_numpy(np.float64).T

    @property
    def segments(self) -> np.ndarray:
        """(n_frames,) the acquisition of each frame of :attr:`courses`."""
        return self.table.loc[self._used(), "acquisition"].to_numpy()

    def _used(self) -> np.ndarray:
        if "used" in self.table.columns:
            return self.table["used"].to_numpy().astype(bool)
        return np.ones(len(self.table), dtype=bool)

    @property
    def convergence_log(self) -> list:
        return self.sidecar.get("DictionaryLearning", {}).get("ConvergenceLog", [])


_TODO = "run the participant level first with the same --model and --space"


def read_atom_outputs(output_dir: Path, label: str) -> AtomOutputs:
    """The atoms table, codes, neuron table and stability record of model ``label``."""
    def path(suffix: str, extension: str) -> Path:
        return naming.atoms_file(output_dir, label, suffix, extension)

    codes_path = path("codes", ".npz")
    if not codes_path.is_file():
        raise LlmfbnError(f"no participant-level outputs of model '{label}' in {output_dir}",
                          expected=str(codes_path), found="no such file", todo=_TODO)
    stability = path("stability", ".json")
    return AtomOutputs(
        table=pd.read_csv(path("atoms", ".tsv"), sep="\t"), source=path("atoms", ".tsv"),
        codes=sp.load_npz(codes_path),
        projections=np.load(path("projections", ".npy"), mmap_mode="r"),
        neurons=pd.read_csv(path("neurons", ".tsv"), sep="\t"),
        sidecar=json.loads(path("atoms", ".json").read_text()),
        stability=json.loads(stability.read_text()) if stability.is_file() else None)


def _read_sidecar(path: Path) -> dict:
    sidecar = naming.sidecar_path(path)
    try:
        return json.loads(sidecar.read_text())
    except (OSError, ValueError) as err:
        raise LlmfbnError(f"cannot read the sidecar {sidecar}", found=str(err),
                          todo=_TODO + " (it rewrites the sidecar)") from err


def _subject_paths(output_dir: Path, subjects: list[str], space_entities: dict, label: str,
                   any_found: bool, stats: tuple) -> dict:
    """{subject: {each of ``stats``, "mask": path, "sidecar": the t map's sidecar}}."""
    paths = {}
    for subject in subjects:
        paths[subject] = {s: naming.subject_map(output_dir, subject, space_entities, label, s)
                          for s in stats}
        missing = [p for p in paths[subject].values() if not p.is_file()]
        if not missing:
            paths[subject]["sidecar"] = side = _read_sidecar(paths[subject]["t"])
            tasks = side.get("Tasks") or [None]
            paths[subject]["mask"] = mask = naming.subject_mask(
                output_dir, subject, space_entities, label, tasks[0])
            missing = [] if mask.is_file() else [mask]
        if missing:
            raise LlmfbnError(f"participant-level maps of sub-{subject} are missing",
                              expected=str(missing[0]), found="no such file",
                              todo=_TODO + (" for this subject" if any_found else ""))
    return paths


def read_group_inputs(output_dir: Path, space_entities: dict, label: str,
                      participant_label: list[str] | None,
                      null_surrogates: int = 0) -> GroupInputs:
    """Effect and t maps of every subject (``participant_label``, else all found), and the
    coupling null's tables (``networkeffects.tsv``: the atoms' and surrogate atoms'
    effects on each network's signal) when the participant level fitted the null."""
    root = Path(output_dir)
    found = sorted(p.name[4:] for p in root.glob("sub-*") if p.is_dir()) if root.is_dir() else []
    subjects = participant_label or found
    paths = _subject_paths(root, subjects, space_entities, label, bool(found), ("effect", "t"))
    if len(subjects) < 3:
        raise LlmfbnError("the group level needs at least 3 subjects",
                          found=f"{len(subjects)}: " + ", ".join(subjects),
                          todo="run the participant level on more subjects")
    mask_img, mask = intersect_masks(
        [paths[s]["mask"] for s in subjects], [f"sub-{s}" for s in subjects],
        "participant maps are on different grids", "use one --space for every subject")
    n_atoms = _stack_length(paths, subjects, "effect", mask.shape)
    _stack_length(paths, subjects, "t", mask.shape, n_atoms)
    tables = ([_network_effects(root, s, label, n_atoms) for s in subjects]
              if null_surrogates else None)
    n_surrogates = 0
    if tables:
        counts = {s: len(t) - n_atoms for s, t in zip(subjects, tables)}
        if len(set(counts.values())) > 1:
            raise LlmfbnError("the subjects' coupling-null tables hold different numbers of "
                              "surrogate atoms", expected="one participant run (same "
                              "--null-surrogates) for every subject", found=", ".join(
                                  f"sub-{s}: {n}" for s, n in counts.items()), todo=_TODO)
        n_surrogates = counts[subjects[0]]
    predictions = ([_network_prediction(root, s, label) for s in subjects]
                   if null_surrogates else None)
    if predictions is not None and any(p is None for p in predictions):
        LOGGER.warning("No network-prediction table for %s (participant outputs of an llmfbn "
                       "before 2026-12-02): networks are coupled by the atom tests only. "
                       "Re-run the participant level for the network-level test "
                       "(docs/metrics.md).", ", ".join(
                           f"sub-{s}" for s, p in zip(subjects, predictions) if p is None))
        predictions = None
    if predictions is not None and len({len(p) for p in predictions}) > 1:
        raise LlmfbnError("the subjects' network-prediction tables hold different numbers of "
                          "surrogate blocks", expected="one participant run for every "
                          "subject", found=", ".join(f"sub-{s}: {len(p) - 1}" for s, p in
                                                     zip(subjects, predictions)), todo=_TODO)
    dofs = [paths[s]["sidecar"]["DegreesOfFreedom"] for s in subjects]
    return GroupInputs(subjects=list(subjects),
                       dof=np.asarray(dofs), mask=mask, mask_img=mask_img,
                       designs=[_design(root, s, label, n_atoms) for s in subjects],
                       paths=paths, n_atoms=n_atoms, n_surrogates=n_surrogates,
                       network_effects=tables, network_predictions=predictions)


def _stack_length(paths: dict, subjects: list[str], stat: str, shape: tuple,
                  expected: int | None = None) -> int:
    """The number of maps in every subject's ``stat`` stack (from the headers), which must
    be 4-D on the mask's grid and the same for all subjects (and ``expected`` if given)."""
    lengths = {}
    for subject in subjects:
        path = paths[subject][stat]
        img_shape = load_image(path).shape
        if len(img_shape) != 4 or tuple(img_shape[:3]) != tuple(shape):
            raise LlmfbnError(f"the {stat} maps of sub-{subject} are not a stack of maps on "
                              "the grid of its mask", expected=f"4-D, {tuple(shape)} x maps",
                              found=f"shape {tuple(img_shape)} in {path}", todo=_TODO)
        lengths[subject] = int(img_shape[3])
    values = set(lengths.values()) | ({expected} if expected is not None else set())
    if len(values) > 1:
        raise LlmfbnError(f"the subjects' {stat} maps hold different numbers of maps",
                          expected="one participant run (same --n-atoms) for every subject",
                          found=", ".join(f"sub-{s}: {n}" for s, n in lengths.items()),
                          todo=_TODO)
    return lengths[subjects[0]]


def subject_maps(inputs: GroupInputs, subject: str, stat: str) -> np.ndarray:
    """(n_maps, n_voxels) float32: one subject's ``stat`` stack ("effect", "t") inside the
    common mask."""
    return masked_maps(inputs.paths[subject][stat], inputs.mask)


def _network_effects(output_dir: Path, subject: str, label: str,
                     n_atoms: int) -> pd.DataFrame:
    """The subject's coupling-null table, checked: the atoms' rows first, then at least
    one surrogate atom, finite values; its sidecar's ``FBNAtlas`` in ``attrs["atlas"]``."""
    path = naming.subject_network_effects(output_dir, subject, label)
    if not path.is_file():
        raise LlmfbnError(f"the coupling-null table of sub-{subject} is missing",
                          expected=str(path), found="no such file",
                          todo=_TODO + " (it writes the table when --null-surrogates is "
                          "above 0), or pass --null-surrogates 0 to both levels")
    table = pd.read_csv(path, sep="\t")
    atoms = naming.atom_names(n_atoms)
    regressors = table["regressor"].astype(str).tolist() if "regressor" in table else []
    values = table.drop(columns="regressor", errors="ignore")
    if (regressors[:n_atoms] != atoms or len(regressors) <= n_atoms
            or not np.isfinite(values.to_numpy(np.float64)).all()):
        raise LlmfbnError(f"the coupling-null table of sub-{subject} is not what the "
                          "participant level writes", expected="a column 'regressor' "
                          f"listing {atoms[0]}..{atoms[-1]} then the surrogate atoms, and "
                          "finite effects", found=str(path), todo=_TODO)
    values.index = regressors
    values.attrs["atlas"] = _read_sidecar(path).get("FBNAtlas")
    return values


def _network_prediction(output_dir: Path, subject: str, label: str) -> pd.DataFrame | None:
    """The subject's network-prediction table indexed by block, checked (the atoms' row
    first, at least one surrogate block, correlations in [-1, 1]), its sidecar's
    ``FBNAtlas`` in ``attrs["atlas"]``; None when the file does not exist."""
    path = naming.subject_network_prediction(output_dir, subject, label)
    if not path.is_file():
        return None
    table = pd.read_csv(path, sep="\t")
    blocks = table["block"].astype(str).tolist() if "block" in table else []
    values = table.drop(columns="block", errors="ignore")
    numbers = values.to_numpy(np.float64) if all(
        pd.api.types.is_numeric_dtype(t) for t in values.dtypes) else np.array([np.nan])
    if (blocks[:1] != ["atoms"] or len(blocks) < 2 or not np.isfinite(numbers).all()
            or np.abs(numbers).max(initial=0) > 1):
        raise LlmfbnError(f"the network-prediction table of sub-{subject} is not what the "
                          "participant level writes", expected="a column 'block' listing "
                          "'atoms' then the surrogate blocks, and correlations in [-1, 1]",
                          found=str(path), todo=_TODO)
    values.index = blocks
    values.attrs["atlas"] = _read_sidecar(path).get("FBNAtlas")
    return values


def _design(output_dir: Path, subject: str, label: str, n_atoms: int) -> np.ndarray:
    """The design matrix the participant level fitted for the subject (its TSV), checked to
    start with the atom columns of its effect maps."""
    path = naming.subject_design(output_dir, subject, label)
    if not path.is_file():
        raise LlmfbnError(f"the design matrix of sub-{subject} is missing",
                          expected=str(path), found="no such file", todo=_TODO)
    design = pd.read_csv(path, sep="\t")
    atoms = naming.atom_names(n_atoms)
    if list(design.columns[:n_atoms]) != atoms:
        raise LlmfbnError(f"the design matrix of sub-{subject} does not start with the "
                          f"{n_atoms} atom columns of its effect maps", expected=", ".join(
                              atoms[:2]) + ", ...", found=", ".join(design.columns[:2]),
                          todo=_TODO)
    return design.to_numpy(np.float64)
