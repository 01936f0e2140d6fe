"""Leiden and Louvain communities of the connectivities graph.

Three engines:

``sequential`` (CPU, Numba; ``warpbio.singlecell.community``): the same
Louvain and Leiden algorithms as igraph, compiled, with Leiden and Louvain run
at once in two threads; 10-20x igraph's speed on 50,000 cells, seeded, with
partitions that agree with igraph's as igraph's own seeds agree with each other.

``igraph`` (CPU): python-igraph's ``community_leiden`` (modularity, weighted,
resolution, ``n_iterations``) and ``community_multilevel`` (Louvain, weighted,
resolution), with igraph's random generator seeded from the config for the
duration of the call, so reruns are identical.  Graph and generator are built
as scanpy's ``leiden(flavor='igraph')`` builds them, so the same seed gives
scanpy's partition.

``parallel`` (NumPy or CuPy, one code path): a synchronous Louvain in the style
of GPU implementations.  Each sweep scores, for every node at once, the
modularity gain of joining each neighbouring community (edge weights summed per
(node, community) by a sort and a segmented sum), and moves every node with a
positive gain to its best community.  To keep two nodes from swapping
communities forever, even sweeps only allow moves to a lower community id and
odd sweeps to a higher one (cuGraph's rule); a level ends when no node gains or
modularity stops rising, keeping the best partition seen.  Communities then become nodes of
the next level's graph.  With ``refine=True`` a Leiden-style refinement runs
before each aggregation: inside each community, nodes start as singletons and
only singletons merge (same synchronous moves and rule), so aggregated nodes
are connected pieces of their community; the next level starts from the
unrefined communities.  The step runs the hierarchy twice, the second time from
the first's partition (igraph's ``n_iterations=2``).  Synchronous moves can
leave a final community in several pieces, so each is split into its connected
parts at the end (which never lowers modularity).  Decisions depend only on
sort-based sums, so the result is the same on every run and, up to float
rounding in the sums, on CPU and GPU.
"""

from __future__ import annotations

import logging
import os
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from warpbio.singlecell.segments import (
    connected_components,
    first_per_segment,
    segment_sums,
    stable_argsort,
    sum_by_key,
)

log = logging.getLogger(__name__)

ENGINES = ("auto", "igraph", "sequential", "parallel")
MIN_GAIN = 1e-12  # gains below this (relative to 2m) are float noise, not moves


# --------------------------------------------------------------------------
# igraph
# --------------------------------------------------------------------------


def igraph_graph(connectivities):
    """Undirected weighted igraph Graph with one edge per stored entry.

    A symmetric matrix so gives each pair twice (double weight, which leaves
    modularity unchanged): the graph scanpy's igraph flavour builds, so that
    with the same generator the partitions agree.
    """
    import igraph as ig
    import scipy.sparse as sp

    matrix = sp.csr_matrix(connectivities)
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    # igraph reads pairs of Python ints twice as fast as a 2-D NumPy array
    # (0.44 vs 0.95 s for 1.1M edges); same edges in the same order
    edges = list(zip(rows.tolist(), matrix.indices.tolist(), strict=True))
    graph = ig.Graph(n=matrix.shape[0], edges=edges)
    graph.es["weight"] = matrix.data.astype(np.float64)
    return graph


class _IgraphRandom:
    """igraph's generator interface over numpy's RandomState (scanpy's convention)."""

    def __init__(self, seed: int) -> None:
        self._rng = np.random.RandomState(seed)

    def getrandbits(self, bits: int) -> int:
        return self._rng.tomaxint() & ((1 << bits) - 1)

    def randint(self, low: int, high: int) -> int:
        return self._rng.randint(low, high + 1)

    def random(self) -> float:
        return self._rng.random()

    def gauss(self, mu: float, sigma: float) -> float:
        return self._rng.normal(mu, sigma)


@contextmanager
def igraph_seed(seed: int):
    """igraph draws from a Python-level generator; seed one for the duration of a call."""
    import igraph as ig

    ig.set_random_number_generator(_IgraphRandom(seed))
    try:
        yield
    finally:
        ig.set_random_number_generator(random)


def leiden_igraph(
    connectivities, resolution: float, seed: int, n_iterations: int = -1, graph=None
) -> np.ndarray:
    graph = graph or igraph_graph(connectivities)
    with igraph_seed(seed):
        found = graph.community_leiden(
            objective_function="modularity",
            weights="weight",
            resolution=resolution,
            n_iterations=n_iterations,
        )
    return np.asarray(found.membership, dtype=np.int64)


def louvain_igraph(connectivities, resolution: float, seed: int, graph=None) -> np.ndarray:
    graph = graph or igraph_graph(connectivities)
    with igraph_seed(seed):
        found = graph.community_multilevel(weights="weight", resolution=resolution)
    return np.asarray(found.membership, dtype=np.int64)


# --------------------------------------------------------------------------
# modularity and labels
# --------------------------------------------------------------------------


def modularity(src, dst, weights, labels, resolution: float, xp: ModuleType = np) -> float:
    """Newman modularity with resolution of a graph given as COO, both directions."""
    m2 = float(weights.sum())
    inside = float(weights[labels[src] == labels[dst]].sum())
    degree = segment_sums(weights, _starts_of(src, int(labels.shape[0]), xp), xp)
    _, totals = sum_by_key(labels, degree, xp)
    return inside / m2 - resolution * float((totals * totals).sum()) / (m2 * m2)


def graph_modularity(connectivities, labels, resolution: float, xp: ModuleType = np) -> float:
    src, dst, weights = coo_arrays(connectivities, xp)
    return modularity(src, dst, weights, xp.asarray(labels), resolution, xp)


def relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Cluster ids 0, 1, ... from the largest cluster down (ties: first cell first)."""
    labels = np.asarray(labels)
    values, first, counts = np.unique(labels, return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))
    rank = np.empty(values.size, dtype=np.int64)
    rank[order] = np.arange(values.size)
    return rank[np.searchsorted(values, labels)]


def coo_arrays(connectivities, xp: ModuleType = np):
    """(src, dst, float64 weight) of a host CSR, on ``xp``'s device, rows sorted."""
    import scipy.sparse as sp

    matrix = sp.csr_matrix(connectivities)
    indptr = xp.asarray(matrix.indptr.astype(np.int64))
    src = xp.searchsorted(indptr, xp.arange(matrix.nnz, dtype=xp.int64), side="right") - 1
    dst = xp.asarray(matrix.indices.astype(np.int64))
    return src, dst, xp.asarray(matrix.data, dtype=xp.float64)


def _starts_of(sorted_src, n: int, xp):
    return xp.searchsorted(sorted_src, xp.arange(n + 1, dtype=xp.int64))


# --------------------------------------------------------------------------
# synchronous (parallel) Louvain / Leiden
# --------------------------------------------------------------------------


@dataclass
class _Level:
    """One level's graph: COO sorted by source, both directions, self loops kept."""

    n: int
    src: object
    dst: object
    weights: object
    degree: object  # float64 row sums (self loops included)


def _level(n: int, src, dst, weights, xp) -> _Level:
    degree = segment_sums(weights, _starts_of(src, n, xp), xp)
    return _Level(n, src, dst, weights, degree)


def _community_totals(comm, degree, n: int, xp):
    """Sum of node degrees per community id (ids < n), deterministic."""
    keys, sums = sum_by_key(comm, degree, xp)
    totals = xp.zeros(n, dtype=xp.float64)
    totals[keys] = sums
    return totals


def _sweep_moves(level: _Level, comm, allowed_in, resolution: float, m2: float, upward: bool, xp):
    """Best positive-gain move per node; returns (movers, targets).

    ``allowed_in``: optional per-node group id; a node may only join a
    community whose nodes share its group (the refinement's constraint).
    """
    n = level.n
    off = level.src != level.dst
    src, dst, w = level.src[off], level.dst[off], level.weights[off]
    keys, link = sum_by_key(src * n + comm[dst], w, xp)
    node = keys // n
    target = keys % n
    own = comm[node]
    is_own = target == own
    own_link = xp.zeros(n, dtype=xp.float64)
    own_link[node[is_own]] = link[is_own]
    totals = _community_totals(comm, level.degree, n, xp)
    k = level.degree[node]
    stay = own_link[node] - resolution * k * (totals[own] - k) / m2
    gain = (link - resolution * k * totals[target] / m2) - stay
    ok = (~is_own) & (gain > MIN_GAIN * m2)
    ok &= (target > own) if upward else (target < own)
    if allowed_in is not None:
        ok &= allowed_in[node] == allowed_in[target]
    picks = xp.flatnonzero(ok)
    if picks.shape[0] == 0:
        empty = xp.zeros(0, dtype=xp.int64)
        return empty, empty
    # best gain per node, ties to the lower community id (picks are sorted by
    # (node, target), so a stable sort by -gain then by node keeps that order)
    by_gain = picks[stable_argsort(-gain[picks], xp)]
    by_node = by_gain[stable_argsort(node[by_gain], xp)]
    first = first_per_segment(node[by_node], n, xp)
    movers = xp.flatnonzero(first >= 0)
    chosen = by_node[first[movers]]
    # All movers judged the totals before anyone moved. Where many join one
    # community at once, re-judge each with the degrees of the others joining
    # it added; this keeps a sweep from piling everything into a few giants.
    targets = target[chosen]
    joining_keys, joining = sum_by_key(targets, level.degree[movers], xp)
    incoming = xp.zeros(n, dtype=xp.float64)
    incoming[joining_keys] = joining
    k_movers = level.degree[movers]
    crowded = totals[targets] + incoming[targets] - k_movers
    still = (link[chosen] - resolution * k_movers * crowded / m2) - stay[chosen] > MIN_GAIN * m2
    return movers[still], targets[still]


def _singleton_merges(comm, movers, targets, n: int, xp):
    """Leiden's refinement: only nodes still alone move, and never into a piece
    whose only node is leaving in the same sweep (two nodes could meet there
    without an edge between them); so every piece stays connected."""
    sizes = xp.bincount(comm, minlength=n)
    alone = sizes[comm[movers]] == 1
    movers, targets = movers[alone], targets[alone]
    leaving = xp.zeros(n, dtype=bool)
    leaving[movers] = True
    owner = xp.full(n, -1, dtype=xp.int64)
    single = xp.flatnonzero(sizes[comm] == 1)
    owner[comm[single]] = single
    vacated = (sizes[targets] == 1) & leaving[xp.maximum(owner[targets], 0)]
    return movers[~vacated], targets[~vacated]


def split_disconnected(src, dst, labels, xp):
    """Each cluster split into its connected parts (never lowers modularity)."""
    inside = labels[src] == labels[dst]
    return connected_components(src[inside], dst[inside], int(labels.shape[0]), xp)


def _level_modularity(level: _Level, comm, resolution: float, m2: float, xp) -> float:
    inside = float(level.weights[comm[level.src] == comm[level.dst]].sum())
    totals = _community_totals(comm, level.degree, level.n, xp)
    return inside / m2 - resolution * float((totals * totals).sum()) / (m2 * m2)


def _local_moving(
    level: _Level,
    comm,
    resolution: float,
    m2: float,
    xp,
    max_sweeps: int,
    allowed_in=None,
    singletons_only: bool = False,
    patience: int = 4,
):
    """Synchronous sweeps; returns the partition of highest modularity seen.

    Stops when no node would gain in an upward and a downward sweep, or when
    modularity has not improved for ``patience`` sweeps: the up/down rule stops
    two nodes swapping, but a few nodes can still chase each other round longer
    cycles, and they would otherwise run the sweeps out.
    """
    comm = comm.copy()
    best, best_q = comm.copy(), _level_modularity(level, comm, resolution, m2, xp)
    idle = stale = 0
    for sweep in range(max_sweeps):
        movers, targets = _sweep_moves(
            level, comm, allowed_in, resolution, m2, upward=bool(sweep % 2), xp=xp
        )
        idle = idle + 1 if movers.shape[0] == 0 else 0
        if idle >= 2:
            break
        if singletons_only and movers.shape[0]:
            movers, targets = _singleton_merges(comm, movers, targets, level.n, xp)
        if movers.shape[0] == 0:
            continue
        comm[movers] = targets
        quality = _level_modularity(level, comm, resolution, m2, xp)
        if quality > best_q + 1e-10:
            best, best_q, stale = comm.copy(), quality, 0
        else:
            stale += 1
            if stale >= patience:
                break
    return best


def _aggregate(level: _Level, comm, xp):
    """The graph of communities: nodes = unique ids of ``comm`` (0..C-1)."""
    ids, new = xp.unique(comm, return_inverse=True)
    new = new.ravel().astype(xp.int64)
    count = int(ids.shape[0])
    keys, weights = sum_by_key(new[level.src] * count + new[level.dst], level.weights, xp)
    return _level(count, keys // count, keys % count, weights, xp), new


def parallel_louvain(
    connectivities,
    resolution: float = 1.0,
    xp: ModuleType = np,
    refine: bool = False,
    iterations: int = 1,
    max_levels: int = 32,
    max_sweeps: int = 64,
) -> np.ndarray:
    """Community per cell (host int64); ``refine=True`` for the Leiden variant.

    ``iterations`` > 1 runs the whole hierarchy again from the last partition
    (igraph's ``n_iterations``); with the refinement this is how Leiden improves
    a partition it has found.
    """
    from warpbio.device import to_numpy

    src, dst, weights = coo_arrays(connectivities, xp)
    n = int(connectivities.shape[0])
    base = _level(n, src, dst, weights, xp)
    m2 = float(weights.sum())
    partition = xp.arange(n, dtype=xp.int64)
    for _ in range(iterations):
        partition = _one_pass(base, partition, resolution, m2, xp, refine, max_levels, max_sweeps)
    # synchronous moves can leave a community in pieces; split them
    partition = split_disconnected(src, dst, partition, xp)
    return relabel_by_size(to_numpy(partition))


def _one_pass(base: _Level, start, resolution, m2, xp, refine, max_levels, max_sweeps):
    """Local moving, (refinement,) aggregation, level after level, from ``start``."""
    level = base
    membership = xp.arange(base.n, dtype=xp.int64)
    start = xp.unique(start, return_inverse=True)[1].ravel().astype(xp.int64)
    for depth in range(max_levels):
        comm = _local_moving(level, start, resolution, m2, xp, max_sweeps)
        if refine:
            pieces = _local_moving(
                level,
                xp.arange(level.n, dtype=xp.int64),
                resolution,
                m2,
                xp,
                max_sweeps,
                allowed_in=comm,
                singletons_only=True,
            )
        else:
            pieces = comm
        n_pieces = int(xp.unique(pieces).shape[0])
        log.info("level %d: %d nodes -> %d communities", depth, level.n, n_pieces)
        if n_pieces == level.n:
            return comm[membership]
        next_level, piece_of_node = _aggregate(level, pieces, xp)
        membership = piece_of_node[membership]
        # each aggregated node starts in the community that holds it (without
        # the refinement, pieces are the communities: every node starts alone)
        parent = xp.zeros(next_level.n, dtype=xp.int64)
        parent[piece_of_node] = comm
        start = xp.unique(parent, return_inverse=True)[1].ravel().astype(xp.int64)
        level = next_level
    return start[membership]  # out of levels


# --------------------------------------------------------------------------
# Snakemake step
# --------------------------------------------------------------------------


def choose_engine(
    engine: str,
    gpu: bool,
    n_cells: int = 0,
    parallel_min_cells: int = 0,
    sequential_min_cells: int = 0,
) -> str:
    """auto: igraph below ``sequential_min_cells`` cells (scanpy's own partition, at
    under a second there), the sequential engine from there, and on the gpu
    backend the parallel engine from ``parallel_min_cells`` cells up."""
    if engine not in ENGINES:
        raise ValueError(f"clustering engine {engine!r} is not one of {', '.join(ENGINES)}")
    if engine != "auto":
        return engine
    if gpu and n_cells >= parallel_min_cells:
        return "parallel"
    return "sequential" if n_cells >= sequential_min_cells else "igraph"


def _sequential_both(arrays, settings: dict, seed: int, threads: int) -> dict:
    """Leiden and Louvain of the sequential engine on the graph's ``csr_arrays``;
    method -> (labels, seconds of its own run). With two threads or more, Louvain runs
    in one thread beside Leiden (Numba releases the GIL) and Leiden's refinement takes
    the others."""
    from concurrent.futures import ThreadPoolExecutor

    from warpbio.singlecell import community

    def timed(function, *args, **kwargs):
        started = time.perf_counter()
        labels = function(*arrays, *args, **kwargs)
        return labels, time.perf_counter() - started

    leiden_args = (float(settings["leiden_resolution"]), seed, int(settings["n_iterations"]))
    louvain_args = (float(settings["louvain_resolution"]), seed)
    if threads < 2:
        return {
            "leiden": timed(community.leiden, *leiden_args, threads=1),
            "louvain": timed(community.louvain, *louvain_args),
        }
    with ThreadPoolExecutor(max_workers=2) as pool:
        leiden = pool.submit(timed, community.leiden, *leiden_args, threads=threads - 1)
        louvain = pool.submit(timed, community.louvain, *louvain_args)
        return {"leiden": leiden.result(), "louvain": louvain.result()}


def cluster_graph(
    connectivities, settings: dict, seed: int, xp: ModuleType = np, threads: int | None = None
) -> dict:
    """Leiden and Louvain labels (relabelled by size) plus timings and modularity;
    ``threads``: CPU threads for the sequential engine (None: every core)."""
    gpu = xp.__name__ != "numpy"
    n_cells = int(connectivities.shape[0])
    engine = choose_engine(
        settings["engine"],
        gpu,
        n_cells,
        int(settings["parallel_min_cells"]),
        int(settings["sequential_min_cells"]),
    )
    graph = igraph_graph(connectivities) if engine == "igraph" else None
    both, arrays = {}, None
    if engine == "sequential":
        import scipy.sparse as sp

        from warpbio.singlecell import community

        matrix = sp.csr_matrix(connectivities)  # converted once for both methods and scores
        arrays = community.csr_arrays(matrix.indptr, matrix.indices, matrix.data)
        both = _sequential_both(arrays, settings, seed, threads or os.cpu_count() or 1)
    results = {}
    for method in ("leiden", "louvain"):
        resolution = float(settings[f"{method}_resolution"])
        started = time.time()
        if engine == "sequential":
            labels, seconds = both[method]
        elif engine == "igraph" and method == "leiden":
            labels = leiden_igraph(
                connectivities, resolution, seed, int(settings["n_iterations"]), graph
            )
        elif engine == "igraph":
            labels = louvain_igraph(connectivities, resolution, seed, graph)
        else:
            labels = parallel_louvain(
                connectivities, resolution, xp, refine=method == "leiden", iterations=2
            )
        if engine != "sequential":
            seconds = time.time() - started
        labels = relabel_by_size(labels)
        results[method] = {
            "labels": labels,
            "engine": engine,
            "resolution": resolution,
            "seconds": seconds,
            # the sequential engine's labels are on the host: one compiled pass there
            "modularity": community.modularity(*arrays, labels, resolution)
            if arrays is not None
            else graph_modularity(connectivities, labels, resolution, xp),
        }
        log.info(
            "%s (%s, resolution %.3g): %d clusters, modularity %.4f, %.2f s",
            method,
            engine,
            resolution,
            int(labels.max()) + 1,
            results[method]["modularity"],
            seconds,
        )
    return results


def cluster_step(ctx) -> dict:
    """Snakemake step: graph.h5ad (+ obs of preprocessed.h5ad) -> clusters, scores, sizes."""
    import pandas as pd
    from sklearn.metrics import adjusted_rand_score

    from warpbio.io import atomic_write
    from warpbio.singlecell.anndata_io import read_graph, read_obs

    graph = read_graph(ctx.input.graph)
    obs = read_obs(ctx.input.h5ad)
    if list(obs.index) != list(graph.obs_names):
        raise ValueError(
            f"{ctx.input.graph}: its cells differ from those of {ctx.input.h5ad}; "
            "rerun singlecell_neighbors"
        )
    results = cluster_graph(
        graph.obsp["connectivities"], dict(ctx.params.cluster), int(ctx.seed), ctx.xp, ctx.threads
    )
    clusters = pd.DataFrame(index=graph.obs_names)
    for column in ("sample", "true_cell_type"):
        if column in obs:
            clusters[column] = obs[column].astype(str).to_numpy()
    truth = clusters["true_cell_type"].to_numpy() if "true_cell_type" in clusters else None
    scores, sizes = [], []
    for method, found in results.items():
        labels = found["labels"]
        clusters[method] = labels
        ari = adjusted_rand_score(truth, labels) if truth is not None else float("nan")
        scores.append(
            {
                "method": method,
                "engine": found["engine"],
                "resolution": found["resolution"],
                "n_clusters": int(labels.max()) + 1,
                "modularity": found["modularity"],
                "ari_vs_truth": ari,
            }
        )
        counts = np.bincount(labels)
        sizes += [{"method": method, "cluster": c, "n_cells": int(n)} for c, n in enumerate(counts)]
    scores = pd.DataFrame(scores)
    with atomic_write(ctx.output.clusters) as tmp:
        clusters.to_csv(tmp, sep="\t", index_label="cell")
    with atomic_write(ctx.output.scores) as tmp:
        scores.to_csv(tmp, sep="\t", index=False, float_format="%.6g", na_rep="NA")
    with atomic_write(ctx.output.sizes) as tmp:
        pd.DataFrame(sizes).to_csv(tmp, sep="\t", index=False)
    # wall times go to the provenance only: scores.tsv is identical across reruns
    return {
        "scores": scores.replace({np.nan: None}).to_dict(orient="records"),
        "seconds": {method: round(found["seconds"], 3) for method, found in results.items()},
    }
