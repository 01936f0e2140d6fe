import copy

import pytest
from conftest import REPO

from warpbio.config import ConfigError, check_input_paths, load_schema, validate_config

SCHEMA = load_schema(REPO / "workflow" / "schemas" / "config.schema.yaml")


def problem(config) -> str:
    with pytest.raises(ConfigError) as caught:
        validate_config(config, SCHEMA)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_demo_config_is_valid(demo_config):
    validate_config(demo_config, SCHEMA)


def test_wrong_type_names_key_and_value(demo_config):
    bad = copy.deepcopy(demo_config)
    bad["singlecell"]["seed"] = "seven"
    message = problem(bad)
    assert "'singlecell.seed'" in message and "'seven'" in message and "integer" in message


def test_unknown_backend_lists_choices(demo_config):
    bad = copy.deepcopy(demo_config)
    bad["genotype"]["backend"] = "cuda"
    message = problem(bad)
    assert "'genotype.backend'" in message and "'cuda'" in message
    assert "auto, cpu, gpu" in message


def test_unknown_key_is_named(demo_config):
    bad = copy.deepcopy(demo_config)
    bad["genotype"]["simulate"]["n_snp"] = 10
    message = problem(bad)
    assert "'genotype.simulate.n_snp'" in message and "n_snps" in message


def test_range_is_checked(demo_config):
    bad = copy.deepcopy(demo_config)
    bad["genotype"]["simulate"]["fst"] = 1.5
    assert "'genotype.simulate.fst'" in problem(bad)


def test_missing_input_file_names_key_and_file(tmp_path):
    present = tmp_path / "a.h5ad"
    present.write_text("")
    check_input_paths([("singlecell.samples.a", str(present))])
    with pytest.raises(ConfigError) as caught:
        check_input_paths([("singlecell.samples.b", str(tmp_path / "b.h5ad"))])
    assert "'singlecell.samples.b'" in str(caught.value)
    assert "b.h5ad" in str(caught.value)
