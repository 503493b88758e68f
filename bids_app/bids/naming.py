"""The naming contract of the outputs: every file name, folder and label is made here.

Files use standard BIDS entities only (``ENTITY_ORDER``); what cannot be named with an entity
goes into the JSON sidecar. Atoms are named ``atom01`` ... ``atomK`` everywhere (tables,
sidecars, design matrices, reports), zero-padded to the width of K and at least two digits.

Names the BIDS schema has a rule for (the subject masks: ``func/`` files with a ``task``
entity) follow it; statistical maps follow the BIDS-Stats-Models convention
(``stat-<statistic>_statmap``), which the schema does not cover yet, so they, the
stimulus-level ``atoms/`` and the ``group/`` folder are listed in ``.bidsignore``
(:data:`BIDSIGNORE`). ``stat`` is not an entity pybids knows: the pybids configuration
shipped with llmfbn (:data:`PYBIDS_CONFIG_FILE`) adds it.
"""

from __future__ import annotations

from pathlib import Path

ENTITY_ORDER = ("sub", "ses", "task", "run", "space", "res", "desc", "stat")

#: Folders of OUTPUT_DIR below the dataset root.
ATOMS_DIR = "atoms"
GROUP_DIR = "group"
LOGS_DIR = "logs"

#: The network label of an atom that couples to no network.
NO_NETWORK = "none"

#: The stimulus nuisance regressors of the participant GLM, in design order: their column
#: names (``<run>_<name>``), the values of ``--nuisance`` and the ``desc`` of their maps.
NUISANCE_REGRESSORS = ("wordrate", "envelope")
#: Statistics of the subject maps (``stat`` entity) and of the group maps.
SUBJECT_STATS = ("effect", "t", "rsquare", "cvr")
GROUP_STATS = ("t", "tfdr")

#: ``.bidsignore`` of OUTPUT_DIR: what the BIDS schema has no rule for (patterns the
#: official validator matches: no trailing slash on folders).
BIDSIGNORE = (LOGS_DIR, ATOMS_DIR, GROUP_DIR, "*.html", "*_statmap.nii.gz", "*_statmap.json",
              "*_design.tsv", "*_networkeffects.tsv", "*_networkeffects.json",
              "*_networkprediction.tsv", "*_networkprediction.json")

#: The derivatives' README (what each file is, how to query it with pybids).
README_FILE = "README.md"
#: The pybids configuration that adds the ``stat`` entity: shipped in the package
#: (``bids_app/data``) and copied into OUTPUT_DIR/code/.
PYBIDS_CONFIG_FILE = "llmfbn_pybids_config.json"
CODE_DIR = "code"


def bids_name(suffix: str, extension: str, **entities) -> str:
    """``sub-01_space-X_desc-y_stat-t_statmap.nii.gz`` from entities in BIDS order."""
    unknown = set(entities) - set(ENTITY_ORDER)
    if unknown:
        raise ValueError(f"non-standard entities {sorted(unknown)}")
    parts = [f"{k}-{entities[k]}" for k in ENTITY_ORDER if entities.get(k) not in (None, "")]
    return "_".join(parts + [suffix]) + extension


def sidecar_path(path: Path) -> Path:
    """The JSON sidecar of a ``.nii.gz``/``.tsv``/... output."""
    path = Path(path)
    name = path.name
    for ext in (".nii.gz", ".nii", ".tsv", ".npz"):
        if name.endswith(ext):
            return path.with_name(name[: -len(ext)] + ".json")
    return path.with_suffix(".json")


# ------------------------------------------------------------------------------------ atoms
def atom_width(n_atoms: int) -> int:
    """Digits of an atom number: the width of ``n_atoms``, at least 2."""
    return max(2, len(str(int(n_atoms))))


def atom_name(index: int, n_atoms: int) -> str:
    """Name of the atom at 0-based ``index`` among ``n_atoms``: ``atom01``, ``atom001``..."""
    return f"atom{index + 1:0{atom_width(n_atoms)}d}"


def atom_names(n_atoms: int) -> list[str]:
    """``atom01`` ... ``atomK`` for ``K = n_atoms``."""
    return [atom_name(k, n_atoms) for k in range(n_atoms)]


def surrogate_names(n_surrogates: int) -> list[str]:
    """``null0001`` ... : the coupling null's surrogate atoms (at least four digits)."""
    width = max(4, len(str(n_surrogates)))
    return [f"null{k + 1:0{width}d}" for k in range(n_surrogates)]


def given_column(network: str) -> str:
    """``<network>_given``: the coupling null's table column of the statistic given the
    other atoms (the column ``<network>`` holds the atom alone with the confounds)."""
    return f"{network}_given"


# --------------------------------------------------------------------------- output stems
def model_desc(label: str) -> str:
    """``desc-<label>``: the model's label is the ``desc`` entity of every output."""
    return f"desc-{label}"


def atoms_file(output_dir: Path, label: str, suffix: str, extension: str) -> Path:
    """``OUTPUT_DIR/atoms/desc-<label>_<suffix><extension>`` (stimulus-level outputs)."""
    return Path(output_dir) / ATOMS_DIR / f"{model_desc(label)}_{suffix}{extension}"


def group_file(output_dir: Path, label: str, suffix: str, extension: str) -> Path:
    """``OUTPUT_DIR/group/desc-<label>_<suffix><extension>`` (group tables and report)."""
    return Path(output_dir) / GROUP_DIR / f"{model_desc(label)}_{suffix}{extension}"


def group_map(output_dir: Path, space_entities: dict, label: str, stat: str) -> Path:
    """``OUTPUT_DIR/group/space-<space>_desc-<label>_stat-<stat>_statmap.nii.gz``."""
    return Path(output_dir) / GROUP_DIR / bids_name(
        "statmap", ".nii.gz", **space_entities, desc=label, stat=stat)


def subject_entities(subject: str, space_entities: dict, label: str) -> dict:
    return {"sub": subject, **space_entities, "desc": label}


def subject_folder(output_dir: Path, subject: str) -> Path:
    return Path(output_dir) / f"sub-{subject}" / "func"


def subject_map(output_dir: Path, subject: str, space_entities: dict, label: str,
                stat: str) -> Path:
    """``sub-<s>/func/sub-<s>_space-<space>_desc-<label>_stat-<stat>_statmap.nii.gz``."""
    return subject_folder(output_dir, subject) / bids_name(
        "statmap", ".nii.gz", **subject_entities(subject, space_entities, label), stat=stat)


def subject_nuisance_map(output_dir: Path, subject: str, space_entities: dict,
                         regressor: str, stat: str) -> Path:
    """``sub-<s>/func/sub-<s>_space-<space>_desc-<regressor>_stat-<stat>_statmap.nii.gz``:
    a stimulus nuisance regressor's map (model without atoms; no model label, as it does
    not depend on the language model)."""
    if regressor not in NUISANCE_REGRESSORS:
        raise ValueError(f"unknown nuisance regressor {regressor!r}")
    return subject_folder(output_dir, subject) / bids_name(
        "statmap", ".nii.gz", sub=subject, **space_entities, desc=regressor, stat=stat)


def subject_mask(output_dir: Path, subject: str, space_entities: dict, label: str,
                 task: str) -> Path:
    """``sub-<s>/func/sub-<s>_task-<task>_space-<space>_desc-<label>_mask.nii.gz``.

    The subject's analysed voxels are one mask for all its runs; the BIDS schema requires
    the ``task`` entity of a ``func/`` mask, so it is written once per task analysed.
    """
    return subject_folder(output_dir, subject) / bids_name(
        "mask", ".nii.gz", **subject_entities(subject, space_entities, label), task=task)


def subject_design(output_dir: Path, subject: str, label: str) -> Path:
    return subject_folder(output_dir, subject) / bids_name(
        "design", ".tsv", sub=subject, desc=label)


def subject_network_effects(output_dir: Path, subject: str, label: str) -> Path:
    """The coupling null's table of a subject: effects of the atoms and surrogate atoms on
    each network's mean signal."""
    return subject_folder(output_dir, subject) / bids_name(
        "networkeffects", ".tsv", sub=subject, desc=label)


def subject_network_prediction(output_dir: Path, subject: str, label: str) -> Path:
    """The network-prediction test's table of a subject: the split-half prediction
    correlation of each network's mean signal by the atoms and by surrogate blocks."""
    return subject_folder(output_dir, subject) / bids_name(
        "networkprediction", ".tsv", sub=subject, desc=label)


def subject_report(output_dir: Path, subject: str) -> Path:
    return Path(output_dir) / f"sub-{subject}.html"


def models_metrics(output_dir: Path) -> Path:
    """``OUTPUT_DIR/group/desc-models_metrics.tsv``: several models' metrics side by side."""
    return group_file(output_dir, "models", "metrics", ".tsv")


def models_report(output_dir: Path) -> Path:
    """``OUTPUT_DIR/group/desc-models_report.html``: several models side by side."""
    return group_file(output_dir, "models", "report", ".html")


def run_config(output_dir: Path, level: str, run_id: str) -> Path:
    return Path(output_dir) / LOGS_DIR / f"config_{level}_{run_id}.json"


def citation_file(output_dir: Path) -> Path:
    return Path(output_dir) / LOGS_DIR / "CITATION.md"


def readme_file(output_dir: Path) -> Path:
    return Path(output_dir) / README_FILE


def pybids_config_copy(output_dir: Path) -> Path:
    """``OUTPUT_DIR/code/llmfbn_pybids_config.json``."""
    return Path(output_dir) / CODE_DIR / PYBIDS_CONFIG_FILE
