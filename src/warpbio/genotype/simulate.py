"""Balding-Nichols genotype simulation with known populations.

Each SNP has an ancestral allele frequency p ~ U(min_freq, 1 - min_freq); each
population k draws its own p_k ~ Beta(p(1-F)/F, (1-p)(1-F)/F) with F = Fst, and
a diploid genotype is the sum of two Bernoulli(p_k) draws.  Calls are then set
missing at random.  Frequencies come from NumPy (small: SNPs x populations);
genotypes are drawn on the backend's device (NumPy or CuPy) and packed there,
so only 2-bit data crosses to the host.  The CPU and GPU random streams differ:
the same seed gives the same data on the same backend only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

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
from warpbio.progress import Progress

log = logging.getLogger(__name__)

BASES = np.array(list("ACGT"))


@dataclass(frozen=True)
class BaldingNicholsSpec:
    n_samples: int = 600
    n_snps: int = 20000
    n_populations: int = 3
    fst: float = 0.05
    missing_rate: float = 0.01
    min_freq: float = 0.05
    n_chromosomes: int = 22
    chunk_snps: int = 8192

    def __post_init__(self) -> None:
        if not 0 < self.fst < 1:
            raise ValueError(f"fst must lie in (0, 1), got {self.fst}")
        if not 0 <= self.missing_rate < 1:
            raise ValueError(f"missing_rate must lie in [0, 1), got {self.missing_rate}")
        if self.n_populations < 1 or self.n_samples < self.n_populations:
            raise ValueError("need n_populations >= 1 and n_samples >= n_populations")


def population_labels(spec: BaldingNicholsSpec) -> np.ndarray:
    """Samples split as evenly as possible, in population order."""
    return np.repeat(
        np.arange(spec.n_populations),
        np.diff(np.linspace(0, spec.n_samples, spec.n_populations + 1).round().astype(int)),
    )


def population_frequencies(spec: BaldingNicholsSpec, rng: np.random.Generator) -> np.ndarray:
    """(n_snps, n_populations) allele frequencies."""
    ancestral = rng.uniform(spec.min_freq, 1 - spec.min_freq, size=spec.n_snps)
    scale = (1 - spec.fst) / spec.fst
    alpha = np.repeat((ancestral * scale)[:, None], spec.n_populations, axis=1)
    beta = np.repeat(((1 - ancestral) * scale)[:, None], spec.n_populations, axis=1)
    return rng.beta(alpha, beta)


def simulate_block(freqs, labels, missing_rate: float, rng, xp: ModuleType):
    """Dosages (block_snps, n_samples) int8 with -1 for missing calls."""
    p = xp.asarray(freqs, dtype=xp.float32)[:, xp.asarray(labels)]
    shape = p.shape
    dosage = (rng.random(shape, dtype=xp.float32) < p).astype(xp.int8)
    dosage += (rng.random(shape, dtype=xp.float32) < p).astype(xp.int8)
    if missing_rate > 0:
        dosage[rng.random(shape, dtype=xp.float32) < missing_rate] = MISSING
    return dosage


def variant_table(spec: BaldingNicholsSpec, rng: np.random.Generator) -> pd.DataFrame:
    chrom = 1 + (np.arange(spec.n_snps) * spec.n_chromosomes) // spec.n_snps
    first_of_chrom = np.searchsorted(chrom, chrom)
    pos = 10_000 + 1_000 * (np.arange(spec.n_snps) - first_of_chrom)
    pair = rng.permuted(np.tile(np.arange(4), (spec.n_snps, 1)), axis=1)[:, :2]
    return pd.DataFrame(
        {
            "chrom": chrom.astype(str),
            "id": [f"snp{i + 1}" for i in range(spec.n_snps)],
            "cm": 0,
            "pos": pos,
            "a1": BASES[pair[:, 0]],
            "a2": BASES[pair[:, 1]],
        }
    )


def sample_table(spec: BaldingNicholsSpec) -> pd.DataFrame:
    return samples_of_populations([f"pop{k + 1}" for k in population_labels(spec)])


def samples_of_populations(populations: list[str]) -> pd.DataFrame:
    """.fam columns plus ``population`` for simulated samples: FID = population,
    IID = population_<number within it>."""
    counters: dict[str, int] = {}
    iids = []
    for name in populations:
        counters[name] = counters.get(name, 0) + 1
        iids.append(f"{name}_{counters[name]}")
    return pd.DataFrame(
        {
            "fid": populations,
            "iid": iids,
            "father": 0,
            "mother": 0,
            "sex": 0,
            "phenotype": -9,
            "population": populations,
        }
    )


def simulate_to_bed(
    prefix: str | Path, spec: BaldingNicholsSpec, seed: int, xp: ModuleType = np
) -> pd.DataFrame:
    """Write a simulated PLINK fileset; returns the sample table with populations."""
    host_rng = np.random.default_rng(seed)
    device_rng = np.random.default_rng(seed + 1) if xp is np else xp.random.default_rng(seed + 1)
    freqs = population_frequencies(spec, host_rng)
    variants = variant_table(spec, host_rng)
    samples = sample_table(spec)
    labels = population_labels(spec)
    progress = Progress("simulate SNPs", spec.n_snps, unit="SNPs")
    with BedWriter(fileset_path(prefix, ".bed"), spec.n_samples) as writer:
        for start in range(0, spec.n_snps, spec.chunk_snps):
            stop = min(start + spec.chunk_snps, spec.n_snps)
            block = simulate_block(freqs[start:stop], labels, spec.missing_rate, device_rng, xp)
            packed = pack_genotypes(block, xp)
            writer.write_packed(packed.get() if hasattr(packed, "get") else packed)
            progress.update(stop - start)
    write_tables(prefix, variants, samples)
    return samples


def simulate_step(ctx) -> dict:
    """Snakemake step: ``params.simulation`` -> ``output.bed/bim/fam`` + populations."""
    from warpbio.io import atomic_write

    spec = BaldingNicholsSpec(**dict(ctx.params.simulation))
    prefix = fileset_prefix(ctx.output.bed)
    samples = simulate_to_bed(prefix, spec, seed=int(ctx.seed), xp=ctx.xp)
    with atomic_write(ctx.output.populations) as tmp:
        samples[["fid", "iid", "population"]].to_csv(tmp, sep="\t", index=False)
    return {"n_samples": spec.n_samples, "n_snps": spec.n_snps}
