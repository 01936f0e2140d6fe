"""A bad config stops Snakemake before any job, with one line naming key or file."""

import copy

import pytest
from conftest import run_snakemake, write_config

pytestmark = pytest.mark.workflow


def set_key(config, dotted, value):
    node = config
    *parents, last = dotted.split(".")
    for part in parents:
        node = node[part]
    node[last] = value


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"genotype.simulate.n_snps": "many"}, "'genotype.simulate.n_snps' = 'many'"),
        ({"singlecell.backend": "cuda"}, "'singlecell.backend' = 'cuda' is not allowed"),
        (
            {"genotype.source": "bed", "genotype.bed": "data/missing.bed"},
            "'genotype.bed': input file 'data/missing.bed' does not exist",
        ),
        (
            {"singlecell.source": "files", "singlecell.samples": {"s1": "nowhere.h5ad"}},
            "'singlecell.samples.s1': input file 'nowhere.h5ad' does not exist",
        ),
    ],
)
def test_bad_config_fails_before_any_job(demo_config, tmp_path, changes, expected):
    config = copy.deepcopy(demo_config)
    for key, value in changes.items():
        set_key(config, key, value)
    configfile = write_config(tmp_path, config)
    done = run_snakemake(tmp_path, "--cores", "1", "--configfile", str(configfile), check=False)
    assert done.returncode != 0
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert expected in lines[0]
    assert not (tmp_path / "results").exists() and not (tmp_path / "logs").exists()
