"""The methods text (``logs/CITATION.md`` and each report's Methods section)."""

from __future__ import annotations

from bids_app import __version__

CITATION = """\
Artificial-neuron sub-groups were analysed with llmfbn {version}, which implements the method
of Sun et al. (2024), "Brain-like Functional Organization within Large Language Models"
(arXiv:2410.19542). The language model {model} was run over each story's transcript; the
activation of every artificial neuron (input of the second linear layer of each feed-forward
block) was averaged over each word's sub-word tokens, placed at the word onsets, convolved with
the {hrf} haemodynamic response (nilearn) and sampled at the BOLD frame times. {n_atoms}
representative temporal patterns (atoms) were learned by sparse dictionary learning
(online and batch block-coordinate descent with FISTA lasso coding, PyTorch; lambda = {lam}). \
Each participant's preprocessed BOLD (fMRIPrep) was regressed
voxel-wise on the atoms with confounds ({confounds}) by ordinary least squares. Group maps were
one-sample t-tests across participants thresholded at FDR q < {q}; each map was compared with
the functional networks of the {atlas} atlas by intersection-over-union and assigned to the best
network passing IoU >= {min_iou} and a Bonferroni-corrected hypergeometric overlap test.
Software: {software}.
"""

LIBRARIES = (("nilearn", "nilearn"), ("nibabel", "nibabel"), ("pybids", "pybids"),
             ("scikit-learn", "scikit-learn"), ("PyTorch", "torch"),
             ("transformers", "transformers"), ("NumPy", "numpy"), ("SciPy", "scipy"))


def software_versions() -> str:
    """"name version" of every library llmfbn relies on, for the methods text."""
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for label, dist in LIBRARIES:
        try:
            parts.append(f"{label} {version(dist)}")
        except PackageNotFoundError:
            parts.append(label)
    return ", ".join(parts)


def citation_text(config, spec, atlas_name: str) -> str:
    """The methods paragraph for model ``spec`` run with ``config``'s settings."""
    lam = (config.sparsity_lambda if config.target_sparsity is None
           else f"chosen for {config.target_sparsity:g} non-zero codes per AN")
    return CITATION.format(version=__version__, model=spec.name, hrf=config.hrf_model.upper(),
                           n_atoms=config.n_atoms, lam=lam,
                           confounds=config.confound_strategy, q=config.fdr_q,
                           atlas=atlas_name, min_iou=config.min_iou,
                           software=software_versions())
