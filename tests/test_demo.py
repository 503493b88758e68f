"""llmfbn-demo's --check: the exit status says whether the planted networks were coupled.

The pipeline itself is replaced by a stand-in that writes the group's tables (the
real pipeline on the demo dataset is tests/test_pipeline.py's and the container CI's job).
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from bids_app import demo
from bids_app.bids.naming import NO_NETWORK, group_file


@pytest.fixture
def fake_demo(tmp_path, monkeypatch):
    """An OUTDIR with a synthetic dataset's truth file; returns a function that runs the
    demo with a pipeline stand-in coupling atoms to ``networks``."""
    truth = tmp_path / "bids" / "sourcedata" / "llmfbn_truth.json"
    truth.parent.mkdir(parents=True)
    truth.write_text(json.dumps({"networks": [
        {"network": "Auditory", "neurons": [0, 1], "functional_truth": [0, 1]},
        {"network": "DefaultMode", "neurons": [2], "functional_truth": [2, 3]}]}))

    def run(networks, *options):
        def pipeline(argv):
            output = tmp_path / "bids" / "derivatives" / "llmfbn"
            if argv[2] == "group":
                table = group_file(output, "minilm", "assignments", ".tsv")
                table.parent.mkdir(parents=True, exist_ok=True)
                pd.DataFrame({"atom": [f"atom{i:02d}" for i in range(len(networks))],
                              "network": networks}).to_csv(table, sep="\t", index=False)
                coupled = sorted(set(networks) - {NO_NETWORK})
                pd.DataFrame({"network": coupled, "n_atoms": 1, "coupled_by": "atoms"}).to_csv(
                    group_file(output, "minilm", "networksubgroups", ".tsv"), sep="\t",
                    index=False)
                pd.DataFrame({"network": coupled, "neuron": range(len(coupled))}).to_csv(
                    group_file(output, "minilm", "members", ".tsv"), sep="\t", index=False)
                pd.DataFrame({"neuron": range(4), **{n: [0.9, 0.8, 0.1, 0.2]
                                                      for n in coupled}}).to_csv(
                    group_file(output, "minilm", "scores", ".tsv"), sep="\t", index=False)
            return 0

        monkeypatch.setattr(demo, "llmfbn_main", pipeline)
        return demo.main([str(tmp_path), *options])

    return run


def test_check_passes_when_exactly_the_planted_networks_are_coupled(fake_demo, capsys):
    assert fake_demo(["DefaultMode", NO_NETWORK, "Auditory", "Auditory"], "--check") == 0
    printed = capsys.readouterr().out
    assert "Coupled networks: Auditory, DefaultMode" in printed
    assert "AN sub-groups vs the planted functional truth" in printed


@pytest.mark.parametrize("networks", [[NO_NETWORK], ["Auditory"],
                                      ["Auditory", "DefaultMode", "Visual"]])
def test_check_fails_otherwise(fake_demo, capsys, networks):
    assert fake_demo(networks, "--check") == 3
    assert "check failed" in capsys.readouterr().err
    assert fake_demo(networks) == 0, "without --check the demo only reports"
