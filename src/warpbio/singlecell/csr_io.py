"""A large CSR ``X`` between an ``.h5ad`` file and NumPy or a GPU, at disk speed.

anndata reads ``X`` through h5py, one slice at a time under h5py's global lock:
for the 1.3M-cell brain data (2.6e9 non-zeros, 21 GB) that is most of a minute.
HDF5 stores a dataset that is neither compressed nor filtered as plain bytes,
either in one extent (contiguous layout) or in chunks whose file offsets the
library reports. :func:`read_csr` finds those extents and reads them with
parallel ``os.preadv`` calls (they release the GIL) into pinned host buffers,
each followed by one asynchronous host->device copy, so reading and copying
overlap. Filtered (compressed) datasets fall back to h5py slices.

:func:`write_csr_h5ad` writes ``X`` as contiguous, unfiltered datasets (a valid
AnnData file that anndata and scanpy read as usual), with ``obs``/``var`` and
any other elements through anndata's element writer.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from warpbio.io import atomic_write

CHUNK_BYTES = 256 << 20  # host staging buffer per read
READ_THREADS = 8


@dataclass
class CsrArrays:
    """CSR parts of ``X`` on NumPy's or CuPy's device, with the axis names."""

    data: object
    indices: object
    indptr: object
    shape: tuple[int, int]
    obs_names: np.ndarray
    var_names: np.ndarray


class FileLayoutError(ValueError):
    """An .h5ad whose X is not a CSR matrix; the message names the file and the fix."""


def _extents(dataset) -> list[tuple[int, int, int]] | None:
    """(file offset, byte offset in the array, length) of an unfiltered dataset's
    stored bytes, in array order; None if it is filtered or not yet written."""
    nbytes = dataset.size * dataset.dtype.itemsize
    plist = dataset.id.get_create_plist()
    if plist.get_nfilters() > 0:
        return None
    if dataset.chunks is None:
        offset = dataset.id.get_offset()
        return None if offset is None else [(offset, 0, nbytes)]
    itemsize = dataset.dtype.itemsize
    extents = []
    for index in range(dataset.id.get_num_chunks()):
        info = dataset.id.get_chunk_info(index)
        start = info.chunk_offset[0] * itemsize
        extents.append((info.byte_offset, start, min(info.size, nbytes - start)))
    extents.sort(key=lambda extent: extent[1])
    covered = sum(length for _, _, length in extents)
    return extents if covered == nbytes else None  # unwritten chunks: let h5py fill


def _pieces(extents, first: int, last: int):
    """The parts of the extents that fall in array bytes [first, last)."""
    for file_offset, start, length in extents:
        lo, hi = max(first, start), min(last, start + length)
        if lo < hi:
            yield file_offset + lo - start, lo - first, hi - lo


def _pread_into(fd: int, target: memoryview, pieces, pool: ThreadPoolExecutor) -> None:
    """Fill ``target`` from the file pieces (file offset, target offset, length)."""
    jobs = []
    for file_offset, offset, length in pieces:
        step = max(1 << 22, -(-length // READ_THREADS))  # split large pieces across threads
        for part in range(0, length, step):
            size = min(step, length - part)
            jobs.append((file_offset + part, offset + part, size))

    def read(job):
        file_offset, offset, size = job
        view = target[offset : offset + size]
        while size:
            done = os.preadv(fd, [view], file_offset)
            if done <= 0:
                raise OSError(f"short read at byte {file_offset} (file truncated?)")
            view, size, file_offset = view[done:], size - done, file_offset + done

    list(pool.map(read, jobs))


def _read_dataset(
    path: Path, dataset, xp: ModuleType, pool: ThreadPoolExecutor, first: int = 0, last=None
):
    """Elements [first, last) of a 1-D dataset into a NumPy or CuPy array of its dtype."""
    last = dataset.shape[0] if last is None else last
    n = last - first
    extents = _extents(dataset)
    if extents is None:  # filtered: h5py decodes it
        return xp.asarray(dataset[first:last]) if n else xp.empty(0, dataset.dtype)
    itemsize = dataset.dtype.itemsize
    with open(path, "rb") as handle:
        fd = handle.fileno()
        if xp is np:
            out = np.empty(n, dtype=dataset.dtype)
            pieces = _pieces(extents, first * itemsize, last * itemsize)
            _pread_into(fd, memoryview(out.view(np.uint8)), pieces, pool)
            return out
        return _read_to_device(fd, extents, n, dataset.dtype, pool, first * itemsize)


def _read_to_device(fd: int, extents, n: int, dtype, pool: ThreadPoolExecutor, offset: int = 0):
    """Array bytes [offset, offset + n * itemsize) to the GPU, double-buffered: read
    chunk i + 1 into pinned memory while chunk i copies."""
    import cupy as cp
    import cupyx

    out = cp.empty(n, dtype=dtype)
    target = out.view(cp.uint8)
    nbytes = target.size
    buffers = [cupyx.empty_pinned(min(CHUNK_BYTES, nbytes), dtype=np.uint8) for _ in range(2)]
    copied = [None, None]  # event of each buffer's last copy
    stream = cp.cuda.Stream(non_blocking=True)
    for number, first in enumerate(range(0, nbytes, CHUNK_BYTES)):
        last = min(first + CHUNK_BYTES, nbytes)
        slot = number % 2
        if copied[slot] is not None:
            copied[slot].synchronize()
        host = buffers[slot][: last - first]
        _pread_into(fd, memoryview(host), _pieces(extents, offset + first, offset + last), pool)
        target[first:last].set(host, stream=stream)
        copied[slot] = stream.record()
    stream.synchronize()
    return out


def _names(group) -> np.ndarray:
    from anndata.io import read_elem

    return np.asarray(read_elem(group).index, dtype=object)


def _csr_group(handle, path: Path):
    """The X group of an open .h5ad and its shape; a clear error unless it is CSR."""
    import h5py

    group = handle.get("X")
    encoding = group.attrs.get("encoding-type", "") if isinstance(group, h5py.Group) else ""
    if encoding != "csr_matrix":
        raise FileLayoutError(
            f"{path}: X is {encoding or 'dense'}, not a CSR matrix; write it with "
            "adata.X = scipy.sparse.csr_matrix(adata.X) before adata.write_h5ad"
        )
    return group, tuple(int(v) for v in group.attrs["shape"])


def _open_hdf5(path: Path):
    import h5py

    if not h5py.is_hdf5(path):
        raise FileLayoutError(f"{path}: not an HDF5 file (truncated or another format)")
    return h5py.File(path, "r")


def read_csr(
    path: str | os.PathLike, xp: ModuleType = np, threads: int = READ_THREADS
) -> CsrArrays:
    """``X`` (CSR) of an .h5ad on xp's device: data float32, indices int32, indptr int64."""
    path = Path(path)
    with _open_hdf5(path) as handle, ThreadPoolExecutor(threads) as pool:
        group, shape = _csr_group(handle, path)
        parts = {name: _read_dataset(path, group[name], xp, pool) for name in group}
        obs_names, var_names = _names(handle["obs"]), _names(handle["var"])
    data = parts["data"].astype(xp.float32, copy=False)
    indices = parts["indices"].astype(xp.int32, copy=False)
    indptr = parts["indptr"].astype(xp.int64, copy=False)
    if int(indptr[-1]) != data.shape[0] or indptr.shape[0] != shape[0] + 1:
        raise FileLayoutError(
            f"{path}: X's indptr ({indptr.shape[0]} entries, last {int(indptr[-1])}) does not "
            f"match its shape {shape} and {data.shape[0]} stored values; the file is damaged"
        )
    return CsrArrays(data, indices, indptr, shape, obs_names, var_names)


@dataclass
class CsrRows:
    """Rows [start, start + shape[0]) of ``X`` on xp's device, indptr from 0."""

    data: object
    indices: object
    indptr: object
    shape: tuple[int, int]
    start: int


def csr_shape(path: str | os.PathLike) -> tuple[int, int]:
    """(cells, genes) of an .h5ad's CSR ``X``, from its attributes alone."""
    path = Path(path)
    with _open_hdf5(path) as handle:
        return _csr_group(handle, path)[1]


def read_csr_rows(
    path: str | os.PathLike,
    start: int,
    stop: int,
    xp: ModuleType = np,
    threads: int = READ_THREADS,
) -> CsrRows:
    """Cells [start, stop) of an .h5ad's CSR ``X`` on xp's device, read on their own:
    the indptr slice, then the byte ranges of data and indices it spans, by
    parallel preads (chunked, anndata-written datasets read chunk by chunk; filtered
    ones through h5py). Data float32, indices int32, indptr int64 starting at 0."""
    path = Path(path)
    with _open_hdf5(path) as handle, ThreadPoolExecutor(threads) as pool:
        group, shape = _csr_group(handle, path)
        if not 0 <= start <= stop <= shape[0]:
            raise ValueError(f"{path}: rows [{start}, {stop}) outside X's {shape[0]} rows")
        offsets = np.asarray(group["indptr"][start : stop + 1], dtype=np.int64)
        first, last = int(offsets[0]), int(offsets[-1])
        stored = int(group["data"].shape[0])
        if np.any(np.diff(offsets) < 0) or last > stored or group["indices"].shape[0] != stored:
            raise FileLayoutError(
                f"{path}: X's indptr over rows [{start}, {stop}) runs from {first} to {last}, "
                f"not ascending within the {stored} stored values; the file is damaged"
            )
        data = _read_dataset(path, group["data"], xp, pool, first, last)
        indices = _read_dataset(path, group["indices"], xp, pool, first, last)
    return CsrRows(
        data.astype(xp.float32, copy=False),
        indices.astype(xp.int32, copy=False),
        xp.asarray(offsets - first),
        (stop - start, shape[1]),
        start,
    )


def read_obs_var(path: str | os.PathLike):
    """The ``obs`` and ``var`` data frames of an .h5ad, without reading ``X``."""
    from anndata.io import read_elem

    path = Path(path)
    with _open_hdf5(path) as handle:
        return read_elem(handle["obs"]), read_elem(handle["var"])


def _host_blocks(array, block: int = 1 << 26):
    """Host copies of consecutive blocks of a NumPy or CuPy 1-D array."""
    for start in range(0, array.shape[0], block):
        part = array[start : start + block]
        yield start, part.get() if hasattr(part, "get") else np.asarray(part)


def write_csr_h5ad(
    path: str | os.PathLike,
    data,
    indices,
    indptr,
    shape: tuple[int, int],
    obs,
    var,
    elements: Mapping[str, object] | None = None,
) -> None:
    """An AnnData .h5ad with ``X`` = CSR(data, indices, indptr) in contiguous datasets.

    The arrays may live on a GPU (copied out block by block); ``obs`` and ``var``
    are data frames indexed by the cell and gene names; ``elements`` maps further
    top-level keys (``uns``, ``obsm``...) to what anndata's element writer takes.
    """
    import h5py
    from anndata.io import write_elem

    if len(obs) != shape[0] or len(var) != shape[1]:
        raise ValueError(f"obs/var ({len(obs)}, {len(var)}) do not match X's shape {shape}")
    with atomic_write(path) as tmp, h5py.File(tmp, "w") as handle:
        handle.attrs["encoding-type"] = "anndata"
        handle.attrs["encoding-version"] = "0.1.0"
        group = handle.create_group("X")
        group.attrs["encoding-type"] = "csr_matrix"
        group.attrs["encoding-version"] = "0.1.0"
        group.attrs["shape"] = np.asarray(shape, dtype=np.int64)
        for name, array, dtype in (
            ("data", data, np.float32),
            ("indices", indices, np.int32),
            ("indptr", indptr, np.int64),
        ):
            dataset = group.create_dataset(name, shape=(int(array.shape[0]),), dtype=dtype)
            for start, block in _host_blocks(array):
                dataset[start : start + block.shape[0]] = block.astype(dtype, copy=False)
        write_elem(handle, "obs", obs)
        write_elem(handle, "var", var)
        extra = dict(elements or {})
        for key in ("obsm", "varm", "obsp", "varp", "layers", "uns"):
            write_elem(handle, key, extra.pop(key, {}))
        for key, value in extra.items():
            write_elem(handle, key, value)
