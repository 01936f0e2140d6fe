"""VCF (plain or gzip/bgzip) -> PLINK fileset, streamed: bi-allelic SNPs only.

Genotypes are read from the GT field and written as the ALT dosage, ALT as the
.bim's A1 and REF as A2 (what plink2 does on import). Multi-allelic records stop
the import with the line and a fix; records that are not SNPs (indels, symbolic
alleles) and sites without ALT are skipped and counted in the log. BCF needs
htslib: convert first with ``bcftools view -Ov``.
"""

from __future__ import annotations

import gzip
import logging
import os
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


class VcfFormatError(ValueError):
    """A VCF that cannot be imported; the message names file, line and fix."""


def _open(path: Path):
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic[:3] == b"BCF":
        raise VcfFormatError(f"{path}: BCF input needs htslib; convert with 'bcftools view -Ov'")
    if magic[:2] == b"\x1f\x8b":
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


def vcf_to_bed(path: str | os.PathLike, prefix: str | os.PathLike, block: int = 4096) -> dict:
    """Stream a VCF into ``prefix.bed/.bim/.fam``; returns counts of what was kept."""
    path = Path(path)
    skipped = {"not_snp": 0, "no_alt": 0}
    variants: list[tuple] = []
    with _open(path) as handle:
        samples, header_line = _samples(handle, path)
        n = len(samples)
        rows = np.empty((block, n), dtype=np.int8)
        filled = 0
        with BedWriter(fileset_path(prefix, ".bed"), n) as writer:
            for number, line in enumerate(handle, start=header_line + 1):
                fields = line.rstrip("\n").split("\t")
                if len(fields) != n + 9:
                    raise VcfFormatError(
                        f"{path}:{number}: {len(fields)} columns, expected {n + 9} "
                        f"(9 fixed + {n} samples); the file is truncated or malformed"
                    )
                chrom, pos, ident, ref, alt = fields[:5]
                if "," in alt:
                    raise VcfFormatError(
                        f"{path}:{number}: multi-allelic site {chrom}:{pos} (ALT={alt}); "
                        "split it with 'bcftools norm -m-' or keep bi-allelic SNPs with "
                        "'bcftools view -m2 -M2 -v snps'"
                    )
                if alt in (".", "*"):
                    skipped["no_alt"] += 1
                    continue
                if len(ref) != 1 or len(alt) != 1 or ref not in BASES or alt not in BASES:
                    skipped["not_snp"] += 1
                    continue
                keys = fields[8].split(":")
                if keys[0] != "GT":
                    raise VcfFormatError(f"{path}:{number}: FORMAT does not start with GT")
                try:
                    rows[filled] = [GENOTYPE_CODES[s.split(":", 1)[0]] for s in fields[9:]]
                except KeyError as error:
                    raise VcfFormatError(
                        f"{path}:{number}: genotype {error.args[0]!r} at {chrom}:{pos} is not "
                        "a bi-allelic call (0, 1 or .)"
                    ) from None
                variants.append((chrom, ident if ident != "." else f"{chrom}:{pos}", pos, alt, ref))
                filled += 1
                if filled == block:
                    writer.write_packed(pack_genotypes(rows))
                    filled = 0
                    if writer.n_snps % (64 * block) == 0:
                        log.info("%s: %d SNPs imported (line %d)", path.name, writer.n_snps, number)
            if filled:
                writer.write_packed(pack_genotypes(rows[:filled]))
    if not variants:
        raise VcfFormatError(f"{path}: no bi-allelic SNP records ({skipped})")
    table = pd.DataFrame(variants, columns=["chrom", "id", "pos", "a1", "a2"])
    table.insert(2, "cm", 0)
    fam = pd.DataFrame(
        {"fid": samples, "iid": samples, "father": 0, "mother": 0, "sex": 0, "phenotype": -9}
    )
    write_tables(prefix, table, fam)
    summary = {
        "samples": n,
        "snps": len(variants),
        **{f"skipped_{k}": v for k, v in skipped.items()},
    }
    log.info("imported %s", summary)
    return summary


def import_step(ctx) -> dict:
    """Snakemake step: ``input.vcf`` -> ``output.bed/bim/fam``."""
    return vcf_to_bed(ctx.input.vcf, fileset_prefix(ctx.output.bed))
