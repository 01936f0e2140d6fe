"""Fused GPU kernels (Triton) on packed 2-bit genotypes.

Each kernel reads the packed bytes once and decodes them in registers to the
standardized value of their SNP (a 4-entry table per SNP, missing -> 0); no
float copy of the matrix ever exists. The CPU twin of every kernel is the
generic NumPy path in :mod:`warpbio.genotype.pca` / :mod:`warpbio.genotype.stats`,
and ``tests/genotype/test_kernels_gpu.py`` checks that they agree.

Offsets are int64: a 10M x 20k matrix is 50 GB, far past int32 indexing.

Layout: sample j of a SNP sits in byte j // 4 at bits 2 (j % 4). The right-hand
side V (samples x width) is therefore split into four slices V[s::4] (one per
bit position) so that each decoded sub-tile meets its own contiguous slice.

- :func:`count_genotypes` : per SNP, ALT dosage sum, heterozygote and called counts.
- :func:`times_vectors` : W = A V  (SNPs x width), one program per SNP block.
- :func:`transpose_times` : Z = A^T W (samples x width), one program per sample
  block and SNP split; splits write partial sums that are added afterwards in a
  fixed order (deterministic, no atomics).

``precision`` of the products: ``fp16`` (operands rounded to float16, float32
accumulation: tf32's 10-bit mantissa at twice its rate), ``tf32`` (tensor
cores, ~1e-3 relative per product), ``tf32x3`` (three tf32 products, near
float32) or ``ieee`` (plain float32 FMA, slowest).
"""

from __future__ import annotations

import itertools
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from warpbio.progress import Progress

_KERNELS = None


def _build():
    import triton
    import triton.language as tl

    @triton.jit
    def decode(packed, shift: tl.constexpr, t0, t2, t3):
        code = (packed >> shift) & 3
        return tl.where(
            code == 0,
            t0[:, None],
            tl.where(code == 2, t2[:, None], tl.where(code == 3, t3[:, None], 0.0)),
        )

    @triton.jit
    def product(a, b, PRECISION: tl.constexpr):
        # fp16 has tf32's 10-bit mantissa at twice the tensor-core rate
        if PRECISION == "fp16":
            result = tl.dot(a.to(tl.float16), b.to(tl.float16))
        else:
            result = tl.dot(a, b, input_precision=PRECISION)
        return result

    @triton.jit
    def count_kernel(P, ALT, HET, CALLED, m, nb, n, stride, BM: tl.constexpr, BKB: tl.constexpr):
        # Elementwise accumulators, reduced once at the end: per-iteration
        # cross-lane reductions made this kernel 500x slower than its memory floor.
        rows = tl.program_id(0) * BM + tl.arange(0, BM)
        rmask = rows < m
        alt = tl.zeros((BM, BKB), tl.int32)
        het = tl.zeros((BM, BKB), tl.int32)
        called = tl.zeros((BM, BKB), tl.int32)
        for k0 in range(0, nb, BKB):
            cols = k0 + tl.arange(0, BKB)
            mask = rmask[:, None] & (cols < nb)[None, :]
            p = tl.load(
                P + rows.to(tl.int64)[:, None] * stride + cols[None, :],
                mask=mask,
                other=1 + 4 + 16 + 64,
            )
            for s in tl.static_range(4):
                code = (p >> (2 * s)) & 3
                inside = (cols * 4 + s < n)[None, :]
                present = (code != 1) & inside
                alt += tl.where(present, tl.where(code == 0, 2, tl.where(code == 2, 1, 0)), 0)
                het += ((code == 2) & inside).to(tl.int32)
                called += present.to(tl.int32)
        tl.store(ALT + rows, tl.sum(alt, axis=1), mask=rmask)
        tl.store(HET + rows, tl.sum(het, axis=1), mask=rmask)
        tl.store(CALLED + rows, tl.sum(called, axis=1), mask=rmask)

    @triton.jit
    def times_vectors_kernel(
        P,
        T,
        V4,
        W,
        m,
        nb,
        stride,
        BM: tl.constexpr,
        BKB: tl.constexpr,
        L: tl.constexpr,
        PRECISION: tl.constexpr,
    ):
        rows = tl.program_id(0) * BM + tl.arange(0, BM)
        rmask = rows < m
        t0 = tl.load(T + rows.to(tl.int64) * 4 + 0, mask=rmask, other=0.0)
        t2 = tl.load(T + rows.to(tl.int64) * 4 + 2, mask=rmask, other=0.0)
        t3 = tl.load(T + rows.to(tl.int64) * 4 + 3, mask=rmask, other=0.0)
        lanes = tl.arange(0, L)
        acc = tl.zeros((BM, L), tl.float32)
        for k0 in range(0, nb, BKB):
            cols = k0 + tl.arange(0, BKB)
            cmask = cols < nb
            p = tl.load(
                P + rows.to(tl.int64)[:, None] * stride + cols[None, :],
                mask=rmask[:, None] & cmask[None, :],
                other=1 + 4 + 16 + 64,  # "missing" decodes to 0
            )
            for s in tl.static_range(4):
                values = decode(p, 2 * s, t0, t2, t3)
                v = tl.load(
                    V4 + s * nb * L + cols[:, None] * L + lanes[None, :],
                    mask=cmask[:, None],
                    other=0.0,
                )
                acc += product(values, v, PRECISION)
        tl.store(W + rows.to(tl.int64)[:, None] * L + lanes[None, :], acc, mask=rmask[:, None])

    @triton.jit
    def transpose_times_kernel(
        P,
        T,
        W,
        Z4,
        m,
        nb,
        stride,
        rows_per_split,
        BM: tl.constexpr,
        BKB: tl.constexpr,
        L: tl.constexpr,
        PRECISION: tl.constexpr,
    ):
        cols = tl.program_id(0) * BKB + tl.arange(0, BKB)
        cmask = cols < nb
        split = tl.program_id(1)
        first = split * rows_per_split
        last = tl.minimum(first + rows_per_split, m)
        lanes = tl.arange(0, L)
        acc0 = tl.zeros((BKB, L), tl.float32)
        acc1 = tl.zeros((BKB, L), tl.float32)
        acc2 = tl.zeros((BKB, L), tl.float32)
        acc3 = tl.zeros((BKB, L), tl.float32)
        for r0 in range(first, last, BM):
            rows = r0 + tl.arange(0, BM)
            rmask = rows < last
            t0 = tl.load(T + rows.to(tl.int64) * 4 + 0, mask=rmask, other=0.0)
            t2 = tl.load(T + rows.to(tl.int64) * 4 + 2, mask=rmask, other=0.0)
            t3 = tl.load(T + rows.to(tl.int64) * 4 + 3, mask=rmask, other=0.0)
            p = tl.load(
                P + rows.to(tl.int64)[:, None] * stride + cols[None, :],
                mask=rmask[:, None] & cmask[None, :],
                other=1 + 4 + 16 + 64,
            )
            w = tl.load(
                W + rows.to(tl.int64)[:, None] * L + lanes[None, :], mask=rmask[:, None], other=0.0
            )
            acc0 += product(tl.trans(decode(p, 0, t0, t2, t3)), w, PRECISION)
            acc1 += product(tl.trans(decode(p, 2, t0, t2, t3)), w, PRECISION)
            acc2 += product(tl.trans(decode(p, 4, t0, t2, t3)), w, PRECISION)
            acc3 += product(tl.trans(decode(p, 6, t0, t2, t3)), w, PRECISION)
        base = Z4 + split * 4 * nb * L + cols[:, None] * L + lanes[None, :]
        tl.store(base + 0 * nb * L, acc0, mask=cmask[:, None])
        tl.store(base + 1 * nb * L, acc1, mask=cmask[:, None])
        tl.store(base + 2 * nb * L, acc2, mask=cmask[:, None])
        tl.store(base + 3 * nb * L, acc3, mask=cmask[:, None])

    return count_kernel, times_vectors_kernel, transpose_times_kernel


def _kernels():
    global _KERNELS
    if _KERNELS is None:
        _KERNELS = _build()
    return _KERNELS


def _views(*arrays):
    """Zero-copy torch views of CuPy arrays (DLPack): Triton launches take tensors."""
    import torch

    return [torch.from_dlpack(array) for array in arrays]


def _pad_width(width: int) -> int:
    return max(16, 1 << math.ceil(math.log2(width)))


def count_genotypes(
    packed, n_samples: int, block_rows: int = 32, block_bytes: int = 64, warps: int = 4
):
    """Per SNP of a CuPy packed matrix: ALT dosage sum, heterozygote and called counts."""
    import cupy as cp

    count_kernel, _, _ = _kernels()
    m, nb = packed.shape
    alt, het, called = (cp.empty(m, dtype=cp.int32) for _ in range(3))
    grid = (math.ceil(m / block_rows),)
    count_kernel[grid](
        *_views(packed, alt, het, called), m, nb, n_samples, packed.strides[0], block_rows,
        block_bytes, num_warps=warps,
    )  # fmt: skip
    return alt.astype(cp.int64), het.astype(cp.int64), called.astype(cp.int64)


def sum_of_squares(table, alt, het, called) -> float:
    """trace(A^T A) from genotype-class counts: n2 t[0]^2 + n1 t[2]^2 + n0 t[3]^2."""
    hom_alt = (alt - het) // 2
    hom_ref = called - het - hom_alt
    table = np.asarray(table, dtype=np.float64)
    return float(
        (hom_alt * table[:, 0] ** 2 + het * table[:, 2] ** 2 + hom_ref * table[:, 3] ** 2).sum()
    )


@dataclass
class TritonPackedMatrix:
    """GPU twin of :class:`warpbio.genotype.pca.PackedStandardizedMatrix`.

    ``packed`` is a CuPy (SNPs x bytes) uint8 array on the GPU; ``table`` the
    (SNPs x 4) standardization table. ``gram_times`` returns A^T (A V) as the
    CPU class does (float64), computed by the two fused kernels.
    """

    packed: object
    table: np.ndarray
    n_samples: int
    precision: str = "fp16"
    splits: int = 0  # SNP splits of A^T W; 0 = enough programs to fill the GPU
    # (rows, bytes, warps, stages) tiles of A V and of A^T W
    # defaults: the fastest of benchmarks/genotype.py --tune on an H100 (2026-11-22)
    times_tiles: tuple[int, int, int, int] = (128, 32, 4, 3)
    transpose_tiles: tuple[int, int, int, int] = (16, 128, 4, 3)

    def __post_init__(self) -> None:
        import cupy as cp

        self.xp = cp
        self.n_snps, self.n_bytes = self.packed.shape
        if self.n_bytes != (self.n_samples + 3) // 4:
            raise ValueError("packed width does not match the sample count")
        self._table = cp.asarray(self.table, dtype=cp.float32)
        if self.splits <= 0:
            programs = math.ceil(self.n_bytes / self.transpose_tiles[1])
            sms = cp.cuda.Device().attributes["MultiProcessorCount"]
            self.splits = max(1, min(64, math.ceil(4 * sms / programs)))

    def _slices(self, vectors, width):
        """(samples x width) -> (4, bytes, width) fp32: V[s::4], zero padded."""
        cp = self.xp
        padded = cp.zeros((self.n_bytes * 4, width), dtype=cp.float32)
        padded[: self.n_samples, : vectors.shape[1]] = vectors
        return cp.ascontiguousarray(padded.reshape(self.n_bytes, 4, width).transpose(1, 0, 2))

    def times(self, vectors):
        """W = A V, (SNPs x width) float32."""
        cp = self.xp
        _, times_kernel, _ = _kernels()
        width = _pad_width(vectors.shape[1])
        slices = self._slices(cp.asarray(vectors, dtype=cp.float32), width)
        out = cp.empty((self.n_snps, width), dtype=cp.float32)
        rows, cols, warps, stages = self.times_tiles
        grid = (math.ceil(self.n_snps / rows),)
        times_kernel[grid](
            *_views(self.packed, self._table, slices, out), self.n_snps, self.n_bytes,
            self.packed.strides[0], rows, cols, width, self.precision, num_warps=warps,
            num_stages=stages,
        )  # fmt: skip
        return out[:, : vectors.shape[1]]

    def transpose_times(self, image):
        """Z = A^T W, (samples x width) float64 (partials summed in float64)."""
        cp = self.xp
        _, _, transpose_kernel = _kernels()
        width = _pad_width(image.shape[1])
        padded = cp.zeros((self.n_snps, width), dtype=cp.float32)
        padded[:, : image.shape[1]] = image
        rows, cols, warps, stages = self.transpose_tiles
        rows_per_split = math.ceil(math.ceil(self.n_snps / self.splits) / rows) * rows
        splits = math.ceil(self.n_snps / rows_per_split)
        partial = cp.empty((splits, 4, self.n_bytes, width), dtype=cp.float32)
        grid = (math.ceil(self.n_bytes / cols), splits)
        transpose_kernel[grid](
            *_views(self.packed, self._table, padded, partial), self.n_snps, self.n_bytes,
            self.packed.strides[0], rows_per_split, rows, cols, width, self.precision,
            num_warps=warps, num_stages=stages,
        )  # fmt: skip
        total = partial.astype(cp.float64).sum(axis=0)  # (4, bytes, width)
        samples = total.transpose(1, 0, 2).reshape(self.n_bytes * 4, width)
        # contiguous, so that another GPU can copy it (CuPy copies only those)
        return cp.ascontiguousarray(samples[: self.n_samples, : image.shape[1]])

    def gram_times(self, vectors, label: str = "pass", sum_squares: bool = False):
        progress = Progress(label, self.n_snps, unit="SNPs", every=60.0)
        result = self.transpose_times(self.times(vectors))
        progress.update(self.n_snps)
        if not sum_squares:
            return result
        return result, self.sum_squares()

    def sum_squares(self) -> float:
        """trace(A^T A) from one counting read of the packed data."""
        alt, het, called = (x.get() for x in count_genotypes(self.packed, self.n_samples))
        return sum_of_squares(self.table, alt, het, called)


class MultiGpuPackedMatrix:
    """SNPs split across GPUs: each holds a contiguous slice as a TritonPackedMatrix.

    A^T A V = sum over GPUs of A_i^T (A_i V): one host thread per GPU computes
    its term and waits for it; only the small (samples x width) partial sums then
    cross devices, so no collective library is needed for this reduction.
    """

    def __init__(self, parts: list[TritonPackedMatrix]):
        import cupy as cp

        if not parts:
            raise ValueError("no GPU parts")
        self.parts = parts
        self.xp = cp
        self.n_samples = parts[0].n_samples
        self.n_snps = sum(part.n_snps for part in parts)
        self.devices = [part.packed.device.id for part in parts]
        self._pool = ThreadPoolExecutor(max_workers=len(parts), thread_name_prefix="gpu")
        self._warm = False

    @classmethod
    def from_device_slices(cls, slices: list, n_samples: int, **options):
        """Slices already on GPUs (in SNP order): count genotypes on each GPU and
        standardize every slice with the pooled allele frequencies."""
        import cupy as cp

        from warpbio.genotype.pca import standardization_table

        frequencies = []
        for packed in slices:
            with cp.cuda.Device(packed.device.id):
                alt, _, called = count_genotypes(packed, n_samples)
                frequencies.append((alt / (2 * called)).get())
        table = standardization_table(np.concatenate(frequencies))
        bounds = np.cumsum([0] + [packed.shape[0] for packed in slices])
        parts = []
        for (start, stop), packed in zip(itertools.pairwise(bounds), slices, strict=True):
            with cp.cuda.Device(packed.device.id):
                parts.append(TritonPackedMatrix(packed, table[start:stop], n_samples, **options))
        return cls(parts)

    @classmethod
    def split(cls, packed_host, n_samples: int, n_gpus: int, **options):
        """Equal SNP slices of a host (or memory-mapped) packed matrix on GPUs 0..n-1."""
        import cupy as cp

        bounds = np.linspace(0, packed_host.shape[0], n_gpus + 1).round().astype(int)
        slices = []
        for device, (start, stop) in enumerate(itertools.pairwise(bounds)):
            with cp.cuda.Device(device):
                slices.append(cp.asarray(np.asarray(packed_host[start:stop])))
        return cls.from_device_slices(slices, n_samples, **options)

    def _term(self, index: int, vectors):
        """A_i^T (A_i V) on GPU i, finished before it is returned."""
        import cupy as cp

        part = self.parts[index]
        with cp.cuda.Device(self.devices[index]):
            result = part.transpose_times(part.times(cp.array(vectors)))
            cp.cuda.get_current_stream().synchronize()
        return result

    def gram_times(self, vectors, label: str = "pass", sum_squares: bool = False):
        import cupy as cp

        progress = Progress(label, self.n_snps, unit="SNPs", every=60.0)
        cp.cuda.get_current_stream().synchronize()  # V is complete before any GPU copies it
        indices = range(len(self.parts))
        if self._warm:  # one host thread per GPU: the GPUs run at the same time
            results = list(self._pool.map(lambda i: self._term(i, vectors), indices))
        else:  # first call in turn, so that Triton compiles each kernel once
            results = [self._term(i, vectors) for i in indices]
            self._warm = True
        total = cp.zeros((self.n_samples, vectors.shape[1]), dtype=cp.float64)
        for result in results:  # every term is finished: the peer copies are safe
            total += cp.array(result)
        progress.update(self.n_snps)
        if not sum_squares:
            return total
        return total, self.sum_squares()

    def sum_squares(self) -> float:
        import cupy as cp

        total = 0.0
        for device, part in zip(self.devices, self.parts, strict=True):
            with cp.cuda.Device(device):
                total += part.sum_squares()
        return total
