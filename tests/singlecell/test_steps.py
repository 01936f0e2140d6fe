"""The Snakemake steps as functions, on a scanpy-preprocessed simulation: files, layout,
reruns, and bad input (one clear message, no partial output)."""

import json

import numpy as np
import pandas as pd
import pytest

from warpbio.runner import run_step
from warpbio.singlecell.annotate import annotate_step
from warpbio.singlecell.cluster import cluster_step
from warpbio.singlecell.ingest import InputFormatError
from warpbio.singlecell.markers import markers_step
from warpbio.singlecell.neighbors import neighbors_step
from warpbio.singlecell.plots import plots_step
from warpbio.singlecell.umap import umap_step

from .reference import default_settings, fake_job

METHODS = ["t-test", "wilcoxon"]


def run_chain(h5ad, folder, seed=0, settings=None):
    """Every downstream step through run_step (provenance, logs), as the rules wire them."""
    settings = settings or default_settings()
    settings["umap"]["n_epochs"] = 100  # fewer epochs keep the test short
    f = folder
    jobs = [
        (
            neighbors_step,
            "singlecell_neighbors",
            {"h5ad": h5ad},
            {"graph": f / "neighbors/graph.h5ad"},
            {"neighbors": settings["neighbors"], "seed": seed, "backend": "cpu"},
        ),
        (
            umap_step,
            "singlecell_umap",
            {"graph": f / "neighbors/graph.h5ad", "h5ad": h5ad},
            {"umap": f / "umap/umap.tsv"},
            {"umap": settings["umap"], "seed": seed, "backend": "cpu"},
        ),
        (
            cluster_step,
            "singlecell_cluster",
            {"graph": f / "neighbors/graph.h5ad", "h5ad": h5ad},
            {
                "clusters": f / "clusters/clusters.tsv",
                "scores": f / "clusters/scores.tsv",
                "sizes": f / "clusters/sizes.tsv",
            },
            {"cluster": settings["cluster"], "seed": seed, "backend": "cpu"},
        ),
        (
            markers_step,
            "singlecell_markers",
            {"h5ad": h5ad, "clusters": f / "clusters/clusters.tsv"},
            {
                "tables": [str(f / f"markers/{m}.tsv") for m in settings["markers"]["methods"]],
                "rank_genes_groups": f / "markers/rank_genes_groups.h5",
                "dotplot": f / "markers/dotplot.tsv",
            },
            {"markers": settings["markers"], "backend": "cpu"},
        ),
        (
            annotate_step,
            "singlecell_annotate",
            {
                "h5ad": h5ad,
                "graph": f / "neighbors/graph.h5ad",
                "umap": f / "umap/umap.tsv",
                "clusters": f / "clusters/clusters.tsv",
                "scores": f / "clusters/scores.tsv",
                "rank_genes_groups": f / "markers/rank_genes_groups.h5",
            },
            {"h5ad": f / "annotated.h5ad"},
            {
                "umap": settings["umap"],
                "cluster": settings["cluster"],
                "seed": seed,
                "backend": "cpu",
            },
        ),
        (
            plots_step,
            "singlecell_plots",
            {
                "umap": f / "umap/umap.tsv",
                "clusters": f / "clusters/clusters.tsv",
                "dotplot": f / "markers/dotplot.tsv",
            },
            {"umap": f / "plots/umap.png", "dotplot": f / "plots/dotplot.png"},
            {
                "plots": settings["plots"],
                "markers": settings["markers"],
                "seed": seed,
                "backend": "cpu",
            },
        ),
    ]
    for step, rule, inputs, outputs, params in jobs:
        name = rule.removeprefix("singlecell_")
        outputs = {**outputs, "provenance": f / f"provenance/{name}.provenance.json"}
        run_step(fake_job(rule, inputs, outputs, params, f / f"logs/{name}.log"), step)


@pytest.fixture(scope="module")
def chain(simulated_h5ad, tmp_path_factory):
    folder = tmp_path_factory.mktemp("chain")
    run_chain(simulated_h5ad, folder)
    return folder


def test_annotated_anndata_in_scanpys_layout(chain, simulated):
    import anndata as ad
    import scanpy as sc

    adata = ad.read_h5ad(chain / "annotated.h5ad")
    assert adata.shape == simulated.shape
    assert adata.obsm["X_umap"].shape == (adata.n_obs, 2)
    assert adata.obsm["X_pca"].shape == (adata.n_obs, 50)
    assert adata.obsp["connectivities"].nnz > 0 and adata.obsp["distances"].nnz > 0
    assert adata.uns["neighbors"]["params"]["n_neighbors"] == 15
    assert adata.uns["neighbors"]["connectivities_key"] == "connectivities"
    assert set(adata.uns["umap"]["params"]) == {"a", "b"}
    assert adata.obs["leiden"].dtype == "category"
    assert len(adata.uns["leiden_colors"]) == len(adata.obs["leiden"].cat.categories)
    assert adata.uns["rank_genes_groups"]["params"]["method"] == "t-test"
    assert adata.uns["rank_genes_groups_wilcoxon"]["params"]["method"] == "wilcoxon"
    table = sc.get.rank_genes_groups_df(adata, group="0")
    assert len(table) == adata.n_vars and table["pvals_adj"].between(0, 1).all()
    # scanpy's plotting reads it too
    sc.pl.umap(adata, color="leiden", show=False)


def test_scores_tables_and_plots(chain):
    scores = pd.read_csv(chain / "clusters/scores.tsv", sep="\t").set_index("method")
    assert (scores["ari_vs_truth"] >= 0.9).all()  # acceptance 2 through the steps
    assert (scores["n_clusters"] == 6).all()
    sizes = pd.read_csv(chain / "clusters/sizes.tsv", sep="\t")
    clusters = pd.read_csv(chain / "clusters/clusters.tsv", sep="\t")
    assert sizes.groupby("method")["n_cells"].sum().eq(len(clusters)).all()
    for method in METHODS:
        table = pd.read_csv(chain / f"markers/{method}.tsv", sep="\t")
        assert list(table.columns) == [
            "group",
            "rank",
            "gene",
            "score",
            "logfc",
            "pval",
            "pval_adj",
            "pct_in",
            "pct_out",
        ]
        top = table[table["rank"] == 1]
        assert len(top) == 6 and (top["logfc"] > 0.5).all()
    for png in ("plots/umap.png", "plots/dotplot.png"):
        assert (chain / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((chain / "provenance/markers.provenance.json").read_text())
    assert record["rule"] == "singlecell_markers" and record["extra"]["n_groups"] == 6


def test_same_seed_same_files(chain, simulated_h5ad, tmp_path):
    """Acceptance 5 on the CPU: reruns give byte-identical graph, layout and clusters."""
    run_chain(simulated_h5ad, tmp_path)
    for name in ("umap/umap.tsv", "clusters/clusters.tsv", "markers/t-test.tsv"):
        assert (tmp_path / name).read_bytes() == (chain / name).read_bytes(), name
    import anndata as ad

    first, again = (ad.read_h5ad(p / "neighbors/graph.h5ad") for p in (chain, tmp_path))
    assert (first.obsp["connectivities"] != again.obsp["connectivities"]).nnz == 0


def neighbors_job(h5ad, graph, tmp_path):
    """A singlecell_neighbors job with the schema's settings, logging to tmp_path."""
    return fake_job(
        "singlecell_neighbors",
        {"h5ad": h5ad},
        {"graph": graph, "provenance": tmp_path / "p.json"},
        {"neighbors": default_settings()["neighbors"], "seed": 0, "backend": "cpu"},
        tmp_path / "log.txt",
    )


def test_missing_pca_fails_clearly_and_leaves_nothing(simulated, tmp_path):
    bare = simulated.copy()
    del bare.obsm["X_pca"]
    path = tmp_path / "no_pca.h5ad"
    bare.write_h5ad(path)
    out = tmp_path / "graph.h5ad"
    job = neighbors_job(path, out, tmp_path)
    with pytest.raises(InputFormatError, match=r"no_pca\.h5ad: no obsm\['X_pca'\]"):
        run_step(job, neighbors_step)
    assert not out.exists() and not (tmp_path / "p.json").exists()
    assert "no obsm['X_pca']" in (tmp_path / "log.txt").read_text()


def test_truncated_h5ad_fails_clearly(simulated_h5ad, tmp_path):
    cut = tmp_path / "cut.h5ad"
    cut.write_bytes(simulated_h5ad.read_bytes()[:4096])
    job = neighbors_job(cut, tmp_path / "graph.h5ad", tmp_path)
    with pytest.raises(InputFormatError, match=r"cut\.h5ad: cannot be read as HDF5 .* truncated"):
        run_step(job, neighbors_step)
    assert not (tmp_path / "graph.h5ad").exists()


def test_clusters_of_other_cells_are_refused(chain, simulated_h5ad, tmp_path):
    clusters = pd.read_csv(chain / "clusters/clusters.tsv", sep="\t").iloc[::-1]
    shuffled = tmp_path / "clusters.tsv"
    clusters.to_csv(shuffled, sep="\t", index=False)
    settings = default_settings()
    outputs = {
        "tables": [str(tmp_path / f"{m}.tsv") for m in settings["markers"]["methods"]],
        "rank_genes_groups": tmp_path / "rank.h5",
        "dotplot": tmp_path / "dot.tsv",
        "provenance": tmp_path / "p.json",
    }
    job = fake_job(
        "singlecell_markers",
        {"h5ad": simulated_h5ad, "clusters": shuffled},
        outputs,
        {"markers": settings["markers"], "backend": "cpu"},
        tmp_path / "log.txt",
    )
    with pytest.raises(
        ValueError, match=r"clusters\.tsv: its cells differ .* rerun singlecell_cluster"
    ):
        run_step(job, markers_step)
    assert not any((tmp_path / name).exists() for name in ("rank.h5", "dot.tsv", "t-test.tsv"))


def test_too_few_cells_for_k(simulated, tmp_path):
    small = simulated[:10].copy()
    path = tmp_path / "small.h5ad"
    small.write_h5ad(path)
    job = neighbors_job(path, tmp_path / "g.h5ad", tmp_path)
    with pytest.raises(ValueError, match=r"10 cells but singlecell\.neighbors\.n_neighbors = 15"):
        run_step(job, neighbors_step)


def test_plot_of_many_cells_subsamples(tmp_path):
    from warpbio.singlecell.plots import plot_umap

    rng = np.random.default_rng(0)
    umap = rng.normal(size=(30_000, 2))
    labels = rng.integers(0, 25, 30_000)
    plot_umap(umap, {"leiden": labels}, tmp_path / "u.png", max_points=5_000)
    assert (tmp_path / "u.png").stat().st_size > 10_000
