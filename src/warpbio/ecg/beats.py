"""Beats as fixed-length vectors: a window around each R peak, resampled to 256 points.

The window runs from ``before_s`` before to ``after_s`` after the R peak (P wave,
QRS, T wave), whatever the sampling rate: a Numba kernel (CUDA, or its CPU twin)
interpolates the band-passed ECG at ``length`` evenly spaced points. Beats are
then centred (their mean removed) and divided by the recording's median R-wave
amplitude, so recordings with different gains share one scale while the
amplitude differences between beats, which mark ectopic beats, survive.
Beats whose window runs past either end of the recording are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from warpbio.ecg.kernels import embed_beats_kernel
from warpbio.ecg.peaks import Peaks, host, rr_intervals


@dataclass(frozen=True)
class BeatSettings:
    before_s: float = 0.25
    after_s: float = 0.45
    length: int = 256

    @property
    def window_s(self) -> float:
        return self.before_s + self.after_s


@dataclass
class Beats:
    """Fixed-capacity beat buffer: rows where ``valid`` is set are beats."""

    vectors: Any  # (capacity, length) float32, normalized
    valid: Any  # (capacity,) bool
    samples: Any  # (capacity,) int64 R-peak sample per row (-1 past the count)
    rr_previous: Any  # (capacity,) float64 s, NaN for the first beat
    rr_next: Any  # (capacity,) float64 s, NaN for the last beat
    scale: Any  # 0-d: median R amplitude used for normalization
    fs: float

    def to_host(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Beats (n, length) and their table columns, as NumPy (device-to-host copies).

        The masks are applied on the device, so only the beats cross, not the
        padding of the fixed-capacity buffer.
        """
        valid = self.valid
        table = {
            "sample": host(self.samples[valid]),
            "rr_previous_s": host(self.rr_previous[valid]),
            "rr_next_s": host(self.rr_next[valid]),
        }
        table["time_s"] = table["sample"] / self.fs
        return host(self.vectors[valid]), table


def embed_beats(
    peaks: Peaks, xp: ModuleType = np, settings: BeatSettings | None = None
) -> Beats:
    """Resample a window around every R peak of ``peaks`` (all on ``xp``'s device)."""
    settings = settings or BeatSettings()
    fs = peaks.fs
    signal = peaks.filtered
    n = signal.shape[0]
    start = -settings.before_s * fs
    step = settings.window_s * fs / settings.length
    samples, count = peaks.samples, peaks.count
    capacity = samples.shape[0]
    rows = xp.arange(capacity)
    last = samples + start + (settings.length - 1) * step
    valid = (rows < count) & (samples + start >= 0) & (last <= n - 1)
    vectors = embed_beats_kernel(signal, samples, count, start, step, settings.length)
    amplitude = xp.where(valid, signal[xp.maximum(samples, 0)], xp.inf)
    n_valid = valid.sum()
    scale = xp.take(xp.sort(amplitude), xp.maximum(n_valid - 1, 0) // 2)  # median R amplitude
    scale = xp.where(scale > 0, scale, 1.0).astype(xp.float32)
    vectors = (vectors - vectors.mean(axis=1, keepdims=True)) / scale
    vectors = xp.where(valid[:, None], vectors, 0.0).astype(xp.float32)
    previous, following = rr_intervals(samples, count, fs, xp)
    return Beats(vectors, valid, samples, previous, following, scale, fs)


def beat_labels(samples: np.ndarray, annotations, fs: float, tolerance_s: float = 0.15):
    """Reference symbol of each detected beat ('' when no reference beat is near)."""
    from warpbio.ecg.peaks import match_beats

    symbols = np.full(samples.size, "", dtype=object)
    if annotations is None:
        return symbols
    match, _ = match_beats(annotations.samples, samples, round(tolerance_s * fs))
    symbols[match >= 0] = annotations.symbols[match[match >= 0]]
    return symbols
