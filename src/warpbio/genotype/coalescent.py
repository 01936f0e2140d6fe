"""Realistic small genotype sets: msprime coalescent simulation with LD.

Two demographies, both with ``n_populations`` demes of ``population_size``:

- ``split`` (default): the demes split from one ancestral population
  ``split_time`` generations ago and never exchange migrants, so every sample
  belongs to exactly one population (Fst is about 1 - exp(-T / 2N)).
- ``island``: the demes exchange migrants symmetrically at rate
  ``migration_rate`` forever (Fst about 1 / (1 + 4 N m (d / (d - 1))^2)); recent
  migrants make a few samples look like another population.

Diploid samples come from each deme; mutations follow the infinite-sites
model, so every site is bi-allelic.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from warpbio.genotype.plink import MISSING, fileset_prefix, write_bed
from warpbio.genotype.simulate import samples_of_populations

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CoalescentSpec:
    samples_per_population: int = 500
    n_populations: int = 3
    demography: str = "split"
    population_size: float = 10_000
    split_time: float = 2_000
    migration_rate: float = 2e-4
    sequence_length: float = 1e7
    recombination_rate: float = 1e-8
    mutation_rate: float = 1e-8
    missing_rate: float = 0.01
    min_snps: int = 0  # fail loudly if fewer segregating sites came out


def build_demography(spec: CoalescentSpec):
    import msprime

    sizes = [spec.population_size] * spec.n_populations
    if spec.demography == "island":
        return msprime.Demography.island_model(sizes, migration_rate=spec.migration_rate)
    if spec.demography != "split":
        raise ValueError(f"demography {spec.demography!r} is not 'split' or 'island'")
    demography = msprime.Demography()
    names = [f"pop_{i}" for i in range(spec.n_populations)]
    for name in names:
        demography.add_population(name=name, initial_size=spec.population_size)
    demography.add_population(name="ancestral", initial_size=spec.population_size)
    demography.add_population_split(time=spec.split_time, derived=names, ancestral="ancestral")
    return demography


def simulate_coalescent(spec: CoalescentSpec, seed: int):
    """(dosage (sites x samples, int8, -1 missing), variants, samples) from msprime."""
    import msprime

    demography = build_demography(spec)
    samples = {f"pop_{i}": spec.samples_per_population for i in range(spec.n_populations)}
    rng = np.random.default_rng(seed)
    ancestry_seed, mutation_seed = (int(x) for x in rng.integers(1, 2**31 - 1, size=2))
    tree_sequence = msprime.sim_ancestry(
        samples=samples,
        demography=demography,
        sequence_length=spec.sequence_length,
        recombination_rate=spec.recombination_rate,
        ploidy=2,
        random_seed=ancestry_seed,
    )
    tree_sequence = msprime.sim_mutations(
        tree_sequence,
        rate=spec.mutation_rate,
        model=msprime.BinaryMutationModel(),
        discrete_genome=False,
        random_seed=mutation_seed,
    )
    haplotypes = tree_sequence.genotype_matrix()  # sites x haploid sample nodes
    if haplotypes.shape[0] < spec.min_snps:
        raise ValueError(
            f"msprime gave {haplotypes.shape[0]} sites, fewer than min_snps={spec.min_snps}; "
            "raise sequence_length or mutation_rate"
        )
    individuals = list(tree_sequence.individuals())
    nodes = np.array([ind.nodes for ind in individuals])  # (n_individuals, 2)
    dosage = (haplotypes[:, nodes[:, 0]] + haplotypes[:, nodes[:, 1]]).astype(np.int8)
    dosage[rng.random(dosage.shape) < spec.missing_rate] = MISSING
    populations = [
        tree_sequence.population(tree_sequence.node(ind.nodes[0]).population).metadata["name"]
        for ind in individuals
    ]
    positions = np.array([site.position for site in tree_sequence.sites()])
    variants = pd.DataFrame(
        {
            "chrom": "1",
            "id": [f"msp{i + 1}" for i in range(dosage.shape[0])],
            "cm": 0,
            "pos": np.maximum(1, np.floor(positions).astype(np.int64)),
            "a1": "T",  # derived allele, counted as ALT
            "a2": "C",
        }
    )
    sample_table = samples_of_populations(populations)
    log.info("msprime: %d sites x %d diploid samples", *dosage.shape)
    return dosage, variants, sample_table


def simulate_coalescent_bed(prefix: str | Path, spec: CoalescentSpec, seed: int) -> pd.DataFrame:
    dosage, variants, samples = simulate_coalescent(spec, seed)
    write_bed(prefix, dosage, variants, samples)
    return samples


def simulate_step(ctx) -> dict:
    """Snakemake step: ``params.simulation`` -> msprime fileset + populations."""
    from warpbio.io import atomic_write

    spec = CoalescentSpec(**dict(ctx.params.simulation))
    prefix = fileset_prefix(ctx.output.bed)
    samples = simulate_coalescent_bed(prefix, spec, seed=int(ctx.seed))
    with atomic_write(ctx.output.populations) as tmp:
        samples[["fid", "iid", "population"]].to_csv(tmp, sep="\t", index=False)
    return {"n_samples": len(samples)}
