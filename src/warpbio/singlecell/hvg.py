"""Highly variable genes with scanpy 1.11.5's definitions (``seurat``,
``cell_ranger``, ``seurat_v3``; one batch).

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
  genes ranked by the variance of the standardized clipped counts.

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

    def __post_init__(self) -> None:
        if self.flavor not in FLAVORS:
            raise ValueError(f"HVG flavor {self.flavor!r} is not one of {', '.join(FLAVORS)}")
        if self.n_top_genes is not None and self.n_top_genes < 1:
            raise ValueError(f"n_top_genes = {self.n_top_genes} must be >= 1 or null")

    @property
    def needs_counts(self) -> bool:
        """seurat_v3 reads raw counts; the dispersion flavors log-normalized data."""
        return self.flavor == "seurat_v3"


def gene_mean_var(matrix: Csr, function=None) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene mean and variance (ddof 1, as scanpy's _get_mean_var), on the host."""
    n = matrix.shape[0]
    sums, sums_sq = matrix.column_sums(function, squares=True)
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


def seurat_v3_table(counts: Csr, settings: HvgSettings):
    """scanpy's seurat_v3 (one batch) on raw counts: two passes over the matrix."""
    import pandas as pd

    xp = counts.xp
    n = counts.shape[0]
    n_top = 2000 if settings.n_top_genes is None else settings.n_top_genes
    mean, var = gene_mean_var(counts)
    varying = var > 0
    fitted = np.zeros(var.size, dtype=np.float64)
    fitted[varying] = loess_fitted(
        np.log10(mean[varying]), np.log10(var[varying]), span=settings.span
    )
    regularized_sd = np.sqrt(10**fitted)
    clip = xp.asarray(regularized_sd * np.sqrt(n) + mean)
    clipped_sum, clipped_sq = counts.column_sums(
        lambda data, genes: xp.minimum(data.astype(xp.float64), clip[genes]), squares=True
    )
    clipped_sum, clipped_sq = _host(clipped_sum), _host(clipped_sq)
    normalized_var = (1 / ((n - 1) * np.square(regularized_sd))) * (
        (n * np.square(mean)) + clipped_sq - 2 * clipped_sum * mean
    )
    ranks = np.argsort(np.argsort(-normalized_var[None, :], axis=1), axis=1).astype(np.float32)
    ranks[ranks >= n_top] = np.nan
    rank = np.ma.median(np.ma.masked_invalid(ranks), axis=0).filled(np.nan)
    return pd.DataFrame(
        {
            "highly_variable": rank < n_top,
            "highly_variable_rank": rank.astype(np.float32),
            "means": mean,
            "variances": var,
            "variances_norm": normalized_var,
        }
    )


def highly_variable_genes(matrix: Csr, settings: HvgSettings):
    """Per-gene table with scanpy's column names (rows in gene order).

    ``matrix`` holds raw counts for seurat_v3 and log1p-normalized data otherwise.
    """
    if settings.flavor == "seurat_v3":
        table = seurat_v3_table(matrix, settings)
    else:
        xp = matrix.xp
        function = (lambda data, genes: xp.expm1(data)) if settings.flavor == "seurat" else None
        table = dispersion_table(*gene_mean_var(matrix, function), settings)
    log.info(
        "HVG (%s): %d of %d genes", settings.flavor, int(table["highly_variable"].sum()), len(table)
    )
    return table
