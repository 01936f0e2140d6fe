"""Per-cell and per-gene QC metrics from raw counts, on NumPy or CuPy.

Names and definitions follow scanpy's ``calculate_qc_metrics`` so that tables
and plots read the same: ``total_counts``, ``n_genes_by_counts``,
``pct_counts_mt`` per cell; ``n_cells_by_counts`` and ``total_counts`` per gene.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from warpbio.singlecell.sparse import Csr, as_csr, from_scipy

log = logging.getLogger(__name__)

MITO_PREFIXES = ("mt-", "MT-", "Mt-")


def mito_mask(gene_names) -> np.ndarray:
    return np.array([str(name).startswith(MITO_PREFIXES) for name in gene_names], dtype=bool)


@dataclass
class QcMetrics:
    total_counts: object
    n_genes_by_counts: object
    pct_counts_mt: object
    gene_n_cells_by_counts: object
    gene_total_counts: object


def qc_metrics(counts, mito: np.ndarray, xp: ModuleType) -> QcMetrics:
    """QC metrics of a count matrix (a :class:`~warpbio.singlecell.sparse.Csr`, or any
    scipy/cupyx sparse matrix, moved to ``xp``'s device); no densification.

    Genes count as detected where their count is > 0, so explicit zeros in the
    CSR do not count (as in scanpy).
    """
    matrix = as_csr(counts, xp)
    total, n_genes, pct_mt = cell_qc_metrics(matrix, mito)
    return QcMetrics(
        total_counts=total,
        n_genes_by_counts=n_genes,
        pct_counts_mt=pct_mt,
        gene_n_cells_by_counts=matrix.column_sums(_detected).astype(xp.int64),
        gene_total_counts=matrix.column_sums(),
    )


def _detected(data, genes):
    return data > 0


def cell_qc_metrics(matrix: Csr, mito: np.ndarray):
    """Per-cell total_counts (float64), n_genes_by_counts (int64) and pct_counts_mt
    (float64) of a device CSR; each row's values depend on that row alone."""
    xp = matrix.xp
    mito_weights = xp.asarray(mito, dtype=xp.float32)

    def mito_counts(data, genes):
        return data * mito_weights[genes]

    total = matrix.row_sums()
    safe_total = xp.where(total > 0, total, 1.0)
    return (
        total,
        matrix.row_sums(_detected).astype(xp.int64),
        100.0 * matrix.row_sums(mito_counts) / safe_total,
    )


def qc_step(ctx) -> dict:
    """Snakemake step: raw ``input.h5ad`` -> cell/gene QC tables and violin plot."""
    import anndata as ad
    import pandas as pd

    from warpbio.device import to_numpy
    from warpbio.io import atomic_write

    adata = ad.read_h5ad(ctx.input.h5ad)
    log.info("read %d cells x %d genes from %s", *adata.shape, ctx.input.h5ad)
    mito = mito_mask(adata.var_names)
    metrics = qc_metrics(from_scipy(adata.X, ctx.xp), mito, ctx.xp)

    cells = pd.DataFrame(index=adata.obs_names)
    for column in ("sample", "true_cell_type"):
        if column in adata.obs:
            cells[column] = adata.obs[column].astype(str).to_numpy()
    cells["total_counts"] = to_numpy(metrics.total_counts)
    cells["n_genes_by_counts"] = to_numpy(metrics.n_genes_by_counts)
    cells["pct_counts_mt"] = to_numpy(metrics.pct_counts_mt)
    genes = pd.DataFrame(
        {
            "mt": mito,
            "n_cells_by_counts": to_numpy(metrics.gene_n_cells_by_counts),
            "total_counts": to_numpy(metrics.gene_total_counts),
        },
        index=adata.var_names,
    )
    with atomic_write(ctx.output.cells) as tmp:
        cells.to_csv(tmp, sep="\t", index_label="cell", float_format="%.6g")
    with atomic_write(ctx.output.genes) as tmp:
        genes.to_csv(tmp, sep="\t", index_label="gene", float_format="%.6g")
    with atomic_write(ctx.output.violins) as tmp:
        plot_qc_violins(cells, tmp)
    return {
        "n_cells": int(adata.n_obs),
        "n_genes": int(adata.n_vars),
        "n_mito_genes": int(mito.sum()),
        "median_genes_per_cell": float(np.median(cells["n_genes_by_counts"])),
        "median_pct_counts_mt": float(np.median(cells["pct_counts_mt"])),
    }


def plot_qc_violins(cells, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted(cells["sample"].unique()) if "sample" in cells else ["all"]
    metrics = ("n_genes_by_counts", "total_counts", "pct_counts_mt")
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.6))
    for axis, metric in zip(axes, metrics, strict=True):
        data = [
            cells.loc[cells["sample"] == g, metric].to_numpy() if g != "all" else cells[metric]
            for g in groups
        ]
        axis.violinplot(data, showmedians=True)
        axis.set_xticks(range(1, len(groups) + 1), groups, rotation=30, ha="right")
        axis.set_title(metric)
    fig.suptitle(f"QC metrics of {len(cells):,} cells (raw counts)")
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)
