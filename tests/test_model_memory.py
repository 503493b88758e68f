"""The README's memory table of the paper's model ladder is what the architectures give."""

from __future__ import annotations

from pathlib import Path

import pytest

from bids_app.features.memory import architecture, ladder_table

README = Path(__file__).resolve().parents[1] / "README.md"

#: Published parameter counts with the language-model head (model cards / the checkpoints'
#: safetensors index), minus the head (vocab x hidden, untied): an independent reference.
PUBLISHED_WITH_HEAD = {"Llama-2-7B": 6_738_415_616, "Llama-3-8B": 8_030_261_248,
                       "Llama-2-70B": 68_976_648_192, "Llama-3-70B": 70_553_706_496}


def readme_row(row) -> str:
    return (f"| {row.model} | {row.layers} | {row.ANs:,} | {row.parameters / 1e9:.2f} B | "
            f"{row.weights_gib:.1f} GiB |")


@pytest.fixture(scope="module")
def ladder():
    return ladder_table()


def test_ladder_counts_match_published_numbers(ladder):
    table = ladder.set_index("model")
    assert table.loc["BERT-base", "parameters"] == 109_482_240      # BertModel with pooler
    for name, total in PUBLISHED_WITH_HEAD.items():
        head = architecture(name)["vocab_size"] * architecture(name)["hidden_size"]
        assert table.loc[name, "parameters"] == total - head, name
    # AN counts of design.md
    assert table.loc["BERT-base", "ANs"] == 36_864
    assert table.loc["Llama-2-7B", "ANs"] == 352_256
    assert table.loc["Llama-3-8B", "ANs"] == 458_752


def test_readme_memory_table_is_computed(ladder):
    text = README.read_text()
    for row in ladder.itertuples():
        assert readme_row(row) in text, readme_row(row)
