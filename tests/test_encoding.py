"""Tests of bids_app.encoding against nilearn's GLM, numpy least squares and planted truth."""

from __future__ import annotations

import json
import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nilearn.glm.first_level import FirstLevelModel
from nilearn.masking import apply_mask, unmask

from bids_app.config import CONFOUND_STRATEGY_TEXT
from bids_app.encoding import (
    CONFOUND_STRATEGY,
    RunData,
    confound_strategy_text,
    design_matrix,
    fit_ols,
    fit_participant,
    load_run_confounds,
    network_effects_of,
    ols,
    percent_signal_change,
)
from bids_app.errors import LlmfbnError

GRID = (5, 5, 4)
BOLD_NAME = "sub-01_task-x_space-MNI152NLin2009cAsym_res-2_desc-preproc_bold.nii.gz"
CONFOUNDS_NAME = "sub-01_task-x_desc-confounds_timeseries"


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------

def _mask_img(rng):
    mask = rng.random(GRID) < 0.7
    mask[0, 0, 0] = True
    return nib.Nifti1Image(mask.astype(np.uint8), np.diag([2.0, 2.0, 2.0, 1.0]))


def _nilearn_t_and_effect(Y, design: pd.DataFrame, mask_img, columns):
    """t and effect of single columns from nilearn's OLS FirstLevelModel."""
    img = unmask(Y.astype(np.float64), mask_img)
    model = FirstLevelModel(noise_model="ols", signal_scaling=False,
                            minimize_memory=False, mask_img=mask_img, standardize=False)
    with warnings.catch_warnings():
        # nilearn notes that the given mask is used instead of computing one: intended
        warnings.filterwarnings("ignore", message=".*Given mask will be used")
        model.fit(img, design_matrices=[design])
    ts, effects = {}, {}
    for col in columns:
        con = np.zeros(design.shape[1])
        con[list(design.columns).index(col)] = 1.0
        ts[col] = apply_mask(model.compute_contrast(con, stat_type="t", output_type="stat"),
                             mask_img)
        effects[col] = apply_mask(
            model.compute_contrast(con, stat_type="t", output_type="effect_size"), mask_img)
    return ts, effects


def _drift(n, order):
    """Cosine drift like fMRIPrep's cosineNN columns."""
    k = np.arange(n)
    return np.sqrt(2.0 / n) * np.cos(np.pi * (2 * k + 1) * (order + 1) / (2 * n))


def _make_runs(rng, n_voxels=40, n_atoms=6, n_volumes=(150, 130), n_nss=(2, 3),
               planted=((0, 1.5), (2, -1.0), (4, 0.8))):
    """Two runs with planted atom effects (in % signal change) and realistic nuisance."""
    runs, truth = [], np.zeros((n_atoms, n_voxels))
    for k, size in planted:
        truth[k] = size * (0.5 + rng.random(n_voxels))
    baseline = 500 + 1000 * rng.random(n_voxels)
    baseline[-3:] = 0.0        # outside the brain: all zeros
    for r, (n_vol, n_skip) in enumerate(zip(n_volumes, n_nss)):
        atoms = rng.standard_normal((n_vol, n_atoms))
        motion = np.cumsum(rng.standard_normal((n_vol, 6)) * 0.05, axis=0)
        drifts = np.column_stack([_drift(n_vol, o) for o in range(3)])
        compcor = rng.standard_normal((n_vol, 4))
        confounds = pd.DataFrame(np.hstack([motion, drifts, compcor]),
                                 columns=[f"m{i}" for i in range(6)]
                                 + [f"cosine{i:02d}" for i in range(3)]
                                 + [f"a_comp_cor_{i:02d}" for i in range(4)])
        sample_mask = np.arange(n_skip, n_vol)
        kept = confounds.iloc[sample_mask]
        confounds = kept - kept.mean()
        nuisance = np.zeros((n_vol, n_voxels))
        nuisance[sample_mask] = confounds.to_numpy() @ rng.standard_normal((13, n_voxels))
        signal_pct = atoms @ truth + nuisance + rng.standard_normal((n_vol, n_voxels))
        bold = baseline * (1 + signal_pct / 100)
        # non-steady-state volumes: T1 saturation makes them much brighter
        bold[:n_skip] *= 1.5
        bold[:, -3:] = 0.0
        bold[:, -4] = 700.0   # constant voxel
        runs.append(RunData(bold=bold.astype(np.float32), confounds=confounds,
                            sample_mask=sample_mask, atoms=atoms,
                            name=f"task-x_run-{r + 1}"))
    return runs, truth


def _count_solves(monkeypatch):
    """Count the blocks of voxels solved (calls of OLSSolver.solve) from now on."""
    calls = []
    solve = ols.OLSSolver.solve

    def counting(self, Y):
        calls.append(Y.shape[1])
        return solve(self, Y)

    monkeypatch.setattr(ols.OLSSolver, "solve", counting)
    return calls


# --------------------------------------------------------------------------------------
# fit_ols vs nilearn
# --------------------------------------------------------------------------------------

def test_fit_ols_matches_nilearn_first_level_model():
    rng = np.random.default_rng(0)
    mask_img = _mask_img(rng)
    n_voxels = int(np.asarray(mask_img.dataobj).sum())
    n = 120
    X = np.column_stack([_drift(n, 0), _drift(n, 1), _drift(n, 2),
                         rng.standard_normal((n, 4)), np.ones(n)])
    columns = ["drift0", "drift1", "drift2", "x0", "x1", "x2", "x3", "constant"]
    beta_true = np.zeros((8, n_voxels))
    beta_true[3] = 2.0 * rng.random(n_voxels)      # planted effect on x0
    beta_true[7] = 100.0
    Y = X @ beta_true + rng.standard_normal((n, n_voxels))
    design = pd.DataFrame(X, columns=columns, index=np.arange(n) * 2.0)

    result = fit_ols(Y, X)
    ts, effects = _nilearn_t_and_effect(Y, design, mask_img, ["drift1", "x0", "x1", "x3"])
    for k, col in [(1, "drift1"), (3, "x0"), (4, "x1"), (6, "x3")]:
        assert np.max(np.abs(result.t[k] - ts[col])) < 1e-4, col
        assert np.max(np.abs(result.betas[k] - effects[col])) < 1e-8, col
    assert result.dof == n - 8
    assert np.allclose(result.sigma2, result.rss / result.dof)
    # the planted effect is found
    assert np.corrcoef(result.betas[3], beta_true[3])[0, 1] > 0.9


def test_fit_ols_blocks_give_same_answer(monkeypatch):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((60, 5))
    Y = rng.standard_normal((60, 37))
    whole = fit_ols(Y, X)
    monkeypatch.setattr(ols, "VOXEL_BLOCK", 8)
    calls = _count_solves(monkeypatch)
    blocked = fit_ols(Y.astype(np.float32), X)
    assert calls == [8, 8, 8, 8, 5]
    np.testing.assert_allclose(blocked.t, whole.t, rtol=1e-5, atol=1e-5)


def test_percent_signal_change_matches_nilearn_mean_scaling():
    from nilearn.glm.first_level import mean_scaling

    rng = np.random.default_rng(2)
    Y = 300 + 50 * rng.standard_normal((40, 9))
    np.testing.assert_allclose(percent_signal_change(Y), mean_scaling(Y)[0], atol=1e-10)
    zeros = np.zeros((5, 2))
    np.testing.assert_allclose(percent_signal_change(zeros), -100.0)


# --------------------------------------------------------------------------------------
# participant model
# --------------------------------------------------------------------------------------

def test_design_matrix_layout():
    rng = np.random.default_rng(3)
    runs, _ = _make_runs(rng, n_voxels=10)
    design = design_matrix(runs)
    n1, n2 = runs[0].sample_mask.size, runs[1].sample_mask.size
    assert design.shape == (n1 + n2, 6 + 2 * (13 + 1))
    assert list(design.columns[:6]) == [f"atom{k:02d}" for k in range(1, 7)]
    assert "task-x_run-1_m0" in design.columns and "task-x_run-2_constant" in design.columns
    assert np.all(design["task-x_run-1_m0"].to_numpy()[n1:] == 0)
    np.testing.assert_array_equal(design["task-x_run-2_constant"].to_numpy(),
                                  np.r_[np.zeros(n1), np.ones(n2)])
    np.testing.assert_array_equal(design["atom03"].to_numpy()[:n1],
                                  runs[0].atoms[runs[0].sample_mask, 2])


def test_fit_participant_matches_nilearn_and_recovers_planted_atoms():
    rng = np.random.default_rng(4)
    runs, truth = _make_runs(rng)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = fit_participant(runs, glm="joint")

    # Reference: nilearn on the concatenated kept volumes, scaled per run, same design.
    Y = np.concatenate([100 * (r.bold[r.sample_mask].astype(np.float64)
                               / np.maximum(r.bold[r.sample_mask].mean(0), 1) - 1)
                        for r in runs])
    inside = slice(0, Y.shape[1] - 4)      # nilearn cannot mask-in constant voxels sanely
    Y_in = Y[:, inside]
    n_in = Y_in.shape[1]
    mask = np.zeros(GRID, dtype=np.uint8)
    mask.flat[:n_in] = 1
    mask_img = nib.Nifti1Image(mask, np.eye(4))
    design = fit.design.reset_index(drop=True)
    atoms = [f"atom{k:02d}" for k in range(1, 7)]
    ts, effects = _nilearn_t_and_effect(Y_in, design, mask_img, atoms)
    for k, col in enumerate(atoms):
        assert np.max(np.abs(fit.t[k, inside] - ts[col])) < 1e-4, col
        assert np.max(np.abs(fit.effect[k, inside] - effects[col])) < 1e-4, col

    # Planted truth: noise sd 1 %, ~275 volumes -> SE of a beta ~0.07 %; allow ~4 SE
    # plus the few-% bias from scaling by the run mean.
    n_params = fit.design.shape[1]
    assert fit.dof == fit.n_volumes_used - n_params
    assert fit.n_volumes_used == sum(r.sample_mask.size for r in runs)
    for k in (0, 2, 4):
        assert np.max(np.abs(fit.effect[k, inside] - truth[k, inside])) < 0.3
        assert np.min(np.abs(fit.t[k, inside])) > 4
    null = np.abs(fit.t[[1, 3, 5]][:, inside])
    assert null.mean() < 1.2          # |t| of a null regressor averages ~0.8
    assert np.all(fit.r2[inside] > 0.2)

    # Zero-variance voxels (all-zero and constant): exactly 0, no NaN.
    for arr in (fit.effect, fit.t):
        assert arr.dtype == np.float32
        assert np.all(arr[:, -4:] == 0)
        assert np.all(np.isfinite(arr))
    assert np.all(fit.r2[-4:] == 0) and np.all(np.isfinite(fit.r2))


def test_fit_participant_r2_matches_lstsq(monkeypatch):
    rng = np.random.default_rng(5)
    runs, _ = _make_runs(rng, n_voxels=30)
    monkeypatch.setattr(ols, "VOXEL_BLOCK", 7)   # several blocks, one partial
    calls = _count_solves(monkeypatch)
    fit = fit_participant(runs, glm="joint")
    assert calls == [7, 7, 7, 7, 7, 7, 7, 7, 2, 2]   # full and reduced model, per block
    Y = np.concatenate([percent_signal_change(r.bold[r.sample_mask].astype(np.float64))
                        for r in runs])
    X = fit.design.to_numpy()
    rss_full = np.sum((Y - X @ np.linalg.lstsq(X, Y, rcond=None)[0]) ** 2, axis=0)
    Xr = X[:, 6:]
    rss_red = np.sum((Y - Xr @ np.linalg.lstsq(Xr, Y, rcond=None)[0]) ** 2, axis=0)
    r2 = 1 - rss_full[:-4] / rss_red[:-4]
    assert np.max(np.abs(fit.r2[:-4] - r2)) < 1e-5
    # and fit_ols on the same design gives the same atom t values
    ref = fit_ols(Y[:, :-4], X)
    assert np.max(np.abs(fit.t[:, :-4] - ref.t[:6])) < 1e-3


def test_fit_participant_input_errors():
    rng = np.random.default_rng(6)
    runs, _ = _make_runs(rng, n_voxels=8)

    short = RunData(bold=runs[0].bold, confounds=runs[0].confounds,
                    sample_mask=runs[0].sample_mask, atoms=runs[0].atoms[:-5],
                    name=runs[0].name)
    with pytest.raises(LlmfbnError, match="differ in length"):
        fit_participant([short, runs[1]])

    # atom03 = run-1's first motion column (zero in run 2) -> collinear with a confound
    atoms = runs[0].atoms.copy()
    atoms[runs[0].sample_mask, 2] = runs[0].confounds["m0"].to_numpy()
    bad1 = RunData(runs[0].bold, runs[0].confounds, runs[0].sample_mask, atoms, runs[0].name)
    atoms2 = runs[1].atoms.copy()
    atoms2[:, 2] = 0.0
    bad2 = RunData(runs[1].bold, runs[1].confounds, runs[1].sample_mask, atoms2, runs[1].name)
    with pytest.raises(LlmfbnError, match="atom03"):
        fit_participant([bad1, bad2])

    # atom05 = atom01 + atom02 + intercept: jointly collinear
    a1, a2 = runs[0].atoms.copy(), runs[1].atoms.copy()
    a1[:, 4] = a1[:, 0] + a1[:, 1] + 3.0
    a2[:, 4] = a2[:, 0] + a2[:, 1] - 1.0
    with pytest.raises(LlmfbnError, match="atom05") as err:
        fit_participant([RunData(r.bold, r.confounds, r.sample_mask, a, r.name)
                         for r, a in zip(runs, (a1, a2))])
    assert "atom01" in str(err.value) and "atom02" in str(err.value)

    few = [RunData(r.bold[:20], r.confounds.iloc[:18 - i], r.sample_mask[:18 - i],
                   r.atoms[:20], r.name) for i, r in enumerate(runs)]
    with pytest.raises(LlmfbnError, match="Too few volumes"):
        fit_participant(few)


# --------------------------------------------------------------------------------------
# confounds
# --------------------------------------------------------------------------------------

def _write_fmriprep_run(folder, rng, n_volumes=60, layout="v1.4", with_json=True,
                        drop=()):
    """Write an fMRIPrep-like BOLD + confounds TSV + JSON sidecar; return the BOLD path."""
    folder.mkdir(parents=True, exist_ok=True)
    bold_path = folder / BOLD_NAME
    nib.save(nib.Nifti1Image(rng.random((3, 3, 3, n_volumes)).astype(np.float32),
                             np.eye(4)), bold_path)
    cols, meta = {}, {}
    for name in ["global_signal", "csf", "white_matter"]:
        cols[name] = 500 + rng.standard_normal(n_volumes)
    cols["std_dvars"] = np.r_[np.nan, 1 + rng.random(n_volumes - 1)]
    cols["dvars"] = np.r_[np.nan, 20 + rng.random(n_volumes - 1)]
    cols["framewise_displacement"] = np.r_[np.nan, 0.1 * rng.random(n_volumes - 1)]
    cols["rmsd"] = np.r_[np.nan, 0.1 * rng.random(n_volumes - 1)]
    for i in range(6):
        cols[f"t_comp_cor_{i:02d}"] = rng.standard_normal(n_volumes)
        meta[f"t_comp_cor_{i:02d}"] = {"Method": "tCompCor", "Retained": True}
    if layout == "v1.4":          # fMRIPrep 1.4-20.1: a_comp_cor split by Mask
        for i in range(10):
            cols[f"a_comp_cor_{i:02d}"] = rng.standard_normal(n_volumes)
            meta[f"a_comp_cor_{i:02d}"] = {"Mask": "CSF" if i < 5 else "WM",
                                           "Method": "aCompCor", "Retained": True,
                                           "VarianceExplained": 0.1}
    else:                         # fMRIPrep >= 20.2: c_/w_ separate, a_ combined
        for prefix, mask in [("c", "CSF"), ("w", "WM"), ("a", "combined")]:
            for i in range(7):
                cols[f"{prefix}_comp_cor_{i:02d}"] = rng.standard_normal(n_volumes)
                meta[f"{prefix}_comp_cor_{i:02d}"] = {"Mask": mask, "Method": "aCompCor",
                                                      "Retained": True}
    meta["dropped_0"] = {"Mask": "combined", "Method": "aCompCor", "Retained": False}
    for i in range(4):
        cols[f"cosine{i:02d}"] = _drift(n_volumes, i)
    nss = np.zeros((n_volumes, 2))
    nss[0, 0] = nss[1, 1] = 1
    cols["non_steady_state_outlier00"] = nss[:, 0]
    cols["non_steady_state_outlier01"] = nss[:, 1]
    for p in ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]:
        x = np.cumsum(0.02 * rng.standard_normal(n_volumes))
        cols[p] = x
        cols[f"{p}_derivative1"] = np.r_[np.nan, np.diff(x)]
        cols[f"{p}_power2"] = x**2
        cols[f"{p}_derivative1_power2"] = cols[f"{p}_derivative1"] ** 2
    for name in drop:
        del cols[name]
    pd.DataFrame(cols).to_csv(folder / f"{CONFOUNDS_NAME}.tsv", sep="\t", index=False,
                              na_rep="n/a")
    if with_json:
        (folder / f"{CONFOUNDS_NAME}.json").write_text(json.dumps(meta, indent=2))
    return bold_path, pd.DataFrame(cols)


@pytest.mark.parametrize("layout", ["v1.4", "v20.2"])
def test_load_run_confounds_fmriprep_layouts(tmp_path, layout):
    rng = np.random.default_rng(7)
    bold_path, raw = _write_fmriprep_run(tmp_path / "func", rng, layout=layout)
    confounds, sample_mask = load_run_confounds(bold_path)

    motion = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
    cosines = [f"cosine{i:02d}" for i in range(4)]
    if layout == "v1.4":
        compcor = [f"a_comp_cor_{i:02d}" for i in range(10)]
    else:
        compcor = [f"{p}_comp_cor_{i:02d}" for p in "cw" for i in range(5)]
    assert confounds.shape == (58, 6 + 4 + 10)
    assert sorted(confounds.columns) == sorted(motion + cosines + compcor)
    np.testing.assert_array_equal(sample_mask, np.arange(2, 60))
    assert sample_mask.dtype.kind == "i"
    # demeaned over the kept volumes, values otherwise unchanged
    kept = raw.iloc[2:]
    for col in ["trans_x", "rot_z", compcor[0], compcor[-1], "cosine02"]:
        np.testing.assert_allclose(confounds[col].to_numpy(),
                                   (kept[col] - kept[col].mean()).to_numpy(), atol=1e-10)
    assert not any("non_steady" in c or "comp_cor" in c and c.startswith("t")
                   for c in confounds.columns)


def test_load_run_confounds_without_dropped_volumes(tmp_path):
    rng = np.random.default_rng(8)
    bold_path, _ = _write_fmriprep_run(
        tmp_path, rng, n_volumes=40,
        drop=("non_steady_state_outlier00", "non_steady_state_outlier01"))
    confounds, sample_mask = load_run_confounds(str(bold_path))
    np.testing.assert_array_equal(sample_mask, np.arange(40))
    assert confounds.shape == (40, 20)


def test_load_run_confounds_errors(tmp_path):
    rng = np.random.default_rng(9)
    bold_path, _ = _write_fmriprep_run(tmp_path / "nojson", rng, with_json=False)
    with pytest.raises(LlmfbnError, match="JSON sidecar") as err:
        load_run_confounds(bold_path)
    assert BOLD_NAME in str(err.value)

    bold_path, _ = _write_fmriprep_run(tmp_path / "norotz", rng, drop=("rot_z",))
    with pytest.raises(LlmfbnError, match="rot_z"):
        load_run_confounds(bold_path)

    (tmp_path / "empty").mkdir()
    with pytest.raises(LlmfbnError, match="no confounds file"):
        load_run_confounds(tmp_path / "empty" / BOLD_NAME)


def test_confound_strategy_is_the_narratives_one():
    assert CONFOUND_STRATEGY["strategy"] == ("motion", "high_pass", "compcor")
    assert CONFOUND_STRATEGY["motion"] == "basic"
    assert CONFOUND_STRATEGY["compcor"] == "anat_separated"
    assert CONFOUND_STRATEGY["n_compcor"] == 5


def test_confound_strategy_text_is_generated_from_the_strategy():
    narratives = ("6 motion parameters, cosine drift terms (fMRIPrep, 128 s high-pass), "
                  "5 CSF + 5 WM anatomical CompCor components, non-steady-state volumes "
                  "removed")
    assert confound_strategy_text() == narratives
    assert confound_strategy_text(CONFOUND_STRATEGY) == narratives
    assert CONFOUND_STRATEGY_TEXT == narratives     # what the sidecars say
    # a changed strategy changes the text
    assert confound_strategy_text({**CONFOUND_STRATEGY, "n_compcor": 3}) == narratives.replace(
        "5 CSF + 5 WM", "3 CSF + 3 WM")
    assert confound_strategy_text({**CONFOUND_STRATEGY, "motion": "full"}) == narratives.replace(
        "6 motion parameters", "24 motion parameters (with derivatives and squares)")
    assert confound_strategy_text({**CONFOUND_STRATEGY, "compcor": "anat_combined"}) == (
        narratives.replace("5 CSF + 5 WM anatomical CompCor components",
                           "5 anatomical CompCor components (combined WM + CSF mask)"))
    assert confound_strategy_text({"strategy": ("high_pass", "motion"), "motion": "power2"}) == (
        "cosine drift terms (fMRIPrep, 128 s high-pass), 12 motion parameters (with squares), "
        "non-steady-state volumes removed")
    # keywords left out take nilearn's defaults (wm_csf="basic", n_compcor="all", scrub=5)
    assert confound_strategy_text({"strategy": ("wm_csf", "global_signal", "high_pass",
                                                "compcor", "scrub"),
                                   "fd_threshold": 0.2, "std_dvars_threshold": 3}) == (
        "2 WM/CSF mean-signal regressors, 1 global-signal regressor, cosine drift terms "
        "(fMRIPrep, 128 s high-pass), all anatomical CompCor components (combined WM + CSF "
        "mask), volumes with framewise displacement > 0.2 mm or standardized DVARS > 3 "
        "removed with segments shorter than 5 volumes, non-steady-state volumes removed")
    for bad in ({"strategy": ("motion", "ica")}, {**CONFOUND_STRATEGY, "motion": "all"},
                {**CONFOUND_STRATEGY, "n_compcor": 0}, {**CONFOUND_STRATEGY, "n_compcors": 5}):
        with pytest.raises(ValueError):
            confound_strategy_text(bad)


def test_separate_glm_equals_one_nilearn_model_per_atom():
    """glm="separate": atom k's t map is nilearn's OLS t on [atom_k, confounds, intercepts]."""
    rng = np.random.default_rng(11)
    runs, truth = _make_runs(rng)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = fit_participant(runs, glm="separate")
    Y = np.concatenate([100 * (r.bold[r.sample_mask].astype(np.float64)
                               / np.maximum(r.bold[r.sample_mask].mean(0), 1) - 1)
                        for r in runs])
    inside = slice(0, Y.shape[1] - 4)
    Y_in = Y[:, inside]
    mask = np.zeros(GRID, dtype=np.uint8)
    mask.flat[:Y_in.shape[1]] = 1
    mask_img = nib.Nifti1Image(mask, np.eye(4))
    design = fit.design.reset_index(drop=True)
    atoms = [f"atom{k:02d}" for k in range(1, 7)]
    confounds = [c for c in design.columns if c not in atoms]
    for k, col in enumerate(atoms):
        ts, effects = _nilearn_t_and_effect(Y_in, design[[col] + confounds], mask_img, [col])
        assert np.max(np.abs(fit.t[k, inside] - ts[col])) < 1e-4, col
        assert np.max(np.abs(fit.effect[k, inside] - effects[col])) < 1e-4, col
    assert fit.dof == fit.n_volumes_used - len(confounds) - 1
    with pytest.raises(LlmfbnError):
        fit_participant(runs, glm="ridge")


@pytest.mark.parametrize("glm", ["separate", "joint"])
def test_network_effects_equal_pool_means_of_the_maps(glm, monkeypatch):
    """The coupling null's shortcut: regressors fitted on pooled signals (network means of
    the percent-signal-change BOLD) give exactly the network means of the maps the same
    regressors get when fitted voxel by voxel as atoms (any voxel block size). Pools of
    random networks, random surrogate regressors (2.5 blocks of atoms for the joint GLM)."""
    rng = np.random.default_rng(21)
    runs, _ = _make_runs(rng)
    n_voxels, n_atoms = runs[0].bold.shape[1], runs[0].atoms.shape[1]
    masks = rng.random((4, n_voxels)) < 0.4
    pools = masks / masks.sum(axis=1, keepdims=True)
    monkeypatch.setattr(ols, "VOXEL_BLOCK", 7)
    fit = fit_participant(runs, glm=glm, pools=pools)
    design = fit.design
    atoms = network_effects_of(design, n_atoms, design.iloc[:, :n_atoms],
                               fit.network_signals, glm)
    np.testing.assert_allclose(atoms, fit.effect.astype(np.float64) @ pools.T,
                               rtol=1e-5, atol=1e-6)
    # surrogates: fitted as the atoms of a voxel-wise model, then averaged over each pool
    n_surrogates = 15
    surrogates = [rng.standard_normal((len(r.bold), n_surrogates)) for r in runs]
    pooled = network_effects_of(
        design, n_atoms, np.concatenate([s[r.sample_mask] for s, r in zip(surrogates, runs)]),
        fit.network_signals, glm)
    blocks = range(0, n_surrogates, n_atoms) if glm == "joint" else [0]
    width = n_atoms if glm == "joint" else n_surrogates
    for first in blocks:
        as_atoms = [RunData(bold=r.bold, confounds=r.confounds, sample_mask=r.sample_mask,
                            atoms=s[:, first:first + width], name=r.name)
                    for s, r in zip(surrogates, runs)]
        maps = fit_participant(as_atoms, glm=glm).effect.astype(np.float64)
        np.testing.assert_allclose(pooled[first:first + width], maps @ pools.T,
                                   rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="pools"):
        fit_participant(runs, glm=glm, pools=pools[:, :-1])


def test_cross_validated_r_against_independent_folds():
    """Leave-one-run-out r equals a hand-written fold loop (numpy lstsq), is high where
    atoms are planted and near zero elsewhere."""
    from bids_app.encoding import cross_validated_r  # the public face, imported late

    rng = np.random.default_rng(12)
    runs, truth = _make_runs(rng)
    r = cross_validated_r(runs)
    # independent reference: residualise each run with lstsq, fit on one, test on the other
    parts = []
    for run in runs:
        m = run.sample_mask
        conf = pd.DataFrame(run.confounds)
        conf = conf.iloc[m] if len(conf) == run.bold.shape[0] else conf
        N = np.column_stack([conf.to_numpy(float), np.ones(m.size)])
        y = percent_signal_change(run.bold[m].astype(float))
        a = run.atoms[m].astype(float)
        res = lambda v, N=N: v - N @ np.linalg.lstsq(N, v, rcond=None)[0]  # noqa: E731
        parts.append((res(a), res(y)))
    expected = np.zeros(r.shape)
    for held, train in ((0, 1), (1, 0)):
        w = np.linalg.lstsq(parts[train][0], parts[train][1], rcond=None)[0]
        pred, data = parts[held][0] @ w, parts[held][1]
        for v in range(r.size):
            if np.ptp(data[:, v]) > 0:
                expected[v] += np.corrcoef(pred[:, v], data[:, v])[0, 1] / 2
    varies = np.all([np.ptp(run.bold[run.sample_mask], 0) > 0 for run in runs], axis=0)
    assert (~varies).sum() >= 2
    np.testing.assert_allclose(r[varies], expected[varies], atol=1e-5)
    assert np.all(r[~varies] == 0)
    planted = (np.abs(truth).sum(axis=0) > 0) & varies
    assert r[planted].mean() > 0.3
    # atoms unrelated to the data predict nothing: mean r near 0 (out-of-sample r of an
    # overfitted noise model is biased slightly negative, hence the asymmetric bounds)
    null_runs = [RunData(run.bold, run.confounds, run.sample_mask,
                         rng.standard_normal(run.atoms.shape), run.name) for run in runs]
    assert -0.15 < cross_validated_r(null_runs)[varies].mean() < 0.05
