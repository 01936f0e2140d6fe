"""Preprocessing chain on NumPy: settings, bad input, filtering, each stage's math."""

import numpy as np
import pytest
import scipy.sparse as sp
import yaml
from conftest import REPO

from warpbio.singlecell.hvg import HvgSettings
from warpbio.singlecell.pca import pca
from warpbio.singlecell.preprocess import (
    PreprocessError,
    PreprocessSettings,
    check_counts,
    normalize_total,
    preprocess_counts,
)
from warpbio.singlecell.scale import regress_out, scale
from warpbio.singlecell.simulate import SimulationSpec, simulate_counts
from warpbio.singlecell.sparse import from_scipy

SPEC = SimulationSpec(n_cells=800, n_genes=400, n_cell_types=4, n_samples=2)
SMALL = PreprocessSettings(min_genes=50, max_pct_mt=20, hvg=HvgSettings(n_top_genes=120), n_pcs=20)


@pytest.fixture(scope="module")
def sim():
    return simulate_counts(SPEC, seed=2)


def run(sim, settings=SMALL):
    return preprocess_counts(from_scipy(sim.counts), sim.gene_names, settings)


def test_settings_from_schema_defaults_and_demo_config():
    from snakemake.utils import validate

    config = {}
    validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    defaults = PreprocessSettings.from_config(config["singlecell"]["preprocess"])
    assert defaults.min_genes == 200 and defaults.min_cells == 3 and defaults.max_genes is None
    assert defaults.hvg.flavor == "cell_ranger" and defaults.hvg.n_top_genes == 4000
    assert defaults.hvg.max_disp == np.inf and defaults.target_sum is None
    assert defaults.regress_out == ("total_counts", "pct_counts_mt")
    assert defaults.scale_max == 10 and defaults.n_pcs == 50
    demo = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    validate(demo, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    assert PreprocessSettings.from_config(demo["singlecell"]["preprocess"]).hvg.n_top_genes == 500
    with pytest.raises(PreprocessError, match="not per-cell QC metrics"):
        PreprocessSettings(regress_out=("n_counts",))
    with pytest.raises(ValueError, match="batch_key is supported with flavor seurat_v3 only"):
        HvgSettings(flavor="cell_ranger", batch_key="sample")


def test_negative_and_non_finite_counts_are_refused_by_cell():
    counts = sp.csr_matrix(np.array([[1, 2, 0], [0, -3, 1]], dtype=np.float32))
    with pytest.raises(
        PreprocessError, match=r"x\.h5ad: 1 negative .* -3\.0 in cell 'b' \(row 1\).*raw"
    ):
        check_counts(from_scipy(counts), "x.h5ad", ["a", "b"])
    counts = sp.csr_matrix(np.array([[np.nan, 2, 0], [0, 3, 1]], dtype=np.float32))
    with pytest.raises(PreprocessError, match="non-finite"):
        check_counts(from_scipy(counts), "x.h5ad")


def test_nothing_left_names_thresholds_and_counts(sim):
    settings = PreprocessSettings(min_genes=50, max_genes=60)
    with pytest.raises(PreprocessError) as caught:
        run(sim, settings)
    message = str(caught.value)
    assert "no cells left after filtering (800 cells" in message
    assert (
        "min_genes=50 removed 0 of 800" in message and "max_genes=60 removed 800 of 800" in message
    )
    assert "singlecell.preprocess" in message
    with pytest.raises(PreprocessError, match=r"no genes left .*min_cells=100000"):
        run(sim, PreprocessSettings(min_genes=1, min_cells=100000))


def test_filters_apply_in_order_and_are_counted(sim):
    result = run(sim)
    table = {row["filter"]: row for row in result.filtering.table}
    dense = sim.counts.toarray()
    genes = (dense > 0).sum(1)
    mito = 100 * dense[:, -13:].sum(1) / dense.sum(1)
    keep = (genes >= 50) & (mito <= 20)
    np.testing.assert_array_equal(result.filtering.cells, keep)
    assert table["max_pct_mt"]["removed"] == int(((genes >= 50) & (mito > 20)).sum()) > 0
    assert table["max_pct_mt"]["remaining"] == keep.sum() == result.matrix.shape[0]
    gene_cells = (dense[keep] > 0).sum(0)
    np.testing.assert_array_equal(result.filtering.genes, gene_cells >= 3)
    np.testing.assert_array_equal(result.filtering.gene_n_cells, gene_cells)
    assert sim.damaged[~keep].mean() > 0.5  # the filter finds the damaged cells


def test_normalize_total_median_and_fixed_target():
    counts = sp.csr_matrix(np.array([[1, 3, 0], [2, 2, 6], [0, 0, 5]], dtype=np.float32))
    matrix = from_scipy(counts)
    assert normalize_total(matrix, None) == 5.0  # median of 4, 10, 5
    np.testing.assert_allclose(matrix.row_sums(), [5, 5, 5], rtol=1e-6)
    matrix = from_scipy(counts)
    normalize_total(matrix, 1e4)
    np.testing.assert_allclose(matrix.row_sums(), [1e4, 1e4, 1e4], rtol=1e-6)


def test_regress_out_equals_least_squares_and_handles_a_zero_covariate():
    rng = np.random.default_rng(0)
    covariate = rng.normal(size=(500, 1))
    data = (rng.normal(size=(500, 30)) + 2 * covariate).astype(np.float32)
    design = np.hstack([np.ones((500, 1)), covariate])
    beta, *_ = np.linalg.lstsq(design, data.astype(np.float64), rcond=None)
    expected = data - design @ beta
    got = regress_out(data.copy(), covariate, block_rows=64)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    with_zero = regress_out(data.copy(), np.hstack([covariate, np.zeros((500, 1))]))
    np.testing.assert_allclose(with_zero, expected, atol=1e-5)


def test_scale_centers_scales_and_clips():
    rng = np.random.default_rng(1)
    data = rng.exponential(size=(400, 6)).astype(np.float32)
    data[:, 2] = 3.0  # constant: stays 0
    _, std = scale(data, max_value=2.5, block_rows=50)
    assert data.dtype == np.float32 and np.abs(data).max() <= 2.5
    np.testing.assert_array_equal(data[:, 2], 0)
    assert std[2] == 1
    unclipped = rng.normal(size=(300, 4)).astype(np.float32)
    scale(unclipped, max_value=None)
    np.testing.assert_allclose(unclipped.mean(0), 0, atol=1e-6)
    np.testing.assert_allclose(unclipped.std(0, ddof=1), 1, rtol=1e-5)


def test_pca_equals_svd_of_the_centered_matrix():
    rng = np.random.default_rng(2)
    data = (rng.normal(size=(600, 40)) @ rng.normal(size=(40, 40))).astype(np.float32)
    result = pca(data, 10, block_rows=128)
    centered = data.astype(np.float64) - data.astype(np.float64).mean(0)
    u, s, vt = np.linalg.svd(centered, full_matrices=False)
    np.testing.assert_allclose(result.variance, s[:10] ** 2 / 599, rtol=1e-8)
    np.testing.assert_allclose(result.variance_ratio, s[:10] ** 2 / (s**2).sum(), rtol=1e-8)
    for i in range(10):
        assert abs(result.components[i] @ vt[i]) > 1 - 1e-9
        largest = np.argmax(np.abs(result.components[i]))
        assert result.components[i, largest] > 0  # scikit-learn's sign convention
    np.testing.assert_allclose(
        np.abs(result.embedding),
        np.abs(u[:, :10] * s[:10]).astype(np.float32),
        rtol=1e-3,
        atol=1e-3,
    )
    with pytest.raises(ValueError, match="n_pcs = 41"):
        pca(data, 41)


def test_same_input_same_output(sim):
    first, again = run(sim), run(sim)
    assert (first.matrix.to_scipy() != again.matrix.to_scipy()).nnz == 0
    np.testing.assert_array_equal(first.pca.embedding, again.pca.embedding)
    assert first.hvg.equals(again.hvg)


@pytest.mark.parametrize("flavor", ["cell_ranger", "seurat", "seurat_v3"])
def test_chain_separates_the_simulated_cell_types(sim, flavor):
    settings = PreprocessSettings(
        min_genes=50, max_pct_mt=20, hvg=HvgSettings(flavor=flavor, n_top_genes=120), n_pcs=20
    )
    result = run(sim, settings)
    embedding = np.asarray(result.pca.embedding)[:, :10]
    truth = sim.cell_type[result.filtering.cells]
    centroids = np.stack([embedding[truth == t].mean(0) for t in np.unique(truth)])
    nearest = np.argmin(((embedding[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (np.unique(truth)[nearest] == truth).mean() > 0.97
    assert result.hvg["highly_variable"].sum() == 120
    assert set(result.timings) >= {"QC metrics", "filter", "highly variable genes", "PCA"}
