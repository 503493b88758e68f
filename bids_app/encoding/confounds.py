"""The nuisance confounds of a run: the strategy, its prose and the loader.

:data:`CONFOUND_STRATEGY` is the one home of the confound strategy: the keyword arguments
given to nilearn's :func:`~nilearn.interfaces.fmriprep.load_confounds` by
:func:`load_run_confounds`, and the source of the prose of :func:`confound_strategy_text`
that the output sidecars carry.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bids_app.errors import LlmfbnError

__all__ = ["CONFOUND_STRATEGY", "MOTION_TRACES", "confound_strategy_text", "load_run_confounds",
           "load_run_motion"]

#: Confounds regressed out with the atoms: 6 rigid-body motion parameters, fMRIPrep's
#: discrete-cosine drift terms, and 5 CSF + 5 WM anatomical CompCor components, as the
#: Narratives authors did (Nastase et al. 2021). Keyword arguments of
#: :func:`nilearn.interfaces.fmriprep.load_confounds`.
CONFOUND_STRATEGY = dict(
    strategy=("motion", "high_pass", "compcor"),
    motion="basic",
    compcor="anat_separated",
    n_compcor=5,
)

# ------------------------------------------------------------------------------ the prose
#: Keyword arguments of nilearn's load_confounds that a strategy may set (besides img_files).
_NILEARN_KEYWORDS = ("strategy", "motion", "scrub", "fd_threshold", "std_dvars_threshold",
                     "wm_csf", "global_signal", "compcor", "n_compcor", "ica_aroma",
                     "tedana", "demean")

#: nilearn's ``motion`` / ``wm_csf`` / ``global_signal`` models: regressors per signal and
#: what they add to the signals themselves.
_SIGNAL_MODELS = {
    "basic": (1, ""),
    "power2": (2, " (with squares)"),
    "derivatives": (2, " (with derivatives)"),
    "full": (4, " (with derivatives and squares)"),
}

#: nilearn's ``compcor`` types; ``{n}`` is ``n_compcor``, the number per mask.
_COMPCOR_TYPES = {
    "anat_combined": "{n} anatomical CompCor components (combined WM + CSF mask)",
    "anat_separated": "{n} CSF + {n} WM anatomical CompCor components",
    "temporal": "{n} temporal CompCor components",
    "temporal_anat_combined": "{n} temporal + {n} anatomical CompCor components "
                              "(combined WM + CSF mask)",
    "temporal_anat_separated": "{n} temporal + {n} CSF + {n} WM anatomical CompCor "
                               "components",
}

_ICA_AROMA = {"full": "ICA-AROMA non-aggressive denoising (fMRIPrep's AROMA image)",
              "basic": "ICA-AROMA noise components"}
_TEDANA = {"aggressive": "tedana rejected components (aggressive)",
           "non-aggressive": "tedana rejected and accepted components (non-aggressive)"}


def _nilearn_default(name: str):
    """Default of a keyword of nilearn's load_confounds (imported only when needed)."""
    import inspect

    from nilearn.interfaces.fmriprep import load_confounds

    return inspect.signature(load_confounds).parameters[name].default


def _choice(table: dict, name: str, value):
    if not isinstance(value, str) or value not in table:
        raise ValueError(f"unknown {name} {value!r} in the confound strategy; "
                         f"nilearn's are {sorted(table)}")
    return table[value]


def _signal_text(n_signals: int, what: str, model) -> str:
    """``6 motion parameters``, ``2 WM/CSF mean-signal regressors (with squares)`` ..."""
    per_signal, detail = _choice(_SIGNAL_MODELS, "model", model)
    count = n_signals * per_signal
    return f"{count} {what}{'s' if count > 1 else ''}{detail}"


def _compcor_text(compcor, n_compcor) -> str:
    if n_compcor != "all" and (isinstance(n_compcor, bool)
                               or not isinstance(n_compcor, (int, np.integer))
                               or n_compcor < 1):
        raise ValueError(f"n_compcor must be a positive integer or 'all', got {n_compcor!r}")
    return _choice(_COMPCOR_TYPES, "compcor", compcor).format(n=n_compcor)


def _scrub_text(scrub, fd_threshold, std_dvars_threshold) -> str:
    text = (f"volumes with framewise displacement > {fd_threshold:g} mm or standardized "
            f"DVARS > {std_dvars_threshold:g} removed")
    return text + (f" with segments shorter than {scrub} volumes" if scrub else "")


def confound_strategy_text(strategy=CONFOUND_STRATEGY) -> str:
    """The confound strategy in words, generated from nilearn's keyword arguments.

    Parameters
    ----------
    strategy : dict, default=CONFOUND_STRATEGY
        Keyword arguments of :func:`nilearn.interfaces.fmriprep.load_confounds`; keywords
        it does not give take nilearn's defaults.

    Returns
    -------
    text : str
        One phrase per component of ``strategy["strategy"]``, in that order, then
        ``"non-steady-state volumes removed"`` (nilearn always removes them). For
        :data:`CONFOUND_STRATEGY`: ``"6 motion parameters, cosine drift terms (fMRIPrep,
        128 s high-pass), 5 CSF + 5 WM anatomical CompCor components, non-steady-state
        volumes removed"``.

    Raises
    ------
    ValueError
        If ``strategy`` has a keyword, component or model that nilearn does not know.
    """
    unknown = sorted(set(strategy) - set(_NILEARN_KEYWORDS))
    if unknown:
        raise ValueError(f"not keywords of nilearn's load_confounds: {unknown}")

    def get(name):
        return strategy[name] if name in strategy else _nilearn_default(name)

    phrases = {
        "motion": lambda: _signal_text(6, "motion parameter", get("motion")),
        "high_pass": lambda: "cosine drift terms (fMRIPrep, 128 s high-pass)",
        "wm_csf": lambda: _signal_text(2, "WM/CSF mean-signal regressor", get("wm_csf")),
        "global_signal": lambda: _signal_text(1, "global-signal regressor",
                                              get("global_signal")),
        "compcor": lambda: _compcor_text(get("compcor"), get("n_compcor")),
        "ica_aroma": lambda: _choice(_ICA_AROMA, "ica_aroma", get("ica_aroma")),
        "tedana": lambda: _choice(_TEDANA, "tedana", get("tedana")),
        "scrub": lambda: _scrub_text(get("scrub"), get("fd_threshold"),
                                     get("std_dvars_threshold")),
        "non_steady_state": None,   # always done; said last
    }
    parts = []
    for component in get("strategy"):
        if component not in phrases:
            raise ValueError(f"unknown confound strategy component {component!r}; "
                             f"nilearn's are {sorted(phrases)}")
        if phrases[component] is not None:
            parts.append(phrases[component]())
    return ", ".join(parts + ["non-steady-state volumes removed"])


# ----------------------------------------------------------------------------- the loader
def _confounds_tsv_name(bold_path: Path) -> str:
    """fMRIPrep name of the confounds TSV that belongs to ``bold_path`` (for messages)."""
    entities = bold_path.name.split("_")
    kept = [e for e in entities
            if "-" in e and e.split("-", 1)[0] not in ("space", "res", "den", "desc")]
    return "_".join(kept + ["desc-confounds", "timeseries.tsv"])


def _explain_load_error(text: str) -> tuple[str, str]:
    """What went wrong and what to do, from the text of nilearn's exception."""
    if "json" in text.lower():
        what = "the JSON sidecar of the confounds file is missing or unreadable"
        todo = ("copy the '*_desc-confounds_timeseries.json' that fMRIPrep wrote next to "
                "its TSV; it is needed to tell CSF from WM CompCor components")
    elif "could not find associated confound file" in text.lower():
        what = "no confounds file was found for this run"
        todo = "point to an fMRIPrep derivatives folder that holds the confounds TSV"
    elif "invalid file type" in text.lower():
        what = "the BOLD file is not named like an fMRIPrep preprocessed image"
        todo = "give the '*_desc-preproc_bold.nii.gz' file written by fMRIPrep"
    else:
        what = "required confound columns are missing"
        todo = ("rerun fMRIPrep (>= 1.4) or add the missing columns; the confound "
                f"strategy is {confound_strategy_text()}")
    return what, todo


def load_run_confounds(bold_path) -> tuple[pd.DataFrame, np.ndarray]:
    """Load the nuisance confounds of one fMRIPrep run.

    Uses :func:`nilearn.interfaces.fmriprep.load_confounds` with :data:`CONFOUND_STRATEGY`
    and ``demean=True`` (means taken over the kept volumes). Non-steady-state volumes
    (fMRIPrep's ``non_steady_state_outlierXX`` columns) are dropped through the sample mask.

    Parameters
    ----------
    bold_path : str or pathlib.Path
        fMRIPrep preprocessed BOLD image, e.g.
        ``sub-01_task-x_space-MNI152NLin2009cAsym_res-2_desc-preproc_bold.nii.gz``. The
        confounds TSV (``*_desc-confounds_timeseries.tsv``) and its JSON sidecar (needed for
        the CompCor masks) must sit next to it.

    Returns
    -------
    confounds : pandas.DataFrame of shape (n_kept, n_confounds)
        Demeaned confounds of the kept volumes; the index holds the volume indices.
    sample_mask : numpy.ndarray of shape (n_kept,), int
        Indices of the kept volumes of the run (all volumes when none is dropped).

    Raises
    ------
    LlmfbnError
        If the confounds TSV or its JSON sidecar is missing, or a required column is absent.
    """
    from nilearn.interfaces.fmriprep import load_confounds

    bold_path = Path(bold_path)
    tsv_name = _confounds_tsv_name(bold_path)
    expected = (f"'{tsv_name}' with columns trans_x..rot_z, cosineNN and a_comp_cor_NN "
                "(or c_comp_cor_NN/w_comp_cor_NN), and its JSON sidecar "
                f"'{tsv_name[:-4]}.json' giving each CompCor component's Mask, next to "
                f"'{bold_path.name}' (fMRIPrep >= 1.4 layout)")
    try:
        confounds, sample_mask = load_confounds(str(bold_path), **CONFOUND_STRATEGY,
                                                demean=True)
    except (ValueError, KeyError, OSError, TypeError) as err:
        text = str(err)
        what, todo = _explain_load_error(text)
        raise LlmfbnError(f"Cannot load the confounds of '{bold_path}': {what}",
                          expected=expected,
                          found=f"{type(err).__name__}: {text.rstrip('.')}",
                          todo=todo) from err

    n_volumes = len(confounds)
    if sample_mask is None:
        sample_mask = np.arange(n_volumes)
    sample_mask = np.asarray(sample_mask, dtype=int)
    if sample_mask.size == 0:
        raise LlmfbnError(f"All volumes of '{bold_path}' are flagged as outliers",
                          expected="some steady-state volumes",
                          found=f"0 of {n_volumes} volumes kept",
                          todo="check the non_steady_state_outlier columns of the confounds")
    # nilearn keeps all rows (maskers apply the sample mask later); we keep only used rows.
    confounds = confounds.iloc[sample_mask].astype(np.float64)
    confounds.index = pd.Index(sample_mask, name="volume")
    return confounds, sample_mask


#: fMRIPrep's per-volume quality traces shown by the subject report (not regressed out).
MOTION_TRACES = ("framewise_displacement", "std_dvars")


def load_run_motion(confounds_tsv) -> pd.DataFrame:
    """fMRIPrep's framewise displacement (mm) and standardised DVARS of every volume.

    Parameters
    ----------
    confounds_tsv : str or pathlib.Path
        fMRIPrep's ``*_desc-confounds_timeseries.tsv`` of the run.

    Returns
    -------
    pandas.DataFrame of shape (n_volumes, n_traces)
        The columns of :data:`MOTION_TRACES` the file has (none when it has neither);
        fMRIPrep's ``n/a`` on the first volume is NaN.
    """
    header = pd.read_csv(confounds_tsv, sep="\t", nrows=0).columns
    columns = [c for c in MOTION_TRACES if c in header]
    return pd.read_csv(confounds_tsv, sep="\t", usecols=columns or [header[0]],
                       na_values="n/a")[columns].astype(np.float64)
