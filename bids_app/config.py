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
CONFOUND_STRATEGY_TEXT = (
    "6 motion parameters, cosine drift terms (fMRIPrep, 128 s high-pass), 5 CSF + 5 WM "
    "anatomical CompCor components, non-steady-state volumes removed"
)


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
    glm: str = DEFAULT_GLM
    fbn_atlas: str = DEFAULT_FBN_ATLAS
    fdr_q: float = DEFAULT_FDR_Q
    min_iou: float = DEFAULT_MIN_IOU
    work_dir: Path | None = None
    device: str = "auto"
    nprocs: int = 1
    seed: int = 0
    skip_bids_validation: bool = False
    verbose: int = 0
    confound_strategy: str = CONFOUND_STRATEGY_TEXT
    version: str = __version__
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
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        for key in ("bids_dir", "output_dir", "derivatives", "work_dir", "stimuli"):
            if kwargs.get(key) is not None:
                kwargs[key] = Path(kwargs[key])
        return cls(**kwargs)

    @property
    def space_entities(self) -> dict:
        """BIDS entities of the output space, e.g. ``{"space": "MNI152NLin2009cAsym", "res": "2"}``."""
        ents = {"space": self.space}
        if self.res:
            ents["res"] = self.res
        return ents


def resolve_device(device: str) -> str:
    """The one place where ``--device`` becomes a torch device string."""
    from bids_app.errors import LlmfbnError

    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise LlmfbnError(
            "--device cuda was requested but CUDA is not available",
            found=f"torch {torch.__version__} without a usable CUDA device",
            todo="run with --device cpu (or auto), or use a CUDA build of torch on a GPU node "
            "(Singularity: add --nv; Docker: add --gpus all)",
        )
    return device
