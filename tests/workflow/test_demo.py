"""The demo DAG through real Snakemake: outputs, report, reruns, seeds."""

import copy
import json

import numpy as np
import pandas as pd
import pytest
from conftest import planned_jobs, run_snakemake

pytestmark = pytest.mark.workflow


def test_demo_outputs_and_summary(finished_demo):
    workdir, _ = finished_demo
    results = workdir / "results"
    for path in (
        "singlecell/demo/qc/cells.tsv",
        "singlecell/demo/qc/violins.png",
        "singlecell/demo/preprocessed.h5ad",
        "singlecell/demo/qc/filtering.tsv",
        "singlecell/demo/preprocess/hvg_pca.png",
        "singlecell/demo/provenance/preprocess.provenance.json",
        "genotype/demo/stats/genotypes.afreq",
        "genotype/demo/stats/genotypes.png",
        "genotype/demo/qc/genotypes.bed",
        "genotype/demo/qc/genotypes.zarr/zarr.json",
        "genotype/demo/pca/genotypes.eigenvec",
        "genotype/demo/pca/pca.png",
        "ecg/demo/peaks/synthetic.tsv",
        "ecg/demo/model/vae.pt",
        "ecg/demo/scores/beats.tsv",
        "ecg/demo/plots/latent.png",
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
    assert set(summary["workflow"]) == {"singlecell", "genotype", "ecg", "fold"}
    # acceptance 2: the anomaly score finds the injected PVCs among held-out beats
    auroc = json.loads((results / "ecg/demo/scores/auroc.json").read_text())["held_out"]
    assert auroc["anomalies"] >= 5 and auroc["auroc"] >= 0.95
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
    for log in (
        "singlecell/simulate/demo",
        "singlecell/qc/demo",
        "singlecell/preprocess/demo",
        "genotype/stats/demo",
    ):
        assert "done in" in (workdir / "logs" / f"{log}.log").read_text()


def test_preprocessed_anndata_contract(finished_demo):
    """What the downstream rules read: scanpy's layout, filtered cells and genes."""
    import anndata as ad
    import scipy.sparse as sp

    workdir, config = finished_demo
    settings = config["singlecell"]["preprocess"]
    adata = ad.read_h5ad(workdir / "results/singlecell/demo/preprocessed.h5ad")
    filtering = pd.read_csv(workdir / "results/singlecell/demo/qc/filtering.tsv", sep="\t")
    cells = filtering[filtering["axis"] == "cells"]
    genes = filtering[filtering["axis"] == "genes"]
    assert list(cells["filter"]) == ["min_genes", "max_pct_mt"]
    assert cells["remaining"].iloc[-1] == adata.n_obs and 2800 < adata.n_obs < 3000
    assert genes["remaining"].iloc[-1] == adata.n_vars
    assert sp.issparse(adata.X) and adata.X.format == "csr" and adata.X.dtype == "float32"
    assert not adata.layers and adata.X.max() < 10  # log1p of normalized counts
    for column in ("sample", "true_cell_type", "total_counts", "n_genes_by_counts"):
        assert column in adata.obs
    assert adata.obs["pct_counts_mt"].max() <= settings["max_pct_mt"]
    assert adata.obs["n_genes_by_counts"].min() >= settings["min_genes"]
    for column in ("gene_ids", "mt", "n_cells_by_counts", "highly_variable", "means",
                   "dispersions", "dispersions_norm"):  # fmt: skip
        assert column in adata.var, column
    assert adata.var["highly_variable"].sum() == settings["hvg"]["n_top_genes"]
    assert adata.obsm["X_pca"].shape == (adata.n_obs, 50) and adata.obsm["X_pca"].dtype == "float32"
    loadings = adata.varm["PCs"]
    assert loadings.shape == (adata.n_vars, 50)
    assert not loadings[~adata.var["highly_variable"].to_numpy()].any()
    ratio = adata.uns["pca"]["variance_ratio"]
    assert len(adata.uns["pca"]["variance"]) == 50 and 0 < ratio.sum() < 1
    assert np.all(np.diff(ratio) <= 0)
    assert adata.uns["hvg"]["flavor"] == "cell_ranger"
    assert adata.uns["preprocess"]["filtering"]["cells_max_pct_mt"] > 0
    # the simulator's cell types separate on the first PCs
    truth = adata.obs["true_cell_type"].to_numpy()
    embedding = adata.obsm["X_pca"][:, :10]
    types = np.unique(truth)
    centroids = np.stack([embedding[truth == t].mean(0) for t in types])
    nearest = np.argmin(((embedding[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (types[nearest] == truth).mean() > 0.98


def test_report_builds(finished_demo):
    workdir, _ = finished_demo
    configfile = workdir / "config.yaml"
    run_snakemake(workdir, "--configfile", str(configfile), "--report", "report.html")
    html = (workdir / "report.html").read_text(errors="replace")
    assert "Summary" in html and "Genotype PCA" in html and "Single-cell RNA-seq" in html
    assert "ECG" in html
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
        (
            "singlecell",
            {
                "singlecell_simulate",
                "singlecell_qc",
                "singlecell_preprocess",
                "singlecell_neighbors",
                "singlecell_umap",
                "singlecell_cluster",
                "singlecell_markers",
                "singlecell_annotate",
                "singlecell_plots",
                "summary",
                "all",
            },
        ),
        (
            "ecg",
            {
                "ecg_simulate",
                "ecg_segment",
                "ecg_train",
                "ecg_score",
                "ecg_plots",
                "summary",
                "all",
            },
        ),
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
