"""Read count matrices and merge samples into one AnnData with a ``sample`` column.

Formats: AnnData ``.h5ad``; Cell Ranger HDF5 (v3 ``matrix/`` with ``features/``,
and the v1/v2 one-group-per-genome layout); Cell Ranger matrix folders
(``matrix.mtx``, ``genes.tsv`` or ``features.tsv``, ``barcodes.tsv``, each
optionally gzipped); AnnData zarr stores; and plain zarr groups of a dense
``X`` with ``obs``/``var`` name arrays. The 10x conventions follow scanpy's
``read_10x_h5``/``read_10x_mtx``: cells x genes float32 CSR, gene symbols as
``var_names`` made unique, ``var['gene_ids']`` (and ``feature_types``,
``genome`` for v3), and only Gene Expression features of v3 inputs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".h5ad", ".h5", ".zarr", "a 10x matrix folder")


class InputFormatError(ValueError):
    """An input file that cannot be read; the message names file, problem and fix."""


def _anndata(matrix, barcodes, var):
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    adata = ad.AnnData(
        X=sp.csr_matrix(matrix, dtype=np.float32),
        obs=pd.DataFrame(index=pd.Index(barcodes, dtype=str)),
        var=var,
    )
    adata.var_names_make_unique()
    return adata


def _strings(dataset) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in dataset[:]]


def read_10x_h5(path: str | Path, genome: str | None = None):
    """Cell Ranger HDF5, v3 (``matrix``) or v1/v2 (one group per genome)."""
    import h5py
    import pandas as pd
    import scipy.sparse as sp

    path = Path(path)
    with h5py.File(path, "r") as handle:
        if "matrix" in handle:
            group = handle["matrix"]
            features = group["features"]
            var = pd.DataFrame(
                {
                    "gene_ids": _strings(features["id"]),
                    "feature_types": _strings(features["feature_type"]),
                    "genome": _strings(features["genome"]),
                },
                index=pd.Index(_strings(features["name"])),
            )
            keep = (var["feature_types"] == "Gene Expression").to_numpy()
        else:
            genomes = list(handle.keys())
            if genome is None and len(genomes) > 1:
                raise InputFormatError(
                    f"{path}: holds several genomes ({', '.join(genomes)}); choose one"
                )
            name = genome or genomes[0]
            if name not in handle:
                raise InputFormatError(f"{path}: no genome {name!r}; it has {genomes}")
            group = handle[name]
            var = pd.DataFrame(
                {"gene_ids": _strings(group["genes"])},
                index=pd.Index(_strings(group["gene_names"])),
            )
            keep = np.ones(len(var), dtype=bool)
        n_genes, n_cells = (int(x) for x in group["shape"][:])
        # stored genes x cells in CSC, which is cells x genes in CSR
        matrix = sp.csr_matrix(
            (group["data"][:], group["indices"][:], group["indptr"][:]), shape=(n_cells, n_genes)
        )
        barcodes = _strings(group["barcodes"])
    return _anndata(matrix[:, keep], barcodes, var.loc[keep])


def _find(folder: Path, *names: str) -> Path | None:
    for name in names:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.exists():
                return candidate
    return None


def read_10x_mtx(folder: str | Path):
    """Cell Ranger matrix folder: v3 (features.tsv) or v1/v2 (genes.tsv), gz or not."""
    import pandas as pd
    import scipy.io

    folder = Path(folder)
    matrix_path = _find(folder, "matrix.mtx")
    genes_path = _find(folder, "features.tsv", "genes.tsv")
    barcodes_path = _find(folder, "barcodes.tsv")
    if not (matrix_path and genes_path and barcodes_path):
        raise InputFormatError(
            f"{folder}: a 10x matrix folder needs matrix.mtx, features.tsv (or genes.tsv) "
            "and barcodes.tsv, optionally gzipped"
        )
    genes = pd.read_csv(genes_path, sep="\t", header=None, dtype=str)
    barcodes = pd.read_csv(barcodes_path, sep="\t", header=None, dtype=str)[0].tolist()
    matrix = scipy.io.mmread(matrix_path).T.tocsr()  # stored genes x cells
    if matrix.shape != (len(barcodes), len(genes)):
        raise InputFormatError(
            f"{matrix_path}: {matrix.shape[1]} genes x {matrix.shape[0]} cells, but "
            f"{genes_path.name} lists {len(genes)} and {barcodes_path.name} {len(barcodes)}"
        )
    var = pd.DataFrame({"gene_ids": genes[0].to_numpy()}, index=pd.Index(genes[1].to_numpy()))
    keep = np.ones(len(var), dtype=bool)
    if genes.shape[1] >= 3:
        var["feature_types"] = genes[2].to_numpy()
        keep = (var["feature_types"] == "Gene Expression").to_numpy()
    return _anndata(matrix[:, keep], barcodes, var.loc[keep])


def read_zarr_counts(path: str | Path):
    """An AnnData zarr store, or a plain zarr group of dense ``X`` + ``obs``/``var`` names."""
    import anndata as ad
    import pandas as pd
    import zarr

    path = Path(path)
    group = zarr.open_group(path, mode="r")
    if "encoding-type" in group.attrs:
        return ad.read_zarr(path)
    if "X" not in group or "obs" not in group or "var" not in group:
        raise InputFormatError(f"{path}: zarr group without X, obs and var")
    var = pd.DataFrame(index=pd.Index(_strings(group["var"]), dtype=str))
    return _anndata(group["X"][:], _strings(group["obs"]), var)


def read_sample(path: str | Path):
    """Any supported count matrix, checked: a readable layout and at least one cell."""
    import anndata as ad
    import h5py

    path = Path(path)
    if path.is_dir() and path.suffix != ".zarr":
        adata = read_10x_mtx(path)
    elif path.suffix == ".zarr":
        adata = read_zarr_counts(path)
    elif path.suffix not in (".h5ad", ".h5"):
        raise InputFormatError(
            f"{path}: unsupported single-cell input '{path.suffix}'; "
            f"give one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    elif not h5py.is_hdf5(path):
        raise InputFormatError(f"{path}: not an HDF5 file (truncated or another format)")
    elif path.suffix == ".h5":
        try:
            adata = read_10x_h5(path)
        except (OSError, KeyError) as error:
            raise InputFormatError(
                f"{path}: not a readable Cell Ranger HDF5 ({type(error).__name__}: {error}); "
                "the file may be truncated: copy it again from the Cell Ranger output"
            ) from error
    else:
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
