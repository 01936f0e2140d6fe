"""One-dimensional loess with the kd-tree + vertex interpolation surface of
Cleveland, Grosse and Shyu's ``dloess`` (what ``skmisc.loess`` and R's ``loess``
run by default), so that the seurat_v3 HVG flavor ranks genes as scanpy does.

The defaults of ``skmisc.loess.loess(x, y, span, degree=2)`` are reproduced for one
predictor: gaussian family (no robustness iterations), ``surface='interpolate'``,
``cell=0.2``. The fit is local quadratic regression with tricube weights over the
``floor(n * span)`` nearest points, evaluated only at the vertices of a kd-tree
(value and slope at each vertex); between two vertices the surface is the cubic
Hermite interpolant of those values and slopes. The tree splits a cell of more than
``floor(n * span * cell)`` points at its median (ties go to the upper cell).

Input sizes are per-gene vectors (tens of thousands of points), so this runs on
the host in NumPy for both backends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEGREE = 2  # local quadratic, as scanpy's seurat_v3 asks


@dataclass
class _Cell:
    first: int  # 1-based positions in the sorted x, inclusive
    last: int
    lower: float  # vertex coordinates bounding the cell
    upper: float
    split: float | None = None


def _bounding_box(sorted_x: np.ndarray) -> tuple[float, float]:
    """The data range widened by 0.5% on each side (dloess's ehg126)."""
    low, high = float(sorted_x[0]), float(sorted_x[-1])
    margin = 0.005 * max(high - low, 1e-10 * max(abs(low), abs(high)) + 1e-30)
    return low - margin, high + margin


def _split_position(sorted_x: np.ndarray, first: int, last: int) -> int:
    """Median position of a cell, moved off a run of ties (0, +1, -1, +2, ... steps)."""
    middle = (first + last) // 2
    offset = 0
    while first <= middle + offset < last:
        here = middle + offset
        if sorted_x[here - 1] != sorted_x[here]:  # 1-based here and here + 1
            return here
        offset = -offset
        if offset >= 0:
            offset += 1
    return middle


def kd_tree_splits(
    sorted_x: np.ndarray, span: float, cell: float
) -> tuple[list[float], float, float]:
    """Split values of the kd-tree's internal cells, and the bounding box."""
    n = sorted_x.size
    leaf_size = math.floor(n * (span * cell))
    max_vertices = max(200, n)
    lower, upper = _bounding_box(sorted_x)
    cells = [_Cell(1, n, lower, upper)]
    n_vertices, splits = 2, []
    vertices = {lower, upper}
    index = 0
    while index < len(cells):
        current = cells[index]
        index += 1
        if current.last - current.first + 1 <= leaf_size or current.upper - current.lower <= 0:
            continue
        if max_vertices < len(cells) + 2 or max_vertices < n_vertices + 1:
            continue  # the tree is as large as dloess allows
        position = _split_position(sorted_x, current.first, current.last)
        split = float(sorted_x[position - 1])
        if split in (current.lower, current.upper):
            continue
        current.split = split
        splits.append(split)
        if split not in vertices:
            vertices.add(split)
            n_vertices += 1
        cells.append(_Cell(current.first, position, current.lower, split))
        cells.append(_Cell(position + 1, current.last, split, current.upper))
    return splits, lower, upper


def local_fit(
    x: np.ndarray, y: np.ndarray, at: float, n_local: int, span: float
) -> tuple[float, float]:
    """Value and slope at ``at`` of the tricube-weighted local quadratic fit."""
    squared = (x - at) ** 2
    radius = float(np.partition(squared, n_local - 1)[n_local - 1]) * max(1.0, span)
    if radius <= 0:
        raise ValueError("loess: zero-width neighbourhood; make the span bigger")
    near = squared < radius
    offset = x[near] - at
    weights = np.sqrt((1.0 - np.sqrt(squared[near] / radius) ** 3) ** 3)
    design = weights[:, None] * np.stack([np.ones_like(offset), offset, offset**2], axis=1)
    norms = np.sqrt((design**2).sum(axis=0))
    norms[norms == 0] = 1.0
    coef, *_ = np.linalg.lstsq(
        design / norms, weights * y[near], rcond=100 * np.finfo(np.float64).eps
    )
    coef = coef / norms
    return float(coef[0]), float(coef[1])


def hermite(z, lower, upper, value_lower, slope_lower, value_upper, slope_upper):
    """Cubic Hermite interpolation on [lower, upper] (vectorized over z)."""
    width = upper - lower
    h = (z - lower) / width
    phi0 = (1 - h) ** 2 * (1 + 2 * h)
    phi1 = h**2 * (3 - 2 * h)
    psi0 = h * (1 - h) ** 2
    psi1 = h**2 * (h - 1)
    return (
        phi0 * value_lower + phi1 * value_upper + (psi0 * slope_lower + psi1 * slope_upper) * width
    )


def loess_fitted(x, y, span: float = 0.3, cell: float = 0.2) -> np.ndarray:
    """Fitted values at ``x`` of loess(y ~ x, span, degree 2), float64."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = x.size
    if n == 0 or y.size != n:
        raise ValueError(f"loess: x and y need the same, non-zero length ({n}, {y.size})")
    n_local = min(n, math.floor(n * span + 1e-5))
    if n_local <= 3:
        raise ValueError(
            f"loess: span {span} keeps {n_local} of {n} points, fewer than a local "
            "quadratic needs; use more points or a larger span"
        )
    splits, lower, upper = kd_tree_splits(np.sort(x), span, cell)
    edges = np.array(sorted({lower, upper, *splits}))
    fits = np.array([local_fit(x, y, vertex, n_local, span) for vertex in edges])
    # a point equal to a split belongs to the cell below it (dloess descends z <= split)
    leaf = np.clip(np.searchsorted(edges, x, side="left"), 1, edges.size - 1)
    return hermite(
        x,
        edges[leaf - 1],
        edges[leaf],
        fits[leaf - 1, 0],
        fits[leaf - 1, 1],
        fits[leaf, 0],
        fits[leaf, 1],
    )
