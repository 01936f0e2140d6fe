"""Genotype PCA: randomized SVD (and exact) of the standardized genotype matrix.

The standardized matrix is never materialized. For SNP i with ALT frequency p,
a 2-bit code decodes straight to its standardized value (g - 2p)/sqrt(2p(1-p)),
missing calls to 0 (mean imputation), through a per-SNP 4-entry table, so one
pass over the packed data applies the whole matrix.

With A the (SNPs x samples) standardized matrix, each pass over the data
computes Z = A^T (A V) block by block (both products while the block is hot).
Randomized SVD in the sample space (see :func:`randomized_pca`): a Gaussian
start block, q power iterations with re-orthonormalization, then Rayleigh-Ritz;
q + 2 reads of the data in all.
Eigenvalues are reported as plink2 does: those of the genetic relationship
matrix X X^T / M (M = number of variants).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from types import ModuleType

import numpy as np

from warpbio.device import to_numpy
from warpbio.genotype.plink import packed_blocks
from warpbio.progress import Progress

log = logging.getLogger(__name__)

SHIFTS = np.array([0, 2, 4, 6], dtype=np.uint8)


def standardization_table(alt_freq: np.ndarray, dtype=np.float32) -> np.ndarray:
    """(n_snps, 4) code -> standardized value; codes 00, 01, 10, 11 = 2, missing, 1, 0 ALT."""
    p = np.asarray(alt_freq, dtype=np.float64)
    sd = np.sqrt(2.0 * p * (1.0 - p))
    if np.any(~np.isfinite(sd) | (sd <= 0)):
        bad = int(np.sum(~np.isfinite(sd) | (sd <= 0)))
        raise ValueError(
            f"{bad} monomorphic or all-missing variants cannot be standardized; "
            "run the QC step (it removes them) before PCA"
        )
    table = np.empty((p.size, 4), dtype=np.float64)
    table[:, 0] = (2.0 - 2.0 * p) / sd
    table[:, 1] = 0.0
    table[:, 2] = (1.0 - 2.0 * p) / sd
    table[:, 3] = (0.0 - 2.0 * p) / sd
    return table.astype(dtype)


def decode_standardized(packed, table, n_samples: int, xp: ModuleType = np):
    """Packed block (b, bytes) + its table rows (b, 4) -> standardized (b, n_samples).

    On the CPU a Numba loop (one table lookup a genotype, rows in parallel) does it
    where Numba is installed: ~10x the vectorized gather, whose index arrays take
    8 bytes a genotype.
    """
    if xp is np and _numba_decoder() is not None:
        packed = np.ascontiguousarray(packed, dtype=np.uint8)
        table = np.ascontiguousarray(table)
        out = np.empty((packed.shape[0], n_samples), dtype=table.dtype)
        _numba_decoder()(packed, table, out)
        return out
    packed = xp.asarray(packed)
    codes = (packed[:, :, None] >> xp.asarray(SHIFTS)) & 3
    codes = codes.reshape(packed.shape[0], -1)[:, :n_samples]
    return xp.take_along_axis(xp.asarray(table), codes.astype(xp.intp), axis=1)


@lru_cache(maxsize=1)
def _numba_decoder():
    try:
        from numba import njit, prange
    except ImportError:
        return None

    @njit(parallel=True, nogil=True)
    def decode(packed, table, out):
        n_samples = out.shape[1]
        full = n_samples // 4  # bytes whose four codes are all samples
        for i in prange(packed.shape[0]):
            entries = table[i]
            row = out[i]
            for j in range(full):
                byte = packed[i, j]
                row[4 * j] = entries[byte & 3]
                row[4 * j + 1] = entries[(byte >> 2) & 3]
                row[4 * j + 2] = entries[(byte >> 4) & 3]
                row[4 * j + 3] = entries[byte >> 6]
            for k in range(n_samples - 4 * full):
                row[4 * full + k] = entries[(packed[i, full] >> (2 * k)) & 3]

    return decode


@dataclass
class PackedStandardizedMatrix:
    """The standardized (SNPs x samples) matrix behind packed 2-bit genotypes.

    ``packed`` is anything that slices to uint8 blocks: a NumPy memmap of a .bed,
    an in-memory array, a CuPy array already on the GPU, or a Zarr array.
    """

    packed: object
    table: np.ndarray
    n_samples: int
    xp: ModuleType = np
    block_snps: int = 8192
    dtype: type = np.float32

    def __post_init__(self) -> None:
        self.n_snps = int(self.table.shape[0])
        self._table = self.xp.asarray(self.table, dtype=self.dtype)

    def blocks(self) -> Iterator[tuple[int, object]]:
        for start, packed in packed_blocks(self.packed, self.block_snps):
            table = self._table[start : start + packed.shape[0]]
            yield start, decode_standardized(packed, table, self.n_samples, self.xp)

    def gram_times(self, vectors, label: str = "pass", sum_squares: bool = False):
        """A^T (A V) in one read of the data, accumulated in float64.

        With ``sum_squares`` also returns trace(A^T A), taken from the same
        decoded blocks (it scales the explained-variance ratios).
        """
        xp = self.xp
        right = xp.asarray(vectors, dtype=self.dtype)
        total = xp.zeros((self.n_samples, right.shape[1]), dtype=xp.float64)
        squares = xp.zeros((), dtype=xp.float64)
        progress = Progress(label, self.n_snps, unit="SNPs")
        for _, block in self.blocks():
            total += (block.T @ (block @ right)).astype(xp.float64)
            if sum_squares:
                squares += (block.astype(xp.float64) ** 2).sum()
            progress.update(block.shape[0])
        return (total, float(to_numpy(squares))) if sum_squares else total

    def times(self, vectors):
        """A V (SNPs x width), block by block."""
        xp = self.xp
        right = xp.asarray(vectors, dtype=self.dtype)
        return xp.concatenate([block @ right for _, block in self.blocks()])

    def gram(self):
        """A^T A (samples x samples) in float64: the exact path for small cohorts."""
        xp = self.xp
        total = xp.zeros((self.n_samples, self.n_samples), dtype=xp.float64)
        for _, block in self.blocks():
            block = block.astype(xp.float64)
            total += block.T @ block
        return total


@dataclass
class PcaResult:
    eigenvectors: np.ndarray  # (n_samples, k), unit norm columns (plink2 .eigenvec)
    eigenvalues: np.ndarray  # (k,), of X X^T / M (plink2 .eigenval)
    singular_values: np.ndarray  # (k,), of the standardized matrix
    n_variants: int
    total_variance: float  # trace of X X^T / M, for explained-variance ratios
    method: str

    @property
    def explained_variance_ratio(self) -> np.ndarray:
        return self.eigenvalues / self.total_variance


def _orient(vectors: np.ndarray) -> np.ndarray:
    """Deterministic signs: the largest-magnitude entry of each PC is positive."""
    rows = np.argmax(np.abs(vectors), axis=0)
    signs = np.sign(vectors[rows, np.arange(vectors.shape[1])])
    signs[signs == 0] = 1
    return vectors * signs


def exact_pca(matrix: PackedStandardizedMatrix, k: int) -> PcaResult:
    """Exact eigendecomposition of A^T A (n_samples^2 memory; for small cohorts)."""
    xp = matrix.xp
    gram = matrix.gram()
    values, vectors = xp.linalg.eigh(gram)
    order = xp.argsort(values)[::-1][:k]
    values, vectors = to_numpy(values[order]), to_numpy(vectors[:, order])
    values = np.clip(values, 0.0, None)
    total = float(to_numpy(xp.trace(gram))) / matrix.n_snps
    return PcaResult(
        _orient(vectors), values / matrix.n_snps, np.sqrt(values), matrix.n_snps, total, "exact"
    )


def _orthonormal(block, previous, xp):
    """Orthonormal basis of ``block`` orthogonal to the columns of ``previous``.

    Two rounds of block Gram-Schmidt ("twice is enough") keep the Krylov basis
    orthogonal in float64 even when a new block nearly repeats an old one.
    """
    basis, _ = xp.linalg.qr(block)
    if previous is not None:
        for _ in range(2):
            basis = basis - previous @ (previous.T @ basis)
            basis, _ = xp.linalg.qr(basis)
    return basis


def randomized_pca(
    matrix: PackedStandardizedMatrix,
    k: int,
    oversampling: int = 10,
    power_iterations: int = 2,
    seed: int = 0,
    algorithm: str = "krylov",
) -> PcaResult:
    """Randomized SVD of the standardized matrix with q power iterations.

    ``krylov`` (default): block Krylov (Musco & Musco 2015). Rayleigh-Ritz runs
    over the whole Krylov space [V, GV, ..., G^q V] (G = A^T A) whose images
    under G were all computed on the way, so it costs the same q + 2 reads of
    the data as ``subspace`` iteration (Halko et al. 2011, Alg. 4.4) and is far
    more accurate for eigenvalues without a large spectral gap.

    The start block is drawn on the host from ``seed`` with a size that depends
    only on the sample count: results do not depend on block size or device
    beyond floating-point rounding.
    """
    if algorithm not in ("krylov", "subspace"):
        raise ValueError(f"algorithm {algorithm!r} is not 'krylov' or 'subspace'")
    xp = matrix.xp
    width = k + oversampling
    space = width * (power_iterations + 1) if algorithm == "krylov" else width
    if space > matrix.n_samples:
        raise ValueError(
            f"k + oversampling = {width} (x {power_iterations + 1} Krylov blocks = {space}) "
            f"exceeds the {matrix.n_samples} samples; lower oversampling or use method: exact"
        )
    start = np.random.default_rng(seed).standard_normal((matrix.n_samples, width))
    # orthonormal start: bounded magnitudes in the products (fp16 on the GPU)
    start = xp.asarray(np.linalg.qr(start)[0])
    image, sum_squares = matrix.gram_times(start, "range pass", sum_squares=True)
    bases, images = [], []
    for step in range(power_iterations + 1):
        previous = xp.hstack(bases) if (bases and algorithm == "krylov") else None
        basis = _orthonormal(image, previous, xp)
        label = "Rayleigh-Ritz pass" if step == power_iterations else f"power iteration {step + 1}"
        image = matrix.gram_times(basis, label=label)
        if algorithm == "subspace":
            bases, images = [], []
        bases.append(basis)
        images.append(image)
    basis, image = xp.hstack(bases), xp.hstack(images)
    projected = basis.T @ image
    values, rotation = xp.linalg.eigh((projected + projected.T) / 2)
    order = xp.argsort(values)[::-1][:k]
    vectors = to_numpy(basis @ rotation[:, order])
    values = np.clip(to_numpy(values[order]), 0.0, None)
    return PcaResult(
        _orient(vectors),
        values / matrix.n_snps,
        np.sqrt(values),
        matrix.n_snps,
        sum_squares / matrix.n_snps,
        f"randomized-{algorithm}",
    )


def run_pca(
    matrix: PackedStandardizedMatrix,
    k: int,
    method: str = "auto",
    exact_max_samples: int = 500,
    **randomized,
) -> PcaResult:
    """``exact`` | ``randomized`` | ``auto`` (exact up to ``exact_max_samples`` samples)."""
    if k < 1 or k > matrix.n_samples:
        raise ValueError(f"k={k} must lie in 1..{matrix.n_samples} (the sample count)")
    if method == "auto":
        method = "exact" if matrix.n_samples <= exact_max_samples else "randomized"
    if method == "exact":
        return exact_pca(matrix, k)
    if method == "randomized":
        return randomized_pca(matrix, k, **randomized)
    raise ValueError(f"method {method!r} is not auto, exact or randomized")


def eigenvec_table(samples, result: PcaResult):
    """plink2 .eigenvec: #FID IID PC1..PCk (unit-norm eigenvectors)."""
    import pandas as pd

    table = pd.DataFrame({"#FID": samples["fid"].to_numpy(), "IID": samples["iid"].to_numpy()})
    for i in range(result.eigenvectors.shape[1]):
        table[f"PC{i + 1}"] = result.eigenvectors[:, i]
    return table


def plot_pca(table, result: PcaResult, populations, path) -> None:
    """PC1/PC2 and PC3/PC4 by population, and the scree plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = [(1, 2)] + ([(3, 4)] if result.eigenvectors.shape[1] >= 4 else [])
    fig, axes = plt.subplots(1, len(pairs) + 1, figsize=(5 * (len(pairs) + 1), 4.4))
    groups = sorted(set(populations))
    for axis, (a, b) in zip(axes, pairs, strict=False):
        for group in groups:
            mask = np.asarray(populations) == group
            axis.scatter(table[f"PC{a}"][mask], table[f"PC{b}"][mask], s=6, label=group, alpha=0.7)
        ratio = result.explained_variance_ratio
        axis.set(
            xlabel=f"PC{a} ({100 * ratio[a - 1]:.2f}%)",
            ylabel=f"PC{b} ({100 * ratio[b - 1]:.2f}%)",
            title=f"PC{a} vs PC{b}",
        )
    axes[0].legend(markerscale=3, fontsize=8, title="population")
    scree = axes[-1]
    scree.plot(np.arange(1, result.eigenvalues.size + 1), result.eigenvalues, "o-")
    scree.set(xlabel="component", ylabel="eigenvalue (GRM)", title="scree")
    fig.suptitle(
        f"{table.shape[0]:,} samples x {result.n_variants:,} variants, {result.method} PCA"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def population_labels(samples, population_file: str | None) -> list[str]:
    """Population per sample: from a table (FID IID population) or else the FID."""
    import pandas as pd

    if not population_file:
        return samples["fid"].astype(str).tolist()
    table = pd.read_csv(population_file, sep="\t", dtype=str)
    lookup = dict(
        zip(zip(table["fid"], table["iid"], strict=True), table["population"], strict=True)
    )
    return [
        lookup.get((f, i), "unknown") for f, i in zip(samples["fid"], samples["iid"], strict=True)
    ]


def pca_step(ctx) -> dict:
    """Snakemake step: the QC'd genotype store -> .eigenvec, .eigenval, variance, plots."""
    import pandas as pd

    from warpbio.genotype.stats import count_genotypes
    from warpbio.genotype.store import read_store
    from warpbio.io import atomic_write

    settings = dict(ctx.params.pca)
    bed = read_store(ctx.input.store)
    method = settings["method"]
    if method == "auto":
        method = "exact" if bed.n_samples <= int(settings["exact_max_samples"]) else "randomized"
    xp = ctx.xp
    if xp is not np and method == "randomized":
        # fused Triton kernels on the packed data, which goes to the leased GPUs
        # once, SNPs split evenly across them
        from warpbio.genotype.kernels import MultiGpuPackedMatrix

        matrix = MultiGpuPackedMatrix.split(
            bed.packed, bed.n_samples, max(1, ctx.lease.count), precision=settings["gpu_precision"]
        )
    else:
        packed = bed.packed if xp is np else xp.asarray(np.asarray(bed.packed))
        freq = count_genotypes(bed, xp).alt_frequency
        # halved on each retry: the decoded block (SNPs x samples) is what runs
        # out of memory for large cohorts
        block = ctx.shrink(int(settings["block_snps"]), minimum=64)
        ctx.extra_provenance["block_snps"] = block
        matrix = PackedStandardizedMatrix(
            packed, standardization_table(freq), bed.n_samples, xp, block
        )
    log.info(
        "%s PCA of %d samples x %d variants on %s", method, bed.n_samples, bed.n_snps, ctx.backend
    )
    result = run_pca(
        matrix,
        int(settings["k"]),
        method=method,
        oversampling=int(settings["oversampling"]),
        power_iterations=int(settings["power_iterations"]),
        algorithm=settings["algorithm"],
        seed=int(ctx.seed),
    )
    table = eigenvec_table(bed.samples, result)
    ratio = result.explained_variance_ratio
    variance = pd.DataFrame(
        {
            "PC": [f"PC{i + 1}" for i in range(ratio.size)],
            "eigenvalue": result.eigenvalues,
            "variance_ratio": ratio,
            "cumulative_ratio": np.cumsum(ratio),
        }
    )
    with atomic_write(ctx.output.eigenvec) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.8g")
    with atomic_write(ctx.output.eigenval) as tmp:
        np.savetxt(tmp, result.eigenvalues, fmt="%.8g")
    with atomic_write(ctx.output.variance) as tmp:
        variance.to_csv(tmp, sep="\t", index=False, float_format="%.8g")
    populations = population_labels(bed.samples, getattr(ctx.input, "populations", None))
    with atomic_write(ctx.output.plot) as tmp:
        plot_pca(table, result, populations, tmp)
    return {
        "method": result.method,
        "eigenvalues": result.eigenvalues.tolist(),
        "variance_ratio": ratio.tolist(),
    }


def loadings_step(ctx) -> dict:
    """Snakemake step: store + PCs -> SNP loadings (unit-norm SNP-space singular vectors).

    Loading of SNP i on PC j = (A u_j)_i / s_j with s_j^2 = eigenvalue_j x M, the
    layout of plink2's ``.eigenvec.var``: #CHROM ID REF ALT PC1..PCk.
    """
    import pandas as pd

    from warpbio.genotype.stats import count_genotypes
    from warpbio.genotype.store import read_store
    from warpbio.io import atomic_write

    bed = read_store(ctx.input.store)
    eigenvec = pd.read_csv(ctx.input.eigenvec, sep="\t", dtype={"#FID": str, "IID": str})
    if eigenvec["IID"].tolist() != bed.samples["iid"].tolist():
        raise ValueError(f"{ctx.input.eigenvec}: samples differ from {ctx.input.store}")
    pcs = [c for c in eigenvec.columns if c.startswith("PC")]
    singular = np.sqrt(np.loadtxt(ctx.input.eigenval, ndmin=1) * bed.n_snps)
    table = standardization_table(count_genotypes(bed, ctx.xp).alt_frequency)
    block = ctx.shrink(int(getattr(ctx.params, "block_snps", 8192)), minimum=64)
    ctx.extra_provenance["block_snps"] = block
    matrix = PackedStandardizedMatrix(bed.packed, table, bed.n_samples, ctx.xp, block)
    weights = to_numpy(matrix.times(eigenvec[pcs].to_numpy())) / singular[None, :]
    out = pd.DataFrame(
        {
            "#CHROM": bed.variants["chrom"],
            "ID": bed.variants["id"],
            "REF": bed.variants["a2"],
            "ALT": bed.variants["a1"],
        }
    )
    for i, pc in enumerate(pcs):
        out[pc] = weights[:, i]
    with atomic_write(ctx.output.loadings) as tmp:
        out.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    return {"n_variants": bed.n_snps, "pcs": len(pcs)}
