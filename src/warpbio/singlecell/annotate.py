"""The final AnnData: preprocessed data plus graph, UMAP, clusters and markers.

Written once, in scanpy's layout, so scanpy and other scverse tools read it as
their own: ``obsp['connectivities'|'distances']`` and ``uns['neighbors']``,
``obsm['X_umap']`` and ``uns['umap']``, ``obs['leiden'|'louvain']`` (categorical)
with ``uns['<key>_colors']`` and ``uns['<key>']['params']``, and
``uns['rank_genes_groups']`` (the first marker method; the others under
``rank_genes_groups_<method>``).
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def _check_cells(name: str, cells, expected, path) -> None:
    if list(cells) != list(expected):
        raise ValueError(
            f"{path}: its cells differ from those of the preprocessed data; "
            f"rerun the rule that made the {name}"
        )


def annotate_step(ctx) -> dict:
    """Snakemake step: preprocessed.h5ad + graph + umap + clusters + markers -> annotated.h5ad."""
    import h5py
    import pandas as pd

    from warpbio.io import atomic_write
    from warpbio.singlecell.anndata_io import anndata_elements, read_graph, read_h5ad
    from warpbio.singlecell.plots import category_colors, natural_order
    from warpbio.singlecell.umap import find_ab_params

    adata = read_h5ad(ctx.input.h5ad)
    graph = read_graph(ctx.input.graph)
    _check_cells("neighbour graph", graph.obs_names, adata.obs_names, ctx.input.graph)
    adata.obsp["connectivities"] = graph.obsp["connectivities"]
    adata.obsp["distances"] = graph.obsp["distances"]
    adata.uns["neighbors"] = graph.uns["neighbors"]

    umap = pd.read_csv(ctx.input.umap, sep="\t", index_col="cell", dtype={"cell": str})
    _check_cells("UMAP", umap.index, adata.obs_names, ctx.input.umap)
    adata.obsm["X_umap"] = umap[["UMAP1", "UMAP2"]].to_numpy(dtype=np.float32)
    settings = dict(ctx.params.umap)
    a, b = find_ab_params(float(settings["spread"]), float(settings["min_dist"]))
    adata.uns["umap"] = {"params": {"a": a, "b": b}}

    clusters = pd.read_csv(ctx.input.clusters, sep="\t", index_col="cell", dtype=str)
    _check_cells("clusters", clusters.index, adata.obs_names, ctx.input.clusters)
    scores = pd.read_csv(ctx.input.scores, sep="\t").set_index("method")
    cluster_settings = dict(ctx.params.cluster)
    for key in ("leiden", "louvain"):
        labels = clusters[key].to_numpy()
        categories = natural_order(np.unique(labels))
        adata.obs[key] = pd.Categorical(labels, categories=categories)
        adata.uns[f"{key}_colors"] = category_colors(len(categories))
        params = {
            "resolution": float(cluster_settings[f"{key}_resolution"]),
            "random_state": int(ctx.seed),
            "engine": str(scores.loc[key, "engine"]),
        }
        if key == "leiden":
            params["n_iterations"] = int(cluster_settings["n_iterations"])
        adata.uns[key] = {"params": params}

    read_elem, _ = anndata_elements()
    with h5py.File(ctx.input.rank_genes_groups, "r") as handle:
        for key in handle:
            adata.uns[key] = read_elem(handle[key])
    with atomic_write(ctx.output.h5ad) as tmp:
        adata.write_h5ad(tmp)
    log.info("annotated AnnData: %d cells x %d genes", *adata.shape)
    return {"n_cells": int(adata.n_obs), "n_genes": int(adata.n_vars), "uns": sorted(adata.uns)}
