"""Settings: one parser -> Config path, and settings carried from participant to group."""

from __future__ import annotations

import dataclasses
import json

import pytest

from bids_app.cli.parser import parse_args
from bids_app.config import (
    PARTICIPANT_SETTINGS,
    Config,
    carry_participant_settings,
    read_participant_settings,
)
from bids_app.errors import LlmfbnError


def _participant(tmp_path, *options, run_id="a"):
    config = parse_args([str(tmp_path), str(tmp_path / "out"), "participant", *options])
    config.run_id = run_id
    path = tmp_path / "out" / "logs" / f"config_participant_{run_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config.to_json())
    return config


def _group(tmp_path, *options):
    return parse_args([str(tmp_path), str(tmp_path / "out"), "group", *options])


def test_every_option_reaches_its_config_field(tmp_path):
    config = parse_args([str(tmp_path), str(tmp_path / "o"), "participant", "--task", "b", "a",
                         "--hrf", "glover", "--n-atoms", "12", "--sparsity-lambda", "0.2",
                         "--word-pooling", "last", "--context-tokens", "32", "--glm", "joint",
                         "--model", "minilm", "minilm", "x", "--space", "S:res-3",
                         "--mem-gb", "2", "--nprocs", "1", "--seed", "5", "--min-iou", "0.2",
                         "--fdr-q", "0.01", "--fbn-atlas", "yeo7", "--device", "cpu", "-v",
                         "--frames", "all", "--nuisance", "envelope", "wordrate",
                         "--no-atom-stability"])
    assert (config.task, config.hrf_model, config.n_atoms, config.sparsity_lambda) == \
        (["a", "b"], "glover", 12, 0.2)
    assert (config.word_pooling, config.context_tokens, config.glm, config.model) == \
        ("last", 32, "joint", ["minilm", "x"])
    assert (config.space, config.res, config.mem_gb, config.nprocs, config.seed) == \
        ("S", "3", 2.0, 1, 5)
    assert (config.min_iou, config.fdr_q, config.fbn_atlas, config.device, config.verbose) == \
        (0.2, 0.01, "yeo7", "cpu", 1)
    assert (config.frames, config.nuisance, config.atom_stability) == \
        ("all", ["wordrate", "envelope"], False)
    assert "n_atoms" in config.explicit_options and "fdr_q" in config.explicit_options
    assert "nuisance" in config.explicit_options
    assert "work_dir" not in config.explicit_options
    # the config written next to the outputs reads back into the same settings
    again = Config.from_dict(json.loads(config.to_json()))
    assert dataclasses.asdict(again) == dataclasses.asdict(config)


def test_frames_nuisance_and_stability_defaults(tmp_path, capsys):
    config = parse_args([str(tmp_path), str(tmp_path / "o"), "participant"])
    # story frames, the word rate and sound envelope, the atom stability fits and the
    # surrogate null are on by default (issue 9; docs/design-choices.md)
    assert (config.frames, config.nuisance, config.atom_stability, config.null_surrogates) == \
        ("story", ["wordrate", "envelope"], True, 1000)
    both = parse_args([str(tmp_path), str(tmp_path / "o"), "participant", "--nuisance",
                       "envelope", "wordrate", "--frames", "story"])
    assert (both.frames, both.nuisance) == ("story", ["wordrate", "envelope"])
    none = parse_args([str(tmp_path), str(tmp_path / "o"), "participant", "--nuisance", "none"])
    assert none.nuisance == []
    with pytest.raises(SystemExit) as err:
        parse_args([str(tmp_path), str(tmp_path / "o"), "participant", "--nuisance", "none",
                    "wordrate"])
    assert err.value.code == 2 and "--nuisance none" in capsys.readouterr().err


def test_from_dict_refuses_unknown_settings():
    with pytest.raises(ValueError, match="not_a_setting"):
        Config.from_dict({"bids_dir": ".", "output_dir": "o", "analysis_level": "group",
                          "not_a_setting": 1})


def test_group_takes_the_participant_settings(tmp_path):
    _participant(tmp_path, "--n-atoms", "12", "--hrf", "glover", "--glm", "joint",
                 "--seed", "3", "--space", "S:res-3", "--model", "minilm", "other")
    config = carry_participant_settings(_group(tmp_path),
                                        read_participant_settings(tmp_path / "out"))
    assert (config.n_atoms, config.hrf_model, config.glm, config.seed) == (12, "glover",
                                                                          "joint", 3)
    assert (config.space, config.res, config.model) == ("S", "3", ["minilm", "other"])
    # the group's own options are kept
    config = carry_participant_settings(_group(tmp_path, "--fdr-q", "0.01", "--model", "other",
                                               "--n-atoms", "12"),
                                        read_participant_settings(tmp_path / "out"))
    assert (config.fdr_q, config.model, config.n_atoms) == (0.01, ["other"], 12)


@pytest.mark.parametrize("option, value, needle", [
    (["--n-atoms", "16"], "12", "--n-atoms"), (["--hrf", "spm"], "'glover'", "--hrf"),
    (["--space", "T"], "'S'", "--space"), (["--model", "third"], "minilm", "--model"),
    (["--frames", "all"], "'story'", "--frames"),
    (["--nuisance", "wordrate"], "['wordrate', 'envelope']", "--nuisance"),
    (["--no-atom-stability"], "True", "--atom-stability"),
    (["--null-surrogates", "10"], "1000", "--null-surrogates"),
    (["--fbn-atlas", "yeo7"], "'seitzman'", "--fbn-atlas")])
def test_contradicting_group_option_is_an_error(tmp_path, option, value, needle):
    _participant(tmp_path, "--n-atoms", "12", "--hrf", "glover", "--space", "S")
    with pytest.raises(LlmfbnError) as err:
        carry_participant_settings(_group(tmp_path, *option),
                                   read_participant_settings(tmp_path / "out"))
    assert needle in str(err.value) and value in str(err.value)


def test_the_group_may_choose_its_atlas_without_the_null(tmp_path):
    """The participant level uses the atlas only to fit the coupling null: without the null
    the group level's --fbn-atlas is its own; with it, the participant run's is carried."""
    _participant(tmp_path, "--null-surrogates", "0", "--fbn-atlas", "yeo17")
    config = carry_participant_settings(_group(tmp_path, "--fbn-atlas", "yeo7"),
                                        read_participant_settings(tmp_path / "out"))
    assert (config.fbn_atlas, config.null_surrogates) == ("yeo7", 0)
    _participant(tmp_path, "--fbn-atlas", "yeo17", run_id="b")
    (tmp_path / "out" / "logs" / "config_participant_a.json").unlink()
    config = carry_participant_settings(_group(tmp_path),
                                        read_participant_settings(tmp_path / "out"))
    assert (config.fbn_atlas, config.null_surrogates) == ("yeo17", 1000)


def test_participant_runs_that_disagree_are_an_error(tmp_path):
    _participant(tmp_path, "--participant-label", "01", run_id="a")
    _participant(tmp_path, "--participant-label", "02", run_id="b")      # same settings: ok
    carry_participant_settings(_group(tmp_path), read_participant_settings(tmp_path / "out"))
    _participant(tmp_path, "--n-atoms", "8", run_id="c")
    with pytest.raises(LlmfbnError, match="--n-atoms") as err:
        carry_participant_settings(_group(tmp_path),
                                   read_participant_settings(tmp_path / "out"))
    assert "config_participant_c.json" in str(err.value)


def test_no_participant_run_is_an_error(tmp_path):
    with pytest.raises(LlmfbnError, match="participant level first"):
        carry_participant_settings(_group(tmp_path), read_participant_settings(tmp_path / "o"))


def test_carried_settings_are_config_fields():
    names = {f.name for f in dataclasses.fields(Config)}
    assert set(PARTICIPANT_SETTINGS) <= names
