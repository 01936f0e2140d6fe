"""Fast CSR reading and writing of .h5ad files agrees with anndata."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from warpbio.device import gpu_available
from warpbio.singlecell import csr_io
from warpbio.singlecell.csr_io import (
    FileLayoutError,
    csr_shape,
    read_csr,
    read_csr_rows,
    write_csr_h5ad,
)


def random_anndata(n_cells=500, n_genes=300, seed=0):
    rng = np.random.default_rng(seed)
    matrix = sp.random(n_cells, n_genes, density=0.1, format="csr", random_state=rng)
    matrix.data = rng.integers(1, 50, matrix.nnz).astype(np.float32)
    matrix = sp.csr_matrix(matrix.multiply((np.arange(n_cells) != 7)[:, None]))  # empty cell 7
    obs = pd.DataFrame({"sample": pd.Categorical(rng.choice(["a", "b"], n_cells))})
    obs.index = [f"cell{i}" for i in range(n_cells)]
    var = pd.DataFrame(index=[f"gene{i}" for i in range(n_genes)])
    return ad.AnnData(X=matrix.astype(np.float32), obs=obs, var=var)


def assert_same(arrays, adata):
    expected = sp.csr_matrix(adata.X)
    np.testing.assert_array_equal(arrays.indptr, expected.indptr)
    np.testing.assert_array_equal(arrays.indices, expected.indices)
    np.testing.assert_array_equal(arrays.data, expected.data)
    assert arrays.shape == adata.shape
    assert list(arrays.obs_names) == list(adata.obs_names)
    assert list(arrays.var_names) == list(adata.var_names)
    assert (arrays.data.dtype, arrays.indices.dtype, arrays.indptr.dtype) == (
        np.float32,
        np.int32,
        np.int64,
    )


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_reads_what_anndata_wrote(tmp_path, monkeypatch, compression):
    monkeypatch.setattr(csr_io, "CHUNK_BYTES", 1000)  # many reads, pieces split
    adata = random_anndata()
    path = tmp_path / "x.h5ad"
    adata.write_h5ad(path, compression=compression)
    assert_same(read_csr(path, threads=3), adata)


def test_written_file_reads_in_anndata_and_back(tmp_path):
    adata = random_anndata(seed=1)
    x = sp.csr_matrix(adata.X)
    path = tmp_path / "fast.h5ad"
    embedding = np.arange(adata.n_obs * 2, dtype=np.float32).reshape(-1, 2)
    write_csr_h5ad(
        path, x.data, x.indices, x.indptr, adata.shape, adata.obs, adata.var,
        {"obsm": {"X_test": embedding}, "uns": {"note": "hi"}},
    )  # fmt: skip
    back = ad.read_h5ad(path)
    assert (back.X != adata.X).nnz == 0
    np.testing.assert_array_equal(back.obsm["X_test"], embedding)
    assert back.uns["note"] == "hi"
    assert back.obs["sample"].tolist() == adata.obs["sample"].tolist()
    assert_same(read_csr(path), adata)


def test_dense_x_and_damaged_files_are_refused(tmp_path):
    adata = random_anndata()
    dense = tmp_path / "dense.h5ad"
    ad.AnnData(X=adata.X.toarray(), obs=adata.obs, var=adata.var).write_h5ad(dense)
    with pytest.raises(FileLayoutError, match="not a CSR matrix"):
        read_csr(dense)
    whole = tmp_path / "whole.h5ad"
    adata.write_h5ad(whole)
    cut = tmp_path / "cut.h5ad"
    cut.write_bytes(whole.read_bytes()[:2000])
    with pytest.raises((FileLayoutError, OSError)):
        read_csr(cut)


RANGES = [(0, 500), (0, 1), (7, 8), (3, 260), (250, 251), (499, 500), (120, 120), (6, 9)]


@pytest.mark.parametrize("layout", ["anndata chunks", "gzip", "contiguous"])
def test_reads_row_ranges_on_their_own(tmp_path, monkeypatch, layout):
    """Each range alone, from chunked (anndata's), filtered and contiguous files;
    ranges start and stop inside chunks and staging buffers, and cell 7 is empty."""
    monkeypatch.setattr(csr_io, "CHUNK_BYTES", 1000)
    adata = random_anndata(seed=3)
    x = sp.csr_matrix(adata.X)
    path = tmp_path / "rows.h5ad"
    if layout == "contiguous":
        write_csr_h5ad(path, x.data, x.indices, x.indptr, adata.shape, adata.obs, adata.var)
    else:
        adata.write_h5ad(path, compression="gzip" if layout == "gzip" else None)
    assert csr_shape(path) == adata.shape
    for start, stop in RANGES:
        rows = read_csr_rows(path, start, stop, threads=3)
        expected = x[start:stop]
        assert rows.shape == expected.shape and rows.start == start
        np.testing.assert_array_equal(rows.indptr, expected.indptr)
        np.testing.assert_array_equal(rows.indices, expected.indices)
        np.testing.assert_array_equal(rows.data, expected.data)
        assert (rows.data.dtype, rows.indices.dtype, rows.indptr.dtype) == (
            np.float32,
            np.int32,
            np.int64,
        )
    with pytest.raises(ValueError, match=r"rows \[400, 501\) outside X's 500 rows"):
        read_csr_rows(path, 400, 501)


def test_row_ranges_of_damaged_files_are_refused(tmp_path):
    import h5py

    adata = random_anndata()
    path = tmp_path / "bad.h5ad"
    adata.write_h5ad(path)
    with h5py.File(path, "r+") as handle:
        indptr = handle["X/indptr"][:]
        indptr[10] = indptr[-1] + 5  # past the stored values
        handle["X/indptr"][:] = indptr
    with pytest.raises(FileLayoutError, match=r"bad\.h5ad: X's indptr over rows \[0, 20\)"):
        read_csr_rows(path, 0, 20)
    dense = tmp_path / "dense.h5ad"
    ad.AnnData(X=adata.X.toarray(), obs=adata.obs, var=adata.var).write_h5ad(dense)
    with pytest.raises(FileLayoutError, match="not a CSR matrix"):
        read_csr_rows(dense, 0, 10)


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="needs a CUDA GPU and CuPy")
def test_reads_to_the_gpu(tmp_path, monkeypatch):
    import cupy as cp

    monkeypatch.setattr(csr_io, "CHUNK_BYTES", 4096)  # the double buffering is exercised
    adata = random_anndata(2000, 500, seed=2)
    x = sp.csr_matrix(adata.X)
    path = tmp_path / "gpu.h5ad"
    write_csr_h5ad(
        path, cp.asarray(x.data), cp.asarray(x.indices), cp.asarray(x.indptr.astype(np.int64)),
        adata.shape, adata.obs, adata.var,
    )  # fmt: skip
    on_gpu = read_csr(path, cp)
    assert isinstance(on_gpu.data, cp.ndarray)
    on_gpu.data, on_gpu.indices, on_gpu.indptr = (
        a.get() for a in (on_gpu.data, on_gpu.indices, on_gpu.indptr)
    )
    assert_same(on_gpu, adata)

    rows = read_csr_rows(path, 333, 1500, cp)
    assert isinstance(rows.data, cp.ndarray) and isinstance(rows.indptr, cp.ndarray)
    np.testing.assert_array_equal(rows.data.get(), x[333:1500].data)
    np.testing.assert_array_equal(rows.indices.get(), x[333:1500].indices)
    np.testing.assert_array_equal(rows.indptr.get(), x[333:1500].indptr)


def test_names_read_from_nullable_string_indexes(tmp_path):
    """anndata >= 0.13 with pandas >= 3 writes string indexes as encoded groups."""
    import h5py
    from anndata.io import write_elem

    from warpbio.singlecell.anndata_io import read_obs_names, read_var_names

    path = tmp_path / "names.h5ad"
    with ad.settings.override(allow_write_nullable_strings=True), h5py.File(path, "w") as handle:
        write_elem(handle, "obs", pd.DataFrame(index=pd.Index(["c1", "c2"], dtype="string")))
        write_elem(handle, "var", pd.DataFrame(index=["g1", "g2", "g3"]))
        assert isinstance(handle["obs"]["_index"], h5py.Group)
    assert list(read_obs_names(path)) == ["c1", "c2"]
    assert list(read_var_names(path)) == ["g1", "g2", "g3"]
