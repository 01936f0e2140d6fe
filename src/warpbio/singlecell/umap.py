"""UMAP layout of the neighbour graph: deterministic, the same law on CPU and GPU.

umap-learn's optimizer (which scanpy calls) walks the graph's directed edges in
parallel and moves both endpoints in place, drawing negative samples from a
shared generator, so its result depends on thread timing.  Here an epoch is a
pure function of the previous one: each cell walks its own due edges, moving
itself after every sample as umap-learn does, against the *previous epoch's*
positions of all other cells, and writes its new position to a second buffer.
Negative samples come from a counter-based hash of (seed, epoch, edge, draw), so
no generator state is shared and the CPU (Numba, parallel over cells) and GPU
(Numba CUDA, one thread per cell) kernels, compiled from one Python function,
draw the same samples and do the same float64 arithmetic.

What stays as in umap-learn: a and b fitted to min_dist and spread; edges below
max_weight / n_epochs dropped; each edge sampled every max_weight / weight
epochs with ``negative_sample_rate`` negatives per sample; gradients clipped at
4; learning rate decaying linearly; spectral initialisation (leading
eigenvectors of the normalised adjacency, i.e. the smallest of the normalised
Laplacian; component by component for a split graph), scaled to 10 with 1e-4
noise, then to [0, 10], and a random start if the eigensolver fails.  umap-learn
moves both ends of a directed edge and its symmetric graph holds each edge
twice, so a cell receives each due attraction twice per sample; the kernel
applies it twice, keeping the balance between attraction and repulsion.
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from warpbio.progress import Progress
from warpbio.singlecell.segments import MASK32, connected_components, stable_argsort
from warpbio.singlecell.segments import mix32 as _mix32

log = logging.getLogger(__name__)

CLIP = 4.0


@dataclass
class LayoutGraph:
    """The graph the optimizer walks: CSR (symmetric) with umap-learn's schedule."""

    indptr: object  # int64, n + 1
    indices: object  # int32
    weights: object  # float32 per edge (after dropping the weakest)
    epochs_per_sample: object  # float64 per edge
    n_epochs: int


def find_ab_params(spread: float, min_dist: float) -> tuple[float, float]:
    """a, b of the curve 1 / (1 + a d^2b) fitted like umap-learn (and scanpy)."""
    from scipy.optimize import curve_fit

    def curve(x, a, b):
        return 1.0 / (1.0 + a * x ** (2 * b))

    xv = np.linspace(0, spread * 3, 300)
    yv = np.where(xv < min_dist, 1.0, np.exp(-(xv - min_dist) / spread))
    params, _ = curve_fit(curve, xv, yv)
    return float(params[0]), float(params[1])


def default_epochs(n_cells: int) -> int:
    """umap-learn's default: 500 epochs up to 10,000 cells, else 200."""
    return 500 if n_cells <= 10000 else 200


def layout_graph(connectivities, n_epochs: int) -> LayoutGraph:
    """Drop edges too weak to be sampled once (umap-learn), schedule the rest."""
    import scipy.sparse as sp

    graph = sp.csr_matrix(connectivities, dtype=np.float32, copy=True)
    graph.sum_duplicates()
    graph.data[graph.data < graph.data.max() / float(n_epochs)] = 0.0
    graph.eliminate_zeros()
    graph.sort_indices()
    weights = graph.data.astype(np.float64)
    samples = n_epochs * (weights / weights.max())
    epochs_per_sample = float(n_epochs) / samples
    return LayoutGraph(
        indptr=graph.indptr.astype(np.int64),
        indices=graph.indices.astype(np.int32),
        weights=graph.data,
        epochs_per_sample=epochs_per_sample,
        n_epochs=n_epochs,
    )


# --------------------------------------------------------------------------
# the per-cell update: one Python function, compiled for CPU and GPU
# --------------------------------------------------------------------------


def _clip(value):
    if value > CLIP:
        return CLIP
    if value < -CLIP:
        return -CLIP
    return value


def _cell_epoch(
    i,
    old,
    new,
    indptr,
    indices,
    epochs_per_sample,
    epoch_of_next_sample,
    epoch_of_next_negative_sample,
    epochs_per_negative_sample,
    epoch,
    n_cells,
    a,
    b,
    gamma,
    alpha,
    seed,
):
    """Move cell i for one epoch from the positions ``old`` into ``new``.

    The cell's own position moves after every sample, as in umap-learn's loop
    over a cell's edges (which keeps a cell from adding up many clipped pushes
    computed at one stale spot); the other cells' positions are last epoch's.
    """
    yi0 = old[i, 0]
    yi1 = old[i, 1]
    epoch_key = _mix32((seed & MASK32) ^ _mix32(epoch & MASK32))
    for e in range(indptr[i], indptr[i + 1]):
        if epoch_of_next_sample[e] > epoch:
            continue
        j = indices[e]
        d0 = yi0 - old[j, 0]
        d1 = yi1 - old[j, 1]
        dist2 = d0 * d0 + d1 * d1
        if dist2 > 0.0:
            power = math.pow(dist2, b)  # d^2b; d^(2b-2) is power / dist2
            coeff = -2.0 * a * b * (power / dist2) / (a * power + 1.0)
            # both directions of the symmetric edge, as umap-learn applies them
            yi0 += 2.0 * alpha * _clip(coeff * d0)
            yi1 += 2.0 * alpha * _clip(coeff * d1)
        epoch_of_next_sample[e] += epochs_per_sample[e]
        n_negative = int((epoch - epoch_of_next_negative_sample[e]) / epochs_per_negative_sample[e])
        edge_key = _mix32(epoch_key ^ (e & MASK32))
        for p in range(n_negative):
            k = _mix32(edge_key ^ p) % n_cells
            d0 = yi0 - old[k, 0]
            d1 = yi1 - old[k, 1]
            dist2 = d0 * d0 + d1 * d1
            if dist2 > 0.0:
                coeff = 2.0 * gamma * b
                coeff = coeff / ((0.001 + dist2) * (a * math.pow(dist2, b) + 1.0))
                yi0 += alpha * _clip(coeff * d0)
                yi1 += alpha * _clip(coeff * d1)
        epoch_of_next_negative_sample[e] += n_negative * epochs_per_negative_sample[e]
    new[i, 0] = yi0
    new[i, 1] = yi1


# Kernel bodies: module-level so that ``numba``/``cuda``/``_cell_epoch`` are
# globals, which _rebind points at the compiled objects (and which the CUDA
# simulator swaps for its own module, as it does only for globals).
def _all_cells(old, new, indptr, indices, eps, eons, eonns, epns, epoch, n, a, b, gamma, alpha, s):
    for i in numba.prange(n):  # noqa: F821 - bound by _rebind
        _cell_epoch(
            i, old, new, indptr, indices, eps, eons, eonns, epns, epoch, n, a, b, gamma, alpha, s
        )


def _one_cell(old, new, indptr, indices, eps, eons, eonns, epns, epoch, n, a, b, gamma, alpha, s):
    i = cuda.grid(1)  # noqa: F821 - bound by _rebind
    if i < n:
        _cell_epoch(
            i, old, new, indptr, indices, eps, eons, eonns, epns, epoch, n, a, b, gamma, alpha, s
        )


@functools.cache
def cpu_epoch():
    """The CPU twin: Numba, parallel over cells (each writes only its own state)."""
    import numba

    helpers = {"_mix32": numba.njit(_mix32), "_clip": numba.njit(_clip)}
    cell = numba.njit(_rebind(_cell_epoch, **helpers))
    return numba.njit(parallel=True)(_rebind(_all_cells, numba=numba, _cell_epoch=cell))


@functools.cache
def gpu_epoch():
    """The GPU kernel: Numba CUDA, one thread per cell (also runs under CUDASIM)."""
    from warpbio.device import numba_cuda

    cuda = numba_cuda()

    helpers = {"_mix32": cuda.jit(device=True)(_mix32), "_clip": cuda.jit(device=True)(_clip)}
    cell = cuda.jit(device=True)(_rebind(_cell_epoch, **helpers))
    kernel = cuda.jit(_rebind(_one_cell, cuda=cuda, _cell_epoch=cell))

    def run(*args):
        n = args[9]
        threads = 128
        kernel[(n + threads - 1) // threads, threads](*args)

    return run


def _rebind(function, **names):
    """A copy of ``function`` whose globals resolve ``names`` to compiled helpers."""
    import types

    scope = dict(function.__globals__)
    scope.update(names)
    return types.FunctionType(
        function.__code__, scope, function.__name__, function.__defaults__, function.__closure__
    )


# --------------------------------------------------------------------------
# optimisation
# --------------------------------------------------------------------------


def optimize_layout(
    positions,
    graph: LayoutGraph,
    a: float,
    b: float,
    seed: int,
    xp: ModuleType = np,
    gamma: float = 1.0,
    initial_alpha: float = 1.0,
    negative_sample_rate: float = 5.0,
    n_epochs: int | None = None,
    kernel: str = "auto",
):
    """Run the epochs; returns float64 positions on ``xp``'s device.

    ``kernel``: ``auto`` (CPU twin for NumPy, CUDA kernel for CuPy), ``cpu`` or
    ``cuda`` (the latter also with NumPy arrays under NUMBA_ENABLE_CUDASIM).
    """
    n_epochs = graph.n_epochs if n_epochs is None else n_epochs
    if kernel == "auto":
        kernel = "cpu" if xp.__name__ == "numpy" else "cuda"
    run = cpu_epoch() if kernel == "cpu" else gpu_epoch()
    old = xp.ascontiguousarray(xp.asarray(positions, dtype=xp.float64))
    new = xp.empty_like(old)
    indptr = xp.asarray(graph.indptr)
    indices = xp.asarray(graph.indices)
    eps = xp.asarray(graph.epochs_per_sample)
    epns = eps / negative_sample_rate
    eons = eps.copy()
    eonns = epns.copy()
    n = int(old.shape[0])
    alpha = float(initial_alpha)
    progress = Progress("UMAP epochs", n_epochs, unit="epochs")
    for epoch in range(n_epochs):
        run(old, new, indptr, indices, eps, eons, eonns, epns, epoch, n, a, b, gamma, alpha, seed)
        old, new = new, old
        alpha = initial_alpha * (1.0 - float(epoch) / float(n_epochs))
        progress.update()
    return old


# --------------------------------------------------------------------------
# initialisation
# --------------------------------------------------------------------------


def _edge_rows(indptr, n_edges: int, xp):
    return xp.searchsorted(indptr, xp.arange(n_edges, dtype=xp.int64), side="right") - 1


def _spectral(indptr, indices, weights, dim: int, xp: ModuleType):
    """Eigenvectors 2..dim+1 of D^-1/2 A D^-1/2 (the smallest of the normalised Laplacian)."""
    from warpbio.singlecell.segments import segment_sums

    n = int(indptr.shape[0]) - 1
    count = dim + 1
    degree = segment_sums(weights.astype(xp.float64), indptr, xp)
    scale = 1.0 / xp.sqrt(degree)
    rows = _edge_rows(indptr, int(indices.shape[0]), xp)
    values = weights.astype(xp.float64) * scale[rows] * scale[indices]
    ncv = min(n - 1, max(2 * count + 1, min(int(math.sqrt(n)), 64)))
    # umap-learn allows 5n ARPACK iterations; bounded here so that a graph with
    # tiny eigengaps cannot hold up a million-cell run (the start is only a start)
    max_restarts = min(5 * n, 2000)
    if xp.__name__ == "numpy":
        import scipy.sparse as sp
        from scipy.sparse.linalg import eigsh

        matrix = sp.csr_matrix((values, indices, indptr), shape=(n, n))
        eigenvalues, vectors = eigsh(
            matrix, count, which="LA", ncv=ncv, tol=1e-4, v0=np.ones(n), maxiter=max_restarts
        )
    else:
        import cupyx.scipy.sparse as csp
        from cupyx.scipy.sparse.linalg import eigsh

        matrix = csp.csr_matrix(
            (values, indices.astype(xp.int32), indptr.astype(xp.int32)), shape=(n, n)
        )
        eigenvalues, vectors = eigsh(
            matrix, k=count, which="LA", ncv=ncv, tol=1e-4, v0=xp.ones(n), maxiter=max_restarts
        )
    order = xp.argsort(-eigenvalues)[1:count]
    vectors = vectors[:, order]
    if not bool(xp.isfinite(vectors).all()):
        raise FloatingPointError("eigenvectors are not finite")
    # eigenvectors have no sign; fix one so CPU and GPU start on the same side
    peak = xp.argmax(xp.abs(vectors), axis=0)
    signs = xp.sign(vectors[peak, xp.arange(dim)])
    return vectors * xp.where(signs == 0, 1.0, signs)[None, :]


def _component_centres(pca: np.ndarray, component: np.ndarray, n_components: int, dim: int, seed):
    """Where each connected component goes (umap-learn's component layout)."""
    if n_components <= 2 * dim:
        k = int(np.ceil(n_components / 2.0))
        base = np.hstack([np.eye(k), np.zeros((k, dim - k))])
        return np.vstack([base, -base])[:n_components]
    from sklearn.manifold import SpectralEmbedding

    # float64: with float32 input scikit-learn's solver is not repeatable, and far-apart
    # components (an identity affinity) leave it nothing but its start to go on
    centroids = np.stack(
        [pca[component == c].mean(axis=0, dtype=np.float64) for c in range(n_components)]
    )
    squared = ((centroids[:, None, :] - centroids[None, :, :]) ** 2).sum(-1)
    with warnings.catch_warnings():
        # far-apart components give a disconnected affinity, as in umap-learn
        warnings.filterwarnings("ignore", message="Graph is not fully connected")
        embedding = SpectralEmbedding(
            n_components=dim, affinity="precomputed", random_state=seed
        ).fit_transform(np.exp(-squared))
    return embedding / embedding.max()


def spectral_layout(graph: LayoutGraph, pca: np.ndarray, seed: int, xp: ModuleType, dim: int = 2):
    """Spectral start (umap-learn's, component by component if the graph splits)."""
    from warpbio.device import to_numpy

    indptr = xp.asarray(graph.indptr)
    indices = xp.asarray(graph.indices)
    weights = xp.asarray(graph.weights)
    rows = _edge_rows(indptr, int(indices.shape[0]), xp)
    labels = connected_components(rows, indices.astype(xp.int64), int(indptr.shape[0]) - 1, xp)
    _, component = xp.unique(labels, return_inverse=True)
    component = component.ravel()
    n_components = int(component.max()) + 1
    if n_components == 1:
        return _spectral(indptr, indices, weights, dim, xp)
    log.info("graph has %d connected components; laid out one by one", n_components)
    host_component = to_numpy(component)
    centres = _component_centres(pca, host_component, n_components, dim, seed)
    rng = np.random.default_rng(seed)
    result = xp.empty((int(component.shape[0]), dim), dtype=xp.float64)
    edge_order = stable_argsort(component[rows], xp)
    edge_starts = to_numpy(
        xp.searchsorted(component[rows][edge_order], xp.arange(n_components + 1))
    )
    for c in range(n_components):
        members = xp.flatnonzero(component == c)
        size = int(members.shape[0])
        gaps = np.sqrt(((centres - centres[c]) ** 2).sum(-1))
        data_range = gaps[gaps > 0].min() / 2.0
        if size <= 2 * dim or size <= dim + 1:
            jitter = rng.uniform(-data_range, data_range, size=(size, dim))
            result[members] = xp.asarray(jitter + centres[c])
            continue
        edges = edge_order[edge_starts[c] : edge_starts[c + 1]]
        new_id = xp.full(int(component.shape[0]), -1, dtype=xp.int64)
        new_id[members] = xp.arange(size, dtype=xp.int64)
        counts = xp.diff(indptr)[members]
        sub_indptr = xp.concatenate([xp.zeros(1, dtype=xp.int64), xp.cumsum(counts)])
        sub = _spectral(
            sub_indptr, new_id[indices[edges]].astype(xp.int32), weights[edges], dim, xp
        )
        result[members] = sub * (data_range / float(xp.abs(sub).max())) + xp.asarray(centres[c])
    return result


def initial_positions(
    graph: LayoutGraph, pca: np.ndarray, seed: int, xp: ModuleType, init: str = "spectral"
):
    """Start positions in [0, 10]^2 as umap-learn makes them; random if spectral fails."""
    rng = np.random.default_rng(seed)
    n = int(graph.indptr.shape[0]) - 1
    embedding = None
    if init == "spectral":
        try:
            raw = np.asarray(_to_host(spectral_layout(graph, pca, seed, xp)), dtype=np.float64)
            expanded = (raw * (10.0 / np.abs(raw).max())).astype(np.float32)
            embedding = expanded + rng.normal(scale=0.0001, size=expanded.shape).astype(np.float32)
        except Exception as error:  # ARPACK/cupyx failures come in many types
            log.warning("spectral initialisation failed (%s); starting from random", error)
    if embedding is None:
        embedding = rng.uniform(low=-10.0, high=10.0, size=(n, 2)).astype(np.float32)
    low, high = embedding.min(axis=0), embedding.max(axis=0)
    return (10.0 * (embedding - low) / (high - low)).astype(np.float32)


def _to_host(array):
    from warpbio.device import to_numpy

    return to_numpy(array)


def umap_embedding(
    connectivities,
    pca: np.ndarray,
    seed: int,
    xp: ModuleType = np,
    min_dist: float = 0.5,
    spread: float = 1.0,
    n_epochs: int | None = None,
    negative_sample_rate: float = 5.0,
    learning_rate: float = 1.0,
    repulsion_strength: float = 1.0,
    init: str = "spectral",
) -> tuple[np.ndarray, dict]:
    """2-D UMAP of a connectivities graph: float32 (n, 2) on the host, and params
    (with the seconds of the start and of the layout epochs)."""
    import time

    started = time.perf_counter()
    n = connectivities.shape[0]
    epochs = int(n_epochs) if n_epochs else default_epochs(n)
    a, b = find_ab_params(spread, min_dist)
    graph = layout_graph(connectivities, epochs)
    start = initial_positions(graph, pca, seed, xp, init)  # on the host: synchronised
    epochs_started = time.perf_counter()
    positions = optimize_layout(
        start,
        graph,
        a,
        b,
        seed,
        xp,
        gamma=repulsion_strength,
        initial_alpha=learning_rate,
        negative_sample_rate=negative_sample_rate,
    )
    embedding = np.asarray(_to_host(positions), dtype=np.float32)
    seconds = {
        "start_seconds": round(epochs_started - started, 4),
        "epochs_seconds": round(time.perf_counter() - epochs_started, 4),
    }
    params = {"a": a, "b": b, "n_epochs": epochs, "min_dist": min_dist, "spread": spread}
    return embedding, {**params, **seconds}


# --------------------------------------------------------------------------
# Snakemake step
# --------------------------------------------------------------------------


def umap_step(ctx) -> dict:
    """Snakemake step: graph.h5ad (+ X_pca for split graphs) -> umap.tsv."""
    import time

    import pandas as pd

    from warpbio.io import atomic_write
    from warpbio.singlecell.anndata_io import read_graph, read_pca

    settings = dict(ctx.params.umap)
    graph = read_graph(ctx.input.graph)
    n_pcs = int(graph.uns["neighbors"]["params"]["n_pcs"])
    pca = read_pca(ctx.input.h5ad, n_pcs)
    if pca.shape[0] != graph.n_obs:
        raise ValueError(
            f"{ctx.input.graph} has {graph.n_obs} cells but {ctx.input.h5ad} has "
            f"{pca.shape[0]}; rerun singlecell_neighbors"
        )
    if ctx.xp.__name__ == "numpy":
        import numba

        numba.set_num_threads(max(1, min(int(ctx.threads), numba.config.NUMBA_NUM_THREADS)))
    started = time.time()
    embedding, params = umap_embedding(
        graph.obsp["connectivities"],
        pca,
        seed=int(ctx.seed),
        xp=ctx.xp,
        min_dist=float(settings["min_dist"]),
        spread=float(settings["spread"]),
        n_epochs=int(settings["n_epochs"]) or None,
        negative_sample_rate=float(settings["negative_sample_rate"]),
        learning_rate=float(settings["learning_rate"]),
        repulsion_strength=float(settings["repulsion_strength"]),
        init=settings["init"],
    )
    seconds = time.time() - started
    table = pd.DataFrame(embedding, index=graph.obs_names, columns=["UMAP1", "UMAP2"])
    with atomic_write(ctx.output.umap) as tmp:
        table.to_csv(tmp, sep="\t", index_label="cell", float_format="%.9g")
    log.info("UMAP of %d cells, %d epochs, in %.2f s", graph.n_obs, params["n_epochs"], seconds)
    return {**params, "seconds": round(seconds, 3)}
