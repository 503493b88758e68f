"""Data from a known sparse dictionary, shared by the atoms stage and learner tests."""

from __future__ import annotations

import numpy as np


def unit_rows(x):
    """Rows centred and scaled to unit norm, like the pipeline's AN responses."""
    x = x - x.mean(1, keepdims=True)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def planted_rows(seed, n_neurons=2000, n_trs=120, n_atoms=8, noise=0.05):
    """(atoms (n_atoms, n_trs), X (n_neurons, n_trs) float32): every row combines 1-2 of
    ``n_atoms`` random unit atoms with random signed weights, plus noise, unit-norm rows."""
    rng = np.random.default_rng(seed)
    atoms = rng.standard_normal((n_atoms, n_trs))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    codes = np.zeros((n_neurons, n_atoms))
    for i in range(n_neurons):
        used = rng.choice(n_atoms, size=rng.integers(1, 3), replace=False)
        codes[i, used] = rng.uniform(0.5, 2.0, used.size) * rng.choice([-1, 1], used.size)
    x = codes @ atoms + noise * rng.standard_normal((n_neurons, n_trs))
    return atoms, unit_rows(x).astype(np.float32)


def use_v3_learner(monkeypatch) -> None:
    """Set the atoms settings of the v3 learner (``settings.V3_LEARNER``) for this test."""
    from bids_app.atoms import settings

    for name, value in settings.V3_LEARNER.items():
        monkeypatch.setattr(settings, name, value)
