"""kNN and connectivities: exact search vs scikit-learn, umap-learn's fuzzy set, pynndescent."""

import numpy as np
import pytest
import scipy.sparse as sp

from warpbio.singlecell.neighbors import (
    Knn,
    approximate_knn,
    build_graph,
    choose_method,
    exact_knn,
    knn_recall,
)


def sklearn_knn(points, k):
    from sklearn.neighbors import NearestNeighbors

    distances, indices = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(points).kneighbors()
    n = points.shape[0]
    return (
        np.hstack([np.arange(n)[:, None], indices[:, : k - 1]]),
        np.hstack([np.zeros((n, 1)), distances[:, : k - 1]]),
    )


def test_exact_knn_matches_sklearn_on_the_brain_subset(brain):
    points = brain.obsm["X_pca"]
    ours = exact_knn(points, 15)
    indices, distances = sklearn_knn(points, 15)
    assert (ours.indices[:, 0] == np.arange(points.shape[0])).all()
    # the same distances in the same order; the cells differ only among exact
    # ties (the subset has many identical cells), which either order is right for
    np.testing.assert_allclose(ours.distances, distances, atol=2e-5)
    assert knn_recall(ours.indices, indices) >= 0.999
    boundary = distances[:, -1:] - 1e-5
    for row in np.flatnonzero((ours.indices != indices).any(axis=1)):
        inside = distances[row] < boundary[row]
        assert set(ours.indices[row][inside]) == set(indices[row][inside])


def test_exact_knn_tiles_and_blocks_do_not_change_the_answer():
    rng = np.random.default_rng(1)
    points = np.vstack([rng.normal(c, 1.0, (400, 12)) for c in (0.0, 3.0, 6.0)]).astype(np.float32)
    reference = exact_knn(points, 10)
    small = exact_knn(points, 10, block_rows=37, largest_tile=100, margin=2)
    np.testing.assert_array_equal(small.indices, reference.indices)
    np.testing.assert_allclose(small.distances, reference.distances, rtol=1e-6)
    indices, distances = sklearn_knn(points, 10)
    np.testing.assert_array_equal(reference.indices, indices)
    np.testing.assert_allclose(reference.distances, distances, atol=1e-5)


def test_approximate_knn_recall_on_the_brain_subset(brain):
    points = brain.obsm["X_pca"]
    exact = exact_knn(points, 15)
    found = approximate_knn(points, 15, seed=0, threads=2)
    assert (found.indices[:, 0] == np.arange(points.shape[0])).all()
    assert knn_recall(found.indices, exact.indices) >= 0.99


def test_connectivities_equal_umap_learns_fuzzy_set_on_the_same_knn(brain):
    """scanpy's connectivities are umap-learn's fuzzy_simplicial_set of the kNN arrays."""
    from scanpy.neighbors._connectivity import umap as scanpy_connectivities

    knn = exact_knn(brain.obsm["X_pca"], 15)
    ours = build_graph(knn).connectivities
    theirs = scanpy_connectivities(
        knn.indices, knn.distances, n_obs=brain.n_obs, n_neighbors=15
    ).tocsr()
    assert ours.nnz == theirs.nnz
    assert abs(ours - theirs).max() < 1e-5
    assert abs(ours - ours.T).max() == 0  # symmetric


def test_scanpy_neighbors_and_ours_agree_where_sklearn_reports_self_at_zero(brain):
    """scanpy's own run feeds sklearn's float noise (self at ~1e-7, not 0) to umap-learn,
    which takes it for rho; between cells whose self distance came out 0 the graphs agree."""
    from sklearn.neighbors import KNeighborsTransformer

    transformed = KNeighborsTransformer(algorithm="brute", n_neighbors=15).fit_transform(
        brain.obsm["X_pca"]
    )
    first = transformed.indptr[:-1]
    own = transformed.indices[first] == np.arange(brain.n_obs)
    clean = own & (transformed.data[first] == 0)
    assert 0.2 < clean.mean() < 1.0
    ours = build_graph(exact_knn(brain.obsm["X_pca"], 15)).connectivities
    theirs = sp.coo_matrix(brain.obsp["connectivities"])
    both = clean[theirs.row] & clean[theirs.col]
    rows, cols = theirs.row[both], theirs.col[both]
    close = np.abs(np.asarray(ours[rows, cols]).ravel() - theirs.data[both]) < 1e-4
    assert both.sum() > 10_000 and close.mean() > 0.99


def test_graph_layout_matches_scanpy(brain):
    graph = build_graph(exact_knn(brain.obsm["X_pca"], 15))
    assert graph.distances.shape == brain.obsp["distances"].shape
    assert np.all(np.diff(graph.distances.indptr) == 14)  # k - 1, the cell left out
    assert graph.connectivities.dtype == np.float32
    assert (graph.distances.diagonal() == 0).all()


def test_duplicate_cells_keep_themselves_first():
    points = np.repeat(np.arange(20, dtype=np.float32)[:, None], 3, axis=0)  # each cell thrice
    points = np.hstack([points, np.zeros_like(points)])
    knn = exact_knn(points, 5)
    assert (knn.indices[:, 0] == np.arange(60)).all()
    assert (knn.distances[:, 1:3] == 0).all()
    graph = build_graph(knn)
    assert np.isfinite(graph.connectivities.data).all() and graph.connectivities.nnz > 0


def test_choose_method_and_bad_k():
    assert choose_method("auto", 10_000, 50_000, gpu=False) == "exact"
    assert choose_method("auto", 60_000, 50_000, gpu=False) == "approximate"
    assert choose_method("auto", 60_000, 50_000, gpu=True) == "exact"
    with pytest.raises(ValueError, match="not one of"):
        choose_method("annoy", 10, 10, gpu=False)
    with pytest.raises(ValueError, match="k = 5 neighbours asked of only 3 cells"):
        exact_knn(np.zeros((3, 2), dtype=np.float32), 5)


def test_knn_recall_counts_shared_neighbours():
    truth = np.array([[0, 1, 2], [1, 0, 2]])
    assert knn_recall(truth, truth) == 1.0
    assert knn_recall(np.array([[0, 1, 5], [1, 5, 6]]), truth) == 0.25
    assert isinstance(Knn(truth, truth).indices, np.ndarray)
