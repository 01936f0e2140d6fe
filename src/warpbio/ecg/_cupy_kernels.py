"""CuPy (NVRTC) versions of the ECG kernels, for GPU machines where Numba's CUDA
target cannot compile (no libNVVM). Same per-sample logic as
:mod:`warpbio.ecg.kernels`, in the same arithmetic (float64 positions, no FMA
contraction), so they agree with the CPU twins bit for bit.
"""

from __future__ import annotations

from functools import cache

SOURCE = r"""
extern "C" __global__ void nms_flags(const float* y, long long n, int half, float floor,
                                     unsigned char* flags) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float value = y[i];
    unsigned char result = value > floor ? 1 : 0;
    for (int step = 1; result && step <= half; ++step) {
        long long left = i - step;
        if (left >= 0 && y[left] >= value) result = 0;
        long long right = i + step;
        if (right < n && y[right] > value) result = 0;
    }
    flags[i] = result;
}

extern "C" __global__ void embed_beats(const float* y, long long n, const long long* peaks,
                                       const long long* count, long long rows, int length,
                                       double start, double step, float* out) {
    // flattened (beat, sample): a 2-D grid's y size caps at 65,535 beats
    long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long beat = t / length;
    long long j = t - beat * length;
    if (beat >= rows) return;
    long long peak = peaks[beat];
    float value = 0.0f;
    if (beat < count[0] && peak >= 0) {
        double position = (double)peak + start + (double)j * step;
        double base = floor(position);
        long long index = (long long)base;
        double fraction = position - base;
        if (index < 0) {
            value = y[0];
        } else if (index >= n - 1) {
            value = y[n - 1];
        } else {
            value = (float)((double)y[index] * (1.0 - fraction)
                            + (double)y[index + 1] * fraction);
        }
    }
    out[beat * length + j] = value;
}
"""


@cache
def module():
    import cupy as cp

    return cp.RawModule(code=SOURCE, options=("--fmad=false",))


def nms_flags(y, half: int, floor: float):
    import cupy as cp
    import numpy as np

    flags = cp.empty(y.shape[0], dtype=cp.uint8)
    threads = 256
    blocks = (y.shape[0] + threads - 1) // threads
    module().get_function("nms_flags")(
        (blocks,), (threads,),
        (cp.ascontiguousarray(y, dtype=cp.float32), np.int64(y.shape[0]), np.int32(half),
         np.float32(floor), flags),
    )  # fmt: skip
    return flags


def embed_beats(y, peaks, count, start: float, step: float, length: int):
    import cupy as cp
    import numpy as np

    rows = peaks.shape[0]
    out = cp.empty((rows, length), dtype=cp.float32)
    threads = 256
    blocks = (rows * length + threads - 1) // threads
    module().get_function("embed_beats")(
        (blocks,), (threads,),
        (cp.ascontiguousarray(y, dtype=cp.float32), np.int64(y.shape[0]),
         cp.ascontiguousarray(peaks, dtype=cp.int64), count, np.int64(rows), np.int32(length),
         np.float64(start), np.float64(step), out),
    )  # fmt: skip
    return out
