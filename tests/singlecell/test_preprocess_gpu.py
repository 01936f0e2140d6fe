"""The preprocessing chain on CuPy against the same functions on NumPy, to the
acceptance bounds (HVG overlap >= 99%, top-10 PCs |corr| >= 0.999), and the
device CSR past 2^31 entries. Run on a CUDA machine; skipped elsewhere."""

import numpy as np
import pytest
from conftest import SHARED_DATA

from warpbio.device import gpu_available
from warpbio.singlecell.hvg import HvgSettings
from warpbio.singlecell.preprocess import PreprocessSettings, preprocess_counts
from warpbio.singlecell.simulate import SimulationSpec, simulate_counts
from warpbio.singlecell.sparse import Csr, from_scipy

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not gpu_available(), reason="needs a CUDA GPU and CuPy"),
]

BRAIN = SHARED_DATA / "singlecell" / "brain1m_first10k_cells_1000genes.zarr"


@pytest.fixture(scope="module")
def cp():
    import cupy

    return cupy


def assert_chains_agree(cpu, gpu, cp):
    np.testing.assert_array_equal(gpu.filtering.cells, cpu.filtering.cells)
    np.testing.assert_array_equal(gpu.filtering.genes, cpu.filtering.genes)
    assert gpu.target_sum == pytest.approx(cpu.target_sum, rel=1e-7)
    np.testing.assert_allclose(
        gpu.matrix.to_scipy().toarray(), cpu.matrix.to_scipy().toarray(), rtol=1e-6, atol=1e-6
    )
    mine, theirs = gpu.hvg["highly_variable"].to_numpy(), cpu.hvg["highly_variable"].to_numpy()
    assert (mine & theirs).sum() / theirs.sum() >= 0.99
    embedding = cp.asnumpy(gpu.pca.embedding)
    for i in range(10):
        corr = abs(np.corrcoef(embedding[:, i], cpu.pca.embedding[:, i])[0, 1])
        assert corr >= 0.999, f"PC{i + 1}: |corr| {corr}"
    np.testing.assert_allclose(gpu.pca.variance[:10], cpu.pca.variance[:10], rtol=1e-4)


@pytest.mark.parametrize("flavor", ["cell_ranger", "seurat", "seurat_v3"])
def test_simulated_chain_gpu_equals_cpu(cp, flavor):
    sim = simulate_counts(SimulationSpec(n_cells=3000, n_genes=2000), seed=4)
    settings = PreprocessSettings(
        max_pct_mt=20, hvg=HvgSettings(flavor=flavor, n_top_genes=500), n_pcs=50
    )
    cpu = preprocess_counts(from_scipy(sim.counts, np), sim.gene_names, settings)
    gpu = preprocess_counts(from_scipy(sim.counts, cp), sim.gene_names, settings)
    assert isinstance(gpu.pca.embedding, cp.ndarray)
    assert_chains_agree(cpu, gpu, cp)


@pytest.mark.parametrize("flavor", ["cell_ranger", "seurat", "seurat_v3"])
def test_brain_chain_gpu_equals_cpu(cp, flavor):
    if not BRAIN.exists():
        pytest.skip(f"real data not present: {BRAIN}")
    from warpbio.singlecell.ingest import read_sample

    raw = read_sample(BRAIN)
    settings = PreprocessSettings(
        min_genes=20, hvg=HvgSettings(flavor=flavor, n_top_genes=200), n_pcs=50
    )
    cpu = preprocess_counts(from_scipy(raw.X, np), list(raw.var_names), settings)
    gpu = preprocess_counts(from_scipy(raw.X, cp), list(raw.var_names), settings)
    assert_chains_agree(cpu, gpu, cp)


def test_gpu_reruns_agree(cp):
    """Column sums use atomics on the GPU: bound the run-to-run difference."""
    sim = simulate_counts(SimulationSpec(n_cells=3000, n_genes=2000), seed=6)
    settings = PreprocessSettings(max_pct_mt=20, hvg=HvgSettings(n_top_genes=500))
    first = preprocess_counts(from_scipy(sim.counts, cp), sim.gene_names, settings)
    again = preprocess_counts(from_scipy(sim.counts, cp), sim.gene_names, settings)
    np.testing.assert_array_equal(
        first.hvg["highly_variable"].to_numpy(), again.hvg["highly_variable"].to_numpy()
    )
    np.testing.assert_allclose(
        cp.asnumpy(first.pca.embedding), cp.asnumpy(again.pca.embedding), atol=1e-4
    )


def test_csr_operations_gpu_equal_cpu(cp):
    import scipy.sparse as sp

    matrix = sp.random(2000, 300, density=0.05, format="csr", random_state=3, dtype=np.float32)
    matrix.data = np.ceil(matrix.data * 20)
    for block_entries in (1 << 26, 977):
        cpu = from_scipy(matrix, np, block_entries=block_entries)
        gpu = from_scipy(matrix, cp, block_entries=block_entries)
        assert gpu.row_blocks() == cpu.row_blocks()
        np.testing.assert_allclose(cp.asnumpy(gpu.row_sums()), cpu.row_sums(), rtol=1e-12)
        for got, want in zip(gpu.column_sums(squares=True), cpu.column_sums(squares=True),
                             strict=True):  # fmt: skip
            np.testing.assert_allclose(cp.asnumpy(got), want, rtol=1e-12)
        rows = np.arange(2000) % 3 != 0
        np.testing.assert_array_equal(cp.asnumpy(gpu.column_nnz(rows)), cpu.column_nnz(rows))
        cols = np.arange(300) % 4 != 1
        picked_gpu = gpu.select(rows=cp.asarray(rows), columns=cp.asarray(cols))
        picked_cpu = cpu.select(rows=rows, columns=cols)
        assert (picked_gpu.to_scipy() != picked_cpu.to_scipy()).nnz == 0
        columns = np.array([7, 3, 250])
        np.testing.assert_array_equal(
            cp.asnumpy(gpu.dense_columns(columns)), cpu.dense_columns(columns)
        )


def test_more_than_2_31_entries(cp):
    """A CSR past int32 indexing (nnz > 2^31), built on the device; ~40 GB of GPU memory."""
    free, _ = cp.cuda.runtime.memGetInfo()
    if free < 44 * 2**30:
        pytest.skip(f"needs ~44 GiB of free GPU memory, {free / 2**30:.0f} GiB free")
    per_row, n_cols = 1025, 2048
    n_rows = (2**31 + 2**24) // per_row + 1
    nnz = n_rows * per_row
    assert nnz > 2**31
    indptr = cp.arange(n_rows + 1, dtype=cp.int64) * per_row
    indices = cp.empty(nnz, dtype=cp.int32)
    step = 1 << 28
    for start in range(0, nnz, step):  # gene j at position j of its row
        stop = min(start + step, nnz)
        indices[start:stop] = (cp.arange(start, stop, dtype=cp.int64) % per_row).astype(cp.int32)
    matrix = Csr(cp.ones(nnz, dtype=cp.float32), indices, indptr, (n_rows, n_cols))
    assert matrix.indptr.dtype == cp.int64 and int(matrix.indptr[-1]) == nnz
    assert len(matrix.row_blocks()) > 30
    factors = (cp.arange(n_rows) % 3 + 1).astype(cp.float32)
    matrix.scale_rows(factors)
    row_sums = matrix.row_sums()
    cp.testing.assert_array_equal(row_sums, per_row * factors.astype(cp.float64))
    column_sums = cp.asnumpy(matrix.column_sums())
    expected = float(cp.asnumpy(factors.astype(cp.float64).sum()))
    np.testing.assert_allclose(column_sums[:per_row], expected, rtol=1e-12)
    assert not column_sums[per_row:].any()
    dense = matrix.dense_columns(np.array([1024, 0]))
    cp.testing.assert_array_equal(dense[:, 0], factors)
    cp.testing.assert_array_equal(dense[:, 1], factors)
    del dense
    last = n_rows - 1
    odd = cp.arange(n_rows) % 2 == 1
    picked = matrix.select(rows=odd, columns=cp.arange(n_cols) < 1000)
    assert picked.shape == (n_rows // 2, 1000) and picked.nnz == (n_rows // 2) * 1000
    cp.testing.assert_array_equal(picked.row_sums()[-1:], factors[last - (last % 2 == 0)] * 1000)
