"""Community detection on large kNN graphs: igraph Leiden/Louvain vs our engines.

Made to choose the clustering defaults: how long does igraph's Leiden (scanpy's
igraph flavour) take at 300k-1.3M cells, and what do the sequential engine
(Numba; the step runs its Leiden and Louvain at once in two threads) and the
synchronous engine (NumPy here, CuPy with --backend gpu) give in time,
modularity and agreement?

The graph is cheap to make but shaped like a real one: a Gaussian mixture in 50-D
(``--clusters`` centres spread so that neighbouring clusters overlap a little),
each cell's 15 nearest neighbours found exactly (warpbio's kNN) among its own
cluster and the ``--near`` nearest other clusters, then scanpy's UMAP
connectivities.

    PYTHONPATH=src python3 benchmarks/singlecell_cluster.py --cells 300000 1300000
    PYTHONPATH=src python3 benchmarks/singlecell_cluster.py --backend gpu --cells 1300000

Prints one row per (cells, method) and a table last; --out writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from warpbio.singlecell import community
from warpbio.singlecell.cluster import (
    cluster_graph,
    graph_modularity,
    leiden_igraph,
    louvain_igraph,
    parallel_louvain,
)
from warpbio.singlecell.neighbors import Knn, build_graph, exact_knn


def mixture_knn(n_cells: int, n_clusters: int, k: int, xp, spread: float, near: int, seed: int = 0):
    """Labels and exact kNN (self first) of a 50-D Gaussian mixture, cluster by cluster."""
    rng = np.random.default_rng(seed)
    dims = 50
    centres = rng.normal(0.0, spread, size=(n_clusters, dims)).astype(np.float32)
    labels = np.sort(rng.integers(0, n_clusters, n_cells))
    points = centres[labels] + rng.normal(size=(n_cells, dims)).astype(np.float32)
    starts = np.searchsorted(labels, np.arange(n_clusters + 1))
    centre_gaps = ((centres[:, None] - centres[None]) ** 2).sum(-1)
    np.fill_diagonal(centre_gaps, np.inf)
    nearest = np.argsort(centre_gaps, axis=1)[:, :near]
    indices = np.empty((n_cells, k), dtype=np.int64)
    distances = np.empty((n_cells, k), dtype=np.float32)
    for c in range(n_clusters):
        own = np.arange(starts[c], starts[c + 1])
        others = [np.arange(starts[o], starts[o + 1]) for o in nearest[c]]
        members = np.concatenate([own, *others])
        found = exact_knn(points[members], k, xp)
        found_idx = found.indices.get() if hasattr(found.indices, "get") else found.indices
        found_dist = found.distances.get() if hasattr(found.distances, "get") else found.distances
        indices[own] = members[found_idx[: own.size]]
        distances[own] = found_dist[: own.size]
    return labels, Knn(indices, distances)


def run(n_cells: int, args, xp) -> list[dict]:
    from sklearn.metrics import adjusted_rand_score

    started = time.time()
    name = f"graph-{n_cells}-{args.clusters}-{args.spread}-{args.near}.npz"
    cached = args.cache / name if args.cache else None
    if cached is not None and cached.exists():
        stored = np.load(cached)
        labels = stored["labels"]
        graph = sp.csr_matrix((stored["data"], stored["indices"], stored["indptr"]))
    else:
        labels, knn = mixture_knn(n_cells, args.clusters, 15, xp, args.spread, args.near)
        graph = build_graph(knn, np).connectivities
        if cached is not None:
            args.cache.mkdir(parents=True, exist_ok=True)
            np.savez(
                cached, labels=labels, data=graph.data, indices=graph.indices, indptr=graph.indptr
            )
    made = time.time() - started
    print(f"{n_cells:,} cells: graph with {graph.nnz:,} stored entries in {made:.0f} s", flush=True)
    rows = []
    arrays = (graph.indptr, graph.indices, graph.data)
    community.leiden(*arrays, 1.0, 0, 1)  # Numba's compile (or cache load) timed apart
    both_settings = {
        "engine": "sequential",
        "parallel_min_cells": 0,
        "sequential_min_cells": 0,
        "leiden_resolution": 1.0,
        "louvain_resolution": 1.0,
        "n_iterations": 2,
    }
    methods = {
        "sequential leiden (n_iterations=-1)": lambda: community.leiden(*arrays, 1.0, 0, -1),
        "sequential leiden (n_iterations=2)": lambda: community.leiden(*arrays, 1.0, 0, 2),
        "sequential louvain": lambda: community.louvain(*arrays, 1.0, 0),
        "sequential leiden + louvain, as the step (wall; leiden's labels)": lambda: cluster_graph(
            graph, both_settings, 0
        )["leiden"]["labels"],
        "igraph leiden (n_iterations=-1)": lambda: leiden_igraph(graph, 1.0, 0, -1),
        "igraph leiden (n_iterations=2)": lambda: leiden_igraph(graph, 1.0, 0, 2),
        "igraph louvain": lambda: louvain_igraph(graph, 1.0, 0),
        f"parallel louvain ({xp.__name__}, 2 iterations)": lambda: parallel_louvain(
            graph, 1.0, xp, iterations=2
        ),
        f"parallel leiden-style ({xp.__name__}, 2 iterations)": lambda: parallel_louvain(
            graph, 1.0, xp, refine=True, iterations=2
        ),
    }
    reference = None
    for name, method in methods.items():
        if args.only and not any(word in name for word in args.only):
            continue
        begin = time.time()
        found = method()
        seconds = time.time() - begin
        if reference is None:
            reference = found
        row = {
            "cells": n_cells,
            "edges": int(graph.nnz // 2),
            "method": name,
            "seconds": round(seconds, 2),
            "clusters": int(found.max()) + 1,
            "modularity": round(graph_modularity(graph, found, 1.0), 4),
            "ari_vs_mixture": round(adjusted_rand_score(labels, found), 4),
            "ari_vs_first": round(adjusted_rand_score(reference, found), 4),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[300_000])
    parser.add_argument("--clusters", type=int, default=400)
    parser.add_argument(
        "--spread", type=float, default=0.45, help="sd of the centres per dimension (1 = noise)"
    )
    parser.add_argument(
        "--near", type=int, default=3, help="nearest other clusters searched with each cluster"
    )
    parser.add_argument("--backend", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--only", nargs="*", help="run methods whose name has one of these words")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--cache", type=Path, help="folder to keep the graphs in between runs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.backend == "gpu":
        import cupy as xp
    else:
        xp = np
    rows = []
    for n in args.cells:
        rows += run(n, args, xp)
    print(
        "\n| cells | undirected edges | method | seconds | clusters | modularity | ARI vs mixture |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['cells']:,} | {r['edges']:,} | {r['method']} | {r['seconds']} | "
            f"{r['clusters']} | {r['modularity']} | {r['ari_vs_mixture']} |"
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
