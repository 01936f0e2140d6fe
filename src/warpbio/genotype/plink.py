"""PLINK 1 binary genotype files (.bed/.bim/.fam): read, write, pack, decode.

``.bed`` layout: magic ``6c 1b 01`` then SNP-major records of ceil(n/4) bytes,
four samples per byte from the low bits.  Codes: ``00`` homozygous for the
.bim's 5th-column allele (A1; plink2 reads it as ALT), ``01`` missing, ``10``
heterozygous, ``11`` homozygous A2.  warpbio's genotype value is the A1 (ALT)
dosage: 2, 1, 0, or -1 for missing, the same counting plink2 uses.

Packing and decoding take an array module (NumPy or CuPy): one code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd

from warpbio.io import atomic_write

BED_MAGIC = bytes([0x6C, 0x1B, 0x01])
MISSING = -1
# 2-bit code -> A1 dosage (code 01 is missing)
CODE_TO_DOSAGE = np.array([2, MISSING, 1, 0], dtype=np.int8)
# A1 dosage + 1 (so missing=-1 indexes 0) -> 2-bit code
DOSAGE_TO_CODE = np.array([0b01, 0b11, 0b10, 0b00], dtype=np.uint8)
BIM_COLUMNS = ["chrom", "id", "cm", "pos", "a1", "a2"]
FAM_COLUMNS = ["fid", "iid", "father", "mother", "sex", "phenotype"]


class PlinkFormatError(ValueError):
    """A PLINK fileset that cannot be read; the message names file and fix."""


def fileset_path(prefix: str | os.PathLike, extension: str) -> Path:
    """``prefix`` + extension; not with_suffix, which would eat 'chr1.qc' -> 'chr1'."""
    return Path(f"{os.fspath(prefix)}{extension}")


def fileset_prefix(bed_path: str | os.PathLike) -> str:
    """The fileset prefix of a ``.bed`` path (Snakemake rules name the .bed itself)."""
    path = os.fspath(bed_path)
    if not path.endswith(".bed"):
        raise ValueError(f"{path}: expected a path ending in .bed")
    return path[: -len(".bed")]


def bytes_per_snp(n_samples: int) -> int:
    return (n_samples + 3) // 4


def pack_genotypes(dosage, xp: ModuleType = np):
    """SNP-major int8 dosages (n_snps, n_samples; -1 missing) -> packed uint8."""
    dosage = xp.asarray(dosage)
    n_snps, n_samples = dosage.shape
    codes = xp.asarray(DOSAGE_TO_CODE)[dosage.astype(xp.int16) + 1]
    pad = (-n_samples) % 4
    if pad:  # padding bits are zero, as plink writes them
        codes = xp.concatenate([codes, xp.zeros((n_snps, pad), dtype=xp.uint8)], axis=1)
    quads = codes.reshape(n_snps, -1, 4)
    return quads[..., 0] | (quads[..., 1] << 2) | (quads[..., 2] << 4) | (quads[..., 3] << 6)


def packed_blocks(packed, block_rows: int):
    """(first SNP, rows) of the blocks [0, b), [b, 2b), ... of a packed matrix: a
    memmap, Zarr, NumPy or CuPy array. A chunked (Zarr) array is read in whole
    storage chunks, each decompressed once a pass, whatever the block size; the
    blocks themselves do not depend on the storage."""
    n_rows = packed.shape[0]
    chunks = getattr(packed, "chunks", None)
    if not isinstance(chunks, tuple):
        for start in range(0, n_rows, block_rows):
            yield start, packed[start : start + block_rows]
        return
    held, held_start = np.empty((0, packed.shape[1]), dtype=np.uint8), 0
    for start in range(0, n_rows, block_rows):
        stop = min(start + block_rows, n_rows)
        held, held_start = held[start - held_start :], start
        while held_start + held.shape[0] < stop:  # read on to the next chunk boundary
            read_start = held_start + held.shape[0]
            read_stop = min((read_start // chunks[0] + 1) * chunks[0], n_rows)
            held = np.concatenate([held, np.asarray(packed[read_start:read_stop])])
        yield start, held[: stop - start]


def decode_genotypes(packed, n_samples: int, xp: ModuleType = np):
    """Packed uint8 (n_snps, bytes_per_snp) -> int8 A1 dosages, -1 missing."""
    packed = xp.asarray(packed, dtype=xp.uint8)
    shifts = xp.asarray([0, 2, 4, 6], dtype=xp.uint8)
    codes = (packed[..., None] >> shifts) & 3
    dosage = xp.asarray(CODE_TO_DOSAGE)[codes.reshape(packed.shape[0], -1)]
    return dosage[:, :n_samples]


@dataclass
class BedFile:
    """An opened fileset: packed genotypes (memory-mapped) and its tables."""

    prefix: Path
    packed: np.ndarray  # (n_snps, bytes_per_snp) uint8, memory-mapped
    variants: pd.DataFrame
    samples: pd.DataFrame

    @property
    def n_snps(self) -> int:
        return int(self.packed.shape[0])  # without reading a lazily loaded variant table

    @property
    def n_samples(self) -> int:
        return len(self.samples)


def _read_table(path: Path, columns: list[str]) -> pd.DataFrame:
    if not path.exists():
        raise PlinkFormatError(f"{path}: missing; a PLINK fileset needs .bed, .bim and .fam")
    table = pd.read_csv(path, sep=r"\s+", header=None, dtype=str, comment=None)
    if table.shape[1] != len(columns):
        raise PlinkFormatError(
            f"{path}: {table.shape[1]} columns, expected {len(columns)} ({' '.join(columns)})"
        )
    table.columns = columns
    return table


def read_bed(prefix: str | os.PathLike) -> BedFile:
    """Open ``prefix.bed/.bim/.fam``; genotypes stay on disk (memory map)."""
    prefix = Path(prefix)
    variants = _read_table(fileset_path(prefix, ".bim"), BIM_COLUMNS)
    samples = _read_table(fileset_path(prefix, ".fam"), FAM_COLUMNS)
    variants["pos"] = variants["pos"].astype(np.int64)
    bed = fileset_path(prefix, ".bed")
    if not bed.exists():
        raise PlinkFormatError(f"{bed}: missing; a PLINK fileset needs .bed, .bim and .fam")
    with open(bed, "rb") as handle:
        magic = handle.read(3)
    if magic[:2] != BED_MAGIC[:2]:
        raise PlinkFormatError(f"{bed}: not a PLINK .bed file (bad magic {magic.hex()})")
    if magic[2:] != BED_MAGIC[2:]:
        raise PlinkFormatError(
            f"{bed}: sample-major .bed; convert with 'plink --bfile X --make-bed'"
        )
    width = bytes_per_snp(len(samples))
    expected = 3 + len(variants) * width
    actual = bed.stat().st_size
    if actual != expected:
        raise PlinkFormatError(
            f"{bed}: {actual} bytes, expected {expected} for {len(variants)} variants x "
            f"{len(samples)} samples; the .bim/.fam do not match this .bed"
        )
    packed = np.memmap(bed, dtype=np.uint8, mode="r", offset=3, shape=(len(variants), width))
    return BedFile(prefix, packed, variants, samples)


def write_tables(prefix: str | os.PathLike, variants: pd.DataFrame, samples: pd.DataFrame) -> None:
    prefix = Path(prefix)
    with atomic_write(fileset_path(prefix, ".bim")) as tmp:
        variants[BIM_COLUMNS].to_csv(tmp, sep="\t", header=False, index=False)
    with atomic_write(fileset_path(prefix, ".fam")) as tmp:
        samples[FAM_COLUMNS].to_csv(tmp, sep=" ", header=False, index=False)


class BedWriter:
    """Stream SNP blocks into a .bed atomically (temp file renamed on close)."""

    def __init__(self, path: str | os.PathLike, n_samples: int):
        self.n_samples = n_samples
        self._context = atomic_write(path)
        self._tmp = self._context.__enter__()
        self._handle = open(self._tmp, "wb")  # noqa: SIM115 - closed in __exit__
        self._handle.write(BED_MAGIC)
        self.n_snps = 0

    def write_packed(self, packed: np.ndarray) -> None:
        if packed.shape[1] != bytes_per_snp(self.n_samples):
            raise ValueError("packed block width does not match the sample count")
        self._handle.write(np.ascontiguousarray(packed, dtype=np.uint8).tobytes())
        self.n_snps += packed.shape[0]

    def __enter__(self) -> BedWriter:
        return self

    def __exit__(self, *exc) -> None:
        self._handle.close()
        self._context.__exit__(*exc)


def write_bed(
    prefix: str | os.PathLike, dosage: np.ndarray, variants: pd.DataFrame, samples: pd.DataFrame
) -> None:
    """Write a whole in-memory dosage matrix (SNP-major, -1 missing) as a fileset."""
    if dosage.shape != (len(variants), len(samples)):
        raise ValueError(
            f"dosage {dosage.shape} vs {len(variants)} variants x {len(samples)} samples"
        )
    with BedWriter(fileset_path(prefix, ".bed"), len(samples)) as writer:
        writer.write_packed(pack_genotypes(dosage))
    write_tables(prefix, variants, samples)
