"""Highly variable genes with scanpy 1.11.5's definitions (``seurat``,
``cell_ranger``, ``seurat_v3``; batches for seurat_v3).

The passes over the matrix (per-gene sums and sums of squares, and the clipped
sums of seurat_v3) run on the matrix's device in float64; what follows works on
per-gene vectors, which come to the host (n_genes floats) and go through the
same NumPy/pandas calls as scanpy's, so bins, ties and ordering come out alike:

- ``seurat``: mean and dispersion (var/mean) of expm1(log data); log dispersion,
  log1p mean; 20 equal-width mean bins (``pd.cut``); dispersion normalized by
  each bin's mean and standard deviation (a bin of one gene: avg 0, dev = its
  dispersion, i.e. normalized dispersion 1).
- ``cell_ranger``: mean and dispersion of the log data; bins at the 10th, 15th,
  ..., 100th percentiles of the means; normalized by bin median and MAD.
- ``seurat_v3``: raw counts; loess (span 0.3, degree 2; :mod:`.loess`) of
  log10 variance on log10 mean; each count clipped at mean + sqrt(n) * fitted sd;
  genes ranked by the variance of the standardized clipped counts. With a
  ``batch_key`` all of this runs per batch and genes are ordered by their median
  rank among the batches where they rank in the top n, then by how many those are.

Selection: ``n_top_genes`` (ties at the cut-off are all kept, as in scanpy) or,
for the dispersion flavors without it, the mean/dispersion cut-offs.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np

from warpbio.singlecell.loess import loess_fitted
from warpbio.singlecell.sparse import Csr, _host

log = logging.getLogger(__name__)

FLAVORS = ("seurat", "cell_ranger", "seurat_v3")
GAUSSIAN_3_4 = 0.6744897501960817  # scipy.stats.norm.ppf(0.75), statsmodels' MAD constant


@dataclass(frozen=True)
class HvgSettings:
    flavor: str = "cell_ranger"
    n_top_genes: int | None = 4000
    min_mean: float = 0.0125
    max_mean: float = 3.0
    min_disp: float = 0.5
    max_disp: float = float("inf")
    n_bins: int = 20
    span: float = 0.3
    batch_key: str | None = None  # seurat_v3 only: an obs column, e.g. sample

    def __post_init__(self) -> None:
        if self.flavor not in FLAVORS:
            raise ValueError(f"HVG flavor {self.flavor!r} is not one of {', '.join(FLAVORS)}")
        if self.batch_key is not None and self.flavor != "seurat_v3":
            raise ValueError(
                f"hvg.batch_key is supported with flavor seurat_v3 only (flavor is {self.flavor}); "
                "use flavor: seurat_v3 or batch_key: null"
            )
        if self.n_top_genes is not None and self.n_top_genes < 1:
            raise ValueError(f"n_top_genes = {self.n_top_genes} must be >= 1 or null")

    @property
    def needs_counts(self) -> bool:
        """seurat_v3 reads raw counts; the dispersion flavors log-normalized data."""
        return self.flavor == "seurat_v3"


def gene_mean_var(matrix: Csr, function=None) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene mean and variance (ddof 1, as scanpy's _get_mean_var), on the host."""
    sums, sums_sq = matrix.column_sums(function, squares=True)
    return mean_var_from_sums(sums, sums_sq, matrix.shape[0])


def mean_var_from_sums(sums, sums_sq, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance (ddof 1) on the host from per-gene sums over ``n`` cells."""
    mean = _host(sums) / n
    var = _host(sums_sq) / n - mean**2
    if n != 1:
        var *= n / (n - 1)
    return mean, var


def _mad(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    if not values.size:
        return np.nan
    return float(np.median(np.abs(values - np.median(values)) / GAUSSIAN_3_4))


def _nth_highest(values: np.ndarray, n: int) -> float:
    present = values[~np.isnan(values)]
    n = min(n, present.size)
    present[::-1].sort()
    return present[n - 1]


def dispersion_table(mean: np.ndarray, var: np.ndarray, settings: HvgSettings):
    """scanpy's seurat / cell_ranger statistics and selection from per-gene mean, var."""
    import pandas as pd

    flavor = settings.flavor
    mean = mean.copy()
    mean[mean == 0] = 1e-12
    with np.errstate(divide="ignore", invalid="ignore"):
        dispersion = var / mean
        if flavor == "seurat":
            dispersion[dispersion == 0] = np.nan
            dispersion = np.log(dispersion)
            mean = np.log1p(mean)
    table = pd.DataFrame({"means": mean, "dispersions": dispersion})
    if flavor == "seurat":
        bins = settings.n_bins
    else:
        bins = np.r_[-np.inf, np.percentile(table["means"], np.arange(10, 105, 5)), np.inf]
    table["mean_bin"] = pd.cut(table["means"], bins=bins)
    grouped = table.groupby("mean_bin", observed=True)["dispersions"]
    if flavor == "seurat":
        stats = grouped.agg(avg="mean", dev="std")
        single = stats["dev"].isnull()  # one gene in the bin: normalized dispersion 1
        stats.loc[single, "dev"] = stats.loc[single, "avg"]
        stats.loc[single, "avg"] = 0
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            stats = grouped.agg(avg="median", dev=_mad)
    stats = stats.loc[table["mean_bin"]].set_index(table.index)
    normalized = ((table["dispersions"] - stats["avg"]) / stats["dev"]).to_numpy()
    if settings.n_top_genes is None:
        clean = np.nan_to_num(normalized)
        selected = (
            (mean > settings.min_mean)
            & (mean < settings.max_mean)
            & (clean > settings.min_disp)
            & (clean < settings.max_disp)
        )
    else:
        n_top = min(settings.n_top_genes, mean.size)
        cutoff = _nth_highest(normalized.copy(), n_top)
        selected = np.nan_to_num(normalized, nan=-np.inf) >= cutoff
    return pd.DataFrame(
        {
            "highly_variable": selected,
            "means": table["means"].to_numpy(),
            "dispersions": table["dispersions"].to_numpy(),
            "dispersions_norm": normalized.astype(np.float32),
        }
    )


def _group_column_sums(counts: Csr, groups, n_groups: int, clip=None):
    """Float64 (n_groups, n_genes) sums and sums of squares of the entries, rows
    grouped by ``groups`` (device int per row); entries first clipped at ``clip``
    ((n_groups * n_genes,) device array) when given."""
    xp = counts.xp
    n_cols = counts.shape[1]
    size = n_groups * n_cols
    sums = xp.zeros(size, dtype=xp.float64)
    squares = xp.zeros(size, dtype=xp.float64)
    for first, end, start, stop in counts.row_blocks():
        key = counts.indices[start:stop].astype(xp.int64)
        if n_groups > 1:
            key += groups[counts.row_ids(first, end)] * n_cols
        values = counts.data[start:stop].astype(xp.float64)
        if clip is not None:
            values = xp.minimum(values, clip[key])
        sums += xp.bincount(key, weights=values, minlength=size)
        squares += xp.bincount(key, weights=values * values, minlength=size)
    return _host(sums).reshape(n_groups, n_cols), _host(squares).reshape(n_groups, n_cols)


def batch_codes(batches, n_cells: int):
    """(codes per cell or None, number of groups, cells per group) of the batch labels."""
    if batches is None:
        return None, 1, np.array([n_cells])
    names, codes = np.unique(np.asarray(batches), return_inverse=True)
    return codes.astype(np.int64), names.size, np.bincount(codes, minlength=names.size)


def seurat_v3_clip(sums, squares, sizes, span: float):
    """Per-batch mean, loess-regularized standard deviation and the clip value
    (mean + sqrt(n) * sd, flattened as :func:`_group_column_sums` takes it) from
    the per-batch sums and sums of squares of the raw counts; on the host."""
    n = np.asarray(sizes)[:, None].astype(np.float64)
    batch_mean = sums / n
    batch_var = (squares / n - batch_mean**2) * (n / (n - 1))
    regularized_sd = np.empty_like(batch_var)
    for b in range(batch_var.shape[0]):
        varying = batch_var[b] > 0
        fitted = np.zeros(batch_var.shape[1], dtype=np.float64)
        fitted[varying] = loess_fitted(
            np.log10(batch_mean[b, varying]), np.log10(batch_var[b, varying]), span=span
        )
        regularized_sd[b] = np.sqrt(10**fitted)
    return batch_mean, regularized_sd, (regularized_sd * np.sqrt(n) + batch_mean).ravel()


def seurat_v3_finish(
    mean, var, sizes, batch_mean, regularized_sd, clipped_sum, clipped_sq, n_top: int, batched
):
    """scanpy's seurat_v3 ranking and selection from the per-gene vectors."""
    import pandas as pd

    n = np.asarray(sizes)[:, None].astype(np.float64)
    normalized_var = (1 / ((n - 1) * np.square(regularized_sd))) * (
        (n * np.square(batch_mean)) + clipped_sq - 2 * clipped_sum * batch_mean
    )
    # from here on scanpy's own steps, on per-gene vectors
    ranks = np.argsort(np.argsort(-normalized_var, axis=1), axis=1).astype(np.float32)
    n_batches_hvg = np.sum((ranks < n_top).astype(int), axis=0)
    ranks[ranks >= n_top] = np.nan
    rank = np.ma.median(np.ma.masked_invalid(ranks), axis=0).filled(np.nan)
    table = pd.DataFrame(
        {
            "highly_variable_rank": rank.astype(np.float32),
            "highly_variable_nbatches": n_batches_hvg,
            "means": mean,
            "variances": var,
            "variances_norm": np.mean(normalized_var, axis=0),
        }
    )
    order = (
        table[["highly_variable_rank", "highly_variable_nbatches"]]
        .sort_values(
            ["highly_variable_rank", "highly_variable_nbatches"],
            ascending=[True, False],
            na_position="last",
        )
        .index
    )
    selected = np.zeros(len(table), dtype=bool)
    selected[order[: int(n_top)]] = True
    table.insert(0, "highly_variable", selected)
    if not batched:
        table = table.drop(columns="highly_variable_nbatches")
    return table


def seurat_v3_n_top(settings: HvgSettings) -> int:
    return 2000 if settings.n_top_genes is None else settings.n_top_genes


def seurat_v3_table(counts: Csr, settings: HvgSettings, batches=None):
    """scanpy's seurat_v3 on raw counts, per batch when ``batches`` (a label per
    cell) is given: two passes over the matrix, the rest on per-gene vectors."""
    xp = counts.xp
    mean, var = gene_mean_var(counts)
    codes, n_groups, sizes = batch_codes(batches, counts.shape[0])
    codes = None if codes is None else xp.asarray(codes)
    sums, squares = _group_column_sums(counts, codes, n_groups)
    batch_mean, regularized_sd, clip = seurat_v3_clip(sums, squares, sizes, settings.span)
    clipped_sum, clipped_sq = _group_column_sums(counts, codes, n_groups, xp.asarray(clip))
    return seurat_v3_finish(
        mean,
        var,
        sizes,
        batch_mean,
        regularized_sd,
        clipped_sum,
        clipped_sq,
        seurat_v3_n_top(settings),
        batches is not None,
    )


def highly_variable_genes(matrix: Csr, settings: HvgSettings, batches=None):
    """Per-gene table with scanpy's column names (rows in gene order).

    ``matrix`` holds raw counts for seurat_v3 and log1p-normalized data otherwise;
    ``batches`` (a label per cell) is the ``batch_key`` column, seurat_v3 only.
    """
    if settings.flavor == "seurat_v3":
        table = seurat_v3_table(matrix, settings, batches)
    else:
        xp = matrix.xp
        function = (lambda data, genes: xp.expm1(data)) if settings.flavor == "seurat" else None
        table = dispersion_table(*gene_mean_var(matrix, function), settings)
    log.info(
        "HVG (%s): %d of %d genes", settings.flavor, int(table["highly_variable"].sum()), len(table)
    )
    return table
