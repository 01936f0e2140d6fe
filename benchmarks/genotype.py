"""Genotype PCA benchmark on one GPU: warpbio's fused kernels vs Dask svd_compressed.

Run on the GPU machine from the repository root:

    PYTHONPATH=src python3 benchmarks/genotype.py --out results.json

Sections (each prints as it goes; the summary table comes last):
1. ceilings: device-to-device copy bandwidth and TF32 matrix rate, measured here;
2. accuracy: 200k SNPs x 4,000 samples (Balding-Nichols, 3 populations, 1% missing),
   randomized PCA (k=10, q=2) in tf32 and tf32x3 vs an exact float64 eigensolve;
3. Dask: svd_compressed (k=10, q=2, CuPy chunks 20,000 x 5,000, the blog's method) on
   the uint8 dosage matrix vs ours on the same genotypes packed, at growing sizes;
4. scale: ours alone on 10M SNPs x 20k samples packed (50 GB), data on the GPU.
With --tune, the kernels' tile sizes are first swept on 2M SNPs x 20k samples and
the fastest are used everywhere after.

With --cpu-vs-plink2 (no GPU needed): plink2 --pca approx against ours on the CPU,
same .bed, same cores, both timed end to end from the .bed, both scored against
an exact eigensolve.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from warpbio.genotype.kernels import TritonPackedMatrix, count_genotypes
from warpbio.genotype.pca import (
    PackedStandardizedMatrix,
    exact_pca,
    randomized_pca,
    standardization_table,
)
from warpbio.genotype.plink import decode_genotypes, pack_genotypes
from warpbio.genotype.simulate import (
    BaldingNicholsSpec,
    population_frequencies,
    population_labels,
    sample_table,
    simulate_block,
)


def sync():
    import cupy as cp

    cp.cuda.Device().synchronize()


def timed(function, repeats=1):
    """Median wall time of ``repeats`` synchronized runs, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        result = function()
        sync()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), result


def ceilings() -> dict:
    import cupy as cp
    import torch

    source = cp.random.random(1 << 29, dtype=cp.float64)  # 4 GiB
    target = cp.empty_like(source)
    target[...] = source
    seconds, _ = timed(lambda: target.__setitem__(Ellipsis, source), repeats=5)
    bandwidth = 2 * source.nbytes / seconds
    torch.backends.cuda.matmul.allow_tf32 = True
    a = torch.randn(8192, 8192, device="cuda")
    b = torch.randn(8192, 8192, device="cuda")
    a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    tf32 = 10 * 2 * 8192**3 / (time.perf_counter() - start)
    return {"copy_bytes_per_s": bandwidth, "tf32_flops": tf32}


def simulate_packed(n_snps: int, n_samples: int, seed: int, rows=None, block: int = 25_000):
    """Balding-Nichols genotypes generated and packed on the current GPU.

    Each block of ``block`` SNPs has its own seed, so any block-aligned row range
    (``rows`` = (start, stop)) holds the same genotypes wherever it is made.
    """
    import cupy as cp

    spec = BaldingNicholsSpec(n_samples=n_samples, n_snps=n_snps, fst=0.05, missing_rate=0.01)
    freqs = population_frequencies(spec, np.random.default_rng(seed))
    labels = population_labels(spec)
    first, last = rows or (0, n_snps)
    packed = cp.empty((last - first, (n_samples + 3) // 4), dtype=cp.uint8)
    for start in range(first, last, block):
        stop = min(start + block, last)
        rng = cp.random.default_rng(seed * 1_000_003 + start // block)
        dosage = simulate_block(freqs[start:stop], labels, spec.missing_rate, rng, cp)
        packed[start - first : stop - first] = pack_genotypes(dosage, cp)
    sync()
    return packed, labels


def gpu_table(packed, n_samples):
    """Standardization table and the genotype counts it came from (one counting read)."""
    counts = count_genotypes(packed, n_samples)
    alt, _, called = counts
    freq = (alt / (2 * called)).get()
    return standardization_table(np.clip(freq, 1e-6, 1 - 1e-6)), counts


def pca_flops(n_snps, n_samples, width_padded, passes):
    return passes * 2 * 2 * n_snps * n_samples * width_padded


def accuracy() -> dict:
    import cupy as cp

    n_snps, n_samples = 200_000, 4_000
    packed, _ = simulate_packed(n_snps, n_samples, seed=5)
    table, _ = gpu_table(packed, n_samples)
    reference = PackedStandardizedMatrix(packed, table, n_samples, cp, 8192, np.float64)
    exact = exact_pca(reference, 10)
    float64_randomized = randomized_pca(reference, 10, seed=0)
    rows = {}
    for precision in ("fp16", "tf32", "tf32x3"):
        matrix = TritonPackedMatrix(packed, table, n_samples, precision)
        result = randomized_pca(matrix, 10, seed=0)
        relative = np.abs(result.eigenvalues - exact.eigenvalues) / exact.eigenvalues
        rows[precision] = {
            "pc1_pc2_abs_corr_vs_exact": [
                float(abs(np.dot(result.eigenvectors[:, i], exact.eigenvectors[:, i])))
                for i in range(2)
            ],
            "top2_eigenvalue_rel_err_vs_exact": relative[:2].tolist(),
            "top10_eigenvalue_rel_err_vs_same_algorithm_float64": float(
                np.max(
                    np.abs(result.eigenvalues - float64_randomized.eigenvalues)
                    / float64_randomized.eigenvalues
                )
            ),
        }
        print(f"accuracy {precision}: {rows[precision]}", flush=True)
    return rows


def dask_case(n_snps: int, args, tiles) -> dict:
    """Ours and Dask svd_compressed on the same genotypes (packed vs uint8 dosages)."""
    import cupy as cp
    import dask
    import dask.array as da

    packed, _ = simulate_packed(n_snps, args.samples, seed=9)
    table, counts = gpu_table(packed, args.samples)
    ours = TritonPackedMatrix(packed, table, args.samples, args.precision, counts=counts, **tiles)
    randomized_pca(ours, args.k, power_iterations=args.q, seed=0)  # warm-up
    our_seconds, _ = timed(lambda m=ours: randomized_pca(m, args.k, power_iterations=args.q), 3)
    row = {"n_snps": n_snps, "n_samples": args.samples, "ours_s": our_seconds}
    try:
        dosage = cp.empty((n_snps, args.samples), dtype=cp.uint8)
        for start in range(0, n_snps, 100_000):
            block = decode_genotypes(packed[start : start + 100_000], args.samples, cp)
            dosage[start : start + 100_000] = cp.where(block < 0, 0, block)
        del ours, packed, block  # the GPU's memory is Dask's from here on
        cp.get_default_memory_pool().free_all_blocks()
        matrix = da.from_array(dosage, chunks=(20_000, 5_000), asarray=False)
        state = da.random.RandomState(RandomState=cp.random.RandomState)

        def run_dask():
            parts = da.linalg.svd_compressed(
                matrix, k=args.k, n_power_iter=args.q, seed=state, compute=False
            )
            return dask.compute(*parts)

        run_dask()  # warm-up
        row["dask_s"], _ = timed(run_dask, 3)
        row["speedup"] = row["dask_s"] / our_seconds
    except Exception as error:
        row["dask_error"] = f"{type(error).__name__}: {str(error)[:200]}"
    return row


def dask_versus_ours(args, tiles) -> list[dict]:
    import cupy as cp

    try:
        import dask.array  # noqa: F401
    except ImportError:
        print("dask not importable: Dask comparison skipped", flush=True)
        return []
    rows = []
    for n_snps in args.dask_snps:
        rows.append(dask_case(n_snps, args, tiles))
        print(f"dask vs ours: {rows[-1]}", flush=True)
        cp.get_default_memory_pool().free_all_blocks()
    return rows


COUNT_TILES = [(32, 64, 4), (64, 64, 4), (16, 128, 4), (32, 128, 8), (64, 128, 8), (32, 256, 8)]
TIMES_TILES = [
    (128, 64, 4, 3), (128, 32, 4, 3), (256, 64, 8, 3), (128, 128, 8, 3), (64, 64, 4, 3),
    (128, 64, 4, 4), (256, 32, 8, 3), (64, 128, 4, 3),
]  # fmt: skip
TRANSPOSE_TILES = [
    (32, 128, 4, 3), (16, 128, 4, 3), (32, 128, 4, 4), (64, 64, 4, 3), (32, 256, 8, 3),
    (64, 128, 8, 3), (16, 256, 4, 3), (32, 64, 4, 3),
]  # fmt: skip


def tune(args, limits) -> dict:
    """Fastest tiles of each kernel on 2M x 20k packed; bandwidth fraction of each."""
    import cupy as cp

    from warpbio.genotype.kernels import count_genotypes

    packed, _ = simulate_packed(2_000_000, args.samples, seed=3)
    table, _ = gpu_table(packed, args.samples)
    vectors = cp.asarray(np.random.default_rng(0).standard_normal((args.samples, 20)))
    floor = packed.nbytes / limits["copy_bytes_per_s"]
    best = {}

    def sweep(name, tiles, run):
        results = []
        for tile in tiles:
            try:
                run(tile)  # compile + warm-up
                seconds, _ = timed(lambda tile=tile: run(tile), 3)
            except Exception as error:
                print(f"tune {name} {tile}: {type(error).__name__}", flush=True)
                continue
            results.append((seconds, tile))
            print(f"tune {name} {tile}: {seconds * 1e3:.1f} ms, floor {floor / seconds:.0%}")
        seconds, tile = min(results)
        best[name] = {"tile": list(tile), "ms": seconds * 1e3, "fraction_of_floor": floor / seconds}

    sweep("count", COUNT_TILES, lambda t: count_genotypes(packed, args.samples, *t))
    # one matrix for all tiles: its set-up (the fp16 table) stays out of the timings
    matrix = TritonPackedMatrix(packed, table, args.samples, args.precision)
    image = matrix.times(vectors)

    def with_tiles(attribute, tile, product, operand):
        setattr(matrix, attribute, tile)
        return product(operand)

    sweep("times", TIMES_TILES, lambda t: with_tiles("times_tiles", t, matrix.times, vectors))
    sweep(
        "transpose",
        TRANSPOSE_TILES,
        lambda t: with_tiles("transpose_tiles", t, matrix.transpose_times, image),
    )
    print(f"tuned: {best}", flush=True)
    return best


def tiles_of(report) -> dict:
    tuned = report.get("tune", {})
    return {
        "times_tiles": tuple(tuned["times"]["tile"]) if "times" in tuned else (128, 32, 4, 3),
        "transpose_tiles": tuple(tuned["transpose"]["tile"])
        if "transpose" in tuned
        else (16, 128, 4, 3),
    }


def scale(args, limits, tiles) -> dict:
    start = time.perf_counter()
    packed, _ = simulate_packed(args.snps, args.samples, seed=1)
    generated = time.perf_counter() - start
    print(f"generated {packed.nbytes / 1e9:.1f} GB packed in {generated:.1f} s", flush=True)
    frequency_seconds, (table, counts) = timed(lambda: gpu_table(packed, args.samples))
    matrix = TritonPackedMatrix(packed, table, args.samples, args.precision, counts=counts, **tiles)
    randomized_pca(matrix, args.k, power_iterations=args.q, seed=0)  # warm-up
    seconds, result = timed(lambda: randomized_pca(matrix, args.k, power_iterations=args.q), 3)
    passes = args.q + 2
    bytes_moved = 2 * passes * packed.nbytes  # two kernels a pass (counts come with the table)
    flops = pca_flops(args.snps, args.samples, 32, passes)
    memory_floor = bytes_moved / limits["copy_bytes_per_s"]
    compute_floor = flops / limits["tf32_flops"]
    row = {
        "n_snps": args.snps,
        "n_samples": args.samples,
        "packed_gb": packed.nbytes / 1e9,
        "pca_s": seconds,
        "frequencies_s": frequency_seconds,
        "passes": passes,
        "memory_floor_s": memory_floor,
        "compute_floor_s": compute_floor,
        "fraction_of_floor": max(memory_floor, compute_floor) / seconds,
        "eigenvalues": result.eigenvalues.tolist(),
        "variance_ratio_pc1_pc2": result.explained_variance_ratio[:2].tolist(),
    }
    print(f"scale: {row}", flush=True)
    return row


def scaling(args, tiles) -> list[dict]:
    """The same 10M x 20k problem on 1 GPU and on all GPUs (SNPs split evenly)."""
    import cupy as cp

    from warpbio.genotype.kernels import MultiGpuPackedMatrix

    rows = []
    for n_gpus in sorted({1, cp.cuda.runtime.getDeviceCount()}):
        bounds = np.linspace(0, args.snps, n_gpus + 1).astype(int)
        slices = []
        for device in range(n_gpus):
            with cp.cuda.Device(device):
                slices.append(
                    simulate_packed(
                        args.snps, args.samples, 1, (bounds[device], bounds[device + 1])
                    )[0]
                )
        matrix = MultiGpuPackedMatrix.from_device_slices(
            slices, args.samples, precision=args.precision, **tiles
        )
        randomized_pca(matrix, args.k, power_iterations=args.q, seed=0)  # warm-up
        seconds, result = timed(
            lambda m=matrix: randomized_pca(m, args.k, power_iterations=args.q), 3
        )
        rows.append(
            {"gpus": n_gpus, "pca_s": seconds, "eigenvalues": result.eigenvalues[:3].tolist()}
        )
        print(f"scaling: {rows[-1]}", flush=True)
        del matrix, slices
        for device in range(n_gpus):
            with cp.cuda.Device(device):
                cp.get_default_memory_pool().free_all_blocks()
    for row in rows:
        row["efficiency"] = rows[0]["pca_s"] / (row["gpus"] * row["pca_s"])
    return rows


def cpu_versus_plink2(args) -> None:
    """plink2 --pca approx vs warpbio on the CPU, same .bed and threads."""
    import shutil
    import subprocess
    import tempfile

    import pandas as pd

    from warpbio.genotype.plink import read_bed
    from warpbio.genotype.simulate import simulate_to_bed
    from warpbio.genotype.stats import count_genotypes

    plink2 = shutil.which("plink2")
    if plink2 is None:
        raise SystemExit("plink2 is not installed (Debian: apt-get install plink2)")
    threads = str(os.cpu_count())
    folder = Path(tempfile.mkdtemp(prefix="pca-bench-"))
    spec = BaldingNicholsSpec(
        n_samples=args.cpu_samples, n_snps=args.cpu_snps, fst=0.05, missing_rate=0.01
    )
    simulate_to_bed(folder / "data", spec, seed=1)
    start = time.perf_counter()
    subprocess.run(
        [plink2, "--bfile", str(folder / "data"), "--pca", "approx", str(args.k),
         "--threads", threads, "--out", str(folder / "plink2")],
        check=True, capture_output=True,
    )  # fmt: skip
    plink2_seconds = time.perf_counter() - start

    def ours():
        bed = read_bed(folder / "data")
        freq = count_genotypes(bed).alt_frequency
        matrix = PackedStandardizedMatrix(bed.packed, standardization_table(freq), bed.n_samples)
        return matrix, randomized_pca(matrix, args.k, power_iterations=args.q, seed=0)

    start = time.perf_counter()
    matrix, result = ours()
    our_seconds = time.perf_counter() - start
    start = time.perf_counter()
    exact = exact_pca(
        PackedStandardizedMatrix(
            matrix.packed, matrix.table, matrix.n_samples, np, 8192, np.float64
        ),
        args.k,
    )
    exact_seconds = time.perf_counter() - start
    theirs = pd.read_csv(folder / "plink2.eigenvec", sep="\t")

    def corr(vectors, i):
        return float(abs(np.corrcoef(vectors[:, i], exact.eigenvectors[:, i])[0, 1]))

    plink2_vectors = theirs[[f"PC{i + 1}" for i in range(args.k)]].to_numpy()
    rows = {
        "warpbio": (our_seconds, [corr(result.eigenvectors, i) for i in range(args.k)]),
        "plink2 approx": (plink2_seconds, [corr(plink2_vectors, i) for i in range(args.k)]),
    }
    relative = np.abs(result.eigenvalues - exact.eigenvalues) / exact.eigenvalues
    shutil.rmtree(folder)
    print(f"\n== CPU genotype PCA, {args.cpu_snps:,} SNPs x {args.cpu_samples:,} samples, "
          f"k={args.k}, {threads} threads; exact eigensolve {exact_seconds:.1f} s ==")  # fmt: skip
    print(f"{'tool':<16}{'seconds':>9}{'PC1 corr':>11}{'PC2 corr':>11}{'min PC3-10':>12}")
    for name, (seconds, corrs) in rows.items():
        print(f"{name:<16}{seconds:>9.2f}{corrs[0]:>11.6f}{corrs[1]:>11.6f}{min(corrs[2:]):>12.4f}")
    print(f"speed-up vs plink2: {plink2_seconds / our_seconds:.2f}x; "
          f"warpbio top-2 eigenvalue rel err {relative[:2].max():.1e}")  # fmt: skip


class TiledPacked:
    """``copies`` copies of one packed block, one after another, as a read-only
    (SNPs x bytes) array: what the store is written from, with no .bed on disk."""

    def __init__(self, block: np.ndarray, copies: int):
        self.block, self.copies = block, copies
        self.shape = (block.shape[0] * copies, block.shape[1])

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, _ = rows.indices(self.shape[0])
        index = np.arange(start, stop) % self.block.shape[0]
        return self.block[index]


def cpu_out_of_core(args) -> None:
    """CPU PCA from a Zarr store larger than this machine's memory, read out of core.

    The store holds ``copies`` copies of one simulated block of SNPs (distinct IDs),
    compressed as the workflow stores them; it is made larger on disk than the
    memory. Then A^T A = copies x B^T B and the GRM eigenvalues (/ M) equal those of
    the block B, so the out-of-core result must equal the in-memory PCA of B with the
    same seed: a check of the result, not only of the run.
    """
    import logging
    import math
    import resource
    import shutil

    import pandas as pd
    import psutil

    from warpbio.genotype.plink import BedFile
    from warpbio.genotype.stats import count_genotypes
    from warpbio.genotype.store import read_store, write_store

    # progress of each pass, once a minute (a pass over the store takes minutes)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("warpbio.progress").setLevel(logging.INFO)
    folder = Path(args.workdir)
    folder.mkdir(parents=True, exist_ok=True)
    memory = psutil.virtual_memory().total
    spec = BaldingNicholsSpec(
        n_samples=args.cpu_samples, n_snps=args.ooc_block_snps, fst=0.05, missing_rate=0.01
    )
    rng = np.random.default_rng(7)
    freqs, labels = population_frequencies(spec, rng), population_labels(spec)
    block = np.concatenate(
        [
            pack_genotypes(simulate_block(freqs[s : s + 5000], labels, 0.01, rng, np))
            for s in range(0, spec.n_snps, 5000)
        ]
    )
    stamp = time.perf_counter()
    if args.ooc_keep and (folder / "tiled.zarr").exists():
        copies = read_store(folder / "tiled.zarr").n_snps // spec.n_snps
        print(f"reusing {folder / 'tiled.zarr'} ({copies} copies of the block)")
    else:
        # the store is compressed: size it from a trial chunk's compression ratio
        write_store(tiny_bed(block[:65_536], spec, BedFile), folder / "trial.zarr")
        ratio = zarr_bytes(folder / "trial.zarr") / block[:65_536].nbytes
        shutil.rmtree(folder / "trial.zarr")
        copies = math.ceil(args.ooc_factor * memory / (ratio * block.nbytes))
        ids = [f"copy{c}_snp{i}" for c in range(copies) for i in range(spec.n_snps)]
        variants = pd.DataFrame(
            {"chrom": "1", "id": ids, "cm": 0, "pos": np.arange(1, len(ids) + 1),
             "a1": "A", "a2": "G"}
        )  # fmt: skip
        tiled = BedFile(folder / "tiled", TiledPacked(block, copies), variants, sample_table(spec))
        write_store(tiled, folder / "tiled.zarr")
        del ids, variants, tiled  # gigabytes of Python strings at tens of millions of SNPs
    prepare_seconds = time.perf_counter() - stamp
    store_bytes = zarr_bytes(folder / "tiled.zarr")
    try:  # start cold: nothing of the store in the page cache
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        print("could not drop the page cache (not root): the first pass may hit it")
    print(f"store {store_bytes / 1e9:.1f} GB on disk ({copies} x {spec.n_snps:,} SNPs x "
          f"{spec.n_samples:,} samples, {copies * block.nbytes / 1e9:.1f} GB packed) vs "
          f"memory {memory / 1e9:.1f} GB; made in {prepare_seconds:.0f} s", flush=True)  # fmt: skip

    stamp = time.perf_counter()
    store = read_store(folder / "tiled.zarr")
    table = standardization_table(count_genotypes(store).alt_frequency)
    count_seconds = time.perf_counter() - stamp
    matrix = PackedStandardizedMatrix(store.packed, table, store.n_samples, np, 8192)
    result = randomized_pca(matrix, args.k, power_iterations=args.q, seed=0)
    pca_seconds = time.perf_counter() - stamp - count_seconds
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    reference = randomized_pca(
        PackedStandardizedMatrix(block, table[: spec.n_snps], spec.n_samples, np, 8192),
        args.k,
        power_iterations=args.q,
        seed=0,
    )
    corr = [
        float(abs(np.dot(result.eigenvectors[:, i], reference.eigenvectors[:, i])))
        for i in range(args.k)
    ]
    error = np.max(np.abs(result.eigenvalues - reference.eigenvalues) / reference.eigenvalues)
    if not args.ooc_keep:
        shutil.rmtree(folder / "tiled.zarr")
    print(f"\n== CPU out-of-core PCA, {os.cpu_count()} cores, k={args.k} q={args.q} ==")
    print(f"store on disk        {store_bytes / 1e9:8.1f} GB (memory {memory / 1e9:.1f} GB)")
    print(f"counts + table       {count_seconds:8.1f} s (one read)")
    print(f"randomized PCA       {pca_seconds:8.1f} s ({args.q + 2} reads)")
    print(f"peak resident memory {peak_rss / 1e9:8.2f} GB")
    print(f"vs in-memory PCA of the block: min |corr| PC1-{args.k} {min(corr):.8f}, "
          f"max eigenvalue rel err {error:.1e}")  # fmt: skip


def tiny_bed(packed, spec, bed_class):
    """A BedFile of a packed block with made-up variant names (for a trial store)."""
    import pandas as pd

    n = packed.shape[0]
    variants = pd.DataFrame(
        {"chrom": "1", "id": [f"v{i}" for i in range(n)], "cm": 0,
         "pos": np.arange(1, n + 1), "a1": "A", "a2": "G"}
    )  # fmt: skip
    return bed_class("trial", packed, variants, sample_table(spec))


def zarr_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snps", type=int, default=10_000_000)
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--q", type=int, default=2)
    parser.add_argument("--precision", default="fp16", choices=["fp16", "tf32", "tf32x3", "ieee"])
    parser.add_argument("--dask-snps", type=int, nargs="*", default=[500_000, 1_000_000])
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=["accuracy", "dask", "scale", "scaling"]
    )
    parser.add_argument("--tune", action="store_true", help="sweep kernel tiles first")
    parser.add_argument("--out", default=None)
    parser.add_argument("--cpu-vs-plink2", action="store_true", help="CPU comparison only")
    parser.add_argument("--cpu-snps", type=int, default=200_000)
    parser.add_argument("--cpu-samples", type=int, default=3_000)
    parser.add_argument(
        "--cpu-out-of-core", action="store_true", help="CPU PCA of a store larger than RAM"
    )
    parser.add_argument("--ooc-block-snps", type=int, default=100_000)
    parser.add_argument("--ooc-factor", type=float, default=1.1, help="store size / memory")
    parser.add_argument("--workdir", default="ooc-work")
    parser.add_argument(
        "--ooc-keep", action="store_true", help="keep the store, and reuse one left in --workdir"
    )
    args = parser.parse_args()
    if args.cpu_vs_plink2:
        cpu_versus_plink2(args)
        return
    if args.cpu_out_of_core:
        cpu_out_of_core(args)
        return

    import cupy as cp

    device = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    limits = ceilings()
    print(f"device {device}; ceilings {limits}", flush=True)
    report = {"device": device, "ceilings": limits, "args": vars(args)}
    if "accuracy" not in args.skip:
        report["accuracy"] = accuracy()
        cp.get_default_memory_pool().free_all_blocks()
    if args.tune:
        report["tune"] = tune(args, limits)
        cp.get_default_memory_pool().free_all_blocks()
    if "dask" not in args.skip:
        report["dask"] = dask_versus_ours(args, tiles_of(report))
    if "scale" not in args.skip:
        report["scale"] = scale(args, limits, tiles_of(report))
    if "scaling" not in args.skip and cp.cuda.runtime.getDeviceCount() > 1:
        report["scaling"] = scaling(args, tiles_of(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))

    print(f"\n== genotype PCA, {device}, k={args.k} q={args.q}, precision {args.precision} ==")
    copy, tf32 = limits["copy_bytes_per_s"] / 1e12, limits["tf32_flops"] / 1e12
    print(f"copy {copy:.2f} TB/s, tf32 {tf32:.0f} TFLOP/s")
    print(f"{'case':<34}{'ours s':>9}{'dask s':>9}{'ratio':>8}{'floor':>8}")
    for row in report.get("dask", []):
        case = f"{row['n_snps']:,} x {row['n_samples']:,}"
        dask_s = f"{row['dask_s']:.2f}" if "dask_s" in row else "fail"
        ratio = f"{row['speedup']:.1f}x" if "speedup" in row else "-"
        print(f"{case:<34}{row['ours_s']:>9.3f}{dask_s:>9}{ratio:>8}{'':>8}")
    if "scale" in report:
        row = report["scale"]
        case = f"{row['n_snps']:,} x {row['n_samples']:,} packed"
        fraction = f"{100 * row['fraction_of_floor']:.0f}%"
        print(f"{case:<34}{row['pca_s']:>9.3f}{'-':>9}{'-':>8}{fraction:>8}")
    for row in report.get("scaling", []):
        print(f"{row['gpus']} GPU(s), {args.snps:,} x {args.samples:,}: {row['pca_s']:.3f} s, "
              f"parallel efficiency {100 * row['efficiency']:.0f}%")  # fmt: skip
    for name, row in report.get("tune", {}).items():
        print(f"kernel {name}: tile {row['tile']}, {row['ms']:.1f} ms on 2M x 20k, "
              f"{100 * row['fraction_of_floor']:.0f}% of the copy floor")  # fmt: skip
    for precision, row in report.get("accuracy", {}).items():
        corr = min(row["pc1_pc2_abs_corr_vs_exact"])
        err = max(row["top2_eigenvalue_rel_err_vs_exact"])
        print(f"accuracy {precision}: PC1-2 |corr| {corr:.7f}, top-2 eigenvalue rel err {err:.1e}")


if __name__ == "__main__":
    main()
