"""The Dask path on GPU workers against the one-GPU chain (run on a CUDA machine;
skipped elsewhere): dask-cuda's LocalCUDACluster with one worker, the fallback of
one Nanny per GPU with two workers sharing a GPU, and two GPUs when there are."""

import sys

import numpy as np
import pytest

from warpbio.device import gpu_available
from warpbio.singlecell.hvg import HvgSettings
from warpbio.singlecell.preprocess import PreprocessSettings, preprocess_counts
from warpbio.singlecell.simulate import SimulationSpec, simulate_counts, to_anndata
from warpbio.singlecell.sparse import from_scipy

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not gpu_available(), reason="needs a CUDA GPU and CuPy"),
]
pytest.importorskip("distributed")

FLAVORS = ["cell_ranger", "seurat_v3"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    sim = simulate_counts(SimulationSpec(n_cells=3000, n_genes=2000), seed=4)
    path = tmp_path_factory.mktemp("dask_gpu") / "sim.h5ad"
    to_anndata(sim).write_h5ad(path)
    return sim, path


def settings_for(flavor):
    return PreprocessSettings(
        max_pct_mt=20, hvg=HvgSettings(flavor=flavor, n_top_genes=500), n_pcs=50
    )


def one_gpu(sim, settings):
    import cupy as cp

    return preprocess_counts(from_scipy(sim.counts, cp), sim.gene_names, settings)


def assert_agree(chunked, single):
    """The GPU bounds of acceptance 1: per-gene sums use atomics on the GPU."""
    np.testing.assert_array_equal(chunked.filtering.cells, single.filtering.cells)
    np.testing.assert_array_equal(chunked.filtering.genes, single.filtering.genes)
    np.testing.assert_allclose(
        chunked.matrix.to_scipy().toarray(), single.matrix.to_scipy().toarray(), rtol=1e-6
    )
    mine = chunked.hvg["highly_variable"].to_numpy()
    theirs = single.hvg["highly_variable"].to_numpy()
    assert (mine & theirs).sum() / theirs.sum() >= 0.99
    reference = single.pca.embedding.get()
    assert isinstance(chunked.pca.embedding, np.ndarray)
    for i in range(10):
        corr = abs(np.corrcoef(chunked.pca.embedding[:, i], reference[:, i])[0, 1])
        assert corr >= 0.999, f"PC{i + 1}: |corr| {corr}"
    np.testing.assert_allclose(chunked.pca.variance[:10], single.pca.variance[:10], rtol=1e-4)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_local_cuda_cluster_one_worker_equals_one_gpu(data, flavor):
    pytest.importorskip("dask_cuda")
    from warpbio.singlecell.dask_preprocess import (
        dask_client,
        preprocess_distributed,
        visible_gpu_ids,
    )

    sim, path = data
    settings = settings_for(flavor)
    single = one_gpu(sim, settings)
    with dask_client(1, "gpu", visible_gpu_ids()[:1]) as client:
        chunked, timings = preprocess_distributed(
            path, settings, 1, "gpu", client=client, bounds=[0, 1000, 1001, 3000]
        )
    assert_agree(chunked, single)
    assert timings["PCA"] > 0


def test_nanny_per_gpu_without_dask_cuda(data, monkeypatch):
    """Two workers on the first GPU (each sees exactly that one), four chunks."""
    from warpbio.singlecell.dask_preprocess import (
        _worker_gpus,
        dask_client,
        preprocess_distributed,
        visible_gpu_ids,
    )

    monkeypatch.setitem(sys.modules, "dask_cuda", None)  # its import fails
    first = visible_gpu_ids()[0]
    sim, path = data
    settings = settings_for("seurat_v3")
    single = one_gpu(sim, settings)
    with dask_client(2, "gpu", [first, first]) as client:
        assert set(client.run(_worker_gpus).values()) == {first}
        chunked, _ = preprocess_distributed(
            path, settings, 2, "gpu", client=client, bounds=[0, 700, 1500, 1501, 3000]
        )
    assert_agree(chunked, single)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_two_gpus_equal_one(data, flavor):
    from warpbio.singlecell.dask_preprocess import preprocess_distributed, visible_gpu_ids

    if len(visible_gpu_ids()) < 2:
        pytest.skip("needs two GPUs")
    sim, path = data
    settings = settings_for(flavor)
    chunked, timings = preprocess_distributed(path, settings, 2, "gpu")
    assert timings["start workers"] > 0
    assert_agree(chunked, one_gpu(sim, settings))
