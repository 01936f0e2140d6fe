"""Band-pass and Ricker-wavelet filtering in one FFT round trip (NumPy or CuPy).

The signal is transformed once; the zero-phase band-pass (Butterworth magnitude,
which also removes baseline wander) and the Ricker wavelet are applied as
products in the frequency domain, and two inverse transforms give the filtered
ECG (for beat shapes) and the wavelet response (for R-peak detection). The
Ricker wavelet psi(t) = (1 - t^2/s^2) exp(-t^2 / 2s^2) enters through its
closed-form Fourier transform, proportional to (w s)^2 exp(-(w s)^2 / 2), which
is the transform of the sampled wavelet without a third FFT; s is chosen so the
response peaks at ``ricker_hz``, the centre of the QRS complex's energy.
The transform length leaves ``pad_s`` after the signal, filled with mirror
images of its two ends, for the filters' tails.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np


@dataclass(frozen=True)
class FilterSettings:
    low_hz: float = 0.5  # below: baseline wander
    high_hz: float = 40.0  # above: mains hum and muscle noise
    order: int = 2  # Butterworth order of each edge (applied zero-phase)
    ricker_hz: float = 10.0  # frequency where the wavelet's response peaks
    polarity: str = "auto"  # auto | positive | negative: sign of the R waves
    pad_s: float = 2.0


@dataclass
class Filtered:
    filtered: Any  # band-passed ECG, float32, R waves pointing up
    response: Any  # Ricker-wavelet response, float32
    polarity: Any  # +1 or -1 (0-d array, stays on the device)


def next_fast_length(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n: sizes every FFT library handles fast."""
    best = 1 << max(int(n - 1).bit_length(), 0)
    power5 = 1
    while power5 < best:
        power35 = power5
        while power35 < best:
            size = power35
            while size < n:
                size *= 2
            best = min(best, size)
            power35 *= 3
        power5 *= 5
    return best


def ricker_sigma_s(peak_hz: float) -> float:
    """Width s (seconds) of the Ricker wavelet whose spectrum peaks at ``peak_hz``."""
    return float(np.sqrt(2.0) / (2.0 * np.pi * peak_hz))


def _fft(xp: ModuleType, workers: int):
    """scipy.fft with ``workers`` threads on the CPU, cupy.fft (cuFFT) on the GPU."""
    if xp is np:
        import scipy.fft as fft

        return fft, fft.set_workers(workers)
    return xp.fft, nullcontext()


def transfer_functions(n_fft: int, fs: float, settings: FilterSettings, xp: ModuleType):
    """Band-pass H(f) and band-pass times Ricker R(f), float32 on the device."""
    freqs = xp.arange(n_fft // 2 + 1, dtype=xp.float64) * (fs / n_fft)
    ratio_low = freqs / settings.low_hz
    high_pass = ratio_low**settings.order / xp.sqrt(1.0 + ratio_low ** (2 * settings.order))
    low_pass = 1.0 / xp.sqrt(1.0 + (freqs / settings.high_hz) ** (2 * settings.order))
    band = high_pass * low_pass
    scaled = (2.0 * np.pi * freqs * ricker_sigma_s(settings.ricker_hz)) ** 2
    ricker = scaled * xp.exp(1.0 - scaled / 2.0) / 2.0  # 1 at the peak frequency
    return band.astype(xp.float32), (band * ricker).astype(xp.float32)


def filter_ecg(
    signal, fs: float, xp: ModuleType = np, settings: FilterSettings | None = None, workers: int = 1
) -> Filtered:
    """Band-passed ECG and its Ricker response, both with the R waves made positive."""
    settings = settings or FilterSettings()
    n = int(signal.shape[0])
    n_fft = next_fast_length(n + int(settings.pad_s * fs))
    fft, threads = _fft(xp, workers)
    band, band_ricker = transfer_functions(n_fft, fs, settings, xp)
    with threads:
        spectrum = fft.rfft(mirror_pad(signal, n_fft, xp))
        filtered = fft.irfft(spectrum * band, n=n_fft)[:n]
        response = fft.irfft(spectrum * band_ricker, n=n_fft)[:n]
    sign = polarity(response, settings.polarity, xp)
    return Filtered(filtered * sign, response * sign, sign)


def mirror_pad(signal, n_fft: int, xp: ModuleType):
    """The signal followed by mirror images of its end and of its start.

    The FFT treats the buffer as periodic: mirrored padding makes the jumps from
    the last sample into the padding and from the padding back to the first
    sample continuous, so neither edge rings through the Ricker filter as a
    spurious QRS.
    """
    n = int(signal.shape[0])
    pad = n_fft - n
    end = min(pad // 2, n - 1)
    start = min(pad - end, n - 1)
    buffer = xp.zeros(n_fft, dtype=xp.float32)
    buffer[:n] = signal
    buffer[n : n + end] = signal[n - 1 - end : n - 1][::-1]
    buffer[n_fft - start :] = signal[1 : start + 1][::-1]
    return buffer


def polarity(response, mode: str, xp: ModuleType):
    """+1 when R waves point up in the response, -1 when down (decided on the device).

    ``auto`` compares the top 0.2% of the response with the top 0.2% of its
    negation, on every 8th sample: the QRS complex gives the largest
    excursions, and its sign is the lead's polarity.
    """
    if mode == "positive":
        return xp.asarray(1.0, dtype=xp.float32)
    if mode == "negative":
        return xp.asarray(-1.0, dtype=xp.float32)
    if mode != "auto":
        raise ValueError(f"polarity {mode!r} is not one of auto, positive, negative")
    sample = xp.sort(response[::8])
    k = int(0.002 * (sample.shape[0] - 1))
    upward = sample[sample.shape[0] - 1 - k]
    downward = -sample[k]
    return xp.where(upward >= downward, 1.0, -1.0).astype(xp.float32)
