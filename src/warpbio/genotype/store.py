"""The 2-bit packed genotype store in Zarr.

Layout (a Zarr v3 group):

- ``genotypes``: uint8 (n_snps, ceil(n_samples / 4)), SNP-major, chunked along SNPs,
  bytes exactly as in a PLINK .bed record (4 samples a byte from the low bits;
  00 hom A1, 01 missing, 10 het, 11 hom A2), so a .bed maps to it without decoding
  and missing calls are kept;
- ``variants/<column>`` and ``samples/<column>``: the .bim and .fam columns;
- attributes: ``format`` ("warpbio-2bit/1"), ``n_samples``, ``code`` (the meaning of
  the 2-bit codes).

:func:`read_store` returns the same :class:`~warpbio.genotype.plink.BedFile` as
:func:`~warpbio.genotype.plink.read_bed`, with the Zarr array as ``packed``: every
reader that slices SNP blocks works on both, out of core.
"""

from __future__ import annotations

import logging
import os
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from warpbio.genotype.plink import BIM_COLUMNS, FAM_COLUMNS, BedFile, bytes_per_snp, fileset_prefix
from warpbio.io import atomic_write
from warpbio.progress import Progress

log = logging.getLogger(__name__)

FORMAT = "warpbio-2bit/1"
CODE = "2 bits a sample, low bits first: 00 hom A1 (ALT), 01 missing, 10 het, 11 hom A2 (REF)"


class StoreFormatError(ValueError):
    """A path that is not a warpbio genotype store; the message names it and the fix."""


def write_store(bed: BedFile, path: str | os.PathLike, chunk_snps: int = 65_536) -> None:
    """Copy a fileset's packed records, variants and samples into a new store."""
    import zarr

    width = bytes_per_snp(bed.n_samples)
    with atomic_write(path, directory=True) as tmp:
        group = zarr.open_group(tmp, mode="w")
        group.attrs.update({"format": FORMAT, "n_samples": bed.n_samples, "code": CODE})
        genotypes = group.create_array(
            "genotypes",
            shape=(bed.n_snps, width),
            chunks=(min(chunk_snps, max(bed.n_snps, 1)), width),
            dtype="uint8",
        )
        progress = Progress("write genotype store", bed.n_snps, unit="SNPs")
        for start in range(0, bed.n_snps, chunk_snps):
            stop = min(start + chunk_snps, bed.n_snps)
            genotypes[start:stop] = np.asarray(bed.packed[start:stop])
            progress.update(stop - start)
        for name, table, columns in (
            ("variants", bed.variants, BIM_COLUMNS),
            ("samples", bed.samples, FAM_COLUMNS),
        ):
            sub = group.create_group(name)
            for column in columns:
                values = table[column].astype(str).to_numpy()
                sub.create_array(column, shape=values.shape, dtype=str)[:] = values


def read_store(path: str | os.PathLike) -> BedFile:
    """Open a store; genotypes stay on disk and are read chunk by chunk."""
    import zarr

    path = Path(path)
    try:
        group = zarr.open_group(path, mode="r")
    except Exception as error:  # zarr raises several types for a missing or foreign path
        raise StoreFormatError(
            f"{path}: not a Zarr group ({type(error).__name__}); "
            "make it with the genotype_store rule or warpbio.genotype.store.write_store"
        ) from error
    if group.attrs.get("format") != FORMAT:
        raise StoreFormatError(f"{path}: format {group.attrs.get('format')!r}, expected {FORMAT!r}")
    samples = pd.DataFrame({c: group["samples"][c][:] for c in FAM_COLUMNS})
    packed = group["genotypes"]
    n_variants = int(group["variants"]["id"].shape[0])
    expected = (n_variants, bytes_per_snp(len(samples)))
    if tuple(packed.shape) != expected or int(group.attrs["n_samples"]) != len(samples):
        raise StoreFormatError(
            f"{path}: genotypes {tuple(packed.shape)} do not match {n_variants} variants x "
            f"{len(samples)} samples; rebuild the store"
        )
    return StoredFileset(path, packed, partial(_read_variants, group), samples)


def _read_variants(group) -> pd.DataFrame:
    variants = pd.DataFrame({c: group["variants"][c][:] for c in BIM_COLUMNS})
    variants["pos"] = variants["pos"].astype(np.int64)
    return variants


class StoredFileset(BedFile):
    """A fileset read from a store: the variant table loads on first use.

    Tens of millions of variants are gigabytes as Python strings, and counting and
    PCA never look at them (a 51M-variant store ran out of 25 GB with them loaded).
    """

    @property
    def variants(self) -> pd.DataFrame:
        if callable(self._variants):
            self._variants = self._variants()
        return self._variants

    @variants.setter
    def variants(self, value) -> None:
        self._variants = value


def store_step(ctx) -> dict:
    """Snakemake step: a PLINK fileset -> the Zarr store."""
    from warpbio.genotype.plink import read_bed

    bed = read_bed(fileset_prefix(ctx.input.bed))
    write_store(bed, ctx.output.store, int(ctx.params.chunk_snps))
    return {"n_snps": bed.n_snps, "n_samples": bed.n_samples}
