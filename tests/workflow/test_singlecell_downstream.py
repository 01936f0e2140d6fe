"""Neighbours -> UMAP -> clusters -> markers -> annotated AnnData and plots through Snakemake.

The preprocessed AnnData is made with scanpy and placed where singlecell_preprocess
writes it; the downstream rules run on it, from a clean workdir, on the CPU.
"""

import copy

import pandas as pd
import pytest
import yaml
from conftest import load_demo_config, run_snakemake, write_config

pytestmark = pytest.mark.workflow

TARGETS = [
    "annotated.h5ad",
    "plots/umap.png",
    "plots/dotplot.png",
    "clusters/scores.tsv",
    "provenance/annotate.provenance.json",
    "provenance/plots.provenance.json",
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    pytest.importorskip("scanpy")
    from singlecell.reference import scanpy_preprocess

    from warpbio.singlecell.simulate import SimulationSpec, simulate_counts, to_anndata

    workdir = tmp_path_factory.mktemp("downstream")
    config = load_demo_config()
    for other in ("genotype", "ecg", "fold"):
        config[other]["enabled"] = False
    config["singlecell"]["backend"] = "cpu"
    folder = workdir / "results/singlecell/demo"
    folder.mkdir(parents=True)
    raw = to_anndata(simulate_counts(SimulationSpec(**config["singlecell"]["simulate"]), seed=0))
    scanpy_preprocess(raw, n_top_genes=1000).write_h5ad(folder / "preprocessed.h5ad")
    configfile = write_config(workdir, config)
    targets = [f"results/singlecell/demo/{name}" for name in TARGETS]
    run_snakemake(workdir, *targets, "--cores", "2", "--configfile", str(configfile))
    return workdir, config, targets


def test_downstream_rules_make_the_annotated_anndata_and_plots(workdir):
    import anndata as ad

    root, _, _ = workdir
    folder = root / "results/singlecell/demo"
    adata = ad.read_h5ad(folder / "annotated.h5ad")
    for key in ("X_pca", "X_umap"):
        assert key in adata.obsm
    assert {"connectivities", "distances"} <= set(adata.obsp)
    assert {"leiden", "louvain"} <= set(adata.obs)
    assert "rank_genes_groups" in adata.uns
    scores = pd.read_csv(folder / "clusters/scores.tsv", sep="\t")
    assert (scores["ari_vs_truth"] >= 0.9).all()
    for rule in ("neighbors", "umap", "cluster", "markers", "annotate", "plots"):
        assert "done in" in (root / f"logs/singlecell/{rule}/demo.log").read_text()
        assert (root / f"benchmarks/runs/singlecell/{rule}/demo.tsv").exists()


def test_rerun_runs_nothing_and_a_new_resolution_reruns_from_clustering(workdir, tmp_path):
    root, config, targets = workdir
    done = run_snakemake(root, *targets, "-n", "--configfile", str(root / "config.yaml"))
    assert "Nothing to be done" in done.stdout + done.stderr
    changed = copy.deepcopy(config)
    changed["singlecell"]["cluster"] = {"leiden_resolution": 0.5}
    configfile = tmp_path / "changed.yaml"
    configfile.write_text(yaml.safe_dump(changed))
    text = run_snakemake(root, *targets, "-n", "--configfile", str(configfile)).stdout
    planned = set(text.split("Job stats:", 1)[1].split()) if "Job stats:" in text else set()
    assert {"singlecell_cluster", "singlecell_markers", "singlecell_annotate"} <= planned
    assert "singlecell_neighbors" not in planned and "singlecell_umap" not in planned
