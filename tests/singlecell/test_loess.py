"""Our loess against scikit-misc's (dloess), the one scanpy's seurat_v3 calls."""

import numpy as np
import pytest

from warpbio.singlecell.loess import kd_tree_splits, loess_fitted

skmisc_loess = pytest.importorskip("skmisc.loess")


def skmisc_fitted(x, y, span=0.3):
    model = skmisc_loess.loess(x, y, span=span, degree=2)
    model.fit()
    return model.outputs.fitted_values


@pytest.mark.parametrize("n", [40, 250, 3000, 20000])
def test_fitted_values_equal_skmisc(n):
    rng = np.random.default_rng(n)
    x = rng.normal(size=n)
    y = np.sin(2 * x) + 0.3 * rng.normal(size=n)
    np.testing.assert_allclose(loess_fitted(x, y), skmisc_fitted(x, y), rtol=0, atol=1e-11)


def test_ties_and_hvg_like_data_equal_skmisc():
    """Rounded x (runs of ties at the medians) and a mean-variance cloud like genes'."""
    rng = np.random.default_rng(7)
    x = np.round(rng.normal(size=2000), 1)
    y = x**2 + rng.normal(size=2000)
    np.testing.assert_allclose(loess_fitted(x, y), skmisc_fitted(x, y), atol=1e-11)
    log_mean = rng.uniform(-3, 1.5, size=5000)
    log_var = log_mean + 0.15 * np.maximum(log_mean, 0) ** 2 + 0.2 * rng.normal(size=5000)
    for span in (0.3, 0.5):
        np.testing.assert_allclose(
            loess_fitted(log_mean, log_var, span),
            skmisc_fitted(log_mean, log_var, span),
            atol=1e-11,
        )


def test_tree_splits_cells_larger_than_span_times_cell():
    x = np.sort(np.random.default_rng(0).normal(size=1000))
    splits, lower, upper = kd_tree_splits(x, span=0.3, cell=0.2)
    edges = np.array(sorted({lower, upper, *splits}))
    per_leaf = np.histogram(x, bins=edges)[0]
    assert per_leaf.max() <= 60 and lower < x[0] and upper > x[-1]


def test_too_few_points_is_an_error():
    with pytest.raises(ValueError, match="span"):
        loess_fitted(np.arange(10.0), np.arange(10.0), span=0.3)
