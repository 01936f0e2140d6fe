"""Regress out per-cell covariates and scale genes, on a dense cells x genes matrix
(the highly variable genes) on NumPy's or CuPy's device.

``regress_out`` matches scanpy's: ordinary least squares of every gene on an
intercept and the covariates, solved for all genes at once (X - C (C^T C)^-1 C^T X)
with float64 normal equations and float32 data. Where C^T C is singular (e.g. a
percent-mitochondrial column of zeros when no gene is mitochondrial) scanpy falls
back to per-gene GLMs, whose residuals are those of the least-squares fit on the
columns that are not redundant; a pseudo-inverse gives the same residuals here.

``scale`` matches scanpy's ``scale(max_value=...)``: zero mean, unit variance
(ddof 1, constant genes left at 0), then clipped to [-max_value, max_value].
"""

from __future__ import annotations

import numpy as np

from warpbio.singlecell.sparse import _host, module_of

BLOCK_ROWS = 1 << 16  # rows per float64 block in the cross products


def _row_blocks(n_rows: int, block_rows: int):
    for start in range(0, n_rows, block_rows):
        yield start, min(start + block_rows, n_rows)


def regress_out(matrix, covariates, block_rows: int = BLOCK_ROWS):
    """Residuals of each column of ``matrix`` (float32, in place) on [1, covariates].

    ``covariates`` is (n_cells, k); the normal equations are float64 and tiny
    ((k+1) x (k+1)), solved on the host by pseudo-inverse. The three steps are
    separate functions so that row chunks on several devices can add up their
    moments (:func:`regression_moments`) before one solve.
    """
    gram, cross = regression_moments(matrix, covariates, block_rows)
    coefficients = regression_coefficients(gram, cross)
    subtract_fit(matrix, covariates, coefficients, block_rows)
    return matrix


def _design(covariates, n_rows: int, xp):
    return xp.concatenate(
        [xp.ones((n_rows, 1), dtype=xp.float64), xp.asarray(covariates, dtype=xp.float64)], axis=1
    )


def regression_moments(matrix, covariates, block_rows: int = BLOCK_ROWS):
    """Float64 C^T C (host) and C^T X (on the matrix's device) of the design
    C = [1, covariates]: what the least-squares solve needs from these rows."""
    xp = module_of(matrix)
    n_rows = matrix.shape[0]
    design = _design(covariates, n_rows, xp)
    gram = _host(design.T @ design)
    cross = xp.zeros((design.shape[1], matrix.shape[1]), dtype=xp.float64)
    for start, stop in _row_blocks(n_rows, block_rows):
        cross += design[start:stop].T @ matrix[start:stop].astype(xp.float64)
    return gram, cross


def regression_coefficients(gram, cross):
    """(k+1, n_genes) least-squares coefficients, on ``cross``'s device."""
    xp = module_of(cross)
    return xp.asarray(np.linalg.pinv(_host(gram), hermitian=True)) @ cross


def subtract_fit(matrix, covariates, coefficients, block_rows: int = BLOCK_ROWS):
    """matrix -= C @ coefficients, in place, block by block (float32 result)."""
    xp = module_of(matrix)
    n_rows = matrix.shape[0]
    design = _design(covariates, n_rows, xp)
    coefficients = xp.asarray(coefficients)
    for start, stop in _row_blocks(n_rows, block_rows):
        fitted = design[start:stop] @ coefficients
        matrix[start:stop] = (matrix[start:stop] - fitted).astype(xp.float32)
    return matrix


def column_moments(matrix, block_rows: int = BLOCK_ROWS):
    """Float64 per-column sums and sums of squares (on the matrix's device)."""
    xp = module_of(matrix)
    sums = xp.zeros(matrix.shape[1], dtype=xp.float64)
    squares = xp.zeros(matrix.shape[1], dtype=xp.float64)
    for start, stop in _row_blocks(matrix.shape[0], block_rows):
        block = matrix[start:stop].astype(xp.float64)
        sums += block.sum(axis=0)
        squares += (block * block).sum(axis=0)
    return sums, squares


def mean_std_from_moments(sums, squares, n_rows: int):
    """Mean and standard deviation (ddof 1; 1 where it is 0), as scanpy's."""
    xp = module_of(sums)
    mean = sums / n_rows
    var = squares / n_rows - mean**2
    if n_rows > 1:
        var *= n_rows / (n_rows - 1)
    std = xp.sqrt(xp.maximum(var, 0))
    std[std == 0] = 1
    return mean, std


def column_mean_std(matrix, block_rows: int = BLOCK_ROWS):
    """Per-column mean and standard deviation (ddof 1), float64, as scanpy's."""
    return mean_std_from_moments(*column_moments(matrix, block_rows), matrix.shape[0])


def apply_scale(matrix, mean, std, max_value: float | None = 10.0, block_rows: int = BLOCK_ROWS):
    """(matrix - mean) / std in place (float32), clipped at +-max_value."""
    xp = module_of(matrix)
    mean, std = xp.asarray(mean), xp.asarray(std)
    for start, stop in _row_blocks(matrix.shape[0], block_rows):
        block = matrix[start:stop]
        # float64 operands, float32 result after each step: scanpy's two roundings
        block -= mean
        block /= std
        if max_value is not None:
            xp.clip(block, -max_value, max_value, out=block)


def scale(matrix, max_value: float | None = 10.0, block_rows: int = BLOCK_ROWS):
    """Zero-center and unit-scale each column in place (float32); clip at +-max_value."""
    mean, std = column_mean_std(matrix, block_rows)
    apply_scale(matrix, mean, std, max_value, block_rows)
    return mean, std
