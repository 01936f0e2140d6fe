"""The files/bed data sources through Snakemake, on the tiny inputs in resources/."""

import pandas as pd
import pytest
import yaml
from conftest import REPO, run_snakemake, write_config

pytestmark = pytest.mark.workflow


def test_files_and_bed_sources(tmp_path):
    config = yaml.safe_load((REPO / "config" / "test-sources.yaml").read_text())
    config["singlecell"]["samples"] = {
        name: str(REPO / path) for name, path in config["singlecell"]["samples"].items()
    }
    config["genotype"]["bed"] = str(REPO / config["genotype"]["bed"])
    configfile = write_config(tmp_path, config)
    run_snakemake(tmp_path, "--cores", "2", "--configfile", str(configfile))
    cells = pd.read_csv(tmp_path / "results/singlecell/tiny/qc/cells.tsv", sep="\t")
    assert cells["sample"].value_counts().to_dict() == {"ctrl": 150, "treated": 150}
    afreq = pd.read_csv(tmp_path / "results/genotype/tiny/stats/genotypes.afreq", sep="\t")
    assert len(afreq) == 400 and afreq["ALT_FREQS"].between(0, 1).all()
    summary = pd.read_csv(tmp_path / "results/summary/outputs.tsv", sep="\t")
    assert summary["bytes"].notna().all() and (summary["bytes"] > 0).all()
    assert not (tmp_path / "results/genotype/tiny/simulated.bed").exists()
