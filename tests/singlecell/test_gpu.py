"""Single-cell downstream on CuPy vs NumPy, to the acceptance bounds. GPU machine only.

No scanpy needed: the data are the simulator's counts (and the brain subset when
the shared data are there), normalised, log1p'd and reduced to 50 PCs with NumPy.
"""

import numpy as np
import pytest
import scipy.sparse as sp

from warpbio.device import gpu_available

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not gpu_available(), reason="needs a CUDA GPU and CuPy"),
]


def log_and_pca(counts, n_top=1000, n_pcs=50):
    """normalize_total + log1p, then PCA of the most variable genes (NumPy)."""
    counts = sp.csr_matrix(counts, dtype=np.float32)
    totals = np.asarray(counts.sum(1)).ravel()
    scale = np.median(totals[totals > 0]) / np.maximum(totals, 1)
    log = sp.csr_matrix(sp.diags(scale) @ counts)
    log.data = np.log1p(log.data).astype(np.float32)
    dense = log.toarray()
    top = np.argsort(-dense.var(0))[:n_top]
    centred = dense[:, top] - dense[:, top].mean(0)
    u, s, _ = np.linalg.svd(centred / np.maximum(centred.std(0), 1e-6), full_matrices=False)
    return log, (u[:, :n_pcs] * s[:n_pcs]).astype(np.float32)


@pytest.fixture(scope="module")
def cp():
    import cupy

    return cupy


@pytest.fixture(scope="module")
def data():
    from warpbio.singlecell.simulate import SimulationSpec, simulate_counts

    sim = simulate_counts(SimulationSpec(n_cells=12000, n_genes=2000, n_cell_types=8), seed=4)
    log, pca = log_and_pca(sim.counts)
    return {"log": log, "pca": pca, "truth": sim.cell_type}


@pytest.fixture(scope="module")
def graphs(data, cp):
    from warpbio.singlecell.neighbors import build_graph, exact_knn

    cpu = exact_knn(data["pca"], 15, np)
    gpu = exact_knn(data["pca"], 15, cp)
    return cpu, gpu, build_graph(cpu, np), build_graph(gpu, cp)


def test_exact_knn_gpu_equals_cpu(graphs, cp):
    from warpbio.singlecell.neighbors import knn_recall

    cpu, gpu, _, _ = graphs
    indices, distances = cp.asnumpy(gpu.indices), cp.asnumpy(gpu.distances)
    np.testing.assert_allclose(distances, cpu.distances, atol=1e-5)
    assert knn_recall(indices, cpu.indices) >= 0.999


def test_exact_knn_gpu_on_the_brain_subset(cp):
    from conftest import SHARED_DATA

    from warpbio.singlecell.ingest import read_sample
    from warpbio.singlecell.neighbors import exact_knn, knn_recall

    path = SHARED_DATA / "singlecell" / "brain1m_first10k_cells_1000genes.zarr"
    if not path.exists():
        pytest.skip("shared data is absent")
    _, pca = log_and_pca(read_sample(path).X, n_top=500)
    cpu = exact_knn(pca, 15, np)
    gpu = exact_knn(pca, 15, cp, block_rows=1000, largest_tile=3000)  # several tiles
    np.testing.assert_allclose(cp.asnumpy(gpu.distances), cpu.distances, atol=1e-5)
    assert knn_recall(cp.asnumpy(gpu.indices), cpu.indices) >= 0.999


def test_connectivities_gpu_equal_cpu(graphs):
    _, _, cpu, gpu = graphs
    assert abs(cpu.connectivities - gpu.connectivities).max() < 1e-5
    np.testing.assert_allclose(gpu.sigmas, cpu.sigmas, rtol=1e-4)


def test_umap_kernel_gpu_equals_cpu_twin(graphs, data, cp):
    from warpbio.singlecell import umap as layout

    _, _, graph, _ = graphs
    schedule = layout.layout_graph(graph.connectivities, 200)
    start = layout.initial_positions(schedule, data["pca"], 0, np)
    a, b = layout.find_ab_params(1.0, 0.5)
    cpu = layout.optimize_layout(start, schedule, a, b, 7, np, n_epochs=3)
    gpu = layout.optimize_layout(start, schedule, a, b, 7, cp, n_epochs=3)
    # same samples, same float64 arithmetic up to FMA contraction and libdevice pow
    np.testing.assert_allclose(cp.asnumpy(gpu), cpu, atol=1e-6)
    again = layout.optimize_layout(start, schedule, a, b, 7, cp, n_epochs=3)
    np.testing.assert_array_equal(cp.asnumpy(again), cp.asnumpy(gpu))


def test_umap_full_run_gpu_close_to_cpu(graphs, data, cp):
    """Chaotic over 200 epochs, so compared by what a UMAP is for: neighbourhoods kept."""
    from sklearn.neighbors import NearestNeighbors

    from warpbio.singlecell.umap import umap_embedding

    cpu_knn, _, graph, _ = graphs
    cpu, _ = umap_embedding(graph.connectivities, data["pca"], seed=0, xp=np)
    gpu, _ = umap_embedding(graph.connectivities, data["pca"], seed=0, xp=cp)
    gpu_again, _ = umap_embedding(graph.connectivities, data["pca"], seed=0, xp=cp)

    def kept(embedding):
        _, found = NearestNeighbors(n_neighbors=15).fit(embedding).kneighbors(embedding)
        pairs = zip(found, cpu_knn.indices, strict=True)
        return np.mean([len(set(a[1:]) & set(b[1:])) / 14 for a, b in pairs])

    gap = np.abs(gpu - cpu).max()
    print(f"kNN kept: CPU {kept(cpu):.4f}, GPU {kept(gpu):.4f}; max |GPU - CPU| {gap:.3g}")
    assert abs(kept(gpu) - kept(cpu)) < 0.02
    print(f"GPU rerun max difference {np.abs(gpu_again - gpu).max():.3g}")


def test_spectral_start_gpu_equals_cpu(graphs, data, cp):
    """Both solvers return eigenvectors of the same top eigenvalues, component by
    component. Not the same vectors: with several cell types in a component the top
    eigenvalues nearly coincide, so any rotation within their eigenspace is as good an
    answer (ARPACK and cupyx's Lanczos pick different ones)."""
    from warpbio.singlecell import umap as layout

    _, _, graph, _ = graphs
    schedule = layout.layout_graph(graph.connectivities, 200)
    n = schedule.indptr.shape[0] - 1
    adjacency = sp.csr_matrix((schedule.weights, schedule.indices, schedule.indptr), (n, n))
    _, component = sp.csgraph.connected_components(adjacency, directed=False)
    largest = np.flatnonzero(component == np.bincount(component).argmax())
    sub = sp.csr_matrix(adjacency[largest][:, largest], dtype=np.float32)
    scale = sp.diags(1.0 / np.sqrt(np.asarray(sub.sum(1)).ravel()))
    normalised = (scale @ sub @ scale).astype(np.float64)
    values = []
    for xp in (np, cp):
        arrays = [xp.asarray(a) for a in (sub.indptr.astype(np.int64), sub.indices, sub.data)]
        vectors = cp.asnumpy(xp.asarray(layout._spectral(*arrays, 2, xp)))
        for column in range(2):
            v = vectors[:, column] / np.linalg.norm(vectors[:, column])
            image = normalised @ v
            values.append(v @ image)
            assert np.linalg.norm(image - values[-1] * v) < 1e-2
    np.testing.assert_allclose(values[:2], values[2:], atol=1e-3)
    # the components' placement is the same on both
    cpu = layout.spectral_layout(schedule, data["pca"], 0, np)
    gpu = cp.asnumpy(layout.spectral_layout(schedule, data["pca"], 0, cp))
    for c in np.unique(component):
        members = component == c
        np.testing.assert_allclose(cpu[members].mean(0), gpu[members].mean(0), atol=0.05)


def test_connected_components_gpu_equal_cpu(graphs, cp):
    from warpbio.singlecell.segments import connected_components

    _, _, graph, _ = graphs
    coo = graph.connectivities.tocoo()
    keep = np.random.default_rng(0).random(coo.nnz) < 0.2  # break it into pieces
    rows, cols = coo.row[keep].astype(np.int64), coo.col[keep].astype(np.int64)
    rows, cols = np.concatenate([rows, cols]), np.concatenate([cols, rows])
    n = graph.connectivities.shape[0]
    cpu = connected_components(rows, cols, n, np)
    gpu = connected_components(cp.asarray(rows), cp.asarray(cols), n, cp)
    np.testing.assert_array_equal(cp.asnumpy(gpu), cpu)


@pytest.mark.parametrize("refine", [False, True])
def test_parallel_clustering_gpu_equals_cpu(graphs, data, cp, refine):
    from sklearn.metrics import adjusted_rand_score

    from warpbio.singlecell.cluster import graph_modularity, parallel_louvain

    _, _, graph, _ = graphs
    cpu = parallel_louvain(graph.connectivities, 1.0, np, refine=refine)
    gpu = parallel_louvain(graph.connectivities, 1.0, cp, refine=refine)
    np.testing.assert_array_equal(
        gpu, parallel_louvain(graph.connectivities, 1.0, cp, refine=refine)
    )
    assert adjusted_rand_score(cpu, gpu) >= 0.99
    assert graph_modularity(graph.connectivities, gpu, 1.0) >= 0.999 * graph_modularity(
        graph.connectivities, cpu, 1.0
    )
    # the engine's own recovery of the truth (0.89 here; the rules' auto engine uses
    # igraph or the sequential engine below 400,000 cells): the GPU's must be the CPU's
    truth_gpu = adjusted_rand_score(data["truth"], gpu)
    assert truth_gpu == pytest.approx(adjusted_rand_score(data["truth"], cpu), abs=0.01)
    assert truth_gpu >= 0.85


@pytest.mark.parametrize("sequential_min_cells, engine", [(10**9, "igraph"), (0, "sequential")])
def test_cluster_step_auto_engine_gpu_equals_cpu(graphs, cp, sequential_min_cells, engine):
    """Below parallel_min_cells the gpu backend clusters on the host, as the cpu
    backend does (igraph: scanpy's clusters; or the sequential engine): same labels."""
    from warpbio.singlecell.cluster import cluster_graph

    _, _, graph, _ = graphs
    settings = {"engine": "auto", "leiden_resolution": 1.0, "louvain_resolution": 1.0,
                "n_iterations": 2, "parallel_min_cells": 400_000,
                "sequential_min_cells": sequential_min_cells}  # fmt: skip
    cpu = cluster_graph(graph.connectivities, settings, 0, np)
    gpu = cluster_graph(graph.connectivities, settings, 0, cp)
    for method in ("leiden", "louvain"):
        assert gpu[method]["engine"] == engine
        np.testing.assert_array_equal(gpu[method]["labels"], cpu[method]["labels"])
        assert gpu[method]["modularity"] == pytest.approx(cpu[method]["modularity"], abs=1e-9)


def test_markers_gpu_equal_cpu(data, cp):
    from warpbio.singlecell import markers as rank

    codes = data["truth"]
    groups = int(codes.max()) + 1
    cpu_matrix = rank.DeviceCsr.from_scipy(data["log"], np)
    gpu_matrix = rank.DeviceCsr.from_scipy(data["log"], cp)
    cpu_stats, cpu = rank.rank_genes(cpu_matrix, codes, groups, ["t-test", "wilcoxon"], np)
    gpu_stats, gpu = rank.rank_genes(gpu_matrix, codes, groups, ["t-test", "wilcoxon"], cp)
    np.testing.assert_allclose(gpu_stats.mean, cpu_stats.mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gpu[0].scores, cpu[0].scores, atol=1e-4)  # t-test
    np.testing.assert_allclose(gpu[1].scores, cpu[1].scores, atol=1e-6)  # wilcoxon
    z_tied = rank.wilcoxon_rank_sums(gpu_matrix, codes, groups, cp, True, genes_per_chunk=97)
    np.testing.assert_allclose(
        z_tied, rank.wilcoxon_rank_sums(cpu_matrix, codes, groups, np, True), atol=1e-6
    )


def test_int64_offsets_survive_in_the_marker_path(cp):
    """indptr is int64 end to end: a row-chunk boundary past 2^31 needs no int32 index."""
    from warpbio.singlecell import markers as rank

    matrix = rank.DeviceCsr.from_scipy(
        sp.random(50, 30, density=0.3, format="csr", random_state=0), cp
    )
    assert matrix.indptr.dtype == cp.int64
    rows = rank._row_of_nonzeros(matrix, 0, int(matrix.indptr[-1]), cp)
    assert rows.dtype == cp.int64
