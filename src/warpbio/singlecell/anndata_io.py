"""Read the parts of an ``.h5ad`` a stage needs, and the small per-stage files.

The preprocessed AnnData can hold tens of GB of expression values; the graph,
UMAP and clustering stages need only ``obsm['X_pca']`` and the cell names, so
they read those elements alone (h5py + anndata's element reader) instead of
loading the whole file.  Every reader names the file and the fix when an
element is missing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from warpbio.singlecell.ingest import InputFormatError


def anndata_elements():
    """anndata's element reader and writer (their module moved in anndata 0.11)."""
    try:
        from anndata.io import read_elem, write_elem
    except ImportError:  # anndata < 0.11
        from anndata.experimental import read_elem, write_elem
    return read_elem, write_elem


def _open(path):
    import h5py

    path = Path(path)
    if not path.exists():
        raise InputFormatError(f"{path}: no such file")
    if not h5py.is_hdf5(path):
        raise InputFormatError(
            f"{path}: not an HDF5 file (truncated or another format); rerun the rule that made it"
        )
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise InputFormatError(
            f"{path}: cannot be read as HDF5 ({error}); the file may be truncated: "
            "rerun the rule that made it"
        ) from error


def read_h5ad(path):
    """A whole AnnData file, with a clear message when it cannot be read."""
    import anndata as ad

    _open(path).close()  # names the file when it is missing, not HDF5 or truncated
    try:
        return ad.read_h5ad(path)
    except Exception as error:  # anndata raises many types for a bad layout
        raise InputFormatError(
            f"{path}: not a readable AnnData file ({type(error).__name__}: {error}); "
            "rerun the rule that made it"
        ) from error


def read_obs_names(path) -> np.ndarray:
    """Cell names (``obs`` index) without reading anything else."""
    with _open(path) as handle:
        if "obs" not in handle:
            raise InputFormatError(f"{path}: no 'obs' group; not an AnnData file")
        return _index_names(handle["obs"])


def read_obs(path):
    """The ``obs`` data frame alone."""
    read_elem, _ = anndata_elements()
    with _open(path) as handle:
        if "obs" not in handle:
            raise InputFormatError(f"{path}: no 'obs' group; not an AnnData file")
        return read_elem(handle["obs"])


def read_pca(path, n_pcs: int | None) -> np.ndarray:
    """The first ``n_pcs`` columns of ``obsm['X_pca']`` as float32 (None: all)."""
    with _open(path) as handle:
        if "obsm" not in handle or "X_pca" not in handle["obsm"]:
            raise InputFormatError(
                f"{path}: no obsm['X_pca']; the neighbour graph needs the PCA of "
                "singlecell_preprocess (or scanpy.pp.pca) in the input"
            )
        dataset = handle["obsm"]["X_pca"]
        if dataset.ndim == 2 and n_pcs is None:
            n_pcs = int(dataset.shape[1])
        if dataset.ndim != 2 or dataset.shape[1] < n_pcs:
            raise InputFormatError(
                f"{path}: obsm['X_pca'] has shape {dataset.shape}, fewer than the "
                f"{n_pcs} PCs asked (singlecell.neighbors.n_pcs); lower n_pcs"
            )
        pca = np.asarray(dataset[:, :n_pcs], dtype=np.float32)
    if not np.isfinite(pca).all():
        raise InputFormatError(f"{path}: obsm['X_pca'] holds NaN or infinite values")
    return pca


def read_csr_arrays(path, key: str = "X"):
    """``X`` of an .h5ad as CSR arrays: float32 data, int32 indices, int64 indptr, shape.

    Straight from the HDF5 datasets when X is stored as CSR: no scipy matrix in
    between, which would widen the indices to int64 past 2^31 non-zeros.
    """
    import scipy.sparse as sp

    with _open(path) as handle:
        if key not in handle:
            raise InputFormatError(f"{path}: no '{key}' matrix")
        element = handle[key]
        encoding = _text(element.attrs.get("encoding-type", ""))
        if encoding == "csr_matrix":
            shape = tuple(int(v) for v in element.attrs["shape"])
            return (
                np.asarray(element["data"][:], dtype=np.float32),
                np.asarray(element["indices"][:], dtype=np.int32),
                np.asarray(element["indptr"][:], dtype=np.int64),
                shape,
            )
        read_elem, _ = anndata_elements()
        matrix = sp.csr_matrix(read_elem(element), dtype=np.float32)
    return (
        matrix.data,
        matrix.indices.astype(np.int32),
        matrix.indptr.astype(np.int64),
        tuple(matrix.shape),
    )


def read_var_names(path) -> np.ndarray:
    with _open(path) as handle:
        return _index_names(handle["var"])


def _index_names(frame) -> np.ndarray:
    """A data frame group's index as str objects: a plain string dataset, or an
    encoded group (anndata >= 0.13 with pandas >= 3 writes a nullable-string-array)."""
    import h5py

    node = frame[frame.attrs.get("_index", "_index")]
    if isinstance(node, h5py.Dataset):
        return np.asarray([_text(v) for v in node[:]], dtype=object)
    read_elem, _ = anndata_elements()
    return np.asarray([str(v) for v in read_elem(node)], dtype=object)


def read_uns_value(path, *keys, default=None):
    """A nested ``uns`` entry, or ``default`` when absent."""
    read_elem, _ = anndata_elements()
    with _open(path) as handle:
        node = handle.get("uns")
        for key in keys:
            if node is None or key not in node:
                return default
            node = node[key]
        return read_elem(node)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# --------------------------------------------------------------------------
# the neighbour graph file
# --------------------------------------------------------------------------


def write_graph(path, names, graph, params: dict) -> None:
    """graph.h5ad: cells only, with kNN in obsm and scanpy's obsp/uns entries."""
    import anndata as ad
    import pandas as pd

    from warpbio.io import atomic_write

    adata = ad.AnnData(obs=pd.DataFrame(index=pd.Index(names, dtype=str)))
    adata.obsm["knn_indices"] = np.asarray(graph.knn.indices, dtype=np.int64)
    adata.obsm["knn_distances"] = np.asarray(graph.knn.distances, dtype=np.float32)
    adata.obsp["connectivities"] = graph.connectivities
    adata.obsp["distances"] = graph.distances
    adata.obs["sigma"] = graph.sigmas
    adata.obs["rho"] = graph.rhos
    adata.uns["neighbors"] = {
        "connectivities_key": "connectivities",
        "distances_key": "distances",
        "params": params,
    }
    with atomic_write(path) as tmp:
        adata.write_h5ad(tmp)


def read_graph(path):
    """The graph.h5ad written by :func:`write_graph` (small: no expression)."""
    adata = read_h5ad(path)
    if "connectivities" not in adata.obsp:
        raise InputFormatError(f"{path}: no obsp['connectivities']; rerun singlecell_neighbors")
    return adata
