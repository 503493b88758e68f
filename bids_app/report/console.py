"""Text summaries printed on standard output at the end of the group level."""

from __future__ import annotations

import pandas as pd

from bids_app.bids.naming import NO_NETWORK, atom_name


def print_coupled_atoms(assignments: pd.DataFrame, atom_groups: pd.DataFrame,
                        label: str) -> None:
    """The atoms of model ``label`` coupled to networks, as a table."""
    coupled = assignments[assignments["network"] != NO_NETWORK]
    print(f"\nAtoms of model '{label}' coupled to functional brain networks "
          f"({len(coupled)} of {len(assignments)}):")
    if coupled.empty:
        print("  (none)")
        return
    sizes = atom_groups.set_index("atom")["n_neurons"]
    n_atoms = len(assignments)
    table = pd.DataFrame({
        "atom": [atom_name(a - 1, n_atoms) for a in coupled["atom"]],
        "network": coupled["network"].to_numpy(),
        "sign": coupled["sign"].to_numpy(),
        "IoU": coupled["iou"].round(3).to_numpy(),
        "voxels": coupled["n_atom_voxels"].to_numpy(),
        "AN sub-group": [int(sizes.get(a, 0)) for a in coupled["atom"]],
    })
    print(table.to_string(index=False))
    print()


def print_coupled_networks(networks: pd.DataFrame, label: str) -> None:
    """The networks of model ``label`` with an AN sub-group: how each is coupled (an
    assigned atom, the network-prediction test or both) and its sub-group's size."""
    print(f"Networks of model '{label}' with an AN sub-group ({len(networks)}):")
    if networks.empty:
        print("  (none)")
    else:
        print(networks[["network", "coupled_by", "n_atoms", "n_neurons"]].rename(columns={
            "coupled_by": "coupled by", "n_atoms": "atoms",
            "n_neurons": "AN sub-group"}).to_string(index=False))
    print()


def print_models_table(table: pd.DataFrame) -> None:
    """Several models' organisation metrics side by side."""
    print("Models side by side:")
    print(table.to_string(index=False))
