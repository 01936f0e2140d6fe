"""Genotype QC: sample call rate, variant call rate, MAF and monomorphic filters.

Order as in plink2: samples with too many missing calls go first, then
variant statistics are taken over the kept samples and variants are filtered
on missingness and minor allele frequency (monomorphic variants always go:
they cannot be standardized). The kept genotypes are written as a new PLINK
fileset; when no sample is dropped, kept SNP records are copied packed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import pandas as pd

from warpbio.device import to_numpy
from warpbio.genotype.plink import (
    BedFile,
    BedWriter,
    decode_genotypes,
    fileset_path,
    pack_genotypes,
    read_bed,
    write_tables,
)
from warpbio.genotype.stats import count_genotypes
from warpbio.progress import Progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QcThresholds:
    min_maf: float = 0.01
    max_variant_missing: float = 0.05
    max_sample_missing: float = 0.10


@dataclass
class QcDecision:
    keep_samples: np.ndarray  # bool, per sample
    keep_variants: np.ndarray  # bool, per variant
    alt_freq: np.ndarray  # over kept samples, per variant
    removed: dict[str, int]


def _counts_over(bed: BedFile, samples: np.ndarray, xp: ModuleType, block_snps: int):
    """ALT dosage sums and called counts per variant over the chosen samples."""
    alt = np.zeros(bed.n_snps, dtype=np.int64)
    called = np.zeros(bed.n_snps, dtype=np.int64)
    columns = xp.asarray(np.flatnonzero(samples))
    for start in range(0, bed.n_snps, block_snps):
        stop = min(start + block_snps, bed.n_snps)
        dosage = decode_genotypes(np.asarray(bed.packed[start:stop]), bed.n_samples, xp)
        dosage = dosage[:, columns]
        present = dosage >= 0
        alt[start:stop] = to_numpy(xp.where(present, dosage, 0).sum(axis=1, dtype=xp.int64))
        called[start:stop] = to_numpy(present.sum(axis=1))
    return alt, called


def decide(
    bed: BedFile, thresholds: QcThresholds, xp: ModuleType = np, block_snps: int = 16384
) -> QcDecision:
    counts = count_genotypes(bed, xp, block_snps)
    sample_missing = counts.sample_missing / max(bed.n_snps, 1)
    keep_samples = sample_missing <= thresholds.max_sample_missing
    if not keep_samples.any():
        raise ValueError(
            f"every sample has more than {thresholds.max_sample_missing:.0%} missing calls; "
            "check the input or raise genotype.qc.max_sample_missing"
        )
    if keep_samples.all():
        alt, called = counts.alt_dosage_sum, counts.variant_called
    else:
        alt, called = _counts_over(bed, keep_samples, xp, block_snps)
    n_kept = int(keep_samples.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        freq = np.where(called > 0, alt / np.maximum(2 * called, 1), np.nan)
    maf = np.minimum(freq, 1 - freq)
    missing = 1 - called / n_kept
    too_missing = missing > thresholds.max_variant_missing
    monomorphic = ~too_missing & ~(maf > 0)
    rare = ~too_missing & ~monomorphic & (maf < thresholds.min_maf)
    keep_variants = ~(too_missing | monomorphic | rare)
    removed = {
        "samples_missing": int((~keep_samples).sum()),
        "variants_missing": int(too_missing.sum()),
        "variants_monomorphic": int(monomorphic.sum()),
        "variants_maf": int(rare.sum()),
    }
    if not keep_variants.any():
        raise ValueError(f"QC removed every variant ({removed}); relax genotype.qc thresholds")
    return QcDecision(keep_samples, keep_variants, freq, removed)


def write_filtered(
    bed: BedFile, decision: QcDecision, prefix: str, xp: ModuleType = np, block_snps: int = 16384
) -> None:
    """Write the kept samples x kept variants as a new fileset."""
    rows = np.flatnonzero(decision.keep_variants)
    all_samples = bool(decision.keep_samples.all())
    columns = xp.asarray(np.flatnonzero(decision.keep_samples))
    n_out = int(decision.keep_samples.sum())
    progress = Progress("write QC'd genotypes", rows.size, unit="SNPs")
    with BedWriter(fileset_path(prefix, ".bed"), n_out) as writer:
        for start in range(0, rows.size, block_snps):
            chunk = rows[start : start + block_snps]
            packed = np.asarray(bed.packed[chunk])
            if not all_samples:
                dosage = decode_genotypes(packed, bed.n_samples, xp)[:, columns]
                packed = to_numpy(pack_genotypes(dosage, xp))
            writer.write_packed(packed)
            progress.update(chunk.size)
    write_tables(
        prefix,
        bed.variants.iloc[rows].reset_index(drop=True),
        bed.samples.loc[decision.keep_samples].reset_index(drop=True),
    )


def qc_step(ctx) -> dict:
    """Snakemake step: a fileset -> the QC'd fileset and a table of what was removed."""
    from warpbio.io import atomic_write

    bed = read_bed(str(ctx.input.bed)[: -len(".bed")])
    thresholds = QcThresholds(**dict(ctx.params.thresholds))
    decision = decide(bed, thresholds, ctx.xp)
    prefix = str(ctx.output.bed)[: -len(".bed")]
    write_filtered(bed, decision, prefix, ctx.xp)
    summary = {
        "samples_in": bed.n_samples,
        "variants_in": bed.n_snps,
        **decision.removed,
        "samples_out": int(decision.keep_samples.sum()),
        "variants_out": int(decision.keep_variants.sum()),
    }
    log.info("QC: %s", summary)
    with atomic_write(ctx.output.summary) as tmp:
        pd.Series(summary, name="count").to_csv(tmp, sep="\t", index_label="item")
    return summary
