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

Decoding is what bounds these kernels (the tensor cores and memory idle), so
the fp16 path decodes with PTX byte permutes: a SNP's four float16 table
entries sit in two 32-bit registers and ``prmt`` picks the two bytes of entry
``code`` (about 4 instructions a genotype against ~20 for compare-and-select).
The counting kernel counts the codes of four bytes (16 genotypes) at once
with bit masks in one 32-bit register.
"""

from __future__ import annotations

import itertools
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from warpbio.progress import Progress

_KERNELS = None


# PTX: four packed bytes -> the float16 table entries of their 2-bit codes at a shift.
# Operands: $0, $1 out (fp16 pairs of elements 0, 1 and 2, 3); $2 the four bytes;
# $3..$6 and $7..$10 each element's low and high table words (entries 0, 1 and 2, 3);
# $11 the shift. The four elements may come from different SNPs (Triton picks the
# register layout), so each has its own table. A selector nibble pair (2c, 2c + 1)
# picks table entry c: c * 0x22 + 0x10 places it for output bytes 0, 1, and
# c * 0x2200 + 0x1000 for bytes 2, 3; the last prmt joins the two halves.
_PRMT_DECODE_ASM = """{ .reg .b32 y, s, a, b;
shr.b32 y, $2, $11;
and.b32 s, y, 3;
mad.lo.u32 s, s, 0x22, 0x10;
prmt.b32 a, $3, $7, s;
shr.b32 s, y, 8;
and.b32 s, s, 3;
mad.lo.u32 s, s, 0x2200, 0x1000;
prmt.b32 b, $4, $8, s;
prmt.b32 $0, a, b, 0x7610;
shr.b32 s, y, 16;
and.b32 s, s, 3;
mad.lo.u32 s, s, 0x22, 0x10;
prmt.b32 a, $5, $9, s;
shr.b32 s, y, 24;
and.b32 s, s, 3;
mad.lo.u32 s, s, 0x2200, 0x1000;
prmt.b32 b, $6, $10, s;
prmt.b32 $1, a, b, 0x7610; }"""

# Per 32-bit register of four bytes (16 codes b1 b0): the counts of code 00 (two
# ALT), 10 (het) and not-01 (called) in each byte, as four int8 outputs each.
# A mask t has bits only at even positions: (t + (t >> 2)) & 0x33.. sums them in
# pairs per nibble, (c + (c >> 4)) & 0x0f.. per byte.
_COUNT_ASM = """{ .reg .b32 lo, hi, t, c;
and.b32 lo, $3, 0x55555555;
shr.b32 hi, $3, 1;
and.b32 hi, hi, 0x55555555;
or.b32 t, lo, hi;
xor.b32 t, t, 0x55555555;
shr.b32 c, t, 2;
add.u32 c, c, t;
and.b32 c, c, 0x33333333;
shr.b32 t, c, 4;
add.u32 c, c, t;
and.b32 $0, c, 0x0f0f0f0f;
not.b32 t, lo;
and.b32 t, t, hi;
shr.b32 c, t, 2;
add.u32 c, c, t;
and.b32 c, c, 0x33333333;
shr.b32 t, c, 4;
add.u32 c, c, t;
and.b32 $1, c, 0x0f0f0f0f;
not.b32 t, hi;
and.b32 t, t, lo;
xor.b32 t, t, 0x55555555;
shr.b32 c, t, 2;
add.u32 c, c, t;
and.b32 c, c, 0x33333333;
shr.b32 t, c, 4;
add.u32 c, c, t;
and.b32 $2, c, 0x0f0f0f0f; }"""


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
    def decode_fp16(packed, shift: tl.constexpr, lo, hi, ASM: tl.constexpr):
        # lo/hi: (rows,) int32 words holding the SNP's fp16 table entries (0, 1) and (2, 3)
        return tl.inline_asm_elementwise(
            ASM,
            "=r,=r,r,r,r,r,r,r,r,r,r,r,r,r,r",
            [
                packed,
                tl.broadcast_to(lo[:, None], packed.shape),
                tl.broadcast_to(hi[:, None], packed.shape),
                tl.full(packed.shape, shift, tl.int32),
            ],
            dtype=tl.float16,
            is_pure=True,
            pack=4,
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
    def count_kernel(
        P, HOMALT, HET, CALLED, m, nb, stride, pad_bits, BM: tl.constexpr, BKB: tl.constexpr,
        ASM: tl.constexpr,
    ):  # fmt: skip
        # Elementwise accumulators, reduced once at the end: per-iteration
        # cross-lane reductions made an earlier version 500x slower than its floor.
        rows = tl.program_id(0) * BM + tl.arange(0, BM)
        rmask = rows < m
        homalt = tl.zeros((BM, BKB), tl.int32)
        het = tl.zeros((BM, BKB), tl.int32)
        called = tl.zeros((BM, BKB), tl.int32)
        for k0 in range(0, nb, BKB):
            cols = k0 + tl.arange(0, BKB)
            mask = rmask[:, None] & (cols < nb)[None, :]
            p = tl.load(
                P + rows.to(tl.int64)[:, None] * stride + cols[None, :], mask=mask, other=0x55
            )
            # the padding codes of the last byte are 00: count them as missing
            p = tl.where((cols == nb - 1)[None, :], p | pad_bits.to(tl.uint8), p)
            a, h, c = tl.inline_asm_elementwise(
                ASM, "=r,=r,=r,r", [p], dtype=(tl.int8, tl.int8, tl.int8),
                is_pure=True, pack=4,
            )  # fmt: skip
            homalt += a.to(tl.int32)
            het += h.to(tl.int32)
            called += c.to(tl.int32)
        tl.store(HOMALT + rows, tl.sum(homalt, axis=1), mask=rmask)
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
        ASM: tl.constexpr,
    ):
        # W^T (L x m) = (A V)^T; fp16: T holds two int32 words a SNP, V4 is fp16
        rows = tl.program_id(0) * BM + tl.arange(0, BM)
        rmask = rows < m
        lanes = tl.arange(0, L)
        acc = tl.zeros((BM, L), tl.float32)
        if PRECISION == "fp16":
            lo = tl.load(T + rows.to(tl.int64) * 2 + 0, mask=rmask, other=0)
            hi = tl.load(T + rows.to(tl.int64) * 2 + 1, mask=rmask, other=0)
            for k0 in range(0, nb, BKB):
                cols = k0 + tl.arange(0, BKB)
                cmask = cols < nb
                p = tl.load(
                    P + rows.to(tl.int64)[:, None] * stride + cols[None, :],
                    mask=rmask[:, None] & cmask[None, :],
                    other=0x55,  # "missing" decodes to 0
                )
                for s in tl.static_range(4):
                    v = tl.load(
                        V4 + s * nb * L + cols[:, None] * L + lanes[None, :],
                        mask=cmask[:, None],
                        other=0.0,
                    )
                    acc += tl.dot(decode_fp16(p, 2 * s, lo, hi, ASM), v)
        else:
            t0 = tl.load(T + rows.to(tl.int64) * 4 + 0, mask=rmask, other=0.0)
            t2 = tl.load(T + rows.to(tl.int64) * 4 + 2, mask=rmask, other=0.0)
            t3 = tl.load(T + rows.to(tl.int64) * 4 + 3, mask=rmask, other=0.0)
            for k0 in range(0, nb, BKB):
                cols = k0 + tl.arange(0, BKB)
                cmask = cols < nb
                p = tl.load(
                    P + rows.to(tl.int64)[:, None] * stride + cols[None, :],
                    mask=rmask[:, None] & cmask[None, :],
                    other=0x55,
                )
                for s in tl.static_range(4):
                    v = tl.load(
                        V4 + s * nb * L + cols[:, None] * L + lanes[None, :],
                        mask=cmask[:, None],
                        other=0.0,
                    )
                    acc += product(decode(p, 2 * s, t0, t2, t3), v, PRECISION)
        tl.store(W + lanes[None, :].to(tl.int64) * m + rows[:, None], acc, mask=rmask[:, None])

    @triton.jit
    def transpose_times_kernel(
        P,
        T,
        WT,
        Z4,
        m,
        nb,
        stride,
        rows_per_split,
        BM: tl.constexpr,
        BKB: tl.constexpr,
        L: tl.constexpr,
        PRECISION: tl.constexpr,
        ASM: tl.constexpr,
    ):
        # Z^T slices = W^T A: the decoded tile is the right operand, so it needs no
        # transpose (13% faster than A^T W on an H100).
        cols = tl.program_id(0) * BKB + tl.arange(0, BKB)
        cmask = cols < nb
        split = tl.program_id(1)
        first = split * rows_per_split
        last = tl.minimum(first + rows_per_split, m)
        lanes = tl.arange(0, L)
        acc0 = tl.zeros((L, BKB), tl.float32)
        acc1 = tl.zeros((L, BKB), tl.float32)
        acc2 = tl.zeros((L, BKB), tl.float32)
        acc3 = tl.zeros((L, BKB), tl.float32)
        for r0 in range(first, last, BM):
            rows = r0 + tl.arange(0, BM)
            rmask = rows < last
            p = tl.load(
                P + rows.to(tl.int64)[:, None] * stride + cols[None, :],
                mask=rmask[:, None] & cmask[None, :],
                other=0x55,
            )
            w = tl.load(
                WT + lanes[:, None].to(tl.int64) * m + rows[None, :], mask=rmask[None, :], other=0.0
            )
            if PRECISION == "fp16":
                lo = tl.load(T + rows.to(tl.int64) * 2 + 0, mask=rmask, other=0)
                hi = tl.load(T + rows.to(tl.int64) * 2 + 1, mask=rmask, other=0)
                acc0 += tl.dot(w, decode_fp16(p, 0, lo, hi, ASM))
                acc1 += tl.dot(w, decode_fp16(p, 2, lo, hi, ASM))
                acc2 += tl.dot(w, decode_fp16(p, 4, lo, hi, ASM))
                acc3 += tl.dot(w, decode_fp16(p, 6, lo, hi, ASM))
            else:
                t0 = tl.load(T + rows.to(tl.int64) * 4 + 0, mask=rmask, other=0.0)
                t2 = tl.load(T + rows.to(tl.int64) * 4 + 2, mask=rmask, other=0.0)
                t3 = tl.load(T + rows.to(tl.int64) * 4 + 3, mask=rmask, other=0.0)
                acc0 += product(w, decode(p, 0, t0, t2, t3), PRECISION)
                acc1 += product(w, decode(p, 2, t0, t2, t3), PRECISION)
                acc2 += product(w, decode(p, 4, t0, t2, t3), PRECISION)
                acc3 += product(w, decode(p, 6, t0, t2, t3), PRECISION)
        base = Z4 + split * 4 * nb * L + cols[None, :] * L + lanes[:, None]
        tl.store(base + 0 * nb * L, acc0, mask=cmask[None, :])
        tl.store(base + 1 * nb * L, acc1, mask=cmask[None, :])
        tl.store(base + 2 * nb * L, acc2, mask=cmask[None, :])
        tl.store(base + 3 * nb * L, acc3, mask=cmask[None, :])

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
    homalt, het, called = (cp.empty(m, dtype=cp.int32) for _ in range(3))
    tail = n_samples % 4  # codes past the last sample are padding (00): mark them missing
    pad_bits = (0x55 << (2 * tail)) & 0xFF if tail else 0
    grid = (math.ceil(m / block_rows),)
    count_kernel[grid](
        *_views(packed, homalt, het, called), m, nb, packed.strides[0], pad_bits, block_rows,
        block_bytes, _COUNT_ASM, num_warps=warps,
    )  # fmt: skip
    het = het.astype(cp.int64)
    return 2 * homalt.astype(cp.int64) + het, het, called.astype(cp.int64)


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
    CPU class does (float64), computed by the two fused kernels. ``counts``, the
    (alt, het, called) of :func:`count_genotypes` that made the table, spare a
    counting read for the sum of squares.
    """

    packed: object
    table: np.ndarray
    n_samples: int
    precision: str = "fp16"
    splits: int = 0  # SNP splits of A^T W; 0 = enough programs to fill the GPU
    # (rows, bytes, warps, stages) tiles of A V and of A^T W
    # defaults: the fastest of benchmarks/genotype.py --tune on an H100 (2026-11-25)
    times_tiles: tuple[int, int, int, int] = (64, 128, 4, 3)
    transpose_tiles: tuple[int, int, int, int] = (32, 64, 4, 3)
    counts: tuple | None = None

    def __post_init__(self) -> None:
        import cupy as cp

        self.xp = cp
        self.n_snps, self.n_bytes = self.packed.shape
        if self.n_bytes != (self.n_samples + 3) // 4:
            raise ValueError("packed width does not match the sample count")
        if self.precision == "fp16":
            # fp16 entries (t0, 0, t2, t3) of a SNP as two int32 words for the prmt decode
            table = cp.asarray(self.table, dtype=cp.float16)
            table[:, 1] = 0
            self._table = cp.ascontiguousarray(table).view(cp.int32)
            self._operand = cp.float16
        else:
            self._table = cp.asarray(self.table, dtype=cp.float32)
            self._operand = cp.float32
        if self.splits <= 0:
            programs = math.ceil(self.n_bytes / self.transpose_tiles[1])
            sms = cp.cuda.Device().attributes["MultiProcessorCount"]
            self.splits = max(1, min(64, math.ceil(4 * sms / programs)))

    def _slices(self, vectors, width):
        """(samples x width) -> (4, bytes, width): V[s::4], zero padded, operand dtype."""
        cp = self.xp
        padded = cp.zeros((self.n_bytes * 4, width), dtype=self._operand)
        padded[: self.n_samples, : vectors.shape[1]] = vectors
        return cp.ascontiguousarray(padded.reshape(self.n_bytes, 4, width).transpose(1, 0, 2))

    def times(self, vectors):
        """W = A V, (SNPs x width) float32 (a transposed view of W^T)."""
        cp = self.xp
        _, times_kernel, _ = _kernels()
        width = _pad_width(vectors.shape[1])
        slices = self._slices(cp.asarray(vectors, dtype=cp.float32), width)
        out = cp.empty((width, self.n_snps), dtype=cp.float32)
        rows, cols, warps, stages = self.times_tiles
        grid = (math.ceil(self.n_snps / rows),)
        times_kernel[grid](
            *_views(self.packed, self._table, slices, out), self.n_snps, self.n_bytes,
            self.packed.strides[0], rows, cols, width, self.precision, _PRMT_DECODE_ASM,
            num_warps=warps, num_stages=stages,
        )  # fmt: skip
        return out[: vectors.shape[1]].T

    def transpose_times(self, image):
        """Z = A^T W, (samples x width) float64 (partials summed in float64)."""
        cp = self.xp
        _, _, transpose_kernel = _kernels()
        width = _pad_width(image.shape[1])
        weights = cp.zeros((width, self.n_snps), dtype=self._operand)  # W^T, the left operand
        weights[: image.shape[1]] = image.T
        rows, cols, warps, stages = self.transpose_tiles
        rows_per_split = math.ceil(math.ceil(self.n_snps / self.splits) / rows) * rows
        splits = math.ceil(self.n_snps / rows_per_split)
        partial = cp.empty((splits, 4, self.n_bytes, width), dtype=cp.float32)
        grid = (math.ceil(self.n_bytes / cols), splits)
        transpose_kernel[grid](
            *_views(self.packed, self._table, weights, partial), self.n_snps, self.n_bytes,
            self.packed.strides[0], rows_per_split, rows, cols, width, self.precision,
            _PRMT_DECODE_ASM, num_warps=warps, num_stages=stages,
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
        """trace(A^T A) from the genotype counts (one counting read unless given)."""
        counts = self.counts or count_genotypes(self.packed, self.n_samples)
        alt, het, called = (x.get() for x in counts)
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

        frequencies, counts = [], []
        for packed in slices:
            with cp.cuda.Device(packed.device.id):
                counts.append(count_genotypes(packed, n_samples))
                alt, _, called = counts[-1]
                frequencies.append((alt / (2 * called)).get())
        table = standardization_table(np.concatenate(frequencies))
        bounds = np.cumsum([0] + [packed.shape[0] for packed in slices])
        parts = []
        for (start, stop), packed, count in zip(
            itertools.pairwise(bounds), slices, counts, strict=True
        ):
            with cp.cuda.Device(packed.device.id):
                parts.append(
                    TritonPackedMatrix(
                        packed, table[start:stop], n_samples, counts=count, **options
                    )
                )
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
