"""Between-workflow caching: a second run in another working directory reuses the
outputs of the rules marked ``cache: "omit-software"`` instead of running them."""

import json
import re
import shutil

import pytest
import yaml
from conftest import REPO, run_snakemake, write_config

from warpbio.provenance import source_digest
from warpbio.reproduce import output_checksums

pytestmark = pytest.mark.workflow

CACHED_RULES = {"singlecell_simulate", "genotype_simulate"}  # those the demo runs
TARGETS = ["results/genotype/demo/qc/summary.tsv", "results/singlecell/demo/qc/cells.tsv"]


def cached_rules_in_workflow() -> set[str]:
    found = set()
    for rules_file in (REPO / "workflow" / "rules").glob("*.smk"):
        for block in re.split(r"^(?=rule |checkpoint )", rules_file.read_text(), flags=re.M):
            name = re.match(r"(?:rule|checkpoint) (\w+):", block)
            if name and re.search(r"^\s+cache:", block, flags=re.M):
                found.add(name.group(1))
    return found


@pytest.mark.parametrize("profile", ["slurm", "gpu-node"])
def test_profiles_name_every_cached_rule(profile):
    # Snakemake 9 passes only named rules (not a bare --cache) on to cluster jobs
    settings = yaml.safe_load((REPO / "profiles" / profile / "config.yaml").read_text())
    assert set(settings["cache"]) == cached_rules_in_workflow()
    assert set(settings["cache"]) >= CACHED_RULES


def test_second_run_elsewhere_reuses_the_cached_outputs(tmp_path, monkeypatch, demo_config):
    monkeypatch.setenv("SNAKEMAKE_OUTPUT_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    runs = {}
    for name in ("first", "second"):
        workdir = tmp_path / name
        workdir.mkdir()
        configfile = write_config(workdir, demo_config)
        args = (*TARGETS, "--cores", "2", "--cache", "--configfile", str(configfile))
        if name == "second":
            planned = run_snakemake(workdir, "-n", *args)
            text = planned.stdout + planned.stderr
            assert "will be obtained from global between-workflow cache" in text
        runs[name] = (workdir, run_snakemake(workdir, *args))

    first, second = runs["first"][0], runs["second"][0]
    second_output = runs["second"][1].stdout + runs["second"][1].stderr
    assert "from cache" in second_output
    for rule, log in (
        ("genotype_simulate", "logs/genotype/simulate/demo.log"),
        ("singlecell_simulate", "logs/singlecell/simulate/demo.log"),
    ):
        assert "done in" in (first / log).read_text(), rule
        # Snakemake touches the log of a job it takes from the cache; nothing writes it
        reran = (second / log).exists() and (second / log).read_text()
        assert not reran, f"{rule} ran again instead of using the cache"
        assert f"rule {rule}: backend" not in second_output
    # the rules downstream of the cache ran in the second working directory
    assert "rule genotype_qc: backend" in second_output
    assert "done in" in (second / "logs/genotype/qc/demo.log").read_text()
    # the second run's simulated inputs are the first run's files, made once
    for record in (
        "results/genotype/demo/provenance/simulate.provenance.json",
        "results/singlecell/demo/provenance/simulate.provenance.json",
    ):
        assert (second / record).is_symlink()
        made = [json.loads((run / record).read_text())["created"] for run in (first, second)]
        assert made[0] == made[1]
    assert output_checksums(first / "results") == output_checksums(second / "results")

    # a new seed is a new cache entry: planned to be written, not obtained
    changed = dict(demo_config, genotype={**demo_config["genotype"], "seed": 1})
    configfile = write_config(second, changed)
    planned = run_snakemake(
        second, TARGETS[0], "-n", "--cores", "2", "--cache", "--configfile", str(configfile)
    )
    text = planned.stdout + planned.stderr
    assert "simulated.bed will be written to global between-workflow cache" in text


def test_code_digest_follows_the_modules_a_step_imports(tmp_path):
    package = tmp_path / "warpbio"
    shutil.copytree(REPO / "src" / "warpbio", package)
    before = source_digest("warpbio.genotype.simulate", package_root=package)
    assert before == source_digest("warpbio.genotype.simulate")
    # an unrelated module: same key
    (package / "singlecell" / "qc.py").write_text("# changed\n")
    assert source_digest("warpbio.genotype.simulate", package_root=package) == before
    # the .bed writer the simulator imports: new key, so the cache is not reused
    with open(package / "genotype" / "plink.py", "a") as handle:
        handle.write("\n# changed\n")
    assert source_digest("warpbio.genotype.simulate", package_root=package) != before
