"""The device CSR's operations against scipy.sparse, on NumPy (the CuPy twin runs
the same code; tests/singlecell/test_preprocess_gpu.py compares the two)."""

import itertools

import numpy as np
import pytest
import scipy.sparse as sp

from warpbio.singlecell.sparse import Csr, from_scipy


def random_counts(n_rows=300, n_cols=80, density=0.1, seed=0, empty_rows=(0, 7, 8, 299)):
    rng = np.random.default_rng(seed)
    matrix = sp.random(
        n_rows, n_cols, density=density, format="csr", random_state=seed, dtype=np.float64
    )
    matrix.data = rng.integers(1, 50, size=matrix.nnz).astype(np.float32)
    matrix = matrix.astype(np.float32).tolil()
    for row in empty_rows:
        matrix[row, :] = 0
    matrix = matrix.tocsr()
    matrix.eliminate_zeros()
    return matrix


@pytest.fixture(params=[1 << 26, 97], ids=["one-block", "many-blocks"])
def block_entries(request):
    """One block, and blocks of ~97 entries so that every pass crosses block edges."""
    return request.param


def csr_of(matrix, block_entries):
    return from_scipy(matrix, np, block_entries=block_entries)


def test_layout_is_float32_int32_int64_and_round_trips(block_entries):
    matrix = random_counts()
    csr = csr_of(matrix, block_entries)
    csr.data[:] += 1  # a copy: the caller's matrix is untouched
    csr.data[:] -= 1
    assert csr.data.dtype == np.float32 and csr.indices.dtype == np.int32
    assert csr.indptr.dtype == np.int64 and csr.shape == matrix.shape
    assert (csr.to_scipy() != matrix).nnz == 0
    blocks = csr.row_blocks()
    assert blocks[0][0] == 0 and blocks[-1][1] == matrix.shape[0]
    assert all(a[1] == b[0] and a[3] == b[2] for a, b in itertools.pairwise(blocks))
    if block_entries < matrix.nnz:
        assert len(blocks) > 5


def test_row_ids_cover_empty_rows(block_entries):
    matrix = random_counts()
    csr = csr_of(matrix, block_entries)
    expected = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    for first, end, start, stop in csr.row_blocks():
        np.testing.assert_array_equal(csr.row_ids(first, end), expected[start:stop])


def test_row_and_column_reductions(block_entries):
    matrix = random_counts()
    csr = csr_of(matrix, block_entries)
    dense = matrix.toarray().astype(np.float64)
    np.testing.assert_allclose(csr.row_sums(), dense.sum(1), rtol=1e-12)
    np.testing.assert_array_equal(csr.row_nnz(), (dense > 0).sum(1))
    sums, squares = csr.column_sums(squares=True)
    np.testing.assert_allclose(sums, dense.sum(0), rtol=1e-12)
    np.testing.assert_allclose(squares, (dense**2).sum(0), rtol=1e-12)
    weights = np.linspace(0, 1, matrix.shape[1]).astype(np.float32)
    np.testing.assert_allclose(
        csr.row_sums(lambda data, genes: data * weights[genes]), dense @ weights, rtol=1e-6
    )
    rows = np.arange(matrix.shape[0]) % 3 == 0
    np.testing.assert_array_equal(csr.column_nnz(), (dense > 0).sum(0))
    np.testing.assert_array_equal(csr.column_nnz(rows=rows), (dense[rows] > 0).sum(0))


def test_scale_rows_and_apply(block_entries):
    matrix = random_counts()
    csr = csr_of(matrix, block_entries)
    factors = np.linspace(0.5, 2.0, matrix.shape[0])
    csr.scale_rows(factors)
    expected = sp.diags(factors.astype(np.float32)) @ matrix
    np.testing.assert_allclose(csr.to_scipy().toarray(), expected.toarray(), rtol=1e-6)
    csr.scale_rows(factors, divide=True)
    np.testing.assert_allclose(csr.to_scipy().toarray(), matrix.toarray(), rtol=1e-6)
    csr.apply(np.log1p)
    np.testing.assert_allclose(csr.data, np.log1p(matrix.data), rtol=1e-7)


def test_select_rows_columns_and_entries(block_entries):
    matrix = random_counts()
    matrix.data[::5] = 0  # explicit zeros, which select(entries=...) drops
    csr = csr_of(matrix, block_entries)
    rng = np.random.default_rng(1)
    rows = rng.random(matrix.shape[0]) < 0.6
    cols = rng.random(matrix.shape[1]) < 0.5
    picked = csr.select(rows=rows, columns=cols, entries=lambda data, genes: data != 0)
    expected = matrix[rows][:, cols]
    expected.eliminate_zeros()
    assert picked.shape == expected.shape and picked.nnz == expected.nnz
    assert picked.indptr.dtype == np.int64
    assert (picked.to_scipy() != expected).nnz == 0
    only_rows = csr.select(rows=rows)
    assert (only_rows.to_scipy() != matrix[rows]).nnz == 0


def test_dense_columns_in_requested_order(block_entries):
    matrix = random_counts()
    csr = csr_of(matrix, block_entries)
    columns = np.array([5, 0, 79, 33, 6])
    dense = csr.dense_columns(columns)
    assert dense.dtype == np.float32 and dense.shape == (matrix.shape[0], 5)
    np.testing.assert_array_equal(dense, matrix[:, columns].toarray())


def test_duplicates_are_summed_and_empty_matrices_work():
    csr = from_scipy(  # row 0 holds gene 1 twice
        sp.csr_matrix(
            (np.array([1.0, 2.0, 4.0]), np.array([1, 1, 0]), np.array([0, 2, 2, 3])),
            shape=(3, 2),
        )
    )
    np.testing.assert_array_equal(csr.row_sums(), [3.0, 0.0, 4.0])
    assert csr.nnz == 2
    empty = from_scipy(sp.csr_matrix((4, 3), dtype=np.float32))
    np.testing.assert_array_equal(empty.row_sums(), np.zeros(4))
    np.testing.assert_array_equal(empty.column_nnz(), np.zeros(3))
    assert empty.select(rows=np.array([True, False, True, False])).shape == (2, 3)


def test_indptr_length_is_checked():
    with pytest.raises(ValueError, match="indptr"):
        Csr(np.zeros(0, np.float32), np.zeros(0, np.int32), np.zeros(3, np.int64), (5, 2))
