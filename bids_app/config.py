"""One object holds every setting of a run.

Like fMRIPrep's ``config`` module: the command line fills a :class:`Config`, every stage reads
it, and it is written next to the outputs (``logs/config_<level>_<run_id>.json``) so that a run
can be reproduced from its own output folder. Defaults that the paper leaves open are marked
"(ours)" in the command-line help and in ``docs/``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import uuid
from pathlib import Path

from bids_app import __version__
from bids_app.bids.naming import LOGS_DIR
from bids_app.encoding.confounds import confound_strategy_text
from bids_app.errors import LlmfbnError

DEFAULT_SPACE = "MNI152NLin2009cAsym"
DEFAULT_MODEL = "minilm"
DEFAULT_N_ATOMS = 64
#: Lasso penalty of the dictionary objective for unit-norm AN responses (ours).
DEFAULT_SPARSITY_LAMBDA = 0.1
DEFAULT_CONTEXT_TOKENS = 256
DEFAULT_FBN_ATLAS = "seitzman"
DEFAULT_HRF = "spm"
DEFAULT_GLM = "separate"
DEFAULT_FDR_Q = 0.05
DEFAULT_MIN_IOU = 0.1
#: AN sub-group membership: correlation with the network's atom composite (ours).
DEFAULT_MEMBERSHIP_THRESHOLD = 0.6
#: Phase-randomised surrogate atoms for the coupling null (ours).
DEFAULT_NULL_SURROGATES = 1000
#: Frames used by dictionary learning and the GLM (ours): those that carry a story.
DEFAULT_FRAMES = "story"
#: Stimulus nuisance regressors of the GLM (ours); the envelope when the audio is found.
DEFAULT_NUISANCE: tuple[str, ...] = ("wordrate", "envelope")
#: The confound strategy in words, generated from the one the encoding stage applies.
CONFOUND_STRATEGY_TEXT = confound_strategy_text()


@dataclasses.dataclass
class Config:
    """Settings of one llmfbn run.

    Paths are absolute after :meth:`resolve_paths`. ``participant_label`` holds labels
    without the ``sub-`` prefix; ``None`` means every subject.
    """

    bids_dir: Path
    output_dir: Path
    analysis_level: str
    participant_label: list[str] | None = None
    task: list[str] | None = None
    derivatives: Path | None = None
    space: str = DEFAULT_SPACE
    res: str | None = None
    model: list[str] = dataclasses.field(default_factory=lambda: [DEFAULT_MODEL])
    stimuli: Path | None = None
    word_pooling: str = "mean"
    mem_gb: float = 8.0
    target_sparsity: float | None = None
    n_atoms: int = DEFAULT_N_ATOMS
    sparsity_lambda: float = DEFAULT_SPARSITY_LAMBDA
    context_tokens: int = DEFAULT_CONTEXT_TOKENS
    hrf_model: str = DEFAULT_HRF
    frames: str = DEFAULT_FRAMES
    atom_stability: bool = True
    glm: str = DEFAULT_GLM
    nuisance: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_NUISANCE))
    fbn_atlas: str = DEFAULT_FBN_ATLAS
    fdr_q: float = DEFAULT_FDR_Q
    min_iou: float = DEFAULT_MIN_IOU
    membership_threshold: float = DEFAULT_MEMBERSHIP_THRESHOLD
    null_surrogates: int = DEFAULT_NULL_SURROGATES
    work_dir: Path | None = None
    device: str = "auto"
    device_map: str | None = None
    nprocs: int = 1
    seed: int = 0
    reports: bool = True
    skip_bids_validation: bool = False
    verbose: int = 0
    confound_strategy: str = CONFOUND_STRATEGY_TEXT
    version: str = __version__
    #: options given on the command line (the rest are defaults); the group level refuses
    #: an explicit option that contradicts the participant level's setting
    explicit_options: list[str] = dataclasses.field(default_factory=list)
    run_id: str = dataclasses.field(
        default_factory=lambda: _dt.datetime.now().strftime("%Y%m%d-%H%M%S_")
        + uuid.uuid4().hex[:8]
    )

    def resolve_paths(self) -> Config:
        """Make every path absolute; fill the derivatives and work-dir defaults."""
        self.bids_dir = Path(self.bids_dir).expanduser().absolute()
        self.output_dir = Path(self.output_dir).expanduser().absolute()
        if self.stimuli:
            self.stimuli = Path(self.stimuli).expanduser().absolute()
        self.derivatives = (
            Path(self.derivatives).expanduser().absolute()
            if self.derivatives
            else self.bids_dir / "derivatives" / "fmriprep"
        )
        self.work_dir = (
            Path(self.work_dir).expanduser().absolute()
            if self.work_dir
            else Path.cwd().absolute() / "work"
        )
        return self

    def to_dict(self) -> dict:
        """JSON-serialisable settings."""
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            out[field.name] = str(value) if isinstance(value, Path) else value
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> Config:
        """A :class:`Config` from :meth:`to_dict` output or parsed arguments (same names)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"not settings of a Config: {unknown}")
        kwargs = dict(data)
        for key in ("bids_dir", "output_dir", "derivatives", "work_dir", "stimuli"):
            if kwargs.get(key) is not None:
                kwargs[key] = Path(kwargs[key])
        return cls(**kwargs)

    @property
    def space_entities(self) -> dict:
        """BIDS entities of the output space, e.g.
        ``{"space": "MNI152NLin2009cAsym", "res": "2"}``."""
        ents = {"space": self.space}
        if self.res:
            ents["res"] = self.res
        return ents


# ------------------------------------------------------------ settings carried to the group
#: Settings of the participant level that every output of a model depends on. The group
#: level reads them from ``logs/config_participant_*.json`` and uses them for its sidecars,
#: methods text and reports; an explicit group option that contradicts one is an error.
PARTICIPANT_SETTINGS = ("space", "res", "word_pooling", "context_tokens", "hrf_model",
                        "frames", "n_atoms", "sparsity_lambda", "target_sparsity", "seed",
                        "atom_stability", "glm", "nuisance", "confound_strategy",
                        "null_surrogates", "fbn_atlas")


def option_name(setting: str) -> str:
    """The command-line option that sets ``setting`` (for messages)."""
    special = {"res": "--space", "hrf_model": "--hrf", "confound_strategy": "(built in)"}
    return special.get(setting, "--" + setting.replace("_", "-"))


def read_participant_settings(output_dir: Path) -> list[tuple[Path, dict]]:
    """Every ``logs/config_participant_*.json`` under ``output_dir``, oldest name first."""
    records = []
    for path in sorted((Path(output_dir) / LOGS_DIR).glob("config_participant_*.json")):
        try:
            records.append((path, json.loads(path.read_text())))
        except (OSError, ValueError) as err:
            raise LlmfbnError(f"cannot read the participant-level settings {path}",
                              found=str(err), todo="restore or delete the file") from err
    return records


def _agreed_settings(records: list[tuple[Path, dict]]) -> dict:
    """The carried settings all participant runs share (else a clear error)."""
    agreed = {}
    for name in PARTICIPANT_SETTINGS:
        if name == "fbn_atlas" and not agreed.get("null_surrogates"):
            continue     # the participant level uses the atlas only to fit the null
        values = {json.dumps(data.get(name)): path.name for path, data in records}
        if len(values) > 1:
            raise LlmfbnError(
                f"the participant-level runs in this output folder used different "
                f"{option_name(name)} settings",
                found="; ".join(f"{value} in logs/{file}" for value, file in values.items()),
                todo="outputs of different settings cannot be combined: re-run the "
                "participant level with one setting (and remove the superseded run's "
                "logs/config_participant_*.json), or use a separate OUTPUT_DIR")
        agreed[name] = records[0][1].get(name)
    return agreed


def carry_participant_settings(config: Config, records: list[tuple[Path, dict]]) -> Config:
    """Set the group ``config``'s :data:`PARTICIPANT_SETTINGS` and models to those of the
    participant runs in ``records`` (from :func:`read_participant_settings`).

    An option given explicitly on the group command line must equal the participant
    level's value; ``--model`` may name a subset of the models the participant level ran.
    """
    if not records:
        raise LlmfbnError(
            "no participant-level run in this output folder",
            expected=f"{config.output_dir}/logs/config_participant_*.json",
            found="no such file", todo="run the participant level first, into the same "
            "OUTPUT_DIR")
    agreed = _agreed_settings(records)
    explicit = set(config.explicit_options)
    for name, value in agreed.items():
        mine = getattr(config, name)
        if (name in explicit or (name == "res" and "space" in explicit)) and mine != value:
            raise LlmfbnError(
                f"{option_name(name)} contradicts the setting the participant level ran with",
                expected=f"{value!r} (from {records[0][0]})", found=f"{mine!r}",
                todo=f"leave {option_name(name)} out at the group level (it is read from "
                "the participant level), or re-run the participant level with it")
        setattr(config, name, value)
    models = list(dict.fromkeys(m for _, data in records for m in data.get("model") or []))
    if "model" in explicit:
        unknown = [m for m in config.model if m not in models]
        if unknown:
            raise LlmfbnError(
                "--model names a model the participant level did not run",
                expected="one or more of: " + ", ".join(models), found=", ".join(unknown),
                todo="run the participant level with this model first")
    else:
        config.model = models
    return config
