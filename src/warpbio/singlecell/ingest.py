"""Read count matrices and merge samples into one AnnData with a ``sample`` column.

This version reads AnnData ``.h5ad`` files; the 10x h5/mtx and zarr readers
arrive with the single-cell workflow issue.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".h5ad",)


class InputFormatError(ValueError):
    """An input file that cannot be read; the message names file, problem and fix."""


def read_sample(path: str | Path):
    import anndata as ad
    import h5py

    path = Path(path)
    if path.suffix not in SUPPORTED_SUFFIXES:
        raise InputFormatError(
            f"{path}: unsupported single-cell input '{path.suffix}'; "
            f"give one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    if not h5py.is_hdf5(path):
        raise InputFormatError(f"{path}: not an HDF5 file; give an AnnData .h5ad file")
    try:
        adata = ad.read_h5ad(path)
    except Exception as error:  # anndata raises many types for a bad layout
        raise InputFormatError(
            f"{path}: not a readable AnnData file ({type(error).__name__}: {error}); "
            "write it with anndata.AnnData.write_h5ad"
        ) from error
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise InputFormatError(f"{path}: has {adata.n_obs} cells x {adata.n_vars} genes")
    return adata


def merge_samples(samples: Mapping[str, str]):
    """One AnnData with ``obs['sample']``; genes are the intersection over samples."""
    import anndata as ad

    parts = {}
    for name, path in samples.items():
        adata = read_sample(path)
        adata.var_names_make_unique()
        log.info("sample %s: %d cells x %d genes from %s", name, *adata.shape, path)
        parts[name] = adata
    merged = ad.concat(parts, label="sample", index_unique="-", join="inner", merge="same")
    dropped = max(a.n_vars for a in parts.values()) - merged.n_vars
    if dropped:
        log.warning("%d genes not shared by every sample were dropped", dropped)
    merged.obs["sample"] = merged.obs["sample"].astype("category")
    return merged


def ingest_step(ctx) -> dict:
    """Snakemake step: ``params.samples`` (name -> path) -> ``output.h5ad``."""
    from warpbio.io import atomic_write

    merged = merge_samples(dict(ctx.params.samples))
    with atomic_write(ctx.output.h5ad) as tmp:
        merged.write_h5ad(tmp)
    return {"n_cells": int(merged.n_obs), "n_genes": int(merged.n_vars)}
