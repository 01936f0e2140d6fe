"""Numba kernels of the ECG stages: each CUDA kernel and its CPU twin share one body.

The per-sample logic is plain Python compiled twice: with ``numba.njit`` for
the CPU (``prange`` over samples or beats) and with ``numba.cuda.jit`` for the
GPU (one thread per sample or per beat sample). Compiling one source for both
keeps the two paths from drifting apart; the tests check they agree, on a GPU
and under NUMBA_ENABLE_CUDASIM=1 on any machine. ``numba.cuda`` is imported
only when a GPU kernel is first asked for. Where Numba's CUDA target cannot
compile (it needs libNVVM), the same kernels written in CUDA C run through
CuPy/NVRTC (:mod:`warpbio.ecg._cupy_kernels`).
"""

from __future__ import annotations

import math
from functools import cache

import numba
import numpy as np

THREADS_PER_BLOCK = 256


def is_window_max(y, i, half, floor):
    """1 if y[i] > floor and y[i] is the maximum of y[i-half .. i+half], else 0.

    Ties go to the leftmost sample (strictly greater than the left side, at
    least equal to the right side), so a plateau yields one peak. The search
    walks outwards and stops at the first larger neighbour: most samples are
    not local maxima and stop after one or two reads.
    """
    value = y[i]
    if not value > floor:
        return 0
    n = y.shape[0]
    for step in range(1, half + 1):
        left = i - step
        if left >= 0 and y[left] >= value:
            return 0
        right = i + step
        if right < n and y[right] > value:
            return 0
    return 1


def interpolate(y, position):
    """Linear interpolation of y at a fractional sample position; positions outside
    the signal take its first or last sample (never an out-of-bounds read: such
    beats are marked invalid later, but the kernels must not read past the ends)."""
    base = math.floor(position)
    index = int(base)
    fraction = position - base
    if index < 0:
        return y[0]
    if index >= y.shape[0] - 1:
        return y[y.shape[0] - 1]
    return y[index] * (1.0 - fraction) + y[index + 1] * fraction


_is_window_max_cpu = numba.njit(cache=True)(is_window_max)
_interpolate_cpu = numba.njit(cache=True)(interpolate)


@numba.njit(parallel=True, cache=True)
def nms_flags_cpu(y, half, floor, flags):
    for i in numba.prange(y.shape[0]):
        flags[i] = _is_window_max_cpu(y, i, half, floor)


@numba.njit(parallel=True, cache=True)
def embed_beats_cpu(y, peaks, count, start, step, out):
    for beat in numba.prange(out.shape[0]):
        peak = peaks[beat]
        usable = beat < count and peak >= 0
        for j in range(out.shape[1]):
            out[beat, j] = _interpolate_cpu(y, peak + start + j * step) if usable else 0.0


@cache
def cuda_kernels():
    """The CUDA twins, compiled on first use (imports numba.cuda only here)."""
    from warpbio.ecg import _cuda_kernels

    return _cuda_kernels.nms_flags_gpu, _cuda_kernels.embed_beats_gpu


def launch_embed_beats(kernel, y, peaks, count, start: float, step: float, out) -> None:
    """Launch Numba's embed kernel: one thread per (beat, sample) of ``out``, flattened."""
    blocks = (out.shape[0] * out.shape[1] + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK
    kernel[blocks, THREADS_PER_BLOCK](y, peaks, count, float(start), float(step), out)


def on_gpu(array) -> bool:
    return not isinstance(array, np.ndarray)


def gpu_kernel_backend() -> str:
    """Which CUDA kernels run: Numba's, or the CuPy/NVRTC ones where Numba cannot compile.

    ``WARPBIO_ECG_KERNELS`` = numba | cupy forces one; by default Numba is used
    when its CUDA target works on this machine.
    """
    import os

    forced = os.environ.get("WARPBIO_ECG_KERNELS", "auto").lower()
    if forced in ("numba", "cupy"):
        return forced
    return "numba" if _numba_cuda_works() else "cupy"


@cache
def _numba_cuda_works() -> bool:
    import logging

    try:
        from warpbio.device import numba_cuda

        cuda = numba_cuda()
        if not cuda.is_available():
            raise RuntimeError("numba.cuda.is_available() is False")
        nms, embed = cuda_kernels()
        # Numba compiles at the first launch: launch both once on small device arrays
        # (nothing copied back), so a missing libNVVM shows here, not mid-pipeline.
        y = cuda.device_array(8, dtype=np.float32)
        nms[1, 8](y, 1, np.float32(0.0), cuda.device_array(8, dtype=np.uint8))
        peaks = cuda.to_device(np.full(1, -1, dtype=np.int64))  # host-to-device only
        count = cuda.to_device(np.zeros(1, dtype=np.int64))
        launch_embed_beats(embed, y, peaks, count, 0.0, 1.0, cuda.device_array((1, 4), np.float32))
        cuda.synchronize()
        return True
    except Exception as error:  # no libNVVM, unsupported driver, ...
        logging.getLogger(__name__).warning(
            "Numba's CUDA target is unusable here (%s); using the CuPy kernels", error
        )
        return False


def nms_flags(y, half: int, floor: float = 0.0):
    """uint8 flags of the samples that are maxima of their +-half window and above floor."""
    if not on_gpu(y):
        flags = np.empty(y.shape[0], dtype=np.uint8)
        nms_flags_cpu(y, int(half), np.float32(floor), flags)
        return flags
    if gpu_kernel_backend() == "cupy":
        from warpbio.ecg import _cupy_kernels

        return _cupy_kernels.nms_flags(y, half, floor)
    import cupy as cp

    flags = cp.empty(y.shape[0], dtype=cp.uint8)
    kernel, _ = cuda_kernels()
    blocks = (y.shape[0] + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK
    kernel[blocks, THREADS_PER_BLOCK](y, int(half), np.float32(floor), flags)
    return flags


def embed_beats_kernel(y, peaks, count, start: float, step: float, length: int):
    """(len(peaks), length) float32: y resampled on start + j*step around each peak.

    Rows at or past ``count`` (a 0-d array, may live on the device) and rows with
    a negative peak are zero.
    """
    if not on_gpu(y):
        out = np.empty((peaks.shape[0], length), dtype=np.float32)
        embed_beats_cpu(y, peaks, int(count), float(start), float(step), out)
        return out
    import cupy as cp

    count_on_device = cp.asarray(count, dtype=cp.int64).reshape(1)  # no host read
    if gpu_kernel_backend() == "cupy":
        from warpbio.ecg import _cupy_kernels

        return _cupy_kernels.embed_beats(y, peaks, count_on_device, start, step, length)
    out = cp.empty((peaks.shape[0], length), dtype=cp.float32)
    _, kernel = cuda_kernels()
    launch_embed_beats(kernel, y, peaks, count_on_device, start, step, out)
    return out
