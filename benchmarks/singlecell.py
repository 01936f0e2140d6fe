"""Single-cell benchmark: 1.3M cells x 28k genes on one GPU, end to end, scanpy beside it.

Run on the GPU machine from the repository root (anndata and scanpy carried as wheels):

    PYTHONPATH=src python3 benchmarks/singlecell.py --out singlecell-bench.json

Sections (each prints as it goes; the summary table comes last):
1. ceilings: device-to-device copy bandwidth and float32 matrix rate, measured here;
2. data: the seeded simulator at the 1.3M-cell brain data's shape (1,306,127 x 27,998,
   ~2,000 detected genes a cell, 13 mt- genes, damaged cells), counts drawn on the GPU,
   written once as an .h5ad (X CSR in contiguous datasets) and reused;
3. ours: from the .h5ad on disk through preprocessing (QC, filters, normalize, log1p,
   HVG cell_ranger 4,000, regress_out, scale, PCA 50), kNN (k=15, exact), UMAP,
   Leiden and Louvain, t-test markers and the small result files, each stage timed
   after a device synchronize, with the fraction of the copy-bandwidth floor for the
   memory-bound preprocessing stages;
4. scanpy (same parameters, all host cores) on the first ``--scanpy-cells`` cells of the
   same file, and ours on the same cells: a ratio at equal size with nothing
   extrapolated; scanpy's 1.3M time is then estimated by scaling each step linearly in
   cells, which flatters scanpy (its kNN, UMAP and clustering grow faster than linearly).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from warpbio.device import to_numpy
from warpbio.singlecell.csr_io import read_csr, read_csr_rows, write_csr_h5ad
from warpbio.singlecell.hvg import HvgSettings
from warpbio.singlecell.preprocess import PreprocessSettings, preprocess_counts
from warpbio.singlecell.simulate import SimulationSpec, gene_names, simulate_counts_on_gpu
from warpbio.singlecell.sparse import Csr

BRAIN_SHAPE = (1_306_127, 27_998)
# The RAPIDS 1.3M-cell example's recipe (anchors.md), with scanpy's names.
SETTINGS = PreprocessSettings(
    min_genes=200,
    max_genes=6000,
    max_pct_mt=20.0,
    min_cells=3,
    target_sum=1e4,
    hvg=HvgSettings(flavor="cell_ranger", n_top_genes=4000),
    regress_out=("total_counts", "pct_counts_mt"),
    scale_max=10.0,
    n_pcs=50,
)
N_NEIGHBORS = 15
MIN_DIST = 0.3


def sync():
    if "cupy" in sys.modules:
        sys.modules["cupy"].cuda.Device().synchronize()


class Stopwatch:
    """Wall time of named stages, each ended by a device synchronize."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def __call__(self, name, function, *args, **kwargs):
        sync()
        start = time.perf_counter()
        result = function(*args, **kwargs)
        sync()
        self.seconds[name] = time.perf_counter() - start
        print(f"  {name}: {self.seconds[name]:.2f} s", flush=True)
        return result


def ceilings() -> dict:
    import cupy as cp

    source = cp.random.random(1 << 29, dtype=cp.float64)  # 4 GiB
    target = cp.empty_like(source)
    target[...] = source
    sync()
    start = time.perf_counter()
    for _ in range(5):
        target[...] = source
    sync()
    bandwidth = 5 * 2 * source.nbytes / (time.perf_counter() - start)
    a = cp.random.random((8192, 8192), dtype=cp.float32)
    a @ a
    sync()
    start = time.perf_counter()
    for _ in range(5):
        a @ a
    sync()
    flops = 5 * 2 * 8192**3 / (time.perf_counter() - start)
    return {"copy_bytes_per_s": bandwidth, "fp32_matmul_flops": flops}


def make_data(args) -> dict:
    """The simulated 1.3M-cell set as an .h5ad (made on the GPU once, then reused)."""
    import cupy as cp
    import pandas as pd

    path = Path(args.data)
    if path.exists():
        print(f"data: reusing {path} ({path.stat().st_size / 1e9:.1f} GB)", flush=True)
        return {"path": str(path), "reused": True}
    spec = SimulationSpec(
        n_cells=args.cells,
        n_genes=args.genes,
        n_cell_types=20,
        n_samples=4,
        mean_library_size=3300.0,
        library_log_sd=0.5,
        chunk_cells=8192,
    )
    start = time.perf_counter()
    design, (data, indices, indptr) = simulate_counts_on_gpu(spec, seed=args.seed)
    sync()
    simulated = time.perf_counter() - start
    width = len(str(spec.n_cells))
    obs = pd.DataFrame(
        {
            "sample": pd.Categorical([f"sample{s + 1}" for s in design.sample]),
            "true_cell_type": pd.Categorical([f"type{t + 1}" for t in design.cell_type]),
        },
        index=[f"cell{i:0{width}d}" for i in range(spec.n_cells)],
    )
    var = pd.DataFrame(index=gene_names(spec.n_genes))
    start = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_csr_h5ad(path, data, indices, indptr, (spec.n_cells, spec.n_genes), obs, var)
    written = time.perf_counter() - start
    genes_per_cell = cp.diff(indptr)
    facts = {
        "path": str(path),
        "nnz": int(indptr[-1]),
        "median_genes_per_cell": float(cp.median(genes_per_cell)),
        "file_gb": path.stat().st_size / 1e9,
        "simulate_s": simulated,
        "write_s": written,
    }
    del data, indices, indptr
    cp.get_default_memory_pool().free_all_blocks()
    print(f"data: {facts}", flush=True)
    return facts


def memory_floors(n_entries: int, n_cells: int, n_hvg: int, bandwidth: float) -> dict:
    """Seconds of the fewest bytes each memory-bound stage must move, at ``bandwidth``.

    Entries are 8 bytes (float32 value + int32 gene id); the dense HVG matrix 4 bytes an
    element. Reading the raw matrix: QC sums (values, ids); filter: read + write the
    kept entries; normalize + log1p: values read and written; HVG: values and ids read;
    densify: entries read, dense written; regress_out and scale: the dense matrix read
    twice and written once each.
    """
    entries, dense = 8 * n_entries, 4 * n_cells * n_hvg
    values = 4 * n_entries
    moved = {
        "QC metrics": entries,
        "filter": 2 * entries,
        "normalize_total + log1p": 2 * values,
        "highly variable genes": entries,
        "densify HVGs": entries + dense,
        "regress_out": 3 * dense,
        "scale": 3 * dense,
    }
    return {name: size / bandwidth for name, size in moved.items()}


CLUSTER_SETTINGS = {
    # the rule's defaults: igraph below 20,000 cells, the sequential engine from there,
    # the parallel engine (GPU) from 400,000 cells
    "engine": "auto",
    "sequential_min_cells": 20_000,
    "parallel_min_cells": 400_000,
    "leiden_resolution": 1.0,
    "louvain_resolution": 1.0,
    "n_iterations": 2,
}


def ours(
    path: str,
    xp,
    n_cells: int | None = None,
    outputs: Path | None = None,
    other_engines: tuple[str, ...] = (),
) -> dict:
    """Our chain from the file through markers, each stage timed; ``n_cells`` keeps
    the first cells. The calls are the rules' (neighbors, umap, cluster, markers);
    the small result files (UMAP, clusters, markers TSVs) go to ``outputs``.
    ``other_engines``: also cluster with these engines (timed apart, not in the total),
    for a subset compared to scanpy."""
    import pandas as pd

    from warpbio.singlecell import markers as rank
    from warpbio.singlecell.anndata_io import read_var_names
    from warpbio.singlecell.cluster import cluster_graph
    from warpbio.singlecell.neighbors import build_graph, exact_knn
    from warpbio.singlecell.umap import umap_embedding

    watch = Stopwatch()
    if n_cells is None:
        arrays = watch("read .h5ad", read_csr, path, xp)
    else:  # only the first cells' byte ranges, as scanpy's backed read of the subset
        arrays = watch("read .h5ad", read_csr_rows, path, 0, n_cells, xp)
    counts = Csr(arrays.data, arrays.indices, arrays.indptr, arrays.shape)
    n_entries = counts.nnz
    genes = np.asarray(read_var_names(path))
    result = watch("preprocess", preprocess_counts, counts, list(genes), SETTINGS, path)
    pcs = result.pca.embedding
    knn = watch("kNN (exact, k=15)", exact_knn, pcs, N_NEIGHBORS, xp)
    graph = watch("connectivities", build_graph, knn, xp)
    embedding, umap_params = watch(
        "UMAP", umap_embedding, graph.connectivities, to_numpy(pcs), 0, xp, min_dist=MIN_DIST
    )
    connectivities = graph.connectivities
    clusters = watch("Leiden + Louvain", cluster_graph, connectivities, CLUSTER_SETTINGS, 0, xp)
    others = {}
    for engine in other_engines:
        started = time.perf_counter()
        found = cluster_graph(connectivities, dict(CLUSTER_SETTINGS, engine=engine), 0, xp)
        others[engine] = {
            "seconds": time.perf_counter() - started,
            "leiden": found["leiden"]["labels"],
            "modularity": {m: found[m]["modularity"] for m in found},
        }
        print(f"  Leiden + Louvain, {engine} engine (apart): {others[engine]['seconds']:.2f} s")
    leiden = clusters["leiden"]["labels"]
    n_groups = int(leiden.max()) + 1
    logs = result.matrix
    matrix = rank.DeviceCsr(logs.data, logs.indices, logs.indptr, logs.shape)
    stats, (ttest,) = watch(
        "t-test markers", rank.rank_genes, matrix, xp.asarray(leiden), n_groups, ["t-test"], xp
    )
    kept_genes = genes[result.filtering.genes]

    def write_outputs():
        outputs.mkdir(parents=True, exist_ok=True)
        # the rules' formats (umap.py, cluster.py, markers.py)
        umap = pd.DataFrame(embedding, columns=["umap1", "umap2"])
        umap.to_csv(outputs / "umap.tsv", sep="\t", index_label="cell", float_format="%.9g")
        labels = {name: found["labels"] for name, found in clusters.items()}
        pd.DataFrame(labels).to_csv(outputs / "clusters.tsv", sep="\t", index_label="cell")
        table = rank.marker_table(ttest, [str(g) for g in range(n_groups)], kept_genes, stats)
        table.to_csv(outputs / "markers_t-test.tsv", sep="\t", index=False, float_format="%.6g")

    if outputs is not None:
        watch("write UMAP, clusters, markers TSVs", write_outputs)
    stages = {"read .h5ad": watch.seconds["read .h5ad"], **result.timings}
    stages.update({k: v for k, v in watch.seconds.items() if k not in ("read .h5ad", "preprocess")})
    stages["total"] = sum(watch.seconds.values())
    return {
        "engine": clusters["leiden"]["engine"],
        "other_engines": others,
        "umap_split": {k: umap_params[k] for k in ("start_seconds", "epochs_seconds")},
        "n_cells": int(result.matrix.shape[0]),
        "n_entries": int(n_entries),
        "n_leiden": n_groups,
        "n_louvain": int(clusters["louvain"]["labels"].max()) + 1,
        "modularity": {m: clusters[m]["modularity"] for m in clusters},
        "stages": stages,
        "embedding": pcs,
        "knn": to_numpy(knn.indices),
        "leiden": leiden,
        "markers": ttest.scores,
    }


def scanpy_run(path: str, n_cells: int, threads: int) -> dict:
    """scanpy 1.11 with the same recipe on the first ``n_cells`` cells (host only)."""
    import anndata as ad
    import scanpy as sc
    import scipy.sparse as sp

    if not hasattr(sp.csr_array, "getnnz"):  # scipy >= 1.17 dropped it; scanpy 1.11 calls it
        sp.csr_array.getnnz = lambda self, axis=None: self._getnnz(axis=axis)
    sc.settings.n_jobs = threads
    times = {}

    def step(name, function, *args, **kwargs):
        start = time.perf_counter()
        out = function(*args, **kwargs)
        times[name] = time.perf_counter() - start
        print(f"  scanpy {name}: {times[name]:.2f} s", flush=True)
        return out

    adata = step("read .h5ad", lambda: ad.read_h5ad(path, backed="r")[:n_cells].to_memory())
    adata.var["mt"] = adata.var_names.str.startswith("mt-")

    def preprocess():
        sc.pp.calculate_qc_metrics(adata, qc_vars=["mt"], percent_top=None, inplace=True)
        sc.pp.filter_cells(adata, min_genes=SETTINGS.min_genes)
        sc.pp.filter_cells(adata, max_genes=SETTINGS.max_genes)
        keep = adata.obs["pct_counts_mt"] < SETTINGS.max_pct_mt
        adata._inplace_subset_obs(keep.to_numpy())
        sc.pp.filter_genes(adata, min_cells=SETTINGS.min_cells)
        sc.pp.normalize_total(adata, target_sum=SETTINGS.target_sum)
        sc.pp.log1p(adata)
        n_top = SETTINGS.hvg.n_top_genes
        sc.pp.highly_variable_genes(adata, flavor="cell_ranger", n_top_genes=n_top)
        adata.raw = adata
        hvg = adata[:, adata.var["highly_variable"]].copy()
        sc.pp.regress_out(hvg, ["total_counts", "pct_counts_mt"], n_jobs=threads)
        sc.pp.scale(hvg, max_value=SETTINGS.scale_max)
        sc.pp.pca(hvg, n_comps=SETTINGS.n_pcs)
        return hvg

    hvg = step("preprocess", preprocess)
    step("kNN (exact, k=15)", sc.pp.neighbors, hvg, n_neighbors=N_NEIGHBORS, n_pcs=SETTINGS.n_pcs)
    step("UMAP", sc.tl.umap, hvg, min_dist=MIN_DIST)

    def cluster():
        sc.tl.leiden(hvg, flavor="igraph", n_iterations=2, directed=False)
        sc.tl.louvain(hvg, flavor="igraph")

    step("Leiden + Louvain", cluster)
    step("t-test markers", sc.tl.rank_genes_groups, hvg, "leiden", method="t-test", use_raw=True)
    return {
        "n_cells": int(hvg.n_obs),
        "n_leiden": int(hvg.obs["leiden"].nunique()),
        "stages": times,
        "embedding": hvg.obsm["X_pca"],
        "knn": hvg.obsp["distances"],
        "leiden": hvg.obs["leiden"].astype(int).to_numpy(),
    }


def knn_overlap(ours_knn: np.ndarray, scanpy_distances) -> float:
    """Share of scanpy's neighbours (pynndescent above 4,096 cells) that ours has."""
    hits = total = 0
    for row in range(ours_knn.shape[0]):
        theirs = scanpy_distances.indices[
            scanpy_distances.indptr[row] : scanpy_distances.indptr[row + 1]
        ]
        hits += len(np.intersect1d(theirs, ours_knn[row, 1:]))
        total += len(theirs)
    return hits / max(total, 1)


def pc_agreement(ours_pcs, scanpy_pcs, n: int = 10) -> float:
    """Smallest |corr| of the first n PCs (signs are arbitrary)."""
    return float(min(abs(np.corrcoef(ours_pcs[:, i], scanpy_pcs[:, i])[0, 1]) for i in range(n)))


PRE_STAGES = (
    "check counts", "QC metrics", "filter", "normalize_total + log1p", "highly variable genes",
    "densify HVGs", "regress_out", "scale", "PCA",
)  # fmt: skip
STEPS = ("read .h5ad", "preprocess", "kNN (exact, k=15)", "UMAP", "Leiden + Louvain",
         "t-test markers")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=BRAIN_SHAPE[0])
    parser.add_argument("--genes", type=int, default=BRAIN_SHAPE[1])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default="/tmp/warpbio-bench/brain1m_sim.h5ad")
    parser.add_argument("--outputs", default="/tmp/warpbio-bench/outputs")
    parser.add_argument("--scanpy-cells", type=int, default=100_000)
    parser.add_argument("--warmup-cells", type=int, default=30_000)
    parser.add_argument(
        "--scanpy-warmup-cells", type=int, default=0, help="run scanpy on this many cells first"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--skip", nargs="*", default=[], choices=["scanpy", "full"])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import cupy as cp

    device = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    limits = ceilings()
    print(f"device {device}; ceilings {limits}", flush=True)
    report = {"device": device, "ceilings": limits, "args": vars(args)}
    report["data"] = make_data(args)
    # warm-up on a few cells: CUDA context, CuPy and Numba kernels compiled once
    print(f"warm-up on {args.warmup_cells:,} cells:", flush=True)
    ours(args.data, cp, args.warmup_cells, other_engines=("igraph", "parallel"))
    cp.get_default_memory_pool().free_all_blocks()
    if "full" not in args.skip:
        print("ours, all cells:", flush=True)
        full = ours(args.data, cp, outputs=Path(args.outputs))
        if args.out:  # the full run's figures kept even if scanpy runs out of time
            Path(args.out).write_text(json.dumps({**report, "ours_full": full}, default=str))
        for key in ("embedding", "knn", "leiden", "markers"):
            full.pop(key)
        report["ours_full"] = full
        cp.get_default_memory_pool().free_all_blocks()
    if "scanpy" not in args.skip:
        print(f"scanpy vs ours on the first {args.scanpy_cells:,} cells:", flush=True)
        subset = ours(args.data, cp, args.scanpy_cells, outputs=Path(args.outputs) / "subset",
                      other_engines=("igraph", "parallel"))  # fmt: skip
        cp.get_default_memory_pool().free_all_blocks()
        if args.scanpy_warmup_cells:  # its Numba JIT (pynndescent, UMAP) compiled apart
            print(f"scanpy warm-up on {args.scanpy_warmup_cells:,} cells:", flush=True)
            scanpy_run(args.data, args.scanpy_warmup_cells, args.threads)
        theirs = scanpy_run(args.data, args.scanpy_cells, args.threads)
        report["scanpy_warm"] = bool(args.scanpy_warmup_cells)
        report["pc_corr_min_top10"] = pc_agreement(
            cp.asnumpy(subset.pop("embedding")), theirs.pop("embedding")
        )
        report["knn_overlap_vs_scanpy"] = knn_overlap(subset.pop("knn"), theirs.pop("knn"))
        from sklearn.metrics import adjusted_rand_score

        scanpy_leiden = theirs.pop("leiden")
        report["leiden_ari_vs_scanpy"] = float(
            adjusted_rand_score(scanpy_leiden, subset.pop("leiden"))
        )
        for found in subset["other_engines"].values():
            found["leiden_ari_vs_scanpy"] = float(
                adjusted_rand_score(scanpy_leiden, found.pop("leiden"))
            )
        subset.pop("markers")
        report["ours_subset"], report["scanpy_subset"] = subset, theirs
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2, default=float))
    print_table(report, limits)


def knn_floor(n_cells: int, n_pcs: int, flops: float) -> float:
    """Seconds of the n x n x n_pcs distance product alone at the fp32 matmul rate."""
    return 2.0 * n_cells * n_cells * n_pcs / flops


def print_table(report: dict, limits: dict) -> None:
    print(f"\n== single-cell, {report['device']}, copy {limits['copy_bytes_per_s'] / 1e12:.2f} TB/s"
          f", fp32 matmul {limits['fp32_matmul_flops'] / 1e12:.0f} TFLOP/s ==")  # fmt: skip
    full = report.get("ours_full")
    if full:
        floors = memory_floors(full["n_entries"], full["n_cells"], 4000, limits["copy_bytes_per_s"])
        floors["kNN (exact, k=15)"] = knn_floor(full["n_cells"], 50, limits["fp32_matmul_flops"])
        print(f"ours, {report['args']['cells']:,} cells ({full['n_entries']:,} entries), "
              f"{full['n_cells']:,} after QC; Leiden {full['n_leiden']}, Louvain "
              f"{full['n_louvain']} clusters:")  # fmt: skip
        print(f"{'stage':<36}{'seconds':>9}{'floor':>9}")
        for name, seconds in full["stages"].items():
            floor = f"{100 * floors[name] / seconds:.0f}%" if name in floors else ""
            print(f"{name:<36}{seconds:>9.2f}{floor:>9}")
        print(f"  (UMAP: spectral start {full['umap_split']['start_seconds']:.2f} s, epochs "
              f"{full['umap_split']['epochs_seconds']:.2f} s)")  # fmt: skip
    if "scanpy_subset" in report:
        ours_sub, theirs = report["ours_subset"]["stages"], report["scanpy_subset"]["stages"]
        ours_sub = dict(ours_sub, preprocess=sum(ours_sub.get(k, 0.0) for k in PRE_STAGES))
        print(f"first {report['args']['scanpy_cells']:,} cells, same recipe: PC1-10 |corr| >= "
              f"{report['pc_corr_min_top10']:.4f}, kNN overlap with scanpy's "
              f"{report['knn_overlap_vs_scanpy']:.4f}, Leiden ARI vs scanpy "
              f"{report['leiden_ari_vs_scanpy']:.3f} ({report['ours_subset']['engine']} "
              "engine)")  # fmt: skip
        print(f"{'step':<36}{'ours s':>9}{'scanpy s':>10}{'ratio':>9}")
        for name in STEPS:
            mine = ours_sub[name]
            print(f"{name:<36}{mine:>9.2f}{theirs[name]:>10.2f}{theirs[name] / mine:>8.1f}x")
        split = report["ours_subset"]["umap_split"]
        print(f"  (our UMAP: spectral start {split['start_seconds']:.2f} s, epochs "
              f"{split['epochs_seconds']:.2f} s)")  # fmt: skip
        mine, total = sum(ours_sub[n] for n in STEPS), sum(theirs[n] for n in STEPS)
        print(f"{'end to end':<36}{mine:>9.2f}{total:>10.2f}{total / mine:>8.1f}x")
        for engine, found in report["ours_subset"].get("other_engines", {}).items():
            # the same cells clustered by another engine, timed apart
            swapped = mine - ours_sub["Leiden + Louvain"] + found["seconds"]
            print(f"{'Leiden + Louvain, ' + engine + ' engine':<36}{found['seconds']:>9.2f}"
                  f"{theirs['Leiden + Louvain']:>10.2f}"
                  f"{theirs['Leiden + Louvain'] / found['seconds']:>8.1f}x")  # fmt: skip
            print(f"{'  end to end with it':<36}{swapped:>9.2f}{total:>10.2f}"
                  f"{total / swapped:>8.1f}x  (Leiden ARI vs scanpy "
                  f"{found['leiden_ari_vs_scanpy']:.3f})")  # fmt: skip
        if full:
            scale = report["args"]["cells"] / report["args"]["scanpy_cells"]
            ours_full = sum(full["stages"][n] for n in STEPS if n != "preprocess") + sum(
                full["stages"].get(k, 0.0) for k in PRE_STAGES
            )
            print(f"all cells: ours {ours_full:.1f} s; scanpy estimated {total * scale:.0f} s "
                  f"(its subset time x {scale:.1f}, linear in cells: flatters scanpy), "
                  f"ratio {total * scale / ours_full:.0f}x")  # fmt: skip


if __name__ == "__main__":
    main()
