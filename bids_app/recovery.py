"""How well a run recovered the planted truth of a synthetic dataset.

For each planted network: whether it was coupled, its AN sub-group's size, and the
precision, recall and F1 of the sub-group against the network's functional truth (every AN
whose response correlates >= 0.6 with the planted signal over the story frames, written by
:mod:`bids_app.synthetic`), and the rank AUC of the planted ANs among all ANs by score.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

COLUMNS = ["network", "coupled", "n_members", "n_truth", "precision", "recall", "f1", "auc"]


def recovery_table(truth: dict, members: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """One row per planted network of ``truth`` (``sourcedata/llmfbn_truth.json``).

    ``members`` and ``scores``: the group level's ``desc-<model>_members.tsv`` and
    ``desc-<model>_scores.tsv`` (AN index in ``neuron``). A planted network that was not
    coupled has no sub-group: precision, recall and F1 0, AUC undefined (NaN).
    """
    rows = []
    n_neurons = len(scores)
    for entry in truth.get("networks", []):
        network = entry["network"]
        found = set(members.loc[members["network"] == network, "neuron"].astype(int))
        real = set(map(int, entry.get("functional_truth", [])))
        hits = len(found & real)
        precision = hits / len(found) if found else 0.0
        recall = hits / len(real) if real else 0.0
        f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
        auc = np.nan
        if network in scores.columns:
            planted = np.zeros(n_neurons, dtype=bool)
            planted[np.asarray(entry["neurons"], dtype=np.int64)] = True
            auc = float(roc_auc_score(planted, scores[network].to_numpy()))
        rows.append({"network": network, "coupled": network in scores.columns,
                     "n_members": len(found), "n_truth": len(real), "precision": precision,
                     "recall": recall, "f1": f1, "auc": auc})
    return pd.DataFrame(rows, columns=COLUMNS)
