"""Seeded single-cell count simulator with known cell types.

Counts are negative binomial (gamma-Poisson): each cell type has its own gene
expression profile (a shared log-normal baseline with a fraction of genes
up- or down-regulated), each cell a log-normal library size, each sample a
small gene-wise batch effect.  Thirteen mouse mitochondrial genes (``mt-``)
carry a few percent of the counts, and a small fraction of "damaged" cells carry
much more, so that QC filtering has something real to remove.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp

from warpbio.progress import Progress

log = logging.getLogger(__name__)

MOUSE_MITO_GENES = (
    "mt-Nd1",
    "mt-Nd2",
    "mt-Co1",
    "mt-Co2",
    "mt-Atp8",
    "mt-Atp6",
    "mt-Co3",
    "mt-Nd3",
    "mt-Nd4l",
    "mt-Nd4",
    "mt-Nd5",
    "mt-Nd6",
    "mt-Cytb",
)


@dataclass(frozen=True)
class SimulationSpec:
    n_cells: int = 3000
    n_genes: int = 2000
    n_cell_types: int = 6
    n_samples: int = 2
    de_fraction: float = 0.06
    de_log_fold: float = 1.6
    mean_library_size: float = 3000.0
    library_log_sd: float = 0.35
    dispersion: float = 0.25
    mito_fraction: float = 0.04
    damaged_fraction: float = 0.03
    batch_log_sd: float = 0.1
    chunk_cells: int = 4096

    def __post_init__(self) -> None:
        if self.n_genes <= len(MOUSE_MITO_GENES):
            raise ValueError(f"n_genes must exceed {len(MOUSE_MITO_GENES)} (the mito genes)")
        if self.n_cell_types < 1 or self.n_samples < 1 or self.n_cells < 1:
            raise ValueError("n_cells, n_cell_types and n_samples must be >= 1")


@dataclass
class SimulatedCounts:
    counts: sp.csr_matrix  # cells x genes, float32 UMI counts
    cell_type: np.ndarray  # int, the truth
    sample: np.ndarray  # int
    damaged: np.ndarray  # bool
    gene_names: list[str]
    spec: SimulationSpec


def gene_names(n_genes: int) -> list[str]:
    width = len(str(n_genes))
    n_plain = n_genes - len(MOUSE_MITO_GENES)
    return [f"Gene{i:0{width}d}" for i in range(n_plain)] + list(MOUSE_MITO_GENES)


def _type_profiles(rng: np.random.Generator, spec: SimulationSpec) -> np.ndarray:
    """Per-type expression proportions (types x genes), mito genes at the end."""
    n_plain = spec.n_genes - len(MOUSE_MITO_GENES)
    baseline = rng.lognormal(mean=0.0, sigma=1.5, size=n_plain)
    profiles = np.tile(baseline, (spec.n_cell_types, 1))
    n_de = max(1, round(spec.de_fraction * n_plain))
    for t in range(spec.n_cell_types):
        genes = rng.choice(n_plain, size=n_de, replace=False)
        signs = np.where(rng.random(n_de) < 0.75, 1.0, -1.0)  # mostly markers up
        folds = np.exp(signs * rng.normal(spec.de_log_fold, 0.4, size=n_de))
        profiles[t, genes] *= folds
    profiles /= profiles.sum(axis=1, keepdims=True)
    mito = rng.dirichlet(np.full(len(MOUSE_MITO_GENES), 5.0))
    return np.hstack([profiles, np.tile(mito, (spec.n_cell_types, 1))])


@dataclass
class CellDesign:
    """Everything drawn per cell type, cell and sample before the counts themselves."""

    profiles: np.ndarray  # types x genes expression proportions
    cell_type: np.ndarray
    sample: np.ndarray
    damaged: np.ndarray
    library: np.ndarray
    mito_share: np.ndarray
    batch: np.ndarray  # samples x genes


def draw_design(spec: SimulationSpec, rng: np.random.Generator) -> CellDesign:
    profiles = _type_profiles(rng, spec)
    type_weights = rng.dirichlet(np.full(spec.n_cell_types, 4.0))
    cell_type = rng.choice(spec.n_cell_types, size=spec.n_cells, p=type_weights)
    sample = rng.integers(0, spec.n_samples, size=spec.n_cells)
    damaged = rng.random(spec.n_cells) < spec.damaged_fraction
    library = spec.mean_library_size * rng.lognormal(
        -0.5 * spec.library_log_sd**2, spec.library_log_sd, size=spec.n_cells
    )
    library[damaged] *= 0.4
    mito_share = np.clip(rng.normal(spec.mito_fraction, 0.01, spec.n_cells), 0.002, None)
    mito_share[damaged] = rng.uniform(0.25, 0.6, size=int(damaged.sum()))
    batch = rng.lognormal(0.0, spec.batch_log_sd, size=(spec.n_samples, spec.n_genes))
    return CellDesign(profiles, cell_type, sample, damaged, library, mito_share, batch)


def _chunk_means(design: CellDesign, start: int, stop: int, on_device: dict, xp):
    """Expected counts (cells x genes) of cells [start, stop), on xp's device."""
    n_mito = len(MOUSE_MITO_GENES)
    cell_type = xp.asarray(design.cell_type[start:stop])
    sample = xp.asarray(design.sample[start:stop])
    mito_share = xp.asarray(design.mito_share[start:stop])[:, None]
    p = on_device["profiles"][cell_type] * on_device["batch"][sample]
    p[:, :-n_mito] *= (1.0 - mito_share) / p[:, :-n_mito].sum(1, keepdims=True)
    p[:, -n_mito:] *= mito_share / p[:, -n_mito:].sum(1, keepdims=True)
    return p * xp.asarray(design.library[start:stop])[:, None]


def sample_counts(spec: SimulationSpec, design: CellDesign, rng, xp=np):
    """Gamma-Poisson counts of the design as CSR arrays (data float32, indices int32,
    indptr int64) on xp's device, ``chunk_cells`` cells at a time; ``rng`` is a NumPy
    or CuPy Generator. Column indices come sorted, with no explicit zeros."""
    on_device = {"profiles": xp.asarray(design.profiles), "batch": xp.asarray(design.batch)}
    shape = 1.0 / spec.dispersion
    data, indices, row_nnz = [], [], []
    progress = Progress("simulate cells", spec.n_cells, unit="cells")
    for start in range(0, spec.n_cells, spec.chunk_cells):
        stop = min(start + spec.chunk_cells, spec.n_cells)
        mean = _chunk_means(design, start, stop, on_device, xp)
        counts = rng.poisson(rng.gamma(shape, mean / shape)).astype(xp.float32)
        rows, genes = xp.nonzero(counts)  # row-major: genes ascend within a row
        data.append(counts[rows, genes])
        indices.append(genes.astype(xp.int32))
        row_nnz.append(xp.bincount(rows, minlength=stop - start))
        progress.update(stop - start)
    indptr = xp.concatenate(
        [xp.zeros(1, dtype=xp.int64), xp.cumsum(xp.concatenate(row_nnz), dtype=xp.int64)]
    )
    return xp.concatenate(data), xp.concatenate(indices), indptr


def simulate_counts(spec: SimulationSpec, seed: int) -> SimulatedCounts:
    """Simulate a cells x genes UMI count matrix on the CPU; same seed, same matrix."""
    rng = np.random.default_rng(seed)
    design = draw_design(spec, rng)
    data, indices, indptr = sample_counts(spec, design, rng)
    matrix = sp.csr_matrix((data, indices, indptr), shape=(spec.n_cells, spec.n_genes))
    return SimulatedCounts(
        matrix, design.cell_type, design.sample, design.damaged, gene_names(spec.n_genes), spec
    )


def simulate_counts_on_gpu(spec: SimulationSpec, seed: int):
    """The same simulation with the counts drawn on the current GPU (CuPy's generator:
    other numbers than the CPU's for the same seed, the same distribution). Returns
    the design (host) and CSR arrays on the GPU; nnz may exceed 2^31."""
    import cupy as cp

    rng = np.random.default_rng(seed)
    design = draw_design(spec, rng)
    return design, sample_counts(spec, design, cp.random.default_rng(seed), cp)


def to_anndata(sim: SimulatedCounts):
    """AnnData with raw counts in X and the truth in ``obs``."""
    import anndata as ad
    import pandas as pd

    n_cells = sim.counts.shape[0]
    width = len(str(n_cells))
    obs = pd.DataFrame(
        {
            "sample": pd.Categorical([f"sample{s + 1}" for s in sim.sample]),
            "true_cell_type": pd.Categorical([f"type{t + 1}" for t in sim.cell_type]),
            "damaged": sim.damaged,
        },
        index=[f"cell{i:0{width}d}" for i in range(n_cells)],
    )
    var = pd.DataFrame(
        {"gene_ids": [f"SIM{i:08d}" for i in range(len(sim.gene_names))]},
        index=sim.gene_names,
    )
    adata = ad.AnnData(X=sim.counts, obs=obs, var=var)
    adata.uns["simulation"] = {k: v for k, v in asdict(sim.spec).items()}
    return adata


def summarize(sim: SimulatedCounts) -> dict:
    genes_per_cell = np.diff(sim.counts.indptr)
    umi = np.asarray(sim.counts.sum(axis=1)).ravel()
    return {
        "n_cells": int(sim.counts.shape[0]),
        "n_genes": int(sim.counts.shape[1]),
        "nnz": int(sim.counts.nnz),
        "density": float(sim.counts.nnz / np.prod(sim.counts.shape)),
        "median_genes_per_cell": float(np.median(genes_per_cell)),
        "median_umi_per_cell": float(np.median(umi)),
        "damaged_cells": int(sim.damaged.sum()),
    }


def simulate_step(ctx) -> dict:
    """Snakemake step: ``params.simulation`` -> ``output.h5ad``."""
    from warpbio.io import atomic_write

    spec = SimulationSpec(**dict(ctx.params.simulation))
    sim = simulate_counts(spec, seed=int(ctx.seed))
    stats = summarize(sim)
    log.info("simulated %s", stats)
    with atomic_write(ctx.output.h5ad) as tmp:
        to_anndata(sim).write_h5ad(tmp)
    return {"summary": stats}
