"""The preprocessing chain over row chunks of cells held by Dask workers, one
worker per GPU (or CPU worker processes): the multi-GPU path of
:func:`~warpbio.singlecell.preprocess.preprocess_counts`, with the same results.

Each worker reads its own contiguous range of cells straight from the .h5ad
(:func:`~warpbio.singlecell.csr_io.read_csr_rows`) and keeps it resident on its
device from the raw counts to the PCA projection. What travels are per-cell and
per-gene vectors and small matrices, the moments each global step needs:

==========================  ===========================================  ======================
stage                       from each chunk (host)                       back to the chunks
==========================  ===========================================  ======================
check counts                bad-value count, first bad value and row     -
QC metrics                  total_counts, n_genes, pct_mt per cell       -
filter                      cells expressing each gene (int64)           kept cells, genes
HVG seurat_v3               per-batch gene sums, squares; clipped ones   clip values per gene
normalize_total             per-cell totals (only for the median)        target_sum
HVG seurat / cell_ranger    per-gene sums, sums of squares               HVG columns
regress_out                 C^T C, C^T X (k+1 rows)                      coefficients
scale                       per-gene sums, sums of squares               mean, std
PCA                         sums, lower triangle of X^T X (float64)      components
==========================  ===========================================  ======================

The client adds the chunks' moments in chunk order (deterministic for a given
chunking) and runs the same per-gene code as the single-device chain (HVG
tables, loess, least-squares solve); ``eigh`` runs on the first worker's device.
Row-local values (QC metrics, filters, normalized data) equal the single-device
path's exactly; sums over cells differ only in float64 summation order. The
embedding comes back as one float32 array in cell order.

Workers: dask-cuda's ``LocalCUDACluster`` on the gpu backend when it imports,
else one ``Nanny`` per GPU with ``CUDA_VISIBLE_DEVICES`` set to that GPU (what
LocalCUDACluster does at its core); on the cpu backend worker processes (or
threads) with no GPU visible. Worker processes start by ``spawn``: everything
they run is importable from this module, and a Snakemake script that starts
them must guard its body with ``if __name__ == "__main__"`` (spawn re-imports
the main script).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from warpbio.singlecell.csr_io import csr_shape, read_csr_rows
from warpbio.singlecell.hvg import (
    _group_column_sums,
    batch_codes,
    dispersion_table,
    mean_var_from_sums,
    seurat_v3_clip,
    seurat_v3_finish,
    seurat_v3_n_top,
)
from warpbio.singlecell.pca import PcaResult, check_n_comps, decompose_scatter, project
from warpbio.singlecell.preprocess import (
    BadCounts,
    FilterResult,
    PreprocessError,
    PreprocessResult,
    PreprocessSettings,
    bad_counts_message,
    check_hvg_inputs,
    count_problems,
    covariate_matrix,
    divide_by_size_factors,
    effective_n_pcs,
    filter_cells,
    filter_genes,
    hvg_column_indices,
    log1p,
    normalization_target,
    stage,
)
from warpbio.singlecell.qc import QcMetrics, cell_qc_metrics, mito_mask
from warpbio.singlecell.scale import (
    apply_scale,
    column_moments,
    mean_std_from_moments,
    regression_coefficients,
    regression_moments,
    subtract_fit,
)
from warpbio.singlecell.sparse import Csr, _host, from_scipy

log = logging.getLogger(__name__)

CELL_METRICS = ("total_counts", "n_genes_by_counts", "pct_counts_mt")
WORKER_CHECK_S = 5.0  # how often a wait looks for workers that died
LOCALHOST = "127.0.0.1"  # scheduler and workers listen on this node only

# ======================================================================
# Worker side: one CellChunk per (job, chunk) in each worker process
# ======================================================================

_CHUNKS: dict[str, CellChunk] = {}


def _device_module(backend: str):
    from warpbio.device import array_module

    return array_module(backend)  # type: ignore[arg-type]


def _is_canonical(counts: Csr) -> bool:
    """Gene ids strictly increasing within every row (sorted, no duplicates)."""
    xp = counts.xp
    for first, end, start, stop in counts.row_blocks():
        genes = counts.indices[start:stop]
        increasing = genes[1:] > genes[:-1]
        row_starts = counts.indptr[first + 1 : end] - start  # a new row may go down
        increasing[row_starts[(row_starts > 0) & (row_starts < stop - start)] - 1] = True
        if not bool(xp.all(increasing)):
            return False
    return True


class CellChunk:
    """Cells [start, stop) of the .h5ad on this worker's device, through the chain."""

    def __init__(self, path: str, start: int, stop: int, backend: str, read_threads: int):
        xp = _device_module(backend)
        rows = read_csr_rows(path, start, stop, xp, read_threads)
        self.xp = xp
        self.start = start
        self.counts = Csr(rows.data, rows.indices, rows.indptr, rows.shape)
        if not _is_canonical(self.counts):  # as from_scipy does for the single device
            self.counts = from_scipy(self.counts.to_scipy(), xp)
        self.metrics: dict[str, object] = {}
        self.matrix: Csr | None = None
        self.totals = None
        self.dense = None

    def summary(self) -> tuple[int, int]:
        return self.counts.shape[0], self.counts.nnz

    def problems(self) -> BadCounts | None:
        return count_problems(self.counts)

    def qc(self, mito: np.ndarray) -> dict[str, np.ndarray]:
        values = cell_qc_metrics(self.counts, mito)
        self.metrics = dict(zip(CELL_METRICS, values, strict=True))
        return {name: _host(value) for name, value in self.metrics.items()}

    # per-chunk slices of global vectors come last in every signature (ChunkSet.call)

    def gene_cells(self, keep: np.ndarray) -> np.ndarray:
        return _host(self.counts.column_nnz(rows=self.xp.asarray(keep)))

    def select(self, genes: np.ndarray, keep: np.ndarray) -> tuple[int, int]:
        xp = self.xp
        kept = xp.asarray(keep)
        self.matrix = self.counts.select(
            rows=kept, columns=xp.asarray(genes), entries=lambda d, g: d != 0
        )
        self.counts.release()
        self.metrics = {name: value[kept] for name, value in self.metrics.items()}
        return self.matrix.shape[0], self.matrix.nnz

    def group_sums(self, n_groups: int, clip: np.ndarray | None, codes: np.ndarray | None):
        xp = self.xp
        codes = None if codes is None else xp.asarray(codes, dtype=xp.int64)
        clip = None if clip is None else xp.asarray(clip)
        return _group_column_sums(self.matrix, codes, n_groups, clip)

    def row_totals(self, send: bool) -> np.ndarray | None:
        self.totals = self.matrix.row_sums()
        return _host(self.totals) if send else None

    def normalize_log1p(self, target_sum: float) -> None:
        divide_by_size_factors(self.matrix, self.totals, target_sum)
        self.totals = None
        log1p(self.matrix)

    def gene_moments(self, flavor: str):
        xp = self.xp
        function = (lambda data, genes: xp.expm1(data)) if flavor == "seurat" else None
        sums, squares = self.matrix.column_sums(function, squares=True)
        return _host(sums), _host(squares)

    def densify(self, columns: np.ndarray) -> None:
        self.dense = self.matrix.dense_columns(columns)

    def regression_moments(self, names: Sequence[str]):
        covariates = covariate_matrix(self.metrics, names, self.xp)
        gram, cross = regression_moments(self.dense, covariates)
        return gram, _host(cross)

    def subtract_fit(self, names: Sequence[str], coefficients: np.ndarray) -> None:
        covariates = covariate_matrix(self.metrics, names, self.xp)
        subtract_fit(self.dense, covariates, self.xp.asarray(coefficients))

    def scale_moments(self):
        return tuple(_host(value) for value in column_moments(self.dense))

    def scale(self, mean: np.ndarray, std: np.ndarray, max_value: float | None) -> None:
        apply_scale(self.dense, mean, std, max_value)

    def scatter(self):
        """Column sums and the lower triangle of X^T X (all ``eigh`` reads), float64."""
        from warpbio.singlecell.pca import scatter_moments

        xp = self.xp
        sums, scatter = scatter_moments(self.dense)
        rows, cols = xp.tril_indices(scatter.shape[0])
        return _host(sums), _host(scatter[rows, cols])

    def project(self, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
        embedding = _host(project(self.dense, mean, components))
        self.dense = None  # the HVG matrix is no longer needed
        return embedding

    def csr(self):
        matrix = self.matrix
        return _host(matrix.data), _host(matrix.indices), _host(matrix.indptr), matrix.shape


def _open_chunk(key: str, path: str, start: int, stop: int, backend: str, threads: int):
    _CHUNKS[key] = CellChunk(path, start, stop, backend, threads)
    return _CHUNKS[key].summary()


def _call_chunk(key: str, method: str, *args):
    return getattr(_CHUNKS[key], method)(*args)


def _close_chunk(key: str) -> None:
    chunk = _CHUNKS.pop(key, None)
    if chunk is not None and chunk.xp.__name__ == "cupy":
        del chunk
        import cupy

        cupy.get_default_memory_pool().free_all_blocks()


def _decompose(backend: str, n_rows: int, n_comps: int, *parts) -> PcaResult:
    """eigh of the chunks' summed scatter on this worker's device; host results.

    ``parts`` are the chunks' (sums, lower triangle) in chunk order: Dask moves
    them here from the other workers directly, and they are added in that order."""
    xp = _device_module(backend)
    sums, lower = _stack_pairs(parts)
    width = sums.shape[0]
    scatter = xp.zeros((width, width), dtype=xp.float64)
    rows, cols = xp.tril_indices(width)
    scatter[rows, cols] = xp.asarray(lower)
    scatter[cols, rows] = scatter[rows, cols]
    return decompose_scatter(xp.asarray(sums), scatter, n_rows, n_comps)


def _worker_gpus() -> str | None:
    return os.environ.get("CUDA_VISIBLE_DEVICES")


# ======================================================================
# Cluster: one worker per GPU, or CPU workers
# ======================================================================


def visible_gpu_ids() -> list[str]:
    """The GPU ids this process may use: CUDA_VISIBLE_DEVICES (in a job, the lease
    the runner exported), else every GPU nvidia-smi lists."""
    from warpbio.device import discover_gpu_pool

    return discover_gpu_pool()


def _nanny_cluster(envs: list[dict[str, str]]):
    """One single-threaded worker process per environment (e.g. one per GPU)."""
    from distributed import Nanny, Scheduler, SpecCluster

    workers = {
        str(number): {
            "cls": Nanny,
            "options": {
                "nthreads": 1,
                "memory_limit": 0,  # the chunks are ours, not Dask's to spill or police
                "env": env,
                "name": str(number),
                "host": LOCALHOST,
            },
        }
        for number, env in enumerate(envs)
    }
    scheduler = {
        "cls": Scheduler,
        "options": {"host": LOCALHOST, "dashboard_address": ":0", "dashboard": False},
    }
    return SpecCluster(workers=workers, scheduler=scheduler, silence_logs=logging.WARNING)


def _gpu_cluster(gpu_ids: list[str]):
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError:
        log.info("dask_cuda does not import: one Nanny per GPU instead of LocalCUDACluster")
        return _nanny_cluster([{"CUDA_VISIBLE_DEVICES": gpu} for gpu in gpu_ids])
    return LocalCUDACluster(
        CUDA_VISIBLE_DEVICES=",".join(gpu_ids),
        n_workers=len(gpu_ids),
        threads_per_worker=1,
        memory_limit=0,  # the chunks are ours, not Dask's to spill
        device_memory_limit=0,
        dashboard_address=None,
        host=LOCALHOST,
        silence_logs=logging.WARNING,
    )


@contextmanager
def dask_client(
    n_workers: int,
    backend: str = "cpu",
    gpu_ids: Sequence[str] | None = None,
    processes: bool = True,
) -> Iterator:
    """A ``distributed.Client`` on a local cluster of ``n_workers`` workers: one per
    GPU of ``gpu_ids`` (default: CUDA_VISIBLE_DEVICES, the job's lease) on the gpu
    backend, else CPU worker processes (``processes=False``: threads of this
    process) that see no GPU. Closed on exit."""
    from distributed import Client

    with (
        _quiet_distributed(),
        _cluster(n_workers, backend, gpu_ids, processes) as cluster,
        Client(cluster, direct_to_workers=True) as client,  # results not via the scheduler
    ):
        client.wait_for_workers(n_workers)
        yield client


def _cluster(n_workers: int, backend: str, gpu_ids, processes: bool):
    from distributed import LocalCluster

    if n_workers < 1:
        raise ValueError(f"n_workers = {n_workers} must be >= 1")
    if backend == "gpu":
        gpu_ids = list(gpu_ids) if gpu_ids is not None else visible_gpu_ids()
        if len(gpu_ids) < n_workers:
            raise RuntimeError(
                f"{n_workers} GPU workers asked for but only GPUs {gpu_ids or 'none'} are "
                "leased (CUDA_VISIBLE_DEVICES); lower singlecell.preprocess.gpus or run "
                f"with --resources gpu={n_workers}"
            )
        cluster = _gpu_cluster(gpu_ids[:n_workers])
    elif processes:
        cluster = _nanny_cluster([{"CUDA_VISIBLE_DEVICES": ""}] * n_workers)
    else:
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=False,
            dashboard_address=None,
            memory_limit=0,
            silence_logs=logging.WARNING,
        )
    return cluster


@contextmanager
def _quiet_distributed() -> Iterator[None]:
    """distributed's INFO lines (every connection, start and close) off the job log."""
    logger = logging.getLogger("distributed")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


# ======================================================================
# Client side
# ======================================================================


class WorkerLostError(RuntimeError):
    """A worker holding cells died (killed for memory, crashed); its cells are gone."""


class ChunkSet:
    """The chunks of one run on a client's workers: chunk i on worker i mod n."""

    def __init__(self, client, bounds: Sequence[int], backend: str):
        self.client = client
        self.backend = backend
        self.bounds = [int(b) for b in bounds]
        self.kept_bounds: list[int] | None = None
        self.workers = sorted(client.nthreads(), key=_worker_order(client))
        if not self.workers:
            raise RuntimeError("the Dask cluster has no workers")
        token = uuid.uuid4().hex
        self.keys = [f"{token}-{i}" for i in range(len(self.bounds) - 1)]
        self.places = [self.workers[i % len(self.workers)] for i in range(len(self.keys))]

    def open(self, path: Path, read_threads: int) -> list[tuple[int, int]]:
        """Each worker reads its chunks' cells; (rows, entries) per chunk."""
        return self.gather(
            [
                self._submit(
                    i, _open_chunk, key, str(path), start, stop, self.backend, read_threads
                )
                for i, (key, start, stop) in enumerate(
                    zip(self.keys, self.bounds[:-1], self.bounds[1:], strict=True)
                )
            ]
        )

    def _submit(self, index: int, function: Callable, *args):
        return self.client.submit(
            function,
            *args,
            workers=[self.places[index]],
            allow_other_workers=False,
            pure=False,
        )

    def wait(self, futures) -> None:
        """Until every future is done, watching for workers that die meanwhile."""
        from distributed import wait

        while True:
            try:
                wait(futures, timeout=WORKER_CHECK_S)
                return
            except TimeoutError:
                self._check_workers()

    def gather(self, futures) -> list:
        """Results in chunk order, straight from the workers; the first failed
        chunk's error is raised as itself."""
        self.wait(futures)
        for future in futures:
            if future.status == "error":
                future.result()
        return self.client.gather(futures, direct=True)

    def _check_workers(self) -> None:
        alive = set(self.client.nthreads())
        for index, place in enumerate(self.places):
            if place not in alive:
                start, stop = self.bounds[index], self.bounds[index + 1]
                raise WorkerLostError(
                    f"the Dask worker holding cells {start}-{stop} ({place}) is gone: it "
                    "was killed (out of memory?) or crashed; see the worker log lines above, "
                    "then use more GPUs or a machine with more memory"
                )

    def submit_all(self, method: str, *args, per_chunk: Callable[[int], tuple] | None = None):
        """Futures of ``method(*args, *per_chunk(i))`` on every chunk i, in chunk order."""
        return [
            self._submit(i, _call_chunk, key, method, *args, *(per_chunk(i) if per_chunk else ()))
            for i, key in enumerate(self.keys)
        ]

    def call(self, method: str, *args, per_chunk: Callable[[int], tuple] | None = None) -> list:
        """``method(*args, *per_chunk(i))`` on every chunk i; results in chunk order."""
        return self.gather(self.submit_all(method, *args, per_chunk=per_chunk))

    def on_first_worker(self, function: Callable, *args):
        return self.gather([self._submit(0, function, *args)])[0]

    def set_kept(self, rows_per_chunk: Sequence[int]) -> None:
        self.kept_bounds = [0, *np.cumsum(rows_per_chunk).tolist()]

    def slices(self, vector: np.ndarray, kept: bool = False) -> Callable[[int], tuple]:
        """Per-chunk argument: the chunk's part of a vector over all cells, or over
        the kept cells with ``kept``."""
        bounds = self.kept_bounds if kept else self.bounds
        return lambda i: (vector[bounds[i] : bounds[i + 1]],)

    def close(self) -> None:
        """Drop the chunks from the workers (best effort: after an error too)."""
        from distributed import wait

        futures = [self._submit(i, _close_chunk, key) for i, key in enumerate(self.keys)]
        try:
            wait(futures, timeout=120)
        except Exception as error:  # a lost worker has nothing left to drop
            log.warning("could not drop every chunk from the workers: %s", error)


def _worker_order(client):
    names = {
        address: info.get("name") for address, info in client.scheduler_info()["workers"].items()
    }

    def key(address):
        name = names.get(address)
        return (0, int(name), address) if str(name).isdigit() else (1, str(name), address)

    return key


def _sum_in_order(parts) -> np.ndarray:
    """parts[0] + parts[1] + ... in this order (float64 sums stay deterministic)."""
    total = np.array(parts[0], copy=True)
    for part in parts[1:]:
        total += part
    return total


def _stack_pairs(parts):
    """[(a0, b0), (a1, b1), ...] -> (a0 + a1 + ..., b0 + b1 + ...) in chunk order."""
    return tuple(_sum_in_order([part[k] for part in parts]) for k in range(len(parts[0])))


def even_bounds(n_cells: int, n_chunks: int) -> list[int]:
    """Row bounds of ``n_chunks`` chunks of (nearly) equal cell counts: the dense
    HVG stages (regress_out, scale, X^T X), which dominate at scale, cost per cell."""
    n_chunks = max(1, min(n_chunks, n_cells))
    return [int(b) for b in np.linspace(0, n_cells, n_chunks + 1).round()]


def _check_bounds(bounds: Sequence[int], n_cells: int) -> list[int]:
    bounds = [int(b) for b in bounds]
    steps = np.diff(bounds)
    if bounds[0] != 0 or bounds[-1] != n_cells or len(bounds) < 2 or np.any(steps <= 0):
        raise ValueError(f"chunk bounds {bounds} must rise strictly from 0 to the {n_cells} cells")
    return bounds


def _read_var_names(path: Path) -> np.ndarray:
    import h5py
    from anndata.io import read_elem

    with h5py.File(path, "r") as handle:
        return np.asarray(read_elem(handle["var"]).index, dtype=object)


def _read_obs(path: Path, column: str | None = None):
    """The cell names, or one obs column, of an .h5ad (nothing else is read)."""
    import h5py
    from anndata.io import read_elem

    with h5py.File(path, "r") as handle:
        obs = handle["obs"]
        if column is None:
            return np.asarray(read_elem(obs).index, dtype=object)
        if column not in obs:
            present = ", ".join(obs.attrs.get("column-order", [])) or "none"
            raise PreprocessError(
                f"{path}: config singlecell.preprocess.hvg.batch_key = {column!r} is not a "
                f"cell annotation here (there are: {present})"
            )
        return np.asarray(read_elem(obs[column])).astype(str)


def preprocess_distributed(
    path: str | os.PathLike,
    settings: PreprocessSettings,
    n_workers: int,
    backend: str = "gpu",
    *,
    client=None,
    gpu_ids: Sequence[str] | None = None,
    bounds: Sequence[int] | None = None,
    processes: bool = True,
    gather_matrix: bool = True,
    gene_names: Sequence[str] | None = None,
    cell_names: Sequence[str] | None = None,
    batches: Sequence | None = None,
    read_threads: int = 8,
) -> tuple[PreprocessResult, dict[str, float]]:
    """:func:`~warpbio.singlecell.preprocess.preprocess_counts` on the CSR ``X`` of
    the .h5ad at ``path``, over ``n_workers`` Dask workers: one per GPU on the gpu
    backend (``gpu_ids``, default the leased CUDA_VISIBLE_DEVICES), else CPU
    workers. Returns the result (``matrix``: the normalized counts gathered to the
    host as a NumPy :class:`Csr`, or None with ``gather_matrix=False``;
    ``pca.embedding``: NumPy float32 in cell order) and the wall time of each stage
    (``start workers`` when no ``client`` is given, ``read``, then the chain's).

    ``client``: an existing ``distributed.Client`` (e.g. from :func:`dask_client`)
    to reuse, so that benchmarks time the chain and not the worker start.
    ``bounds``: row bounds of the chunks (default: ``n_workers`` nearly equal ones);
    chunk i runs on worker i mod n_workers. ``gene_names``, ``cell_names``,
    ``batches`` (the hvg.batch_key labels) are read from the file when not given
    (cell names only to name a bad cell).
    """
    path = Path(path)
    timings: dict[str, float] = {}
    run = _Run(path, settings, backend, bounds, gather_matrix, read_threads, timings)
    if client is not None:
        return run(client, n_workers, gene_names, cell_names, batches), timings
    started = time.perf_counter()
    with dask_client(n_workers, backend, gpu_ids, processes) as own:
        timings["start workers"] = time.perf_counter() - started
        log.info("start workers: %.3f s", timings["start workers"])
        return run(own, n_workers, gene_names, cell_names, batches), timings


@dataclass
class _Run:
    """One pass of the chain over a client's workers (see the module docstring)."""

    path: Path
    settings: PreprocessSettings
    backend: str
    bounds: Sequence[int] | None
    gather_matrix: bool
    read_threads: int
    timings: dict[str, float]

    def stage(self, name: str):
        return stage(name, np, self.timings)  # results are on the host: nothing to sync

    def __call__(self, client, n_workers, gene_names, cell_names, batches) -> PreprocessResult:
        path, settings = self.path, self.settings
        n_cells, n_genes = csr_shape(path)
        gene_names = _read_var_names(path) if gene_names is None else gene_names
        if len(gene_names) != n_genes:
            raise PreprocessError(f"{path}: {len(gene_names)} gene names for X's {n_genes} columns")
        if settings.hvg.batch_key is not None and batches is None:
            batches = _read_obs(path, settings.hvg.batch_key)
        bounds = (
            even_bounds(n_cells, n_workers)
            if self.bounds is None
            else _check_bounds(self.bounds, n_cells)
        )
        log.info("preprocessing %d cells x %d genes of %s on %d %s worker(s), %d chunk(s)",
                 n_cells, n_genes, path, len(client.nthreads()), self.backend,
                 len(bounds) - 1)  # fmt: skip
        chunks = ChunkSet(client, bounds, self.backend)
        try:
            with self.stage("read"):
                entries = sum(nnz for _, nnz in chunks.open(path, self.read_threads))
            log.info("read %d entries", entries)
            return self._chain(chunks, mito_mask(gene_names), cell_names, batches)
        finally:
            chunks.close()

    def _chain(self, chunks: ChunkSet, mito, cell_names, batches) -> PreprocessResult:
        settings = self.settings
        n_cells = chunks.bounds[-1]
        with self.stage("check counts"):
            self._check_counts(chunks, cell_names)
        with self.stage("QC metrics"):
            parts = chunks.call("qc", mito)
            metrics = {name: np.concatenate([p[name] for p in parts]) for name in CELL_METRICS}
        with self.stage("filter"):
            qc = QcMetrics(*(metrics[name] for name in CELL_METRICS), None, None)
            keep, table = filter_cells(qc, settings, n_cells, np)
            gene_n_cells = _sum_in_order(chunks.call("gene_cells", per_chunk=chunks.slices(keep)))
            genes = filter_genes(gene_n_cells, settings, table)
            shapes = chunks.call("select", genes, per_chunk=chunks.slices(keep))
            chunks.set_kept([rows for rows, _ in shapes])
        n_kept, n_genes_kept = int(keep.sum()), int(genes.sum())
        log.info("kept %d cells x %d genes (%d entries)",
                 n_kept, n_genes_kept, sum(nnz for _, nnz in shapes))  # fmt: skip
        cell_metrics = {name: metrics[name][keep] for name in CELL_METRICS}
        check_hvg_inputs(settings, n_genes_kept, batches)
        kept_batches = None if batches is None else np.asarray(batches)[keep]
        hvg_table = None
        if settings.hvg.needs_counts:
            with self.stage("highly variable genes"):
                hvg_table = _seurat_v3(chunks, settings, kept_batches, n_kept)
        with self.stage("normalize_total + log1p"):
            send = settings.target_sum is None
            totals = chunks.call("row_totals", send)
            target_sum = normalization_target(
                np.concatenate(totals) if send else None, settings.target_sum
            )
            chunks.call("normalize_log1p", target_sum)
        if hvg_table is None:
            with self.stage("highly variable genes"):
                sums, squares = _stack_pairs(chunks.call("gene_moments", settings.hvg.flavor))
                mean, var = mean_var_from_sums(sums, squares, n_kept)
                hvg_table = dispersion_table(mean, var, settings.hvg)
        log.info("HVG (%s): %d of %d genes", settings.hvg.flavor,
                 int(hvg_table["highly_variable"].sum()), len(hvg_table))  # fmt: skip
        hvg_columns = hvg_column_indices(hvg_table, settings)
        with self.stage("densify HVGs"):
            chunks.call("densify", hvg_columns)
        if settings.regress_out:
            names = list(settings.regress_out)
            with self.stage("regress_out"):
                gram, cross = _stack_pairs(chunks.call("regression_moments", names))
                chunks.call("subtract_fit", names, regression_coefficients(gram, cross))
        with self.stage("scale"):
            sums, squares = _stack_pairs(chunks.call("scale_moments"))
            mean, std = mean_std_from_moments(sums, squares, n_kept)
            chunks.call("scale", mean, std, settings.scale_max)
        with self.stage("PCA"):
            shape = (n_kept, int(hvg_columns.size))
            n_pcs = effective_n_pcs(settings, shape)
            check_n_comps(n_pcs, *shape)
            # the scatter matrices (genes x genes) go from worker to worker, not via here
            scatters = chunks.submit_all("scatter")
            result = chunks.on_first_worker(_decompose, self.backend, n_kept, n_pcs, *scatters)
            del scatters
            projected = chunks.submit_all("project", result.mean, result.components)
            chunks.wait(projected)
        with self.stage("gather embedding"):
            embedding = chunks.gather(projected)
            result.embedding = np.concatenate(embedding).astype(np.float32, copy=False)
        matrix = None
        if self.gather_matrix:
            with self.stage("gather matrix"):
                matrix = _concatenate_csr(chunks.call("csr"), n_genes_kept)
        return PreprocessResult(
            matrix,
            FilterResult(_host(keep), _host(genes), gene_n_cells, table),
            cell_metrics,
            mito[genes],
            hvg_table,
            result,
            target_sum,
            self.timings,
        )

    def _check_counts(self, chunks: ChunkSet, cell_names) -> None:
        found = [(i, p) for i, p in enumerate(chunks.call("problems")) if p is not None]
        if not found:
            return
        index, first = found[0]
        problem = BadCounts(
            sum(p.n_bad for _, p in found),
            first.first_value,
            chunks.bounds[index] + first.first_row,
        )
        if cell_names is None:
            cell_names = _read_obs(self.path)
        raise PreprocessError(bad_counts_message(problem, str(self.path), cell_names))


def _seurat_v3(chunks: ChunkSet, settings: PreprocessSettings, kept_batches, n_kept: int):
    """seurat_v3 HVGs: per-batch sums, loess on the client, clipped sums, ranking."""
    codes, n_groups, sizes = batch_codes(kept_batches, n_kept)
    if codes is not None:  # sent to the workers: the narrowest integer type
        codes = codes.astype(np.min_scalar_type(max(n_groups - 1, 0)))
    per_chunk = (lambda i: (None,)) if codes is None else chunks.slices(codes, kept=True)
    sums, squares = _stack_pairs(chunks.call("group_sums", n_groups, None, per_chunk=per_chunk))
    mean, var = mean_var_from_sums(sums.sum(axis=0), squares.sum(axis=0), n_kept)
    batch_mean, regularized_sd, clip = seurat_v3_clip(sums, squares, sizes, settings.hvg.span)
    clipped_sum, clipped_sq = _stack_pairs(
        chunks.call("group_sums", n_groups, clip, per_chunk=per_chunk)
    )
    return seurat_v3_finish(
        mean,
        var,
        sizes,
        batch_mean,
        regularized_sd,
        clipped_sum,
        clipped_sq,
        seurat_v3_n_top(settings.hvg),
        kept_batches is not None,
    )


def _concatenate_csr(parts, n_genes: int) -> Csr:
    """One host CSR from the chunks' (data, indices, indptr, shape), in order."""
    offsets = np.cumsum([0] + [int(part[2][-1]) for part in parts])
    indptr = np.concatenate(
        [np.zeros(1, dtype=np.int64)]
        + [part[2][1:] + offset for part, offset in zip(parts, offsets[:-1], strict=True)]
    )
    data = np.concatenate([part[0] for part in parts])
    indices = np.concatenate([part[1] for part in parts])
    return Csr(data, indices, indptr, (indptr.size - 1, n_genes))
