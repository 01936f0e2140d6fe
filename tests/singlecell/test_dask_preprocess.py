"""The Dask path (row chunks of cells on CPU workers) against the single-device
chain: the same cells, genes, normalized values and HVGs, the same PCs up to
float64 summation order; chunks at odd places, several chunks per worker, a
chunk whose cells are all filtered out; bad input gets the same message."""

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import SHARED_DATA

from warpbio.singlecell.dask_preprocess import dask_client, even_bounds, preprocess_distributed
from warpbio.singlecell.hvg import HvgSettings
from warpbio.singlecell.preprocess import PreprocessError, PreprocessSettings, preprocess_counts
from warpbio.singlecell.simulate import SimulationSpec, simulate_counts, to_anndata
from warpbio.singlecell.sparse import from_scipy

pytest.importorskip("distributed")

BRAIN = SHARED_DATA / "singlecell" / "brain1m_first10k_cells_1000genes.zarr"
SPEC = SimulationSpec(n_cells=900, n_genes=500, n_cell_types=4, n_samples=3)


def settings_for(flavor: str, **changes) -> PreprocessSettings:
    values = {
        "min_genes": 50,
        "max_pct_mt": 20,
        "hvg": HvgSettings(flavor=flavor, n_top_genes=150),
        "n_pcs": 20,
        **changes,
    }
    return PreprocessSettings(**values)


@pytest.fixture(scope="module")
def client():
    """Three CPU workers as threads of this process (quick to start)."""
    with dask_client(3, "cpu", processes=False) as client:
        yield client


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    sim = simulate_counts(SPEC, seed=7)
    path = tmp_path_factory.mktemp("dask") / "simulated.h5ad"
    to_anndata(sim).write_h5ad(path)  # anndata's chunked datasets
    return sim, path


def single_device(counts, gene_names, settings, batches=None):
    return preprocess_counts(from_scipy(counts), list(gene_names), settings, batches=batches)


def assert_same_result(chunked, single, n_pcs_checked=None):
    """Row-local results exactly equal; sums over cells up to summation order."""
    np.testing.assert_array_equal(chunked.filtering.cells, single.filtering.cells)
    np.testing.assert_array_equal(chunked.filtering.genes, single.filtering.genes)
    np.testing.assert_array_equal(chunked.filtering.gene_n_cells, single.filtering.gene_n_cells)
    assert chunked.filtering.table == single.filtering.table
    for name, values in single.metrics.items():
        np.testing.assert_array_equal(chunked.metrics[name], values)
    np.testing.assert_array_equal(chunked.mito, single.mito)
    assert chunked.target_sum == single.target_sum
    mine, theirs = chunked.matrix.to_scipy(), single.matrix.to_scipy()
    for part in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(mine, part), getattr(theirs, part))
    assert list(chunked.hvg.columns) == list(single.hvg.columns)
    np.testing.assert_array_equal(
        chunked.hvg["highly_variable"].to_numpy(), single.hvg["highly_variable"].to_numpy()
    )
    for column in single.hvg.columns:
        np.testing.assert_allclose(
            chunked.hvg[column].to_numpy(dtype=float),
            single.hvg[column].to_numpy(dtype=float),
            rtol=1e-9,
            atol=1e-12,
            err_msg=column,
        )
    embedding = chunked.pca.embedding
    assert isinstance(embedding, np.ndarray) and embedding.dtype == np.float32
    assert embedding.shape == single.pca.embedding.shape
    n = n_pcs_checked or embedding.shape[1]
    for i in range(n):
        corr = abs(np.corrcoef(embedding[:, i], single.pca.embedding[:, i])[0, 1])
        assert corr >= 0.99999, f"PC{i + 1}: |corr| {corr}"
    np.testing.assert_allclose(chunked.pca.variance[:n], single.pca.variance[:n], rtol=1e-7)
    np.testing.assert_allclose(chunked.pca.components[:n], single.pca.components[:n], atol=1e-6)


def filtered_cell(single) -> int:
    """A cell the filters remove (a damaged one), away from the ends."""
    removed = np.flatnonzero(~single.filtering.cells)
    return int(removed[(removed > 10) & (removed < len(single.filtering.cells) - 10)][0])


@pytest.mark.parametrize("flavor", ["cell_ranger", "seurat", "seurat_v3"])
def test_simulated_chunks_equal_the_single_device(client, simulated, flavor):
    sim, path = simulated
    settings = settings_for(flavor)
    single = single_device(sim.counts, sim.gene_names, settings)
    lone = filtered_cell(single)
    # uneven chunks, 5 chunks on 3 workers, one chunk of a single removed cell
    bounds = [0, 2, lone, lone + 1, 611, SPEC.n_cells]
    chunked, timings = preprocess_distributed(
        path, settings, 3, "cpu", client=client, bounds=bounds, read_threads=2
    )
    assert_same_result(chunked, single)
    assert set(timings) >= {"read", "QC metrics", "filter", "highly variable genes", "PCA"}
    assert chunked.timings is timings


def test_batches_fixed_target_and_other_covariates(client, simulated):
    """seurat_v3 per sample (batch_key), target_sum fixed, n_genes regressed out;
    batches read from the file's obs."""
    sim, path = simulated
    settings = settings_for(
        "seurat_v3",
        hvg=HvgSettings(flavor="seurat_v3", n_top_genes=150, batch_key="sample"),
        target_sum=1e4,
        regress_out=("n_genes_by_counts",),
        scale_max=None,
    )
    labels = np.array([f"sample{s + 1}" for s in sim.sample])  # the file's obs['sample']
    single = single_device(sim.counts, sim.gene_names, settings, batches=labels)
    chunked, _ = preprocess_distributed(
        path, settings, 3, "cpu", client=client, bounds=[0, 450, 451, 900]
    )
    assert "highly_variable_nbatches" in chunked.hvg
    assert_same_result(chunked, single)


def test_no_regression_and_one_chunk(client, simulated):
    sim, path = simulated
    settings = settings_for("cell_ranger", regress_out=(), n_pcs=10)
    single = single_device(sim.counts, sim.gene_names, settings)
    chunked, _ = preprocess_distributed(path, settings, 1, "cpu", client=client)
    assert_same_result(chunked, single)


def test_worker_processes_start_and_agree(simulated):
    """Worker processes (spawned, no GPU visible) with the default even chunks;
    the chain's results come back without the matrix when not asked for."""
    sim, path = simulated
    settings = settings_for("seurat_v3")
    single = single_device(sim.counts, sim.gene_names, settings)
    chunked, timings = preprocess_distributed(
        path, settings, 2, "cpu", processes=True, gather_matrix=False
    )
    assert chunked.matrix is None and timings["start workers"] > 0
    np.testing.assert_array_equal(chunked.filtering.cells, single.filtering.cells)
    np.testing.assert_array_equal(
        chunked.hvg["highly_variable"].to_numpy(), single.hvg["highly_variable"].to_numpy()
    )
    for i in range(10):
        corr = abs(np.corrcoef(chunked.pca.embedding[:, i], single.pca.embedding[:, i])[0, 1])
        assert corr >= 0.99999


def test_bad_counts_get_the_single_device_message(client, tmp_path):
    rng = np.random.default_rng(0)
    counts = sp.random(60, 30, density=0.5, format="csr", random_state=rng, dtype=np.float32)
    counts.data = np.floor(counts.data * 20)
    counts[41, 3], counts[50, 4] = -2.0, np.nan
    adata = ad.AnnData(X=sp.csr_matrix(counts))
    adata.obs_names = [f"cell{i}" for i in range(60)]
    path = tmp_path / "bad.h5ad"
    adata.write_h5ad(path)
    settings = settings_for("cell_ranger", min_genes=1)
    with pytest.raises(PreprocessError) as single:
        preprocess_counts(
            from_scipy(adata.X), list(adata.var_names), settings, str(path), adata.obs_names
        )
    with pytest.raises(PreprocessError) as chunked:
        preprocess_distributed(path, settings, 3, "cpu", client=client, bounds=[0, 20, 45, 60])
    assert str(chunked.value) == str(single.value)
    assert "2 negative or invalid count(s), first -2.0 in cell 'cell41' (row 41)" in str(
        chunked.value
    )


def test_nothing_left_gets_the_single_device_message(client, simulated):
    sim, path = simulated
    for settings in (
        settings_for("cell_ranger", max_genes=10),
        settings_for("seurat", min_cells=10**6),
    ):
        with pytest.raises(PreprocessError) as single:
            single_device(sim.counts, sim.gene_names, settings)
        with pytest.raises(PreprocessError) as chunked:
            preprocess_distributed(path, settings, 3, "cpu", client=client)
        assert str(chunked.value) == str(single.value)


def test_bounds_are_checked(client, simulated):
    _, path = simulated
    assert even_bounds(10, 3) == [0, 3, 7, 10] and even_bounds(2, 5) == [0, 1, 2]
    with pytest.raises(ValueError, match="must rise strictly from 0 to the 900 cells"):
        preprocess_distributed(path, settings_for("seurat"), 2, "cpu", client=client,
                               bounds=[0, 500, 500, 900])  # fmt: skip


@pytest.fixture(scope="module")
def brain_h5ad(tmp_path_factory):
    if not BRAIN.exists():
        pytest.skip(f"real data not present: {BRAIN}")
    from warpbio.singlecell.ingest import read_sample

    raw = read_sample(BRAIN)
    raw.X = sp.csr_matrix(raw.X, dtype=np.float32)
    path = tmp_path_factory.mktemp("brain") / "brain.h5ad"
    raw.write_h5ad(path)
    return raw, path


@pytest.mark.parametrize("flavor", ["cell_ranger", "seurat_v3"])
def test_brain_chunks_equal_the_single_device(client, brain_h5ad, flavor):
    """The real data (no mito genes: pct_counts_mt is 0, its regression column singular)."""
    raw, path = brain_h5ad
    settings = PreprocessSettings(
        min_genes=20, min_cells=3, hvg=HvgSettings(flavor=flavor, n_top_genes=200), n_pcs=50
    )
    single = single_device(raw.X, raw.var_names, settings)
    chunked, _ = preprocess_distributed(
        path, settings, 3, "cpu", client=client, bounds=[0, 1, 3333, 3334, 7001, raw.n_obs]
    )
    assert_same_result(chunked, single, n_pcs_checked=10)


def test_unsorted_and_duplicate_entries_are_made_canonical(client, simulated, tmp_path):
    """Files whose rows list genes out of order or twice: summed and sorted per
    chunk, as the single-device path does for the whole matrix."""
    from warpbio.singlecell.csr_io import write_csr_h5ad

    sim, _ = simulated
    x = sim.counts.tocsr()
    data, indices = x.data.copy(), x.indices.copy()
    for row in (5, 400, 899):  # reverse three rows, then split a count in two
        a, b = x.indptr[row], x.indptr[row + 1]
        data[a:b], indices[a:b] = data[a:b][::-1], indices[a:b][::-1]
    indices[x.indptr[600] + 1] = indices[x.indptr[600]]  # a duplicate gene in row 600
    messy = sp.csr_matrix((data, indices, x.indptr), shape=x.shape)
    assert not messy.has_canonical_format
    path = tmp_path / "messy.h5ad"
    adata = to_anndata(sim)
    write_csr_h5ad(path, data, indices, x.indptr, x.shape, adata.obs, adata.var)
    settings = settings_for("cell_ranger")
    single = single_device(messy, sim.gene_names, settings)
    chunked, _ = preprocess_distributed(
        path, settings, 3, "cpu", client=client, bounds=[0, 300, 600, 601, 900]
    )
    assert_same_result(chunked, single)


def test_a_lost_worker_is_named(client):
    from warpbio.singlecell.dask_preprocess import ChunkSet, WorkerLostError

    chunks = ChunkSet(client, [0, 10, 20], "cpu")
    chunks.places[1] = "tcp://127.0.0.1:9"  # a worker that is not there
    with pytest.raises(WorkerLostError, match=r"holding cells 10-20 \(tcp://127\.0\.0\.1:9\)"):
        chunks._check_workers()
