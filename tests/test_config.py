import pytest

from traitpipe.config import ConfigError, validate_config

BASE = {"collection": {"root": "c", "manifest": "m.csv"}}


def test_defaults_are_filled_and_validation_is_idempotent():
    config = validate_config(BASE)
    assert config["shard_size"] == "auto" and config["device"] == "auto"
    assert config["collection"]["columns"] == {"path": "path", "species": "species", "specimen": None,
                                               "mask": None, "ranks": [], "parts_truth": None,
                                               "trait_truth": None, "image": None}
    assert config["summarize"]["scheduler"] is None and config["evaluate"]["cryptic_pairs"] is None
    assert len(config["run_id"]) == 16
    assert validate_config(config) == config
    assert BASE == {"collection": {"root": "c", "manifest": "m.csv"}}  # input untouched


@pytest.mark.parametrize("change, message", [
    ({"shard_size": 0}, "config key shard_size: 0 is not allowed; expected a number >= 1 or 'auto'"),
    ({"device": "gpu"}, "config key device: 'gpu' is not allowed; expected a string matching"),
    ({"shard_sise": 3}, "unknown key(s) 'shard_sise' (did you mean 'shard_size'?)"),
    ({"collection": {"root": "c"}}, "missing key collection.manifest"),
    ({"collection": {"root": "c", "manifest": "m", "columns": {"species": 3}}},
     "config key collection.columns.species: 3 is not allowed; expected a value of type string"),
    ({"phylo": {"distances": [0.77, 0.5, 0.33]}}, "config key phylo.distances: [0.77, 0.5, 0.33] must increase"),
])
def test_errors_name_the_key_the_value_and_what_is_allowed(change, message):
    with pytest.raises(ConfigError) as error:
        validate_config({**BASE, **change})
    assert message in str(error.value)


def test_empty_config_says_what_to_pass():
    with pytest.raises(ConfigError, match="config is empty"):
        validate_config({})


def test_run_config_json_round_trip(tmp_path):
    from traitpipe.config import canonical_json, load_config

    config = validate_config({**BASE, "segment": {"finetune": {"lr": 1e-5}}})
    (tmp_path / "run.json").write_text(canonical_json(config))
    assert load_config(tmp_path / "run.json") == config  # 1e-05 stays a number


def test_explain_target_true_as_yaml_reads_it_is_the_string_true():
    assert validate_config({**BASE, "explain": {"target": True}})["explain"]["target"] == "true"
    assert validate_config({**BASE, "explain": {"target": "predicted"}})["explain"]["target"] == "predicted"
