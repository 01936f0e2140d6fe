"""Genotype QC: sample call rate, variant call rate, MAF and monomorphic filters,
and optional LD pruning.

Order as in plink2: samples with too many missing calls go first, then
variant statistics are taken over the kept samples and variants are filtered
on missingness and minor allele frequency (monomorphic variants always go:
they cannot be standardized). LD pruning, when enabled, then works like plink's
``--indep-pairwise window step r2`` within each chromosome: in windows of
``window`` variants moved by ``step``, of each pair with r^2 above ``r2`` the
variant with the lower MAF goes (r from mean-imputed standardized genotypes).
The kept genotypes are written as a new PLINK fileset; when no sample is
dropped, kept SNP records are copied packed.
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
    fileset_prefix,
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
    ld_prune: dict | None = None  # {enabled, window, step, r2}


@dataclass
class QcDecision:
    keep_samples: np.ndarray  # bool, per sample
    keep_variants: np.ndarray  # bool, per variant
    alt_freq: np.ndarray  # over kept samples, per variant
    removed: dict[str, int]


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
    if not keep_samples.all():
        counts = count_genotypes(bed, xp, block_snps, samples=keep_samples)
    called = counts.variant_called
    n_kept = int(keep_samples.sum())
    freq = counts.alt_frequency
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
    prune = thresholds.ld_prune or {}
    if prune.get("enabled"):
        pruned = ld_prune(
            bed, keep_variants, keep_samples, freq, prune["window"], prune["step"], prune["r2"]
        )
        removed["variants_ld"] = int((keep_variants & ~pruned).sum())
        keep_variants = pruned
    return QcDecision(keep_samples, keep_variants, freq, removed)


def ld_prune(
    bed: BedFile,
    keep_variants: np.ndarray,
    keep_samples: np.ndarray,
    freq: np.ndarray,
    window: int = 50,
    step: int = 5,
    r2: float = 0.2,
) -> np.ndarray:
    """Variants left after windowed pairwise LD pruning (see module docstring)."""
    from warpbio.genotype.pca import decode_standardized, standardization_table

    keep = keep_variants.copy()
    maf = np.minimum(freq, 1 - freq)
    columns = np.flatnonzero(keep_samples)
    chromosomes = bed.variants["chrom"].to_numpy()
    candidates = np.flatnonzero(keep_variants)
    progress = Progress("LD pruning", candidates.size, unit="variants")
    for chrom in pd.unique(chromosomes[candidates]):
        rows = candidates[chromosomes[candidates] == chrom]
        for start in range(0, max(rows.size - 1, 1), step):
            window_rows = rows[start : start + window]
            window_rows = window_rows[keep[window_rows]]
            if window_rows.size < 2:
                continue
            table = standardization_table(freq[window_rows], np.float64)
            values = decode_standardized(np.asarray(bed.packed[window_rows]), table, bed.n_samples)
            values = values[:, columns]
            norms = np.sqrt((values**2).sum(1))
            r = (values @ values.T) / np.outer(norms, norms)
            for i in range(window_rows.size):
                for j in range(i + 1, window_rows.size):
                    a, b = window_rows[i], window_rows[j]
                    if keep[a] and keep[b] and r[i, j] ** 2 > r2:
                        keep[b if maf[b] <= maf[a] else a] = False
            progress.update(min(step, rows.size - start))
    return keep


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

    bed = read_bed(fileset_prefix(ctx.input.bed))
    thresholds = QcThresholds(**dict(ctx.params.thresholds))
    decision = decide(bed, thresholds, ctx.xp)
    prefix = fileset_prefix(ctx.output.bed)
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
