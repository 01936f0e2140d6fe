"""The CPU preprocessing chain against scanpy 1.11.5 run with the same parameters.

Real data: the first 10,000 cells x 1,000 genes of 10x's 1.3M mouse brain cells
(shared/data). Its genes include no mitochondrial ones, so pct_counts_mt is 0 for
every cell: scanpy's regress_out on [total_counts, pct_counts_mt] then finds
C^T C singular and fits per-gene GLMs (slow) whose residuals are those of the fit
on total_counts alone, so scanpy regresses on total_counts here while we regress
on both (our pseudo-inverse gives the same residuals). The simulated data, which
has mt- genes, checks the two-covariate fit against scanpy's own fast path.
"""

import warnings

import numpy as np
import pytest
from conftest import SHARED_DATA

from warpbio.singlecell.hvg import HvgSettings
from warpbio.singlecell.preprocess import PreprocessSettings, preprocess_counts
from warpbio.singlecell.scale import regress_out, scale
from warpbio.singlecell.sparse import from_scipy

sc = pytest.importorskip("scanpy")

BRAIN = SHARED_DATA / "singlecell" / "brain1m_first10k_cells_1000genes.zarr"
FLAVORS = ["cell_ranger", "seurat", "seurat_v3"]
N_TOP = 200
MIN_GENES, MIN_CELLS = 20, 3  # the brain cells have a median of 65 of these 1,000 genes


@pytest.fixture(scope="module")
def brain():
    if not BRAIN.exists():
        pytest.skip(f"real data not present: {BRAIN}")
    from warpbio.singlecell.ingest import read_sample

    return read_sample(BRAIN)


def scanpy_chain(raw, flavor, regress_keys, n_top=N_TOP, max_pct_mt=None):
    """scanpy's recipe with our order: QC on raw counts, cell filters, gene filter,
    normalize_total (median), log1p, HVG (seurat_v3 on the counts), regress, scale, PCA."""
    if flavor == "seurat_v3":
        pytest.importorskip("skmisc")
    adata = raw.copy()
    adata.var["mt"] = adata.var_names.str.startswith(("mt-", "MT-", "Mt-"))
    sc.pp.calculate_qc_metrics(adata, qc_vars=["mt"], percent_top=None, inplace=True)
    sc.pp.filter_cells(adata, min_genes=MIN_GENES)
    if max_pct_mt is not None:
        adata = adata[adata.obs["pct_counts_mt"] <= max_pct_mt].copy()
    sc.pp.filter_genes(adata, min_cells=MIN_CELLS)
    adata.layers["counts"] = adata.X.copy()
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    layer = "counts" if flavor == "seurat_v3" else None
    sc.pp.highly_variable_genes(adata, flavor=flavor, n_top_genes=n_top, layer=layer)
    hv = adata[:, adata.var["highly_variable"].to_numpy()].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.regress_out(hv, regress_keys)
    sc.pp.scale(hv, max_value=10)
    scaled = hv.X.copy()
    sc.pp.pca(hv, n_comps=50)
    return adata, scaled, hv


def ours(raw, flavor, n_top=N_TOP, max_pct_mt=None):
    settings = PreprocessSettings(
        min_genes=MIN_GENES,
        min_cells=MIN_CELLS,
        max_pct_mt=max_pct_mt,
        hvg=HvgSettings(flavor=flavor, n_top_genes=n_top),
        regress_out=("total_counts", "pct_counts_mt"),
        n_pcs=50,
    )
    return preprocess_counts(from_scipy(raw.X), list(raw.var_names), settings)


def our_scaled(result):
    """Our regressed + scaled HVG matrix, rebuilt from the chain's outputs."""
    columns = np.flatnonzero(result.hvg["highly_variable"].to_numpy())
    dense = result.matrix.dense_columns(columns)
    metrics = result.metrics
    regress_out(dense, np.stack([metrics["total_counts"], metrics["pct_counts_mt"]], axis=1))
    scale(dense, 10.0)
    return dense


def assert_pcs_agree(result, hv, n=10):
    ours_pcs, theirs = np.asarray(result.pca.embedding), hv.obsm["X_pca"]
    for i in range(n):
        corr = abs(np.corrcoef(ours_pcs[:, i], theirs[:, i])[0, 1])
        assert corr >= 0.999, f"PC{i + 1}: |corr| = {corr}"
    np.testing.assert_allclose(result.pca.variance[:n], hv.uns["pca"]["variance"][:n], rtol=1e-4)
    np.testing.assert_allclose(
        result.pca.variance_ratio[:n], hv.uns["pca"]["variance_ratio"][:n], rtol=1e-4
    )


@pytest.mark.parametrize("flavor", FLAVORS)
def test_brain_chain_matches_scanpy(brain, flavor):
    adata, scaled, hv = scanpy_chain(brain, flavor, ["total_counts"])
    result = ours(brain, flavor)
    # filtering: the same cells and genes
    assert result.filtering.cells.sum() == adata.n_obs
    assert list(brain.obs_names[result.filtering.cells]) == list(adata.obs_names)
    assert list(brain.var_names[result.filtering.genes]) == list(adata.var_names)
    # normalize_total + log1p
    np.testing.assert_allclose(result.matrix.to_scipy().toarray(), adata.X.toarray(), atol=1e-6)
    # HVGs
    mine = result.hvg["highly_variable"].to_numpy()
    theirs = adata.var["highly_variable"].to_numpy()
    assert mine.sum() == theirs.sum() == N_TOP
    overlap = (mine & theirs).sum() / N_TOP
    assert overlap >= 0.99, f"{flavor}: HVG overlap {overlap:.3f}"
    np.testing.assert_allclose(result.hvg["means"], adata.var["means"], rtol=1e-6)
    # regress_out + scale of the HVG matrix
    np.testing.assert_allclose(our_scaled(result), scaled, atol=2e-4)
    assert_pcs_agree(result, hv)


def test_simulated_chain_with_mito_covariate_matches_scanpy():
    """Two covariates (pct_counts_mt varies) and the max_pct_mt filter."""
    from warpbio.singlecell.simulate import SimulationSpec, simulate_counts, to_anndata

    raw = to_anndata(simulate_counts(SimulationSpec(n_cells=1200, n_genes=600), seed=5))
    adata, scaled, hv = scanpy_chain(
        raw, "cell_ranger", ["total_counts", "pct_counts_mt"], n_top=150, max_pct_mt=20
    )
    result = ours(raw, "cell_ranger", n_top=150, max_pct_mt=20)
    assert list(raw.obs_names[result.filtering.cells]) == list(adata.obs_names)
    assert result.filtering.table[1]["removed"] > 10  # the damaged cells
    for name in ("total_counts", "n_genes_by_counts", "pct_counts_mt"):
        np.testing.assert_allclose(result.metrics[name], adata.obs[name], rtol=1e-6)
    np.testing.assert_array_equal(
        result.hvg["highly_variable"].to_numpy(), adata.var["highly_variable"].to_numpy()
    )
    np.testing.assert_allclose(our_scaled(result), scaled, atol=2e-4)
    assert_pcs_agree(result, hv)


@pytest.mark.parametrize("n_top", [100, 300])
def test_seurat_v3_with_batches_matches_scanpy(brain, n_top):
    """batch_key: per-batch statistics, merged by median rank (4 interleaved batches)."""
    pytest.importorskip("skmisc")
    from warpbio.singlecell.hvg import highly_variable_genes

    adata = brain.copy()
    sc.pp.filter_cells(adata, min_genes=MIN_GENES)
    sc.pp.filter_genes(adata, min_cells=MIN_CELLS)
    adata.obs["batch"] = np.array(["b1", "b2", "b3", "b4"])[np.arange(adata.n_obs) % 4]
    theirs = sc.pp.highly_variable_genes(
        adata, flavor="seurat_v3", n_top_genes=n_top, batch_key="batch", inplace=False
    )
    settings = HvgSettings(flavor="seurat_v3", n_top_genes=n_top, batch_key="batch")
    mine = highly_variable_genes(from_scipy(adata.X), settings, adata.obs["batch"].to_numpy())
    np.testing.assert_array_equal(mine["highly_variable"], theirs["highly_variable"])
    np.testing.assert_array_equal(
        mine["highly_variable_nbatches"], theirs["highly_variable_nbatches"]
    )
    np.testing.assert_array_equal(mine["highly_variable_rank"], theirs["highly_variable_rank"])
    np.testing.assert_allclose(mine["variances_norm"], theirs["variances_norm"], rtol=1e-10)
