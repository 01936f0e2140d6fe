"""Session fixtures: scanpy-preprocessed brain subset and simulator data, with scanpy's results."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import SHARED_DATA

BRAIN = SHARED_DATA / "singlecell" / "brain1m_first10k_cells_1000genes.zarr"


@pytest.fixture(scope="session")
def brain():
    """The 10x brain subset through scanpy: preprocessing, exact neighbours, Leiden, markers."""
    if not BRAIN.exists():
        pytest.skip("shared data is absent")
    sc = pytest.importorskip("scanpy")
    from warpbio.singlecell.ingest import read_sample

    from .reference import scanpy_preprocess

    # no mitochondrial genes among the subset's 1,000: regress total counts only
    adata = scanpy_preprocess(read_sample(BRAIN), n_top_genes=500, regress=("total_counts",))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.neighbors(adata, n_neighbors=15, n_pcs=50, transformer="sklearn")
        sc.tl.leiden(adata, flavor="igraph", n_iterations=-1, key_added="leiden_igraph")
        sc.tl.rank_genes_groups(adata, "leiden_igraph", method="t-test", key_added="ttest")
        sc.tl.rank_genes_groups(adata, "leiden_igraph", method="wilcoxon", key_added="wilcoxon")
    return adata


@pytest.fixture(scope="session")
def simulated():
    """The demo config's simulation (3,000 cells x 2,000 genes, 6 types), scanpy-preprocessed."""
    pytest.importorskip("scanpy")
    from warpbio.singlecell.simulate import SimulationSpec, simulate_counts, to_anndata

    from .reference import scanpy_preprocess

    raw = to_anndata(simulate_counts(SimulationSpec(), seed=0))
    return scanpy_preprocess(raw, n_top_genes=1000)


@pytest.fixture(scope="session")
def simulated_h5ad(simulated, tmp_path_factory):
    path = tmp_path_factory.mktemp("simulated") / "preprocessed.h5ad"
    keep = simulated.copy()
    keep.obs = keep.obs[
        ["sample", "true_cell_type", "total_counts", "n_genes_by_counts", "pct_counts_mt"]
    ]
    keep.write_h5ad(path)
    return path


def assert_close_ranks(ours: np.ndarray, theirs: np.ndarray, atol: float) -> None:
    np.testing.assert_allclose(np.sort(ours), np.sort(theirs), atol=atol)
