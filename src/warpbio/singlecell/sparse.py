"""A cells x genes CSR matrix as three plain arrays on NumPy's or CuPy's device.

``cupyx.scipy.sparse`` indexes with int32 and cannot hold the 2.2-2.8e9 non-zeros
of the 1.3M-cell mouse brain data, so the preprocessing chain keeps its counts as
``data`` (float32), ``indices`` (int32 gene ids) and ``indptr`` (int64) and works
on them with plain array operations that exist in both NumPy and CuPy:

- per-row reductions: a float64 cumulative sum of the entries, differenced at
  the row boundaries (deterministic on the GPU too);
- per-column reductions: ``bincount`` of the gene ids weighted by the entries
  (float64 accumulation; on the GPU atomics make the last bits order-dependent);
- the row of each entry, when needed: ``cumsum(bincount(row starts))``.

Every pass walks the entries in blocks of whole rows of at most ``block_entries``
entries, so temporaries (float64 copies, row ids) stay a few hundred MB however
many entries the matrix has. Inputs must be canonical CSR (no duplicate entries);
:func:`from_scipy` makes them so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType

import numpy as np

from warpbio.device import module_of

BLOCK_ENTRIES = 1 << 26  # 64M entries: 0.5 GB as float64 temporaries

EntryFunction = Callable[[object, object], object]  # (data block, indices block) -> values


@dataclass
class Csr:
    """Canonical CSR on ``xp``'s device: data float32, indices int32, indptr int64."""

    data: object
    indices: object
    indptr: object
    shape: tuple[int, int]
    block_entries: int = BLOCK_ENTRIES
    _blocks: list[tuple[int, int, int, int]] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.shape = (int(self.shape[0]), int(self.shape[1]))
        if int(self.indptr.shape[0]) != self.shape[0] + 1:
            raise ValueError(f"indptr has {self.indptr.shape[0]} entries for {self.shape[0]} rows")

    @property
    def xp(self) -> ModuleType:
        return module_of(self.data)

    @property
    def nnz(self) -> int:
        return int(self.data.shape[0])

    # ------------------------------------------------------------------ blocks

    def row_blocks(self) -> list[tuple[int, int, int, int]]:
        """(first row, end row, first entry, end entry) of row-aligned entry blocks."""
        if self._blocks is None:
            xp = self.xp
            n_rows = self.shape[0]
            targets = xp.arange(0, max(self.nnz, 1), self.block_entries, dtype=xp.int64)
            starts = np.asarray(_host(xp.searchsorted(self.indptr, targets, side="right") - 1))
            rows = sorted({0, n_rows, *(int(r) for r in starts if 0 < r < n_rows)})
            bounds = _host(self.indptr[xp.asarray(np.array(rows, dtype=np.int64))])
            self._blocks = [
                (rows[i], rows[i + 1], int(bounds[i]), int(bounds[i + 1]))
                for i in range(len(rows) - 1)
            ]
        return self._blocks

    def row_ids(self, first_row: int, end_row: int):
        """Row index (int64) of every entry of rows [first_row, end_row)."""
        xp = self.xp
        base = self.indptr[first_row]
        length = int(self.indptr[end_row] - base)
        starts = self.indptr[first_row + 1 : end_row] - base
        marks = xp.bincount(starts, minlength=length + 1)[:length]
        return first_row + xp.cumsum(marks, dtype=xp.int64)

    def _values(self, start: int, stop: int, function: EntryFunction | None):
        data = self.data[start:stop]
        if function is None:
            return data
        return function(data, self.indices[start:stop])

    # -------------------------------------------------------------- reductions

    def row_nnz(self):
        return self.xp.diff(self.indptr)

    def row_sums(self, function: EntryFunction | None = None):
        """Float64 sum over each row of ``function(data, indices)`` (default: data)."""
        xp = self.xp
        sums = xp.zeros(self.shape[0], dtype=xp.float64)
        for first, end, start, stop in self.row_blocks():
            values = self._values(start, stop, function)
            running = xp.concatenate(
                [xp.zeros(1, dtype=xp.float64), xp.cumsum(values, dtype=xp.float64)]
            )
            local = self.indptr[first : end + 1] - start
            sums[first:end] = running[local[1:]] - running[local[:-1]]
        return sums

    def column_sums(self, function: EntryFunction | None = None, squares: bool = False):
        """Float64 sums over each column (and sums of squares with ``squares``)."""
        xp = self.xp
        n_cols = self.shape[1]
        sums = xp.zeros(n_cols, dtype=xp.float64)
        sums_sq = xp.zeros(n_cols, dtype=xp.float64) if squares else None
        for _, _, start, stop in self.row_blocks():
            values = self._values(start, stop, function).astype(xp.float64)
            genes = self.indices[start:stop]
            sums += xp.bincount(genes, weights=values, minlength=n_cols)
            if squares:
                sums_sq += xp.bincount(genes, weights=values * values, minlength=n_cols)
        return (sums, sums_sq) if squares else sums

    def column_nnz(self, rows=None):
        """Positive entries per column (int64): the cells expressing each gene,
        counted over the rows whose boolean mask ``rows`` is True (default all)."""
        xp = self.xp
        counts = xp.zeros(self.shape[1], dtype=xp.int64)
        row_mask = None if rows is None else xp.asarray(rows, dtype=bool)
        for first, end, start, stop in self.row_blocks():
            keep = self.data[start:stop] > 0
            if row_mask is not None:
                keep &= row_mask[self.row_ids(first, end)]
            counts += xp.bincount(self.indices[start:stop][keep], minlength=self.shape[1])
        return counts

    # ------------------------------------------------------------- transforms

    def scale_rows(self, factors, divide: bool = False) -> None:
        """Multiply (or divide) row i by ``factors[i]``, in place, in float32 like scanpy."""
        factors = self.xp.asarray(factors, dtype=self.xp.float32)
        for first, end, start, stop in self.row_blocks():
            per_entry = factors[self.row_ids(first, end)]
            if divide:
                self.data[start:stop] /= per_entry
            else:
                self.data[start:stop] *= per_entry

    def apply(self, function: Callable[[object], object]) -> None:
        """Replace the entries by ``function(entries)`` block by block (e.g. log1p)."""
        for _, _, start, stop in self.row_blocks():
            self.data[start:stop] = function(self.data[start:stop])

    def select(self, rows=None, columns=None, entries: EntryFunction | None = None) -> Csr:
        """Sub-matrix of the rows and columns whose boolean masks are True, keeping
        only entries for which ``entries(data, indices)`` is True (e.g. non-zeros)."""
        xp = self.xp
        n_rows, n_cols = self.shape
        row_mask = xp.ones(n_rows, dtype=bool) if rows is None else xp.asarray(rows, dtype=bool)
        col_mask = None if columns is None else xp.asarray(columns, dtype=bool)

        def keep_of(first, end, start, stop):
            keep = row_mask[self.row_ids(first, end)]
            if col_mask is not None:
                keep &= col_mask[self.indices[start:stop]]
            if entries is not None:
                keep &= entries(self.data[start:stop], self.indices[start:stop])
            return keep

        if col_mask is None and entries is None:
            kept_per_row = xp.where(row_mask, self.row_nnz(), 0)
        else:
            kept_per_row = xp.zeros(n_rows, dtype=xp.int64)
            for first, end, start, stop in self.row_blocks():
                keep = keep_of(first, end, start, stop)
                local_rows = self.row_ids(first, end) - first
                kept_per_row[first:end] = xp.bincount(local_rows[keep], minlength=end - first)
        offsets = xp.concatenate(
            [xp.zeros(1, dtype=xp.int64), xp.cumsum(kept_per_row, dtype=xp.int64)]
        )
        total = int(offsets[-1])
        data = xp.empty(total, dtype=self.data.dtype)
        indices = xp.empty(total, dtype=xp.int32)
        remap = None
        if col_mask is not None:
            remap = (xp.cumsum(col_mask, dtype=xp.int64) - 1).astype(xp.int32)
        block_offsets = _host(offsets[xp.asarray([b[0] for b in self.row_blocks()] + [n_rows])])
        for i, (first, end, start, stop) in enumerate(self.row_blocks()):
            keep = keep_of(first, end, start, stop)
            out_start, out_stop = int(block_offsets[i]), int(block_offsets[i + 1])
            data[out_start:out_stop] = self.data[start:stop][keep]
            genes = self.indices[start:stop][keep]
            indices[out_start:out_stop] = genes if remap is None else remap[genes]
        indptr = xp.concatenate([xp.zeros(1, dtype=xp.int64), offsets[1:][row_mask]])
        new_cols = n_cols if col_mask is None else int(col_mask.sum())
        return Csr(data, indices, indptr, (int(row_mask.sum()), new_cols), self.block_entries)

    def dense_columns(self, columns, dtype=np.float32):
        """The listed columns as a dense (rows x len(columns)) array, in that order."""
        xp = self.xp
        columns = xp.asarray(columns, dtype=xp.int64)
        width = int(columns.shape[0])
        position = xp.full(self.shape[1], -1, dtype=xp.int64)
        position[columns] = xp.arange(width, dtype=xp.int64)
        dense = xp.zeros((self.shape[0], width), dtype=dtype)
        flat = dense.reshape(-1)
        for first, end, start, stop in self.row_blocks():
            where = position[self.indices[start:stop]]
            keep = where >= 0
            target = self.row_ids(first, end)[keep] * width + where[keep]
            flat[target] = self.data[start:stop][keep].astype(dtype)
        return dense

    # ------------------------------------------------------------- conversion

    def to_scipy(self):
        """Host scipy.sparse.csr_matrix (one device->host copy for CuPy)."""
        import scipy.sparse

        return scipy.sparse.csr_matrix(
            (_host(self.data), _host(self.indices), _host(self.indptr)), shape=self.shape
        )

    def release(self) -> None:
        """Drop the arrays (their device memory goes back to the pool) once consumed."""
        xp = self.xp
        self.data = xp.zeros(0, dtype=xp.float32)
        self.indices = xp.zeros(0, dtype=xp.int32)
        self.indptr = xp.zeros(self.shape[0] + 1, dtype=xp.int64)  # an all-zero matrix
        self._blocks = None

    def copy(self) -> Csr:
        return Csr(
            self.data.copy(),
            self.indices.copy(),
            self.indptr.copy(),
            self.shape,
            self.block_entries,
        )


def _host(array) -> np.ndarray:
    get = getattr(array, "get", None)
    return get() if callable(get) else np.asarray(array)


def from_scipy(
    matrix, xp: ModuleType = np, block_entries: int = BLOCK_ENTRIES, copy: bool = True
) -> Csr:
    """Canonical CSR (duplicates summed) from any scipy/cupyx sparse or dense matrix,
    on ``xp``'s device: one host->device copy of the three arrays for CuPy. On NumPy
    ``copy=False`` lets the result share the caller's arrays (in-place operations
    such as :meth:`Csr.scale_rows` then change them too)."""
    import scipy.sparse

    if hasattr(matrix, "get") and not isinstance(matrix, np.ndarray):  # cupyx / cupy
        matrix = matrix.get()
    host = scipy.sparse.csr_matrix(matrix)
    if not host.has_canonical_format:
        host = host.copy()
        host.sum_duplicates()
    arrays = [
        np.asarray(host.data, dtype=np.float32),
        np.asarray(host.indices, dtype=np.int32),
        np.asarray(host.indptr, dtype=np.int64),
    ]
    if xp is np and copy:
        arrays = [
            a.copy() if np.shares_memory(a, b) else a
            for a, b in zip(arrays, (host.data, host.indices, host.indptr), strict=True)
        ]
    return Csr(*(xp.asarray(a) for a in arrays), host.shape, block_entries)


def as_csr(matrix, xp: ModuleType = np) -> Csr:
    return matrix if isinstance(matrix, Csr) else from_scipy(matrix, xp)
