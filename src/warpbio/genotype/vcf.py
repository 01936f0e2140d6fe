"""VCF (plain or gzip/bgzip) or BCF -> PLINK fileset, streamed: bi-allelic SNPs only.

Genotypes are read from the GT field and written as the ALT dosage, ALT as the
.bim's A1 and REF as A2 (what plink2 does on import). Multi-allelic records stop
the import with the line and a fix; records that are not SNPs (indels, symbolic
alleles) and sites without ALT are skipped and counted in the log. BCF (v2.1 or
v2.2, BGZF-compressed or not) is recognised by its magic bytes and read by
:mod:`warpbio.genotype.bcf` with the same rules, into the same fileset.
"""

from __future__ import annotations

import gzip
import logging
import os
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from warpbio.genotype.plink import (
    MISSING,
    BedWriter,
    fileset_path,
    fileset_prefix,
    pack_genotypes,
    write_tables,
)

log = logging.getLogger(__name__)

BASES = frozenset("ACGTacgt")
GENOTYPE_CODES = {
    "0/0": 0, "0|0": 0, "0/1": 1, "1/0": 1, "0|1": 1, "1|0": 1, "1/1": 2, "1|1": 2,
    "./.": MISSING, ".|.": MISSING, ".": MISSING, "0": 0, "1": 2,
    "./0": MISSING, "0/.": MISSING, "./1": MISSING, "1/.": MISSING,
    ".|0": MISSING, "0|.": MISSING, ".|1": MISSING, "1|.": MISSING,
}  # fmt: skip
# A variant row of the .bim: chrom, id, pos, a1 (ALT), a2 (REF)
Variant = tuple[str, str, str, str, str]


class VcfFormatError(ValueError):
    """A VCF or BCF that cannot be imported; the message names file, line and fix."""


def multiallelic_error(where: str, chrom: str, pos: str, alt: str) -> VcfFormatError:
    return VcfFormatError(
        f"{where}: multi-allelic site {chrom}:{pos} (ALT={alt}); "
        "split it with 'bcftools norm -m-' or keep bi-allelic SNPs with "
        "'bcftools view -m2 -M2 -v snps'"
    )


def site_kind(ref: str, alt: str) -> str | None:
    """None for a bi-allelic SNP (kept), else the skipped-count key."""
    if alt in (".", "*"):
        return "no_alt"
    if len(ref) != 1 or len(alt) != 1 or ref not in BASES or alt not in BASES:
        return "not_snp"
    return None


def is_bcf(path: Path) -> bool:
    """BCF's magic, after BGZF/gzip decompression when the file is compressed."""
    with open(path, "rb") as handle:
        compressed = handle.read(2) == b"\x1f\x8b"
    try:
        with gzip.open(path, "rb") if compressed else open(path, "rb") as handle:
            return handle.read(3) == b"BCF"
    except (OSError, EOFError, zlib.error) as error:
        raise VcfFormatError(
            f"{path}: cannot be decompressed ({error}); the file is truncated or corrupt"
        ) from None


def _open(path: Path):
    with open(path, "rb") as handle:
        magic = handle.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt")
    return open(path)


def _samples(handle, path: Path) -> tuple[list[str], int]:
    for number, line in enumerate(handle, start=1):
        if line.startswith("##"):
            continue
        if line.startswith("#CHROM"):
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 10 or fields[8] != "FORMAT":
                raise VcfFormatError(f"{path}:{number}: header has no FORMAT/sample columns")
            return fields[9:], number
        break
    raise VcfFormatError(f"{path}: no '#CHROM' header line; is this a VCF file?")


def _vcf_records(
    handle, path: Path, n: int, first_line: int, skipped: dict[str, int]
) -> Iterator[tuple[Variant, list[int]]]:
    for number, line in enumerate(handle, start=first_line):
        fields = line.rstrip("\n").split("\t")
        if len(fields) != n + 9:
            raise VcfFormatError(
                f"{path}:{number}: {len(fields)} columns, expected {n + 9} "
                f"(9 fixed + {n} samples); the file is truncated or malformed"
            )
        chrom, pos, ident, ref, alt = fields[:5]
        if "," in alt:
            raise multiallelic_error(f"{path}:{number}", chrom, pos, alt)
        kind = site_kind(ref, alt)
        if kind is not None:
            skipped[kind] += 1
            continue
        keys = fields[8].split(":")
        if keys[0] != "GT":
            raise VcfFormatError(f"{path}:{number}: FORMAT does not start with GT")
        try:
            codes = [GENOTYPE_CODES[s.split(":", 1)[0]] for s in fields[9:]]
        except KeyError as error:
            raise VcfFormatError(
                f"{path}:{number}: genotype {error.args[0]!r} at {chrom}:{pos} is not "
                "a bi-allelic call (0, 1 or .)"
            ) from None
        yield (chrom, ident if ident != "." else f"{chrom}:{pos}", pos, alt, ref), codes


def _write_bed(
    path: Path,
    prefix: str | os.PathLike,
    n: int,
    records: Iterable[tuple[Variant, Sequence[int] | np.ndarray]],
    block: int,
) -> list[Variant]:
    """Stream (variant, dosages) records into ``prefix.bed`` in blocks; the .bed
    appears only if every record was read (an error removes the temporary)."""
    variants: list[Variant] = []
    rows = np.empty((block, n), dtype=np.int8)
    filled = 0
    with BedWriter(fileset_path(prefix, ".bed"), n) as writer:
        for variant, dosages in records:
            rows[filled] = dosages
            variants.append(variant)
            filled += 1
            if filled == block:
                writer.write_packed(pack_genotypes(rows))
                filled = 0
                if writer.n_snps % (64 * block) == 0:
                    log.info("%s: %d SNPs imported", path.name, writer.n_snps)
        if filled:
            writer.write_packed(pack_genotypes(rows[:filled]))
    return variants


def vcf_to_bed(path: str | os.PathLike, prefix: str | os.PathLike, block: int = 4096) -> dict:
    """Stream a VCF or BCF into ``prefix.bed/.bim/.fam``; returns counts of what was kept."""
    path = Path(path)
    skipped = {"not_snp": 0, "no_alt": 0}
    if is_bcf(path):
        from warpbio.genotype.bcf import bcf_records  # bcf builds on this module

        with bcf_records(path, skipped) as (samples, records):
            variants = _write_bed(path, prefix, len(samples), records, block)
    else:
        with _open(path) as handle:
            samples, header_line = _samples(handle, path)
            records = _vcf_records(handle, path, len(samples), header_line + 1, skipped)
            variants = _write_bed(path, prefix, len(samples), records, block)
    if not variants:
        fileset_path(prefix, ".bed").unlink()
        raise VcfFormatError(f"{path}: no bi-allelic SNP records ({skipped})")
    table = pd.DataFrame(variants, columns=["chrom", "id", "pos", "a1", "a2"])
    table.insert(2, "cm", 0)
    fam = pd.DataFrame(
        {"fid": samples, "iid": samples, "father": 0, "mother": 0, "sex": 0, "phenotype": -9}
    )
    write_tables(prefix, table, fam)
    summary = {
        "samples": len(samples),
        "snps": len(variants),
        **{f"skipped_{k}": v for k, v in skipped.items()},
    }
    log.info("imported %s", summary)
    return summary


def import_step(ctx) -> dict:
    """Snakemake step: ``input.vcf`` (VCF, VCF.gz or BCF) -> ``output.bed/bim/fam``."""
    return vcf_to_bed(ctx.input.vcf, fileset_prefix(ctx.output.bed))
