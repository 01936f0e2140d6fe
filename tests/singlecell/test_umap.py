"""UMAP layout: umap-learn's parameters and schedule, CPU twin == CUDA kernel, seeds, quality."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from warpbio.singlecell import umap as layout
from warpbio.singlecell.neighbors import build_graph, exact_knn
from warpbio.singlecell.segments import connected_components


def blobs(n_per=150, centres=(0.0, 5.0, 10.0), dim=10, seed=0):
    rng = np.random.default_rng(seed)
    return np.vstack([rng.normal(c, 1.0, (n_per, dim)) for c in centres]).astype(np.float32)


@pytest.fixture(scope="module")
def blob_graph():
    points = blobs()
    return points, build_graph(exact_knn(points, 10)).connectivities


@pytest.mark.parametrize(("spread", "min_dist"), [(1.0, 0.5), (1.0, 0.1), (2.0, 0.3)])
def test_ab_params_match_umap_learn(spread, min_dist):
    from umap.umap_ import find_ab_params

    np.testing.assert_allclose(
        layout.find_ab_params(spread, min_dist), find_ab_params(spread, min_dist)
    )


def test_schedule_matches_umap_learn(blob_graph):
    from umap.umap_ import make_epochs_per_sample

    _, connectivities = blob_graph
    graph = layout.layout_graph(connectivities, 200)
    coo = connectivities.tocoo()
    coo.data[coo.data < coo.data.max() / 200.0] = 0
    coo.eliminate_zeros()
    theirs = make_epochs_per_sample(coo.data, 200)
    np.testing.assert_allclose(np.sort(graph.epochs_per_sample), np.sort(theirs))
    assert graph.indices.size == coo.nnz


def test_cuda_kernel_equals_cpu_twin_under_the_simulator(tmp_path):
    """The Numba CUDA kernel, run by NUMBA_ENABLE_CUDASIM, gives the CPU twin's positions."""
    script = textwrap.dedent(
        """
        import numpy as np
        from warpbio.singlecell import umap as layout
        from warpbio.singlecell.neighbors import build_graph, exact_knn
        rng = np.random.default_rng(0)
        points = np.vstack([rng.normal(c, 1, (80, 8)) for c in (0, 4, 8)]).astype(np.float32)
        graph = layout.layout_graph(build_graph(exact_knn(points, 10)).connectivities, 200)
        start = layout.initial_positions(graph, points, 0, np)
        a, b = layout.find_ab_params(1.0, 0.5)
        for epochs in (3, 25):
            cpu = layout.optimize_layout(start, graph, a, b, 7, n_epochs=epochs, kernel="cpu")
            gpu = layout.optimize_layout(start, graph, a, b, 7, n_epochs=epochs, kernel="cuda")
            assert np.abs(cpu - start).max() > 0.1, "nothing moved"
            np.testing.assert_allclose(gpu, cpu, rtol=0, atol=1e-9)
        print("agree")
        """
    )
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0 and "agree" in done.stdout, done.stderr[-3000:]


def test_same_seed_same_layout_new_seed_new_layout(blob_graph):
    points, connectivities = blob_graph
    first, params = layout.umap_embedding(connectivities, points, seed=3, n_epochs=60)
    again, _ = layout.umap_embedding(connectivities, points, seed=3, n_epochs=60)
    other, _ = layout.umap_embedding(connectivities, points, seed=4, n_epochs=60)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert first.dtype == np.float32 and first.shape == (points.shape[0], 2)
    assert params["n_epochs"] == 60 and params["a"] > 0
    assert params["start_seconds"] >= 0 and params["epochs_seconds"] > 0


def test_layout_separates_the_blobs(blob_graph):
    points, connectivities = blob_graph
    embedding, _ = layout.umap_embedding(connectivities, points, seed=0, n_epochs=200)
    labels = np.repeat(np.arange(3), 150)
    centres = np.stack([embedding[labels == c].mean(0) for c in range(3)])
    nearest = ((embedding[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
    assert (nearest == labels).mean() > 0.99


def test_split_graph_gets_a_start_per_component():
    points = blobs(n_per=60, centres=(0.0, 100.0, 200.0), seed=2)
    connectivities = build_graph(exact_knn(points, 8)).connectivities
    graph = layout.layout_graph(connectivities, 200)
    rows = np.repeat(np.arange(graph.indptr.size - 1), np.diff(graph.indptr))
    labels = connected_components(rows, graph.indices.astype(np.int64), graph.indptr.size - 1, np)
    from scipy.sparse import csgraph

    count, theirs = csgraph.connected_components(connectivities, directed=False)
    assert count == 3 and np.unique(labels).size == 3
    assert (np.unique(labels, return_inverse=True)[1].ravel() == theirs).all()
    start = layout.initial_positions(graph, points, 0, np)
    assert start.min() >= 0 and start.max() <= 10.0 + 1e-5
    centres = np.stack([start[theirs == c].mean(0) for c in range(3)])
    spreads = np.array([start[theirs == c].std(0).max() for c in range(3)])
    gaps = np.sqrt(((centres[:, None] - centres[None]) ** 2).sum(-1))[np.triu_indices(3, 1)]
    assert gaps.min() > 2 * spreads.max()


def test_random_start_when_asked(blob_graph):
    points, connectivities = blob_graph
    graph = layout.layout_graph(connectivities, 200)
    start = layout.initial_positions(graph, points, 5, np, init="random")
    np.testing.assert_array_equal(
        start, layout.initial_positions(graph, points, 5, np, init="random")
    )
    assert start.min() == 0.0 and start.max() == pytest.approx(10.0)


def neighbourhood_preservation(embedding, knn_indices):
    from sklearn.neighbors import NearestNeighbors

    k = knn_indices.shape[1]
    _, found = NearestNeighbors(n_neighbors=k).fit(embedding).kneighbors(embedding)
    return np.mean(
        [len(set(a[1:]) & set(b[1:])) for a, b in zip(found, knn_indices, strict=True)]
    ) / (k - 1)


def test_quality_comparable_to_scanpys_umap(brain):
    """On the brain subset: kNN-in-PCA kept in 2-D and trustworthiness, ours vs scanpy's."""
    import scanpy as sc
    from sklearn.manifold import trustworthiness

    theirs = brain.copy()
    sc.tl.umap(theirs, random_state=0)
    knn = exact_knn(brain.obsm["X_pca"], 15)
    ours, _ = layout.umap_embedding(build_graph(knn).connectivities, brain.obsm["X_pca"], seed=0)
    kept = {
        name: neighbourhood_preservation(emb, knn.indices)
        for name, emb in (("ours", ours), ("scanpy", theirs.obsm["X_umap"]))
    }
    trust = {
        name: trustworthiness(brain.obsm["X_pca"], emb, n_neighbors=15)
        for name, emb in (("ours", ours), ("scanpy", theirs.obsm["X_umap"]))
    }
    print(f"neighbourhood preservation {kept}, trustworthiness {trust}")
    assert kept["ours"] >= 0.9 * kept["scanpy"]
    assert trust["ours"] >= trust["scanpy"] - 0.01
