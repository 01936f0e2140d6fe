"""UMAP panels and the marker dot plot (matplotlib, Agg), readable from 3k to 1.3M cells.

Points are rasterized and shrink with the number of cells; above
``max_points`` cells a seeded random subset is drawn and the title says so.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def category_colors(count: int) -> list[str]:
    """Hex colours for ``count`` categories (tab20, then tab20b/c, then hues)."""
    import matplotlib
    from matplotlib.colors import to_hex

    if count <= 20:
        base = matplotlib.colormaps["tab20"].colors
        # tab20 pairs dark/light shades; the dark ones first keeps small counts distinct
        ordered = list(base[0::2]) + list(base[1::2])
        return [to_hex(c) for c in ordered[:count]]
    if count <= 60:
        colors = []
        for name in ("tab20", "tab20b", "tab20c"):
            colors += list(matplotlib.colormaps[name].colors)
        return [to_hex(c) for c in colors[:count]]
    hues = matplotlib.colormaps["hsv"](np.linspace(0, 1, count, endpoint=False))
    return [to_hex(c) for c in hues]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _point_size(n: int) -> float:
    return float(np.clip(60000.0 / max(n, 1), 0.05, 8.0))


def plot_umap(umap, columns: dict, path, max_points: int = 200000, seed: int = 0) -> None:
    """One panel per categorical column (name -> labels), coloured by category."""
    plt = _pyplot()
    n = umap.shape[0]
    shown = np.arange(n)
    note = ""
    if n > max_points:
        shown = np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))
        note = f" ({max_points:,} of {n:,} cells shown, random subset)"
    # a random drawing order keeps one category from hiding the others
    shown = shown[np.random.default_rng(seed + 1).permutation(shown.size)]
    panels = len(columns)
    fig, axes = plt.subplots(1, panels, figsize=(5.4 * panels, 5.0), squeeze=False)
    size = _point_size(shown.size)
    for axis, (name, labels) in zip(axes[0], columns.items(), strict=True):
        labels = np.asarray(labels).astype(str)
        categories = natural_order(np.unique(labels))
        colors = dict(zip(categories, category_colors(len(categories)), strict=True))
        axis.scatter(
            umap[shown, 0],
            umap[shown, 1],
            s=size,
            c=[colors[label] for label in labels[shown]],
            linewidths=0,
            rasterized=True,
        )
        if len(categories) <= 40:
            handles = [
                plt.Line2D([], [], marker="o", ls="", color=colors[c], label=c) for c in categories
            ]
            axis.legend(
                handles=handles,
                loc="center left",
                bbox_to_anchor=(1.0, 0.5),
                fontsize=7,
                frameon=False,
                ncol=1 if len(categories) <= 20 else 2,
            )
        axis.set_title(f"{name} ({len(categories)})")
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_xlabel("UMAP1")
        axis.set_ylabel("UMAP2")
    fig.suptitle(f"UMAP of {n:,} cells{note}")
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def plot_dotplot(table, path, title: str) -> None:
    """Dot size = fraction of the group expressing, colour = mean expression (log data)."""
    plt = _pyplot()
    groups = natural_order(table["group"].astype(str).unique())
    genes = list(dict.fromkeys(table["gene"].astype(str)))
    frac = table.pivot(index="group", columns="gene", values="fraction_expressing")
    mean = table.pivot(index="group", columns="gene", values="mean_expression")
    frac = frac.loc[groups, genes].to_numpy()
    mean = mean.loc[groups, genes].to_numpy()
    xs, ys = np.meshgrid(np.arange(len(genes)), np.arange(len(groups)))
    fig, axis = plt.subplots(
        figsize=(max(4.0, 0.32 * len(genes) + 2.5), max(2.5, 0.32 * len(groups) + 1.8))
    )
    points = axis.scatter(
        xs.ravel(),
        ys.ravel(),
        s=240.0 * frac.ravel(),
        c=mean.ravel(),
        cmap="Reds",
        edgecolors="0.4",
        linewidths=0.3,
    )
    axis.set_xticks(range(len(genes)), genes, rotation=90, fontsize=7)
    axis.set_yticks(range(len(groups)), groups, fontsize=8)
    axis.set_xlim(-0.7, len(genes) - 0.3)
    axis.set_ylim(len(groups) - 0.5, -0.5)
    axis.set_ylabel("cluster")
    fig.colorbar(points, ax=axis, shrink=0.6, label="mean expression (log)")
    for fraction in (0.25, 0.5, 1.0):
        axis.scatter([], [], s=240.0 * fraction, c="0.6", label=f"{fraction:.0%}")
    axis.legend(
        title="expressing", loc="upper left", bbox_to_anchor=(1.25, 1.0), frameon=False, fontsize=7
    )
    axis.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def natural_order(values) -> list[str]:
    """Numbers in numeric order, then text (cluster ids '0', '1', ..., '10')."""
    values = [str(v) for v in values]
    return sorted(values, key=lambda v: (0, int(v), "") if v.isdigit() else (1, 0, v))


def plots_step(ctx) -> dict:
    """Snakemake step: umap.tsv, clusters.tsv, markers/dotplot.tsv -> the two PNGs."""
    import pandas as pd

    from warpbio.io import atomic_write

    umap = pd.read_csv(ctx.input.umap, sep="\t", index_col="cell")
    clusters = pd.read_csv(ctx.input.clusters, sep="\t", index_col="cell", dtype=str)
    if list(umap.index) != list(clusters.index):
        raise ValueError(
            f"{ctx.input.umap} and {ctx.input.clusters} list different cells; "
            "rerun singlecell_umap and singlecell_cluster"
        )
    columns = {"leiden": clusters["leiden"], "louvain": clusters["louvain"]}
    if "sample" in clusters and clusters["sample"].nunique() > 1:
        columns["sample"] = clusters["sample"]
    if "true_cell_type" in clusters:
        columns["true cell type"] = clusters["true_cell_type"]
    settings = dict(ctx.params.plots)
    with atomic_write(ctx.output.umap) as tmp:
        plot_umap(
            umap[["UMAP1", "UMAP2"]].to_numpy(),
            columns,
            tmp,
            max_points=int(settings["max_points"]),
            seed=int(ctx.seed),
        )
    dots = pd.read_csv(ctx.input.dotplot, sep="\t", dtype={"group": str, "gene": str})
    with atomic_write(ctx.output.dotplot) as tmp:
        markers = dict(ctx.params.markers)
        title = (
            f"top {markers['dotplot_genes']} markers per {markers['groupby']} cluster "
            f"({markers['methods'][0]})"
        )
        plot_dotplot(dots, tmp, title=title)
    return {"n_cells": len(umap), "panels": list(columns)}
