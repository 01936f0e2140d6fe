"""Marker genes per cluster, as scanpy 1.11's ``rank_genes_groups`` (reference 'rest').

Everything runs on NumPy or CuPy from the CSR's three arrays (float32 data,
int32 indices, int64 indptr), in chunks, so a matrix with more than 2^31
non-zeros works on the GPU (cupyx.scipy.sparse cannot index it):

- group statistics: per chunk of rows, each non-zero's (group, gene) key is
  summed with ``bincount`` into sums, sums of squares and non-zero counts;
  means and unbiased variances (scanpy's ``_get_mean_var``) follow, for each
  group and for the rest;
- ``t-test``: Welch's t from those statistics (scipy's ``ttest_ind_from_stats``
  formulas), p-values from Student's t on the host;
- ``wilcoxon``: rank sums with average ranks for ties.  The zeros of a gene
  share one tied rank, so only the non-zeros are sorted, gene chunk by gene
  chunk: a zero's rank is (#negatives) + (z + 1) / 2, a positive value's is its
  position among the non-zeros plus z.  Optional tie correction as scanpy's;
- ``logreg``: scikit-learn's LogisticRegression with scanpy's defaults, on the
  host (no GPU version).

log fold changes use scanpy's definition: log2((expm1(mean_group) + 1e-9) /
(expm1(mean_rest) + 1e-9)) with the means of the log data.  p-values are
Benjamini-Hochberg corrected over all genes of a group.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from warpbio.progress import Progress
from warpbio.singlecell.segments import sortable_float_bits, stable_argsort

log = logging.getLogger(__name__)

METHODS = ("t-test", "wilcoxon", "logreg")
CHUNK_NONZEROS = 1 << 26


@dataclass
class DeviceCsr:
    """A CSR matrix as three arrays on ``xp``'s device."""

    data: object
    indices: object
    indptr: object
    shape: tuple[int, int]

    @classmethod
    def from_arrays(cls, data, indices, indptr, shape, xp: ModuleType) -> DeviceCsr:
        return cls(
            xp.asarray(data, dtype=xp.float32),
            xp.asarray(indices, dtype=xp.int32),
            xp.asarray(indptr, dtype=xp.int64),
            (int(shape[0]), int(shape[1])),
        )

    def to_scipy(self):
        import scipy.sparse as sp

        from warpbio.device import to_numpy

        arrays = (to_numpy(self.data), to_numpy(self.indices), to_numpy(self.indptr))
        return sp.csr_matrix(arrays, shape=self.shape)

    @classmethod
    def from_scipy(cls, matrix, xp: ModuleType) -> DeviceCsr:
        import scipy.sparse as sp

        matrix = sp.csr_matrix(matrix)
        return cls(
            xp.asarray(matrix.data, dtype=xp.float32),
            xp.asarray(matrix.indices, dtype=xp.int32),
            xp.asarray(matrix.indptr, dtype=xp.int64),
            (int(matrix.shape[0]), int(matrix.shape[1])),
        )


@dataclass
class GroupStats:
    """Per group (rows) and gene (columns), float64 on the host."""

    n_cells: np.ndarray  # per group
    mean: np.ndarray
    var: np.ndarray
    mean_rest: np.ndarray
    var_rest: np.ndarray
    frac: np.ndarray  # fraction of the group's cells with a non-zero value
    frac_rest: np.ndarray


@dataclass
class RankResult:
    """One method's statistics, groups x genes, in gene order (not ranked)."""

    method: str
    scores: np.ndarray
    pvals: np.ndarray | None
    logfoldchanges: np.ndarray


def _row_of_nonzeros(matrix: DeviceCsr, start: int, stop: int, xp):
    positions = xp.arange(start, stop, dtype=xp.int64)
    return xp.searchsorted(matrix.indptr, positions, side="right") - 1


def _nonzero_chunks(matrix: DeviceCsr, chunk: int):
    """(start, stop) ranges of the non-zeros (each non-zero finds its row itself)."""
    total = int(matrix.indptr[-1])
    for start in range(0, total, chunk):
        yield start, min(total, start + chunk)


def group_stats(matrix: DeviceCsr, codes, n_groups: int, xp: ModuleType) -> GroupStats:
    """Means, variances and expressing fractions per group and for the rest."""
    n_cells, n_genes = matrix.shape
    codes = xp.asarray(codes, dtype=xp.int64)
    size = n_groups * n_genes
    sums = xp.zeros(size, dtype=xp.float64)
    squares = xp.zeros(size, dtype=xp.float64)
    nonzero = xp.zeros(size, dtype=xp.int64)
    for start, stop in _nonzero_chunks(matrix, CHUNK_NONZEROS):
        rows = _row_of_nonzeros(matrix, start, stop, xp)
        values = matrix.data[start:stop].astype(xp.float64)
        keys = codes[rows] * n_genes + matrix.indices[start:stop].astype(xp.int64)
        sums += xp.bincount(keys, weights=values, minlength=size)
        squares += xp.bincount(keys, weights=values * values, minlength=size)
        nonzero += xp.bincount(keys[values != 0], minlength=size)
    from warpbio.device import to_numpy

    sums = to_numpy(sums).reshape(n_groups, n_genes)
    squares = to_numpy(squares).reshape(n_groups, n_genes)
    nonzero = to_numpy(nonzero).reshape(n_groups, n_genes)
    counts = np.bincount(to_numpy(codes), minlength=n_groups).astype(np.float64)
    rest_counts = n_cells - counts

    def mean_var(total, total_sq, n):
        n = n[:, None]
        mean = total / n
        with np.errstate(invalid="ignore", divide="ignore"):
            var = (total_sq / n - mean * mean) * (n / (n - 1))
        return mean, np.maximum(var, 0.0)

    mean, var = mean_var(sums, squares, counts)
    mean_rest, var_rest = mean_var(sums.sum(0) - sums, squares.sum(0) - squares, rest_counts)
    frac = nonzero / counts[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac_rest = (nonzero.sum(0) - nonzero) / rest_counts[:, None]
    return GroupStats(counts, mean, var, mean_rest, var_rest, frac, frac_rest)


def welch_t_test(stats: GroupStats) -> tuple[np.ndarray, np.ndarray]:
    """Welch's t and two-sided p per group and gene (scipy's formulas, NaN -> 0 / 1)."""
    from scipy import special

    n1 = stats.n_cells[:, None]
    n2 = stats.n_cells.sum() - n1
    with np.errstate(divide="ignore", invalid="ignore"):
        vn1 = stats.var / n1
        vn2 = stats.var_rest / n2
        df = (vn1 + vn2) ** 2 / (vn1**2 / (n1 - 1) + vn2**2 / (n2 - 1))
        df = np.where(np.isnan(df), 1.0, df)
        t = (stats.mean - stats.mean_rest) / np.sqrt(vn1 + vn2)
        # stats.t.sf's own formula without its argument checks (a third of its time)
        p = 2.0 * special.stdtr(df, -np.abs(t))
    return np.where(np.isnan(t), 0.0, t), np.where(np.isnan(p), 1.0, p)


def wilcoxon_rank_sums(
    matrix: DeviceCsr,
    codes,
    n_groups: int,
    xp: ModuleType,
    tie_correct: bool = False,
    genes_per_chunk: int | None = None,
):
    """z-scores (groups x genes) of the rank-sum test of each group against the rest."""
    from warpbio.device import to_numpy

    n_cells, n_genes = matrix.shape
    codes = xp.asarray(codes, dtype=xp.int64)
    group_sizes = xp.bincount(codes, minlength=n_groups).astype(xp.float64)
    if genes_per_chunk is None:
        density = max(int(matrix.indptr[-1]), 1) / max(n_genes, 1)
        genes_per_chunk = max(1, min(n_genes, int(CHUNK_NONZEROS / max(density, 1.0))))
    rank_sums = np.zeros((n_groups, n_genes))
    tie_factor = np.ones(n_genes)
    progress = Progress("wilcoxon rank sums", n_genes, unit="genes")
    for g0 in range(0, n_genes, genes_per_chunk):
        g1 = min(n_genes, g0 + genes_per_chunk)
        sums, ties = _chunk_rank_sums(matrix, codes, group_sizes, n_groups, g0, g1, xp)
        rank_sums[:, g0:g1] = to_numpy(sums)
        tie_factor[g0:g1] = to_numpy(ties)
        progress.update(g1 - g0)
    n = to_numpy(group_sizes)[:, None]
    coefficient = tie_factor[None, :] if tie_correct else 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        std = np.sqrt(coefficient * n * (n_cells - n) * (n_cells + 1) / 12.0)
        z = (rank_sums - n * (n_cells + 1) / 2.0) / std
    return np.where(np.isnan(z), 0.0, z)


def _chunk_rank_sums(matrix: DeviceCsr, codes, group_sizes, n_groups, g0, g1, xp):
    """Rank sums per (group, gene) and tie factors for genes g0..g1."""
    n_cells = matrix.shape[0]
    width = g1 - g0
    genes = matrix.indices
    chosen = xp.flatnonzero((genes >= g0) & (genes < g1) & (matrix.data != 0))
    gene = genes[chosen].astype(xp.int64) - g0
    values = matrix.data[chosen]
    group = codes[xp.searchsorted(matrix.indptr, chosen, side="right") - 1]
    keys = (gene << 32) | sortable_float_bits(values, xp)
    order = stable_argsort(keys, xp)
    keys, gene, values, group = keys[order], gene[order], values[order], group[order]
    count = int(keys.shape[0])
    per_gene = xp.bincount(gene, minlength=width)
    gene_start = xp.cumsum(per_gene) - per_gene
    zeros = n_cells - per_gene
    negatives = xp.bincount(gene[values < 0], minlength=width)
    # runs of equal (gene, value): average of their positions
    if count:
        new_run = xp.concatenate([xp.ones(1, dtype=bool), keys[1:] != keys[:-1]])
        run_id = xp.cumsum(new_run.astype(xp.int64)) - 1
        run_first = xp.flatnonzero(new_run)
        run_last = xp.concatenate([run_first[1:], xp.full(1, count, dtype=run_first.dtype)]) - 1
        middle = (run_first[run_id] + run_last[run_id]) / 2.0
        position = middle - gene_start[gene]  # 0-based among the gene's non-zeros
        ranks = position + 1.0 + xp.where(values > 0, zeros[gene], 0).astype(xp.float64)
        run_length = (run_last - run_first + 1).astype(xp.float64)
        run_gene = gene[run_first]
        tie_terms = xp.bincount(
            run_gene, weights=run_length**3 - run_length, minlength=width
        ).astype(xp.float64)
    else:
        ranks = xp.zeros(0, dtype=xp.float64)
        tie_terms = xp.zeros(width, dtype=xp.float64)
    cell_keys = group * width + gene
    sums = xp.bincount(cell_keys, weights=ranks, minlength=n_groups * width)
    nonzero = xp.bincount(cell_keys, minlength=n_groups * width)
    sums = sums.reshape(n_groups, width)
    zeros_in_group = group_sizes[:, None] - nonzero.reshape(n_groups, width)
    zero_rank = negatives + (zeros + 1) / 2.0
    sums = sums + zeros_in_group * zero_rank[None, :]
    z = zeros.astype(xp.float64)
    tie_terms = tie_terms + z**3 - z
    total = float(n_cells)
    ties = 1.0 - tie_terms / (total**3 - total) if n_cells > 1 else xp.ones(width)
    return sums, ties


def logreg_scores(matrix, codes, n_groups: int, **kwargs) -> np.ndarray:
    """scikit-learn LogisticRegression coefficients per group (scanpy's logreg)."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(**kwargs)
    model.fit(matrix, np.asarray(codes))
    coefficients = model.coef_
    if n_groups <= 2:
        return np.vstack([coefficients[0], -coefficients[0]])[:n_groups]
    return coefficients


def log_fold_changes(stats: GroupStats) -> np.ndarray:
    return np.log2((np.expm1(stats.mean) + 1e-9) / (np.expm1(stats.mean_rest) + 1e-9))


def benjamini_hochberg(pvals: np.ndarray) -> np.ndarray:
    """statsmodels' fdr_bh over one vector of p-values."""
    p = np.where(np.isnan(pvals), 1.0, pvals)
    order = np.argsort(p, kind="stable")
    ranked = p[order] * p.size / np.arange(1, p.size + 1)
    adjusted = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
    out = np.empty_like(adjusted)
    out[order] = adjusted
    return out


def rank_genes(
    matrix: DeviceCsr,
    codes,
    n_groups: int,
    methods,
    xp: ModuleType,
    tie_correct: bool = False,
    host_matrix=None,
) -> tuple[GroupStats, list[RankResult]]:
    """Group statistics and each method's scores (groups x genes)."""
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"marker methods {sorted(unknown)} not among {', '.join(METHODS)}")
    stats = group_stats(matrix, codes, n_groups, xp)
    if (stats.n_cells < 2).any():
        small = np.flatnonzero(stats.n_cells < 2).tolist()
        raise ValueError(f"groups {small} have fewer than 2 cells; no test is defined for them")
    lfc = log_fold_changes(stats)
    results = []
    for method in methods:
        if method == "t-test":
            scores, pvals = welch_t_test(stats)
        elif method == "wilcoxon":
            scores = wilcoxon_rank_sums(matrix, codes, n_groups, xp, tie_correct)
            from scipy.stats import norm

            pvals = 2.0 * norm.sf(np.abs(scores))
        else:
            if host_matrix is None:
                raise ValueError("logreg needs the host matrix")
            scores, pvals = logreg_scores(host_matrix, np.asarray(codes), n_groups), None
        results.append(RankResult(method, scores, pvals, lfc))
    return stats, results


# --------------------------------------------------------------------------
# scanpy's uns['rank_genes_groups'] and the marker tables
# --------------------------------------------------------------------------


def ranked_order(scores: np.ndarray) -> np.ndarray:
    """Genes by score, highest first; equal scores by gene order (stable)."""
    return np.argsort(-scores, kind="stable")


def rank_genes_groups_uns(
    result: RankResult, group_names, gene_names, groupby: str, stats: GroupStats
) -> dict:
    """scanpy's ``uns['rank_genes_groups']``: recarrays ranked per group, and params."""
    import pandas as pd

    group_names = [str(g) for g in group_names]
    gene_names = np.asarray(gene_names, dtype=object)
    orders = [ranked_order(result.scores[g]) for g in range(len(group_names))]
    columns = {
        "names": ("O", [gene_names[o] for o in orders]),
        "scores": ("float32", [result.scores[g][o] for g, o in enumerate(orders)]),
    }
    if result.pvals is not None:
        adjusted = [benjamini_hochberg(result.pvals[g]) for g in range(len(group_names))]
        columns["pvals"] = ("float64", [result.pvals[g][o] for g, o in enumerate(orders)])
        columns["pvals_adj"] = ("float64", [adjusted[g][o] for g, o in enumerate(orders)])
        columns["logfoldchanges"] = (
            "float32",
            [result.logfoldchanges[g][o] for g, o in enumerate(orders)],
        )
    uns = {
        "params": {
            "groupby": groupby,
            "reference": "rest",
            "method": result.method,
            "use_raw": False,
            "layer": None,
            "corr_method": "benjamini-hochberg",
        }
    }
    for key, (dtype, per_group) in columns.items():
        uns[key] = np.rec.fromarrays(
            [np.asarray(v, dtype=dtype) for v in per_group],
            dtype=[(name, dtype) for name in group_names],
        )
    uns["pts"] = pd.DataFrame(stats.frac.T, index=gene_names, columns=group_names)
    uns["pts_rest"] = pd.DataFrame(stats.frac_rest.T, index=gene_names, columns=group_names)
    return uns


def marker_table(result: RankResult, group_names, gene_names, stats: GroupStats):
    """Long table: group, rank, gene, score, logfc, pval, pval_adj, pct_in, pct_out."""
    import pandas as pd

    gene_names = np.asarray(gene_names, dtype=object)
    parts = []
    for g, name in enumerate(group_names):
        order = ranked_order(result.scores[g])
        pvals = result.pvals[g] if result.pvals is not None else np.full(len(order), np.nan)
        adjusted = benjamini_hochberg(pvals) if result.pvals is not None else pvals
        parts.append(
            pd.DataFrame(
                {
                    "group": str(name),
                    "rank": np.arange(1, len(order) + 1),
                    "gene": gene_names[order],
                    "score": result.scores[g][order],
                    "logfc": result.logfoldchanges[g][order],
                    "pval": pvals[order],
                    "pval_adj": adjusted[order],
                    "pct_in": stats.frac[g][order],
                    "pct_out": stats.frac_rest[g][order],
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def dotplot_table(result: RankResult, group_names, gene_names, stats: GroupStats, top: int):
    """Top ``top`` markers per group: mean expression and expressing fraction in every group."""
    import pandas as pd

    chosen: list[int] = []
    for g in range(len(group_names)):
        for gene in ranked_order(result.scores[g])[:top]:
            if int(gene) not in chosen:
                chosen.append(int(gene))
    rows = []
    for g, name in enumerate(group_names):
        for gene in chosen:
            rows.append((str(name), gene_names[gene], stats.mean[g, gene], stats.frac[g, gene]))
    return pd.DataFrame(rows, columns=["group", "gene", "mean_expression", "fraction_expressing"])


# --------------------------------------------------------------------------
# Snakemake step
# --------------------------------------------------------------------------


def uns_key(method: str, first: bool) -> str:
    """uns key of a method's results: scanpy's for the first, suffixed for the others."""
    return "rank_genes_groups" if first else f"rank_genes_groups_{method.replace('-', '_')}"


def markers_step(ctx) -> dict:
    """Snakemake step: preprocessed.h5ad X + clusters.tsv -> marker tables, uns data, dot plot."""
    import time

    import h5py
    import pandas as pd

    from warpbio.io import atomic_write
    from warpbio.singlecell.anndata_io import (
        anndata_elements,
        read_csr_arrays,
        read_obs_names,
        read_var_names,
    )

    settings = dict(ctx.params.markers)
    methods = list(settings["methods"])
    groupby = settings["groupby"]
    clusters = pd.read_csv(ctx.input.clusters, sep="\t", index_col="cell", dtype={"cell": str})
    cells = read_obs_names(ctx.input.h5ad)
    if list(clusters.index.astype(str)) != list(cells):
        raise ValueError(
            f"{ctx.input.clusters}: its cells differ from those of {ctx.input.h5ad}; "
            "rerun singlecell_cluster"
        )
    data, indices, indptr, shape = read_csr_arrays(ctx.input.h5ad)
    genes = read_var_names(ctx.input.h5ad)
    labels = clusters[groupby].to_numpy().astype(np.int64)
    groups = [str(g) for g in range(int(labels.max()) + 1)]
    started = time.time()
    device = DeviceCsr.from_arrays(data, indices, indptr, shape, ctx.xp)
    del data, indices, indptr
    if not bool(ctx.xp.isfinite(device.data).all()):
        raise ValueError(f"{ctx.input.h5ad}: X holds NaN or infinite values")
    head = device.data[: 1 << 20]
    if head.shape[0] and bool((head == ctx.xp.round(head)).all()):
        log.warning("X of %s looks like raw counts; markers expect log data", ctx.input.h5ad)
    stats, results = rank_genes(
        device,
        labels,
        len(groups),
        methods,
        ctx.xp,
        tie_correct=bool(settings["tie_correct"]),
        host_matrix=device.to_scipy() if "logreg" in methods else None,
    )
    seconds = time.time() - started
    log.info(
        "markers (%s) of %d groups x %d genes in %.2f s",
        ", ".join(methods),
        *stats.mean.shape,
        seconds,
    )
    _, write_elem = anndata_elements()
    for result, path in zip(results, ctx.output.tables, strict=True):
        table = marker_table(result, groups, genes, stats)
        with atomic_write(path) as tmp:
            table.to_csv(tmp, sep="\t", index=False, float_format="%.6g", na_rep="NA")
    with atomic_write(ctx.output.rank_genes_groups) as tmp, h5py.File(tmp, "w") as handle:
        for index, result in enumerate(results):
            uns = rank_genes_groups_uns(result, groups, genes, groupby, stats)
            write_elem(handle, uns_key(result.method, index == 0), uns)
    dots = dotplot_table(results[0], groups, genes, stats, int(settings["dotplot_genes"]))
    with atomic_write(ctx.output.dotplot) as tmp:
        dots.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    top = {
        g: [str(genes[i]) for i in ranked_order(results[0].scores[k])[:5]]
        for k, g in enumerate(groups)
    }
    return {"seconds": round(seconds, 3), "n_groups": len(groups), "top5": top}
