"""Single-cell preprocessing + PCA over several GPUs (Dask, one worker per GPU):
scaling against one GPU on the same .h5ad.

Run on a multi-GPU machine from the repository root, e.g. the 1.3M-cell set:

    PYTHONPATH=src python3 benchmarks/singlecell_multigpu.py \\
        --h5ad /tmp/sim_1p3m.h5ad --make-cells 1300000 --gpus 1,2,4 --out scaling.json

``--make-cells`` writes a simulated .h5ad (28k genes; ``--library`` sets the mean
counts per cell: 6,000 gives ~2,000 detected genes per cell) when ``--h5ad`` does
not exist yet, cells drawn on the GPU a block at a time and appended to chunked
datasets (the layout anndata writes), so 5M cells need no more GPU memory than
1.3M. For each GPU count, workers start once (not timed), warm up on the first
``--warmup-cells`` cells' own small file, then run the chain ``--repeats`` times on
the whole file (median reported). Each worker reads its own cells from the file
(page cache after the first run). One GPU without Dask (``preprocess_counts`` on
``read_csr``) runs too unless ``--no-single``.

The table: per stage wall times, ``chain`` = read through PCA (what scales),
``total`` = chain + gathering the embedding to the host; speed-up and parallel
efficiency T(1) / (n T(n)) against the one-worker Dask run; HVG overlap and the
smallest top-10 PC |corr| against the one-GPU result.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from warpbio.singlecell.hvg import HvgSettings
from warpbio.singlecell.preprocess import PreprocessSettings
from warpbio.singlecell.sparse import _host

NOT_CHAIN = ("start workers", "gather embedding", "gather matrix")


def array_module(backend: str):
    from warpbio.device import array_module

    return array_module(backend)


def release_device_memory(xp) -> None:
    if xp.__name__ == "cupy":
        xp.get_default_memory_pool().free_all_blocks()


def write_simulated_h5ad(
    path: Path, n_cells: int, n_genes: int, library: float, seed: int, xp
) -> None:
    """A simulated count matrix written block by block (chunked, uncompressed X),
    drawn on xp's device."""
    import h5py
    import pandas as pd
    from anndata.io import write_elem

    from warpbio.singlecell.simulate import (
        CellDesign,
        SimulationSpec,
        draw_design,
        gene_names,
        sample_counts,
    )

    spec = SimulationSpec(n_cells=n_cells, n_genes=n_genes, mean_library_size=library)
    design = draw_design(spec, np.random.default_rng(seed))
    block = 100_000
    tmp = path.with_suffix(".partial.h5ad")
    started = time.perf_counter()
    with h5py.File(tmp, "w") as handle:
        handle.attrs["encoding-type"] = "anndata"
        handle.attrs["encoding-version"] = "0.1.0"
        group = handle.create_group("X")
        group.attrs.update(
            {
                "encoding-type": "csr_matrix",
                "encoding-version": "0.1.0",
                "shape": [n_cells, n_genes],
            }
        )
        chunks = (1 << 22,)
        data = group.create_dataset("data", (0,), np.float32, maxshape=(None,), chunks=chunks)
        indices = group.create_dataset("indices", (0,), np.int32, maxshape=(None,), chunks=chunks)
        indptr = [np.zeros(1, dtype=np.int64)]
        for number, start in enumerate(range(0, n_cells, block)):
            stop = min(start + block, n_cells)
            part = CellDesign(
                design.profiles,
                design.cell_type[start:stop],
                design.sample[start:stop],
                design.damaged[start:stop],
                design.library[start:stop],
                design.mito_share[start:stop],
                design.batch,
            )
            rng = xp.random.default_rng(seed + 1 + number)
            values, genes, offsets = sample_counts(
                replace(spec, n_cells=stop - start), part, rng, xp
            )
            end = data.shape[0]
            data.resize((end + values.size,))
            indices.resize((end + values.size,))
            data[end:] = _host(values)
            indices[end:] = _host(genes)
            indptr.append(_host(offsets[1:]) + end)
            del values, genes, offsets
            release_device_memory(xp)
            print(f"  simulated {stop:,} / {n_cells:,} cells", flush=True)
        group.create_dataset("indptr", data=np.concatenate(indptr))
        width = len(str(n_cells))
        obs = pd.DataFrame(
            {
                "sample": pd.Categorical([f"sample{s + 1}" for s in design.sample]),
                "true_cell_type": pd.Categorical([f"type{t + 1}" for t in design.cell_type]),
            },
            index=[f"cell{i:0{width}d}" for i in range(n_cells)],
        )
        var = pd.DataFrame(index=gene_names(n_genes))
        write_elem(handle, "obs", obs)
        write_elem(handle, "var", var)
        for key in ("obsm", "varm", "obsp", "varp", "layers", "uns"):
            write_elem(handle, key, {})
    tmp.rename(path)
    nnz = int(np.concatenate(indptr)[-1])
    print(f"wrote {path}: {n_cells:,} x {n_genes:,}, {nnz:,} entries "
          f"({nnz / n_cells:,.0f} per cell) in {time.perf_counter() - started:.0f} s")  # fmt: skip


def first_cells(path: Path, n_cells: int, target: Path) -> Path:
    """The first cells of an .h5ad as their own small file (the workers' warm-up)."""
    from warpbio.singlecell.csr_io import read_csr_rows, read_obs_var, write_csr_h5ad

    if not target.exists():
        rows = read_csr_rows(path, 0, n_cells)
        obs, var = read_obs_var(path)
        write_csr_h5ad(target, rows.data, rows.indices, rows.indptr, rows.shape,
                       obs.iloc[:n_cells], var)  # fmt: skip
    return target


def median_timings(runs: list[dict[str, float]]) -> dict[str, float]:
    stages = [name for name in runs[0] if name not in NOT_CHAIN]
    table = {name: statistics.median(run[name] for run in runs) for name in runs[0]}
    table["chain"] = statistics.median(sum(run[s] for s in stages) for run in runs)
    table["total"] = statistics.median(
        sum(run[s] for s in stages) + run.get("gather embedding", 0.0) for run in runs
    )
    return table


def agreement(result, reference) -> dict[str, float]:
    mine = result.hvg["highly_variable"].to_numpy()
    theirs = reference.hvg["highly_variable"].to_numpy()
    embedding = _host(reference.pca.embedding)
    corr = min(
        abs(np.corrcoef(result.pca.embedding[:, i], embedding[:, i])[0, 1]) for i in range(10)
    )
    return {"hvg_overlap": float((mine & theirs).sum() / theirs.sum()), "min_top10_corr": corr}


def run_one_device(path: Path, settings, repeats: int, xp):
    """One device, no Dask: read_csr to it, then preprocess_counts. Returns the
    timings and the result with its embedding on the host and its matrix dropped
    (the device's memory is freed for the Dask worker that shares it)."""
    from warpbio.singlecell.csr_io import read_csr
    from warpbio.singlecell.preprocess import _synchronize, preprocess_counts
    from warpbio.singlecell.sparse import Csr

    runs, result = [], None
    for _ in range(repeats):
        result = None
        release_device_memory(xp)
        started = time.perf_counter()
        arrays = read_csr(path, xp)
        _synchronize(xp)
        read = time.perf_counter() - started
        counts = Csr(arrays.data, arrays.indices, arrays.indptr, arrays.shape)
        names = list(arrays.var_names)
        del arrays
        result = preprocess_counts(counts, names, settings)
        runs.append({"read": read, **result.timings})
    result.matrix = None
    result.pca.embedding = _host(result.pca.embedding)
    release_device_memory(xp)
    return median_timings(runs), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--h5ad", type=Path, required=True)
    parser.add_argument("--make-cells", type=int, default=0)
    parser.add_argument("--genes", type=int, default=28_000)
    parser.add_argument("--library", type=float, default=6000.0)
    parser.add_argument("--gpus", default="1,2,4", help="GPU counts (workers) to run")
    parser.add_argument(
        "--backend",
        default="gpu",
        choices=["gpu", "cpu"],
        help="cpu: CPU worker processes instead (a check of the script)",
    )
    parser.add_argument("--flavor", default="cell_ranger")
    parser.add_argument("--n-top", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--warmup-cells", type=int, default=20_000)
    parser.add_argument("--no-single", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from warpbio.singlecell.dask_preprocess import (
        dask_client,
        preprocess_distributed,
        visible_gpu_ids,
    )

    xp = array_module(args.backend)
    if not args.h5ad.exists():
        if not args.make_cells:
            parser.error(f"{args.h5ad} does not exist; give --make-cells N to simulate it")
        write_simulated_h5ad(args.h5ad, args.make_cells, args.genes, args.library, 0, xp)
    settings = PreprocessSettings(
        min_genes=200, min_cells=3, max_pct_mt=20,
        hvg=HvgSettings(flavor=args.flavor, n_top_genes=args.n_top), n_pcs=50,
    )  # fmt: skip
    warmup = first_cells(args.h5ad, args.warmup_cells, args.h5ad.with_suffix(".warmup.h5ad"))
    counts = [int(n) for n in args.gpus.split(",")]
    available = visible_gpu_ids() if args.backend == "gpu" else [str(n) for n in range(max(counts))]
    print(f"{args.backend} devices: {available}; running {counts} on {args.h5ad}", flush=True)

    rows, reference = {}, None
    device = "GPU" if args.backend == "gpu" else "CPU worker"
    if not args.no_single:
        run_one_device(warmup, settings, 1, xp)
        name = f"1 {device}, no Dask"
        rows[name], reference = run_one_device(args.h5ad, settings, args.repeats, xp)
        print(f"{name}:", json.dumps(rows[name]), flush=True)
    for n in counts:
        if n > len(available):
            print(f"skipping {n} GPUs: only {len(available)} visible")
            continue
        gpu_ids = available[:n] if args.backend == "gpu" else None
        with dask_client(n, args.backend, gpu_ids) as client:
            preprocess_distributed(warmup, settings, n, args.backend, client=client,
                                   gather_matrix=False)  # fmt: skip
            runs, result = [], None
            for _ in range(args.repeats):
                result, timings = preprocess_distributed(
                    args.h5ad, settings, n, args.backend, client=client, gather_matrix=False
                )
                runs.append(dict(timings))
        name = f"{n} {device}(s), Dask"
        rows[name] = median_timings(runs)
        if reference is None:
            reference = result
        rows[name].update(agreement(result, reference))
        print(f"{name}:", json.dumps(rows[name]), flush=True)

    base = rows.get(f"1 {device}(s), Dask")
    stages = [s for s in next(iter(rows.values())) if s not in ("chain", "total")]
    stages = [s for s in stages if s not in ("hvg_overlap", "min_top10_corr")]
    print("\n| run | " + " | ".join(stages) + " | chain s | total s | speed-up | efficiency |")
    print("|---" * (len(stages) + 5) + "|")
    for name, row in rows.items():
        n = int(name.split()[0])
        speedup = base["chain"] / row["chain"] if base else float("nan")
        efficiency = speedup / n if "no Dask" not in name else float("nan")
        cells = " | ".join(f"{row.get(s, float('nan')):.3f}" for s in stages)
        print(f"| {name} | {cells} | {row['chain']:.2f} | {row['total']:.2f} | "
              f"{speedup:.2f} | {efficiency:.0%} |")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps({"h5ad": str(args.h5ad), "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
