"""CUDA kernels of :mod:`warpbio.ecg.kernels`; imported only when a GPU kernel is needed.

A module of its own because Numba's CUDA simulator swaps the module-global
``cuda`` name of the kernels it runs: the kernels must see ``cuda`` as a global.
"""

from warpbio.device import numba_cuda
from warpbio.ecg.kernels import interpolate, is_window_max

cuda = numba_cuda()

is_window_max_gpu = cuda.jit(device=True)(is_window_max)
interpolate_gpu = cuda.jit(device=True)(interpolate)


@cuda.jit
def nms_flags_gpu(y, half, floor, flags):
    i = cuda.grid(1)
    if i < y.shape[0]:
        flags[i] = is_window_max_gpu(y, i, half, floor)


@cuda.jit
def embed_beats_gpu(y, peaks, count, start, step, out):
    """One thread per (beat, sample), flattened (a 2-D grid's y size caps at 65,535
    beats); ``count`` is a 1-element device array."""
    t = cuda.grid(1)
    length = out.shape[1]
    beat = t // length
    j = t - beat * length
    if beat < out.shape[0]:
        peak = peaks[beat]
        if beat < count[0] and peak >= 0:
            out[beat, j] = interpolate_gpu(y, peak + start + j * step)
        else:
            out[beat, j] = 0.0
