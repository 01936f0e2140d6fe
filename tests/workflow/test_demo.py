"""The demo DAG through real Snakemake: outputs, report, reruns, seeds."""

import copy
import json
import re

import pandas as pd
import pytest
from conftest import run_snakemake, write_config

pytestmark = pytest.mark.workflow


def planned_jobs(workdir, configfile) -> dict[str, int]:
    """Rule -> job count of a dry run (empty when nothing is to be done)."""
    done = run_snakemake(workdir, "-n", "--cores", "2", "--configfile", str(configfile))
    text = done.stdout + done.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:", 1)[1]
    return {
        rule: int(count)
        for rule, count in re.findall(r"^(\w+)\s+(\d+)\s*$", table, flags=re.M)
        if rule != "total"
    }


@pytest.fixture(scope="module")
def finished_demo(tmp_path_factory):
    import yaml
    from conftest import REPO

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    fold = config["fold"]  # its inputs are shipped files: absolute paths from the test's workdir
    fold["fasta"] = str(REPO / fold["fasta"])
    fold["msa"]["files"] = {k: str(REPO / v) for k, v in fold["msa"]["files"].items()}
    workdir = tmp_path_factory.mktemp("demo")
    configfile = write_config(workdir, config)
    run_snakemake(workdir, "--cores", "2", "--configfile", str(configfile))
    return workdir, config


def test_demo_outputs_and_summary(finished_demo):
    workdir, _ = finished_demo
    results = workdir / "results"
    for path in (
        "singlecell/demo/qc/cells.tsv",
        "singlecell/demo/qc/violins.png",
        "genotype/demo/stats/genotypes.afreq",
        "genotype/demo/stats/genotypes.png",
        "genotype/demo/qc/genotypes.bed",
        "genotype/demo/qc/genotypes.zarr/zarr.json",
        "genotype/demo/pca/genotypes.eigenvec",
        "genotype/demo/pca/pca.png",
        "fold/demo/villin_hp36/model_1_ptm/unrelaxed.pdb",
        "fold/demo/trp_cage/model_1_ptm/unrelaxed.cif",
        "fold/demo/trp_cage/ranking.tsv",
        "fold/demo/villin_hp36/pae.png",
        "fold/demo/villin_hp36/model_1_ptm/relaxed.pdb",
        "summary/outputs.html",
    ):
        assert (results / path).stat().st_size > 0, path
    cells = pd.read_csv(results / "singlecell/demo/qc/cells.tsv", sep="\t")
    assert len(cells) == 3000 and cells["pct_counts_mt"].between(0, 100).all()
    summary = pd.read_csv(results / "summary/outputs.tsv", sep="\t")
    assert set(summary["workflow"]) == {"singlecell", "genotype", "fold"}
    # the demo's three Balding-Nichols populations separate on PC1-2
    eigenvec = pd.read_csv(results / "genotype/demo/pca/genotypes.eigenvec", sep="\t")
    centroids = eigenvec.groupby("#FID")[["PC1", "PC2"]].mean()
    points = eigenvec[["PC1", "PC2"]].to_numpy()
    distances = ((points[:, None, :] - centroids.to_numpy()[None]) ** 2).sum(-1)
    assert (centroids.index[distances.argmin(1)] == eigenvec["#FID"]).all()
    assert summary["caption"].str.len().gt(0).all()
    # the fold demo runs a random-parameter model: marked in every output
    scores = json.loads((results / "fold/demo/villin_hp36/model_1_ptm/scores.json").read_text())
    assert scores["real_prediction"] is False and "NOT A REAL PREDICTION" in scores["warning"]
    assert len(scores["plddt"]) == 36 and len(scores["pae"]) == 36
    pdb = (results / "fold/demo/villin_hp36/model_1_ptm/unrelaxed.pdb").read_text()
    assert "NOT A REAL PREDICTION" in pdb.splitlines()[1]
    cif = (results / "fold/demo/villin_hp36/model_1_ptm/unrelaxed.cif").read_text()
    assert "NOT A REAL PREDICTION" in cif
    relaxed = (results / "fold/demo/villin_hp36/model_1_ptm/relaxed.pdb").read_text()
    assert "NOT A REAL PREDICTION" in relaxed and "relaxed: Amber99sb" in relaxed
    # every rule logged to logs/<workflow>/<rule>/<wildcards>.log
    for log in ("singlecell/simulate/demo", "singlecell/qc/demo", "genotype/stats/demo"):
        assert "done in" in (workdir / "logs" / f"{log}.log").read_text()


def test_report_builds(finished_demo):
    workdir, _ = finished_demo
    configfile = workdir / "config.yaml"
    run_snakemake(workdir, "--configfile", str(configfile), "--report", "report.html")
    html = (workdir / "report.html").read_text(errors="replace")
    assert "Summary" in html and "Genotype PCA" in html and "Single-cell RNA-seq" in html
    assert "Protein structure" in html


def test_rerun_with_nothing_changed_runs_nothing(finished_demo):
    workdir, _ = finished_demo
    assert planned_jobs(workdir, workdir / "config.yaml") == {}


@pytest.mark.parametrize(
    ("workflow", "expected"),
    [
        (
            "genotype",
            {
                "genotype_simulate",
                "genotype_stats",
                "genotype_qc",
                "genotype_store",
                "genotype_pca",
                "summary",
                "all",
            },
        ),
        ("singlecell", {"singlecell_simulate", "singlecell_qc", "summary", "all"}),
        ("fold", {"fold_features", "fold_predict", "fold_relax", "fold_rank", "summary", "all"}),
    ],
)
def test_new_seed_reruns_exactly_its_rules(finished_demo, tmp_path, workflow, expected):
    workdir, config = finished_demo
    changed = copy.deepcopy(config)
    changed[workflow]["seed"] += 1
    configfile = tmp_path / "changed.yaml"
    configfile.write_text(__import__("yaml").safe_dump(changed))
    assert set(planned_jobs(workdir, configfile)) == expected
