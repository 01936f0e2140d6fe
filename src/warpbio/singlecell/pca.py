"""PCA of the scaled highly-variable-gene matrix through its covariance.

For a cells x genes matrix with a few thousand genes the exact route is cheap on
any device: the genes x genes scatter matrix X^T X is accumulated in float64 over
row blocks (one read of X), centered with the column means, and decomposed with
``eigh``; the top components project the centered rows. This is PCA up to the
sign of each component, which follows scikit-learn's ``svd_flip``
(``u_based_decision=False``: the largest-magnitude loading of each component is
positive), as scanpy's PCA does. Variances are the eigenvalues / (n - 1) and the
ratios divide by the total variance (ddof 1), scikit-learn's definitions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from warpbio.singlecell.sparse import _host, module_of

BLOCK_ROWS = 1 << 15


@dataclass
class PcaResult:
    embedding: object  # (n_cells, n_comps) float32 on the matrix's device
    components: np.ndarray  # (n_comps, n_genes) float64, rows unit norm
    variance: np.ndarray  # (n_comps,) eigenvalues / (n - 1)
    variance_ratio: np.ndarray  # (n_comps,) of the total variance
    mean: np.ndarray  # (n_genes,) the centering


def _flip_signs(components: np.ndarray) -> np.ndarray:
    """scikit-learn's svd_flip on the components (rows): largest |loading| positive."""
    rows = np.arange(components.shape[0])
    signs = np.sign(components[rows, np.argmax(np.abs(components), axis=1)])
    signs[signs == 0] = 1
    return components * signs[:, None]


def _top_eigenpairs(scatter, n_comps: int, xp) -> tuple[np.ndarray, np.ndarray]:
    """The ``n_comps`` largest eigenvalues (descending) and their vectors, on the host.

    On the CPU only those are computed: Lanczos (ARPACK, to machine precision, a
    fixed start vector) where they are few, else LAPACK's syevr by index; a full
    decomposition of a 4,000 x 4,000 scatter matrix costs ~10x more there. On the
    GPU cuSOLVER's full syevd takes well under a second.
    """
    n = scatter.shape[0]
    if xp is not np:
        values, vectors = (_host(part) for part in xp.linalg.eigh(scatter))
    elif n_comps < n // 2:
        import scipy.sparse.linalg

        values, vectors = scipy.sparse.linalg.eigsh(
            scatter, k=n_comps, which="LA", v0=np.ones(n), tol=0
        )
    else:
        import scipy.linalg

        values, vectors = scipy.linalg.eigh(
            scatter, subset_by_index=[n - n_comps, n - 1], driver="evr"
        )
    top = np.argsort(values)[::-1][:n_comps]
    return values[top], vectors[:, top]


def pca(matrix, n_comps: int = 50, block_rows: int = BLOCK_ROWS) -> PcaResult:
    """Exact PCA of a dense float32 (cells x genes) matrix on NumPy or CuPy."""
    n_rows, n_cols = matrix.shape
    check_n_comps(n_comps, n_rows, n_cols)
    sums, scatter = scatter_moments(matrix, block_rows)
    result = decompose_scatter(sums, scatter, n_rows, n_comps)
    result.embedding = project(matrix, result.mean, result.components, block_rows)
    return result


def check_n_comps(n_comps: int, n_rows: int, n_cols: int) -> None:
    if not 1 <= n_comps <= min(n_rows, n_cols):
        raise ValueError(
            f"n_pcs = {n_comps} must lie in 1..{min(n_rows, n_cols)} "
            f"(the smaller of {n_rows} cells and {n_cols} highly variable genes)"
        )


def scatter_moments(matrix, block_rows: int = BLOCK_ROWS):
    """Float64 column sums and X^T X of these rows (on the matrix's device): all
    the decomposition needs, and additive over row chunks."""
    xp = module_of(matrix)
    n_rows, n_cols = matrix.shape
    sums = xp.zeros(n_cols, dtype=xp.float64)
    scatter = xp.zeros((n_cols, n_cols), dtype=xp.float64)
    for start in range(0, n_rows, block_rows):
        block = matrix[start : start + block_rows].astype(xp.float64)
        sums += block.sum(axis=0)
        scatter += block.T @ block
    return sums, scatter


def decompose_scatter(sums, scatter, n_rows: int, n_comps: int) -> PcaResult:
    """Components, variances and mean from the summed moments of all ``n_rows``
    rows (``eigh`` on their device); the embedding is left to :func:`project`.
    ``scatter`` is centered in place."""
    xp = module_of(scatter)
    mean = sums / n_rows
    scatter -= n_rows * xp.outer(mean, mean)
    values, vectors = _top_eigenpairs(scatter, n_comps, xp)
    total = float(_host(xp.trace(scatter)))
    values = np.clip(values, 0.0, None)
    components = _flip_signs(vectors.T)
    variance = values / max(n_rows - 1, 1)
    ratio = values / total if total > 0 else np.zeros_like(values)
    return PcaResult(None, components, variance, ratio, _host(mean))


def project(matrix, mean, components, block_rows: int = BLOCK_ROWS):
    """Float32 (rows x n_comps) coordinates of the centered rows on the components."""
    xp = module_of(matrix)
    n_rows = matrix.shape[0]
    mean = xp.asarray(mean)
    loadings = xp.asarray(components.T)
    embedding = xp.empty((n_rows, components.shape[0]), dtype=xp.float32)
    for start in range(0, n_rows, block_rows):
        block = matrix[start : start + block_rows].astype(xp.float64) - mean
        embedding[start : start + block_rows] = (block @ loadings).astype(xp.float32)
    return embedding
