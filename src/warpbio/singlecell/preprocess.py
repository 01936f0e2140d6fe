"""Raw counts -> filtered, normalized, log1p data, highly variable genes, regressed
and scaled HVG matrix, PCA: the whole chain on one device (NumPy or CuPy).

The raw CSR goes to the device once; everything up to the PCA stays there and
only per-gene/per-cell vectors and the results come back. The order follows the
usual scanpy recipe:

1. QC metrics on the raw counts over all genes (``total_counts``,
   ``n_genes_by_counts``, ``pct_counts_mt``; see :mod:`.qc`);
2. cell filters on those metrics (min/max genes, min/max counts, max % mito),
   then genes expressed in fewer than ``min_cells`` of the kept cells go;
3. seurat_v3 HVGs (they read raw counts), else after step 5 the dispersion flavors;
4. ``normalize_total``: each cell scaled to ``target_sum`` counts over the kept
   genes (default: the median total of the kept cells, as scanpy's None);
5. ``log1p``;
6. the HVG columns as a dense float32 matrix; regress out the covariates;
   scale with clipping; PCA.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from types import ModuleType

import numpy as np

from warpbio.singlecell.hvg import HvgSettings, highly_variable_genes
from warpbio.singlecell.pca import PcaResult, pca
from warpbio.singlecell.qc import QcMetrics, mito_mask, qc_metrics
from warpbio.singlecell.scale import regress_out, scale
from warpbio.singlecell.sparse import Csr, _host, module_of

log = logging.getLogger(__name__)

COVARIATES = ("total_counts", "pct_counts_mt", "n_genes_by_counts")
EXECUTION_KEYS = ("gpus", "dask_workers")  # where the chain runs, not what it computes


class PreprocessError(ValueError):
    """Input or settings the chain cannot run on; the message says what and the fix."""


@dataclass(frozen=True)
class PreprocessSettings:
    min_genes: int | None = 200
    max_genes: int | None = None
    min_counts: float | None = None
    max_counts: float | None = None
    max_pct_mt: float | None = None
    min_cells: int | None = 3
    target_sum: float | None = None
    hvg: HvgSettings = field(default_factory=HvgSettings)
    regress_out: tuple[str, ...] = ("total_counts", "pct_counts_mt")
    scale_max: float | None = 10.0
    n_pcs: int = 50

    def __post_init__(self) -> None:
        unknown = [name for name in self.regress_out if name not in COVARIATES]
        if unknown:
            raise PreprocessError(
                f"regress_out: {unknown} are not per-cell QC metrics; use any of {COVARIATES}"
            )

    @classmethod
    def from_config(cls, config: Mapping) -> PreprocessSettings:
        """From ``singlecell.preprocess`` (schema defaults filled in)."""
        values = {k: v for k, v in config.items() if k not in EXECUTION_KEYS}
        hvg = dict(values.pop("hvg", {}) or {})
        if hvg.get("max_disp") is None:
            hvg.pop("max_disp", None)  # null = no upper bound
        values["regress_out"] = tuple(values.get("regress_out", ()))
        return cls(hvg=HvgSettings(**hvg), **values)

    def as_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- timing


def _synchronize(xp: ModuleType) -> None:
    if xp.__name__ == "cupy":
        xp.cuda.get_current_stream().synchronize()


@contextmanager
def stage(name: str, xp: ModuleType, timings: dict[str, float]) -> Iterator[None]:
    """Log and record the wall time of one stage (the device finished, on the GPU)."""
    started = time.perf_counter()
    yield
    _synchronize(xp)
    timings[name] = time.perf_counter() - started
    log.info("%s: %.3f s", name, timings[name])


# ---------------------------------------------------------------- checks


@dataclass(frozen=True)
class BadCounts:
    """What :func:`count_problems` found: how many bad values, the first one and its row."""

    n_bad: int
    first_value: float
    first_row: int


def count_problems(counts: Csr) -> BadCounts | None:
    """Negative or non-finite counts of ``counts`` (row numbers local to it), or None."""
    xp = counts.xp
    for first, end, start, stop in counts.row_blocks():
        data = counts.data[start:stop]
        bad = ~xp.isfinite(data) | (data < 0)
        if bool(bad.any()):
            position = int(xp.argmax(bad.astype(xp.int8)))
            value = float(data[position])
            row = int(counts.row_ids(first, end)[position])
            n_bad = sum(
                int((~xp.isfinite(counts.data[a:b]) | (counts.data[a:b] < 0)).sum())
                for _, _, a, b in counts.row_blocks()
            )
            return BadCounts(n_bad, value, row)
    return None


def bad_counts_message(
    problem: BadCounts, source: str, cell_names: Sequence[str] | None = None
) -> str:
    value, row = problem.first_value, problem.first_row
    kind = "negative" if np.isfinite(value) else "non-finite"
    cell = f"cell {cell_names[row]!r} (row {row})" if cell_names is not None else f"row {row}"
    return (
        f"{source}: {problem.n_bad} {kind} or invalid count(s), first {value!r} in {cell}; "
        "the preprocessing needs raw UMI counts (>= 0): give the raw matrix, "
        "not normalized, scaled or corrupted values"
    )


def check_counts(
    counts: Csr, source: str = "the count matrix", cell_names: Sequence[str] | None = None
) -> None:
    """Counts must be finite and >= 0; otherwise one message naming the first bad cell."""
    problem = count_problems(counts)
    if problem is not None:
        raise PreprocessError(bad_counts_message(problem, source, cell_names))


# ---------------------------------------------------------------- filtering


@dataclass
class FilterResult:
    cells: np.ndarray  # bool mask over the input cells
    genes: np.ndarray  # bool mask over the input genes
    gene_n_cells: np.ndarray  # cells expressing each input gene, among the kept cells
    table: list[dict] = field(default_factory=list)  # one row per filter

    def counts(self) -> dict:
        return {f"{row['axis']}:{row['filter']}": row["removed"] for row in self.table}


def _cell_criteria(metrics: QcMetrics, settings: PreprocessSettings, xp) -> list[tuple]:
    """(name, threshold, mask of cells that pass) for each configured cell filter."""
    genes, total, mito = metrics.n_genes_by_counts, metrics.total_counts, metrics.pct_counts_mt
    checks = [
        ("min_genes", settings.min_genes, lambda t: genes >= t),
        ("max_genes", settings.max_genes, lambda t: genes <= t),
        ("min_counts", settings.min_counts, lambda t: total >= t),
        ("max_counts", settings.max_counts, lambda t: total <= t),
        ("max_pct_mt", settings.max_pct_mt, lambda t: mito <= t),
    ]
    return [(name, t, passes(t)) for name, t, passes in checks if t is not None]


def filter_cells_and_genes(
    counts: Csr, metrics: QcMetrics, settings: PreprocessSettings
) -> FilterResult:
    """Masks of the cells passing every cell filter and the genes then seen in
    at least ``min_cells`` of them; filters applied in order, each one's removals
    counted among the cells the previous ones kept."""
    keep, table = filter_cells(metrics, settings, counts.shape[0], counts.xp)
    gene_n_cells = counts.column_nnz(rows=keep)
    genes = filter_genes(gene_n_cells, settings, table)
    return FilterResult(_host(keep), _host(genes), _host(gene_n_cells), table)


def filter_cells(metrics: QcMetrics, settings: PreprocessSettings, n_cells: int, xp):
    """(mask of the cells that pass, filter table rows) from the per-cell metrics."""
    keep = xp.ones(n_cells, dtype=bool)
    table = []
    for name, threshold, passes in _cell_criteria(metrics, settings, xp):
        before = int(keep.sum())
        keep &= passes
        after = int(keep.sum())
        table.append(_row("cells", name, threshold, before, after))
    if not bool(keep.any()):
        raise PreprocessError(_nothing_left("cells", n_cells, table))
    return keep, table


def filter_genes(gene_n_cells, settings: PreprocessSettings, table: list[dict]):
    """Mask of the genes seen in at least ``min_cells`` kept cells (a row added to
    ``table``), from the per-gene count of kept cells expressing them."""
    xp = module_of(gene_n_cells)
    n_genes = int(gene_n_cells.shape[0])
    genes = xp.ones(n_genes, dtype=bool)
    if settings.min_cells is not None:
        genes = gene_n_cells >= settings.min_cells
        table.append(_row("genes", "min_cells", settings.min_cells, n_genes, int(genes.sum())))
        if not bool(genes.any()):
            raise PreprocessError(_nothing_left("genes", n_genes, table))
    return genes


def _row(axis: str, name: str, threshold, before: int, after: int) -> dict:
    return {
        "axis": axis,
        "filter": name,
        "threshold": threshold,
        "before": before,
        "removed": before - after,
        "remaining": after,
    }


def _nothing_left(axis: str, total: int, table: list[dict]) -> str:
    steps = "; ".join(
        f"{row['filter']}={row['threshold']} removed {row['removed']} of {row['before']}"
        for row in table
    )
    return (
        f"no {axis} left after filtering ({total} {axis} in the input: {steps or 'no filter'}); "
        "relax these thresholds in config singlecell.preprocess"
    )


# ---------------------------------------------------------- normalization


def normalize_total(counts: Csr, target_sum: float | None = None) -> float:
    """Scale each cell (in place) to ``target_sum`` counts; None = median total.

    As scanpy: the size factor total / target is rounded to float32 and divides
    the float32 counts. Cells with no counts keep no entries (nothing divided).
    """
    totals = counts.row_sums()
    target_sum = normalization_target(totals, target_sum)
    divide_by_size_factors(counts, totals, target_sum)
    return target_sum


def normalization_target(totals, target_sum: float | None) -> float:
    """``target_sum``, or the median of the per-cell totals (all cells) when None."""
    if target_sum is None:
        xp = module_of(totals)
        target_sum = float(xp.median(totals.astype(xp.float32)))
    return float(target_sum)


def divide_by_size_factors(counts: Csr, totals, target_sum: float) -> None:
    xp = counts.xp
    factors = (totals / target_sum).astype(xp.float32)
    factors = xp.where(factors > 0, factors, xp.float32(1))
    counts.scale_rows(factors, divide=True)


def log1p(matrix: Csr) -> None:
    matrix.apply(matrix.xp.log1p)


# ------------------------------------------------- checks shared by the drivers


def check_hvg_inputs(settings: PreprocessSettings, n_genes: int, batches) -> None:
    n_top = settings.hvg.n_top_genes
    if n_top is not None and n_top > n_genes:
        log.warning("n_top_genes %d > %d genes: every gene is highly variable", n_top, n_genes)
    if settings.hvg.batch_key is not None and batches is None:
        raise PreprocessError(f"hvg.batch_key {settings.hvg.batch_key!r} needs a label per cell")


def hvg_column_indices(hvg_table, settings: PreprocessSettings) -> np.ndarray:
    """Positions of the highly variable genes; at least two are needed."""
    hvg_columns = np.flatnonzero(hvg_table["highly_variable"].to_numpy())
    if hvg_columns.size < 2:
        raise PreprocessError(
            f"only {hvg_columns.size} highly variable gene(s) of {len(hvg_table)} "
            f"({settings.hvg.flavor}); set singlecell.preprocess.hvg.n_top_genes"
        )
    return hvg_columns


def effective_n_pcs(settings: PreprocessSettings, shape: tuple[int, int]) -> int:
    n_pcs = min(settings.n_pcs, *shape)
    if n_pcs < settings.n_pcs:
        log.warning("n_pcs lowered from %d to %d (the matrix is %d x %d)",
                    settings.n_pcs, n_pcs, *shape)  # fmt: skip
    return n_pcs


def covariate_matrix(cell_metrics: Mapping, names: Sequence[str], xp):
    """(n_cells, len(names)) float64 design columns of per-cell metrics on xp's device."""
    return xp.stack([xp.asarray(cell_metrics[name], dtype=xp.float64) for name in names], axis=1)


# ---------------------------------------------------------------- the chain


@dataclass
class PreprocessResult:
    matrix: Csr  # log1p-normalized counts of the kept cells and genes (device)
    filtering: FilterResult
    metrics: dict[str, np.ndarray]  # per kept cell: total_counts, n_genes_by_counts, pct_counts_mt
    mito: np.ndarray  # per kept gene
    hvg: object  # pandas DataFrame per kept gene (scanpy's columns)
    pca: PcaResult
    target_sum: float
    timings: dict[str, float]


def preprocess_counts(
    counts: Csr,
    gene_names: Sequence[str],
    settings: PreprocessSettings,
    source: str = "the count matrix",
    cell_names: Sequence[str] | None = None,
    batches: Sequence | None = None,
) -> PreprocessResult:
    """The whole chain on ``counts``' device. ``counts`` is consumed: its arrays are
    released once the filtered copy exists, so the raw and the filtered matrix and
    the dense HVG matrix are never all held at once. ``batches`` (a label per
    cell) is the ``hvg.batch_key`` column, when set."""
    xp = counts.xp
    timings: dict[str, float] = {}
    log.info("preprocessing %d cells x %d genes (%d entries) on %s",
             *counts.shape, counts.nnz, xp.__name__)  # fmt: skip
    with stage("check counts", xp, timings):
        check_counts(counts, source, cell_names)
    mito = mito_mask(gene_names)
    with stage("QC metrics", xp, timings):
        metrics = qc_metrics(counts, mito, xp)
    with stage("filter", xp, timings):
        filtering = filter_cells_and_genes(counts, metrics, settings)
        kept = xp.asarray(filtering.cells)
        matrix = counts.select(
            rows=kept, columns=xp.asarray(filtering.genes), entries=lambda d, g: d != 0
        )
        counts.release()
    log.info("kept %d cells x %d genes (%d entries)", *matrix.shape, matrix.nnz)
    cell_metrics = {
        "total_counts": _host(metrics.total_counts[kept]),
        "n_genes_by_counts": _host(metrics.n_genes_by_counts[kept]),
        "pct_counts_mt": _host(metrics.pct_counts_mt[kept]),
    }
    check_hvg_inputs(settings, matrix.shape[1], batches)
    kept_batches = None if batches is None else np.asarray(batches)[filtering.cells]
    hvg_table = None
    if settings.hvg.needs_counts:
        with stage("highly variable genes", xp, timings):
            hvg_table = highly_variable_genes(matrix, settings.hvg, kept_batches)
    with stage("normalize_total + log1p", xp, timings):
        target_sum = normalize_total(matrix, settings.target_sum)
        log1p(matrix)
    if hvg_table is None:
        with stage("highly variable genes", xp, timings):
            hvg_table = highly_variable_genes(matrix, settings.hvg)
    hvg_columns = hvg_column_indices(hvg_table, settings)
    with stage("densify HVGs", xp, timings):
        dense = matrix.dense_columns(hvg_columns)
    if settings.regress_out:
        with stage("regress_out", xp, timings):
            regress_out(dense, covariate_matrix(cell_metrics, settings.regress_out, xp))
    with stage("scale", xp, timings):
        scale(dense, settings.scale_max)
    with stage("PCA", xp, timings):
        result = pca(dense, effective_n_pcs(settings, dense.shape))
        del dense
    return PreprocessResult(
        matrix,
        filtering,
        cell_metrics,
        mito[filtering.genes],
        hvg_table,
        result,
        target_sum,
        timings,
    )


# ---------------------------------------------------------------- outputs


def preprocessed_anndata(raw, result: PreprocessResult, settings: PreprocessSettings):
    """AnnData of the kept cells and genes in scanpy's layout (X = log1p-normalized)."""
    import anndata as ad
    import pandas as pd

    cells, genes = result.filtering.cells, result.filtering.genes
    obs = pd.DataFrame(index=raw.obs_names[cells])
    for column in ("sample", "true_cell_type"):
        if column in raw.obs:
            obs[column] = raw.obs[column].to_numpy()[cells]
            if isinstance(raw.obs[column].dtype, pd.CategoricalDtype):
                obs[column] = obs[column].astype(raw.obs[column].dtype)
    obs["total_counts"] = result.metrics["total_counts"].astype(np.float64)
    obs["n_genes_by_counts"] = result.metrics["n_genes_by_counts"].astype(np.int64)
    obs["pct_counts_mt"] = result.metrics["pct_counts_mt"].astype(np.float64)
    var = pd.DataFrame(index=raw.var_names[genes])
    if "gene_ids" in raw.var:
        var["gene_ids"] = raw.var["gene_ids"].to_numpy()[genes]
    var["mt"] = result.mito
    var["n_cells_by_counts"] = result.filtering.gene_n_cells[genes].astype(np.int64)
    for column in result.hvg.columns:
        var[column] = result.hvg[column].to_numpy()
    adata = ad.AnnData(X=result.matrix.to_scipy(), obs=obs, var=var)
    adata.obsm["X_pca"] = np.asarray(_host(result.pca.embedding), dtype=np.float32)
    loadings = np.zeros((adata.n_vars, result.pca.components.shape[0]), dtype=np.float64)
    loadings[var["highly_variable"].to_numpy()] = result.pca.components.T
    adata.varm["PCs"] = loadings
    adata.uns["pca"] = {
        "variance": result.pca.variance,
        "variance_ratio": result.pca.variance_ratio,
        "params": {
            "zero_center": True,
            "use_highly_variable": True,
            "mask_var": "highly_variable",
        },
    }
    adata.uns["hvg"] = {"flavor": settings.hvg.flavor}
    if settings.hvg.batch_key is not None:
        adata.uns["hvg"]["batch_key"] = settings.hvg.batch_key
    adata.uns["log1p"] = {}  # natural log (scanpy's base None)
    adata.uns["preprocess"] = {
        "params": _writable(settings.as_dict()),
        "target_sum": result.target_sum,
        "filtering": {
            f"{r['axis']}_{r['filter']}": int(r["removed"]) for r in result.filtering.table
        },
        "n_cells_in": int(cells.size),
        "n_genes_in": int(genes.size),
    }  # stage timings go to the provenance record: the file stays identical across reruns
    return adata


def _writable(value):
    """Settings as h5ad-writable values: None -> 'null', tuples -> lists, inf -> 'inf'."""
    if isinstance(value, Mapping):
        return {k: _writable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_writable(v) for v in value] if value else "none"
    if value is None:
        return "null"
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    return value


def filtering_table(result: FilterResult):
    import pandas as pd

    columns = ["axis", "filter", "threshold", "before", "removed", "remaining"]
    return pd.DataFrame(result.table, columns=columns)


def plot_preprocessing(adata, path) -> None:
    """HVG selection (mean vs normalized dispersion or variance), PCA variance
    ratios, and PC1/PC2 coloured by cell type (simulated data) or sample."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    var = adata.var
    hv = var["highly_variable"].to_numpy()
    y_name = "dispersions_norm" if "dispersions_norm" in var else "variances_norm"
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    means = var["means"].to_numpy()
    axes[0].scatter(means[~hv], var[y_name][~hv], s=3, c="0.6", label="other")
    axes[0].scatter(means[hv], var[y_name][hv], s=3, c="C3", label="highly variable")
    axes[0].set(
        xscale="log" if adata.uns["hvg"]["flavor"] == "seurat_v3" else "linear",
        xlabel="mean",
        ylabel=y_name,
        title=f"{hv.sum():,} of {hv.size:,} genes ({adata.uns['hvg']['flavor']})",
    )
    axes[0].legend(markerscale=4, fontsize=8)
    ratio = np.asarray(adata.uns["pca"]["variance_ratio"])
    axes[1].plot(np.arange(1, ratio.size + 1), ratio, "o-", ms=3)
    axes[1].set(xlabel="component", ylabel="variance ratio", yscale="log", title="PCA")
    embedding = adata.obsm["X_pca"]
    key = next((k for k in ("true_cell_type", "sample") if k in adata.obs), None)
    labels = adata.obs[key].astype(str).to_numpy() if key else np.full(adata.n_obs, "all")
    for label in sorted(set(labels))[:20]:
        mask = labels == label
        axes[2].scatter(embedding[mask, 0], embedding[mask, 1], s=3, alpha=0.6, label=label)
    axes[2].set(xlabel="PC1", ylabel="PC2", title=f"PC1/PC2 by {key or 'cell'}")
    axes[2].legend(markerscale=4, fontsize=7)
    fig.suptitle(f"{adata.n_obs:,} cells x {adata.n_vars:,} genes after filtering")
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def dask_worker_count(ctx) -> int:
    """Workers of the Dask path for this job, 0 for the one-device chain: one per
    leased GPU when the gpu backend leased more than one, else the cpu backend's
    ``dask_workers``."""
    if ctx.backend == "gpu":
        return ctx.lease.count if ctx.lease.count > 1 else 0
    return int(ctx.params.preprocess.get("dask_workers", 0) or 0)


def preprocess_step(ctx) -> dict:
    """Snakemake step: raw ``input.h5ad`` -> ``output.h5ad``, ``.filtering``, ``.plot``;
    on one device, or over Dask workers (:func:`dask_worker_count`) that read
    their own cells from the file."""
    import anndata as ad

    from warpbio.io import atomic_write
    from warpbio.singlecell.csr_io import read_obs_var
    from warpbio.singlecell.sparse import from_scipy

    settings = PreprocessSettings.from_config(ctx.params.preprocess)
    path = str(ctx.input.h5ad)
    workers = dask_worker_count(ctx)
    if workers:  # the workers read X themselves
        obs, var = read_obs_var(path)
        raw = ad.AnnData(obs=obs, var=var)
    else:
        raw = ad.read_h5ad(path)
    log.info("read %d cells x %d genes from %s", raw.n_obs, raw.n_vars, path)
    batch_key = settings.hvg.batch_key
    if batch_key is not None and batch_key not in raw.obs:
        raise PreprocessError(
            f"{path}: config singlecell.preprocess.hvg.batch_key = {batch_key!r} is not a "
            f"cell annotation here (there are: {', '.join(raw.obs.columns) or 'none'})"
        )
    batches = None if batch_key is None else raw.obs[batch_key].astype(str).to_numpy()
    try:
        if workers:
            from warpbio.singlecell.dask_preprocess import preprocess_distributed

            result, _ = preprocess_distributed(
                path,
                settings,
                workers,
                ctx.backend,
                gpu_ids=ctx.lease.ids or None,
                gene_names=list(raw.var_names),
                cell_names=raw.obs_names,
                batches=batches,
            )
        else:
            counts = from_scipy(raw.X, ctx.xp, copy=False)
            raw.X = None  # the device copy (or the CSR just built) is all we need
            result = preprocess_counts(
                counts,
                list(raw.var_names),
                settings,
                source=path,
                cell_names=raw.obs_names,
                batches=batches,
            )
    except PreprocessError as error:
        raise PreprocessError(
            f"{path}: {error}" if path not in str(error) else str(error)
        ) from None
    adata = preprocessed_anndata(raw, result, settings)
    with atomic_write(ctx.output.h5ad) as tmp:
        adata.write_h5ad(tmp)
    with atomic_write(ctx.output.filtering) as tmp:
        filtering_table(result.filtering).to_csv(tmp, sep="\t", index=False)
    with atomic_write(ctx.output.plot) as tmp:
        plot_preprocessing(adata, tmp)
    return {
        "n_cells": int(adata.n_obs),
        "n_genes": int(adata.n_vars),
        "n_highly_variable": int(adata.var["highly_variable"].sum()),
        "filtering": result.filtering.counts(),
        "target_sum": result.target_sum,
        "pca_variance_ratio": result.pca.variance_ratio.tolist(),
        "timings_s": result.timings,
        "dask_workers": workers,
    }
