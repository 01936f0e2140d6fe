"""singlecell_preprocess over Dask worker processes (cpu backend, dask_workers: 2)
through real Snakemake: the workers start from a script job, and the output is
the one-process chain's; bad input stops it with the same message, no output."""

import json

import numpy as np
import pytest
from conftest import REPO, assert_negative_count_refused, run_snakemake, write_config

pytestmark = pytest.mark.workflow

TARGET = "results/singlecell/{dataset}/preprocessed.h5ad"


def dask_config(dataset: str, **singlecell) -> dict:
    return {
        "genotype": {"enabled": False},
        "singlecell": {
            "backend": "cpu",
            "dataset": dataset,
            "preprocess": {
                "min_genes": 100,
                "max_pct_mt": 20,
                "hvg": {"flavor": "seurat_v3", "n_top_genes": 200},
                "n_pcs": 20,
                "dask_workers": 2,
            },
            **singlecell,
        },
    }


def test_rule_over_dask_workers_equals_the_one_process_chain(tmp_path):
    import anndata as ad
    from snakemake.utils import validate

    from warpbio.singlecell.preprocess import PreprocessSettings, preprocess_counts
    from warpbio.singlecell.sparse import from_scipy

    config = dask_config("dask", simulate={"n_cells": 1500, "n_genes": 800})
    configfile = write_config(tmp_path, config)
    target = TARGET.format(dataset="dask")
    run_snakemake(tmp_path, target, "--cores", "2", "--configfile", str(configfile))
    results = tmp_path / "results/singlecell/dask"
    adata = ad.read_h5ad(tmp_path / target)
    validate(config, str(REPO / "workflow/schemas/config.schema.yaml"))  # defaults
    raw = ad.read_h5ad(results / "simulated.h5ad")
    settings = PreprocessSettings.from_config(config["singlecell"]["preprocess"])
    single = preprocess_counts(from_scipy(raw.X), list(raw.var_names), settings)
    assert list(adata.obs_names) == list(raw.obs_names[single.filtering.cells])
    assert list(adata.var_names) == list(raw.var_names[single.filtering.genes])
    assert (single.matrix.to_scipy() != adata.X).nnz == 0
    np.testing.assert_array_equal(
        adata.var["highly_variable"].to_numpy(), single.hvg["highly_variable"].to_numpy()
    )
    for i in range(20):
        corr = np.corrcoef(adata.obsm["X_pca"][:, i], single.pca.embedding[:, i])[0, 1]
        assert abs(corr) >= 0.99999, f"PC{i + 1}: {corr}"
    assert adata.obs["true_cell_type"].notna().all() and "gene_ids" in adata.var
    record = json.loads((results / "provenance/preprocess.provenance.json").read_text())
    assert record["extra"]["dask_workers"] == 2
    log = (tmp_path / "logs/singlecell/preprocess/dask.log").read_text()
    assert "on 2 cpu worker(s), 2 chunk(s)" in log


def test_bad_counts_over_dask_workers_leave_no_output(tmp_path):
    import anndata as ad

    adata = ad.read_h5ad(REPO / "resources/singlecell/tiny_ctrl.h5ad")
    adata.X = adata.X.copy()
    adata.X.data[-5] = -2  # in the second worker's cells
    bad = tmp_path / "bad.h5ad"
    adata.write_h5ad(bad)
    config = dask_config("bad", source="files", samples={"bad": str(bad)})
    configfile = write_config(tmp_path, config)
    target = TARGET.format(dataset="bad")
    done = run_snakemake(
        tmp_path, target, "--cores", "2", "--configfile", str(configfile), check=False
    )
    assert_negative_count_refused(done, tmp_path)
