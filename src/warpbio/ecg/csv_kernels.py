"""CSV cells to numbers on the GPU (CuPy/NVRTC kernel) and its CPU twin (Numba).

The fast path of :func:`warpbio.ecg.io.read_csv_recording` on a GPU: the file's bytes
go to the device in chunks and one thread per row finds its fields and converts the
selected ones, so the lead never exists as numbers on the host. It accepts a strict
grammar only, in which the conversion is provably the correctly rounded one, i.e.
what pyarrow (fast_float) gives:

- a cell is ``[+-]?digits[.digits]([eE][+-]?digits)?`` (or ``.digits``), no spaces
  or quotes; every row has the header's number of fields;
- float32 cells: at most 7 significant digits (mantissa m < 2**24) and a decimal
  exponent within +-10, so m and 10**k are exact float32 values and their product
  or quotient, rounded to float64 and then to float32, is correctly rounded
  (double rounding is innocuous when 53 >= 2 * 24 + 2, Figueroa 1995);
- float64 cells (the time column): m < 2**53 and an exponent within +-22 (Clinger's
  fast path: one correctly rounded operation on exact operands).

A row outside the grammar (an empty or non-numeric cell, 8+ digits in a lead, a
quote, a blank line, a wrong field count) makes the caller fall back to pyarrow,
which then reports the problem or parses the file; nothing here raises on content.
"""

from __future__ import annotations

from functools import cache

import numba
import numpy as np

from warpbio.device import module_of

THREADS_PER_BLOCK = 256
NEWLINE, CARRIAGE_RETURN, QUOTE = 10, 13, 34

# float32 cells: m < 2**24, |exponent| <= 10; float64 cells: m < 2**53, |exponent| <= 22
LIMITS = {np.float32: (1 << 24, 10), np.float64: (1 << 53, 22)}


@numba.njit(cache=True)
def _parse_cell(data, begin, end, mantissa_limit, exponent_limit):
    """(ok, value) of the cell data[begin:end] under the strict grammar."""
    i = begin
    negative = False
    if i < end and (data[i] == 43 or data[i] == 45):  # + -
        negative = data[i] == 45
        i += 1
    mantissa = 0
    digits = 0  # significant digits (leading zeros skipped); 17 at most, so no overflow
    seen = 0  # digits of any kind in the mantissa
    scale = 0  # decimal exponent from the fraction
    while i < end and 48 <= data[i] <= 57:
        if mantissa > 0 or data[i] != 48:
            digits += 1
            if digits <= 17:
                mantissa = mantissa * 10 + (data[i] - 48)
        seen += 1
        i += 1
    if i < end and data[i] == 46:  # .
        i += 1
        while i < end and 48 <= data[i] <= 57:
            if mantissa > 0 or data[i] != 48:
                digits += 1
                if digits <= 17:
                    mantissa = mantissa * 10 + (data[i] - 48)
            scale -= 1
            seen += 1
            i += 1
    if seen == 0 or digits > 17:
        return False, 0.0
    if i < end and (data[i] == 101 or data[i] == 69):  # e E
        i += 1
        sign = 1
        if i < end and (data[i] == 43 or data[i] == 45):
            sign = -1 if data[i] == 45 else 1
            i += 1
        exponent = 0
        exponent_digits = 0
        while i < end and 48 <= data[i] <= 57 and exponent_digits < 6:
            exponent = exponent * 10 + (data[i] - 48)
            exponent_digits += 1
            i += 1
        if exponent_digits == 0:
            return False, 0.0
        scale += sign * exponent
    if i != end or mantissa >= mantissa_limit:
        return False, 0.0
    if mantissa == 0:
        return True, -0.0 if negative else 0.0
    if scale < -exponent_limit or scale > exponent_limit:
        return False, 0.0
    power = 1.0
    for _ in range(abs(scale)):
        power *= 10.0  # exact: 10**22 < 2**53 * 2**22
    value = mantissa * power if scale >= 0 else mantissa / power
    return True, -value if negative else value


@numba.njit(parallel=True, cache=True)
def parse_rows_cpu(data, newlines, n_rows, n_fields, delimiter, lead_field, time_field,
                   lead, time, first_bad):  # fmt: skip
    """CPU twin of the GPU kernel: row r spans data[newlines[r-1]+1 : newlines[r]]
    (the last row may end at the end of the data). ``first_bad[0]`` gets the first
    row outside the grammar, or stays at n_rows."""
    bad_rows = np.full(n_rows, n_rows, dtype=np.int64)
    for row in numba.prange(n_rows):
        begin = 0 if row == 0 else newlines[row - 1] + 1
        end = newlines[row] if row < newlines.shape[0] else data.shape[0]
        if end > begin and data[end - 1] == CARRIAGE_RETURN:
            end -= 1
        field = 0
        start = begin
        ok = end > begin
        for i in range(begin, end + 1):
            if i < end and data[i] == QUOTE:
                ok = False
            if i == end or data[i] == delimiter:
                if field == lead_field:
                    good, value = _parse_cell(data, start, i, 1 << 24, 10)
                    ok = ok and good
                    lead[row] = np.float32(value)
                elif field == time_field:
                    good, value = _parse_cell(data, start, i, 1 << 53, 22)
                    ok = ok and good
                    time[row] = value
                field += 1
                start = i + 1
        if not ok or field != n_fields:
            bad_rows[row] = row
    first_bad[0] = bad_rows.min() if n_rows else 0


KERNEL_SOURCE = r"""
__device__ bool parse_cell(const unsigned char* data, long long begin, long long end,
                           unsigned long long mantissa_limit, int exponent_limit,
                           double* out) {
    long long i = begin;
    bool negative = false;
    if (i < end && (data[i] == '+' || data[i] == '-')) { negative = data[i] == '-'; ++i; }
    unsigned long long mantissa = 0;
    int digits = 0, seen = 0, scale = 0;
    while (i < end && data[i] >= '0' && data[i] <= '9') {
        if (mantissa > 0 || data[i] != '0') {
            if (++digits <= 17) mantissa = mantissa * 10 + (data[i] - '0');
        }
        ++seen; ++i;
    }
    if (i < end && data[i] == '.') {
        ++i;
        while (i < end && data[i] >= '0' && data[i] <= '9') {
            if (mantissa > 0 || data[i] != '0') {
                if (++digits <= 17) mantissa = mantissa * 10 + (data[i] - '0');
            }
            --scale; ++seen; ++i;
        }
    }
    if (seen == 0 || digits > 17) return false;
    if (i < end && (data[i] == 'e' || data[i] == 'E')) {
        ++i;
        int sign = 1;
        if (i < end && (data[i] == '+' || data[i] == '-')) { sign = data[i] == '-' ? -1 : 1; ++i; }
        int exponent = 0, exponent_digits = 0;
        while (i < end && data[i] >= '0' && data[i] <= '9' && exponent_digits < 6) {
            exponent = exponent * 10 + (data[i] - '0'); ++exponent_digits; ++i;
        }
        if (exponent_digits == 0) return false;
        scale += sign * exponent;
    }
    if (i != end || mantissa >= mantissa_limit) return false;
    if (mantissa == 0) { *out = negative ? -0.0 : 0.0; return true; }
    if (scale < -exponent_limit || scale > exponent_limit) return false;
    double power = 1.0;
    for (int k = 0; k < (scale < 0 ? -scale : scale); ++k) power *= 10.0;
    double m = (double)mantissa;
    double value = scale >= 0 ? __dmul_rn(m, power) : __ddiv_rn(m, power);
    *out = negative ? -value : value;
    return true;
}

extern "C" __global__ void parse_rows(const unsigned char* data, long long n_bytes,
                                      const long long* newlines, long long n_newlines,
                                      long long n_rows, int n_fields, int delimiter,
                                      int lead_field, int time_field, float* lead,
                                      double* time, unsigned long long* first_bad) {
    long long row = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= n_rows) return;
    long long begin = row == 0 ? 0 : newlines[row - 1] + 1;
    long long end = row < n_newlines ? newlines[row] : n_bytes;
    if (end > begin && data[end - 1] == '\r') --end;
    int field = 0;
    long long start = begin;
    bool ok = end > begin;
    for (long long i = begin; i <= end; ++i) {
        unsigned char c = i < end ? data[i] : 0;
        if (i < end && c == '"') ok = false;
        if (i == end || c == delimiter) {
            double value = 0.0;
            if (field == lead_field) {
                ok = parse_cell(data, start, i, 1ull << 24, 10, &value) && ok;
                lead[row] = __double2float_rn(value);
            } else if (field == time_field) {
                ok = parse_cell(data, start, i, 1ull << 53, 22, &value) && ok;
                time[row] = value;
            }
            ++field;
            start = i + 1;
        }
    }
    if (!ok || field != n_fields) atomicMin(first_bad, (unsigned long long)row);
}
"""


@cache
def _gpu_kernel():
    import cupy as cp

    return cp.RawKernel(KERNEL_SOURCE, "parse_rows", options=("--std=c++14",))


def row_count(newlines_found: int, n_bytes: int, last_byte: int) -> int:
    """Rows in the data: one per newline, plus an unterminated last line."""
    return newlines_found + (1 if n_bytes and last_byte != NEWLINE else 0)


def parse_rows(data, n_fields: int, delimiter: str, lead_field: int, time_field: int = -1):
    """(lead float32, time float64 or None, first bad row or -1) of the rows of
    ``data`` (uint8 bytes after the header, NumPy or CuPy). On the GPU the arrays
    stay on the device; only the row count and the first-bad-row scalar come back."""
    on_gpu = not isinstance(data, np.ndarray)
    xp = module_of(data)
    newlines = xp.flatnonzero(data == NEWLINE)
    last_byte = int(data[-1]) if data.shape[0] else NEWLINE
    n_rows = row_count(int(newlines.shape[0]), int(data.shape[0]), last_byte)
    lead = xp.empty(n_rows, dtype=xp.float32)
    time = xp.empty(n_rows if time_field >= 0 else 1, dtype=xp.float64)
    if on_gpu:
        first_bad = xp.full(1, n_rows, dtype=xp.uint64)
        blocks = (n_rows + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK
        if n_rows:
            _gpu_kernel()((max(blocks, 1),), (THREADS_PER_BLOCK,), (
                data, np.int64(data.shape[0]), newlines, np.int64(newlines.shape[0]),
                np.int64(n_rows), np.int32(n_fields), np.int32(ord(delimiter)),
                np.int32(lead_field), np.int32(time_field), lead, time, first_bad,
            ))  # fmt: skip
    else:
        first_bad = np.full(1, n_rows, dtype=np.int64)
        parse_rows_cpu(data, newlines.astype(np.int64), n_rows, n_fields, ord(delimiter),
                       lead_field, time_field, lead, time, first_bad)  # fmt: skip
    bad = int(first_bad[0])
    return lead, (time if time_field >= 0 else None), (-1 if bad >= n_rows else bad)


def file_to_device(path, offset: int = 0, chunk_bytes: int = 8 << 20, workers: int = 8):
    """The bytes of ``path`` from ``offset`` on as a CuPy uint8 array.

    Threads read chunks (``os.preadv``, GIL released) into their own page-locked
    buffers and copy each to the device asynchronously on their own stream: reads
    of the page cache run side by side, no 0.6 GB host array is faulted in, and
    the copies run at pinned-memory speed. The buffers are kept for later calls.
    """
    import os
    from concurrent.futures import ThreadPoolExecutor

    import cupy as cp

    size = max(os.path.getsize(path) - offset, 0)
    out = cp.empty(size, dtype=cp.uint8)
    device = out.device.id
    starts = list(range(0, size, chunk_bytes))
    workers = max(1, min(workers, len(starts)))
    fd = os.open(path, os.O_RDONLY)

    def copy_chunks(worker: int) -> None:
        with cp.cuda.Device(device):
            host, stream = _staging(device, worker, chunk_bytes)
            for start in starts[worker::workers]:
                length = min(chunk_bytes, size - start)
                stream.synchronize()  # this buffer's previous copy is done
                if os.preadv(fd, [memoryview(host)[:length]], offset + start) != length:
                    raise OSError(f"{path}: file shorter than {offset + size} bytes while read")
                out[start : start + length].set(host[:length], stream=stream)
            stream.synchronize()

    try:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(copy_chunks, range(workers)))
    finally:
        os.close(fd)
    return out


_STAGING: dict = {}


def _staging(device: int, worker: int, chunk_bytes: int):
    """(page-locked host buffer, non-blocking stream) of one reader thread."""
    import cupy as cp
    import cupyx

    key = (device, worker, chunk_bytes)
    if key not in _STAGING:
        _STAGING[key] = (cupyx.empty_pinned(chunk_bytes, dtype=np.uint8),
                         cp.cuda.Stream(non_blocking=True))  # fmt: skip
    return _STAGING[key]

