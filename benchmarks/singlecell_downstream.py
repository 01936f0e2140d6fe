"""Time the single-cell stages after preprocessing, stage by stage, at up to 1.3M cells.

What it times (the functions the rules call, data already in memory, no file I/O):
exact kNN of 50 PCs (k = 15), the connectivities, the UMAP (spectral start and
epochs), the parallel clustering engine (Louvain and Leiden-style), and the
t-test and Wilcoxon markers of 30 clusters over a sparse log-expression matrix.

Data are synthetic and made on the device: a 50-D Gaussian mixture for the PCs
(30 overlapping clusters) and a CSR matrix of ``--genes`` genes with
``--genes-per-cell`` distinct non-zeros per cell (log-normal values), the size of
the 1.3M-cell brain dataset after filtering by default.

    PYTHONPATH=src python3 benchmarks/singlecell_downstream.py --backend gpu --cells 1300000
    PYTHONPATH=src python3 benchmarks/singlecell_downstream.py --backend cpu --cells 50000

Prints a row per stage as it goes and a table last; --out writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from warpbio.singlecell import markers as rank
from warpbio.singlecell import umap as layout
from warpbio.singlecell.cluster import graph_modularity, parallel_louvain
from warpbio.singlecell.neighbors import build_graph, exact_knn


def synchronize(xp) -> None:
    if xp.__name__ != "numpy":
        xp.cuda.Device().synchronize()


def timed(rows, stage, xp, function, **facts):
    synchronize(xp)
    started = time.perf_counter()
    result = function()
    synchronize(xp)
    row = {"stage": stage, "seconds": round(time.perf_counter() - started, 3), **facts}
    print(json.dumps(row), flush=True)
    rows.append(row)
    return result


def mixture(n_cells: int, xp, clusters: int = 30, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 0.8, size=(clusters, 50)).astype(np.float32)
    labels = rng.integers(0, clusters, n_cells)
    points = centres[labels] + rng.normal(size=(n_cells, 50)).astype(np.float32)
    return labels, points


def expression(n_cells: int, n_genes: int, per_cell: int, labels, xp, seed: int = 0):
    """CSR with ``per_cell`` distinct genes per cell: (offset + j * step) mod n_genes."""
    step = 7919  # prime, so that it is coprime with n_genes unless n_genes is a multiple
    if n_genes % step == 0:
        raise ValueError("choose a gene count that is not a multiple of 7919")
    random = xp.random.default_rng(seed) if xp.__name__ != "numpy" else np.random.default_rng(seed)
    offsets = random.integers(0, n_genes, size=n_cells, dtype=xp.int64)
    indices = (offsets[:, None] + xp.arange(per_cell, dtype=xp.int64)[None, :] * step) % n_genes
    # a cluster effect on the first genes of each cell, so tests have something to find
    values = random.standard_normal(size=(n_cells, per_cell), dtype=xp.float32) * 0.5
    values = values + 0.3 * xp.asarray(labels % 3, dtype=xp.float32)[:, None] + 1.0
    values = xp.log1p(xp.exp(values)).astype(xp.float32)
    indptr = xp.arange(0, n_cells * per_cell + 1, per_cell, dtype=xp.int64)
    return rank.DeviceCsr(
        values.ravel(), indices.ravel().astype(xp.int32), indptr, (n_cells, n_genes)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1_300_000)
    parser.add_argument("--genes", type=int, default=27_998)
    parser.add_argument("--genes-per-cell", type=int, default=2000)
    parser.add_argument("--backend", choices=["cpu", "gpu"], default="gpu")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--skip", nargs="*", default=[], help="stages to leave out")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.backend == "gpu":
        import cupy as xp
    else:
        xp = np
    rows: list[dict] = []
    labels, points = mixture(args.cells, xp)
    knn = timed(rows, "exact kNN (k=15, 50 PCs)", xp, lambda: exact_knn(points, 15, xp))
    graph = timed(rows, "connectivities", xp, lambda: build_graph(knn, xp))
    conn = graph.connectivities
    if "umap" not in args.skip:
        schedule = layout.layout_graph(conn, args.epochs)
        start = timed(
            rows,
            "UMAP spectral start",
            xp,
            lambda: layout.initial_positions(schedule, points, 0, xp),
        )
        a, b = layout.find_ab_params(1.0, 0.5)
        timed(
            rows,
            f"UMAP {args.epochs} epochs",
            xp,
            lambda: layout.optimize_layout(start, schedule, a, b, 0, xp),
        )
    if "cluster" not in args.skip:
        for name, refine in (("Louvain", False), ("Leiden-style", True)):
            found = timed(
                rows,
                f"parallel {name} (2 passes)",
                xp,
                lambda refine=refine: parallel_louvain(conn, 1.0, xp, refine=refine, iterations=2),
            )
            rows[-1]["modularity"] = round(graph_modularity(conn, found, 1.0, xp), 4)
            rows[-1]["clusters"] = int(found.max()) + 1
    if "markers" not in args.skip:
        matrix = timed(
            rows,
            "expression matrix made",
            xp,
            lambda: expression(args.cells, args.genes, args.genes_per_cell, labels, xp),
            nonzeros=args.cells * args.genes_per_cell,
        )
        groups = int(labels.max()) + 1
        stats = timed(
            rows, "group statistics", xp, lambda: rank.group_stats(matrix, labels, groups, xp)
        )
        timed(rows, "t-test (host p-values)", xp, lambda: rank.welch_t_test(stats))
        timed(
            rows,
            "Wilcoxon rank sums",
            xp,
            lambda: rank.wilcoxon_rank_sums(matrix, labels, groups, xp),
        )
    total = sum(r["seconds"] for r in rows if r["stage"] != "expression matrix made")
    print(f"\n{args.cells:,} cells on {args.backend}; stages below sum to {total:.1f} s\n")
    print("| stage | seconds |\n| --- | --- |")
    for r in rows:
        print(f"| {r['stage']} | {r['seconds']} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
