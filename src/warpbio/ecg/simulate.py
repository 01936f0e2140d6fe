"""Seeded synthetic long ECG with labelled premature ventricular contractions.

Each beat is a sum of Gaussian waves (P, Q, R, S, T; McSharry et al.'s ECGSYN
shapes, placed directly in time). The sinus rhythm has heart-rate variability
(respiratory and Mayer-wave modulation plus AR(1) noise); baseline wander,
white noise and mains hum are added on top. PVCs replace a sinus beat by an
early beat (coupling interval ~0.6 RR) with no P wave, a wide QRS and an
inverted T; the next sinus beat keeps its time, giving the full compensatory
pause. Beats are rendered as (beats x window) blocks and overlap-added with
one ``bincount`` per block, so a 20 h recording takes seconds.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from warpbio.progress import Progress

log = logging.getLogger(__name__)

# Waves (centre s relative to R, amplitude mV, width s) per beat kind and lead.
# Lead 1 looks like MIT-BIH's MLII, lead 2 like V5.
NORMAL_WAVES = {
    "MLII": [(-0.20, 0.15, 0.025), (-0.035, -0.12, 0.010), (0.0, 1.20, 0.011),
             (0.035, -0.25, 0.011), (0.27, 0.30, 0.050)],
    "V5": [(-0.20, 0.10, 0.025), (-0.035, -0.08, 0.010), (0.0, 0.90, 0.012),
           (0.040, -0.40, 0.012), (0.27, 0.25, 0.055)],
}  # fmt: skip
PVC_WAVES = {
    "MLII": [(-0.02, 0.50, 0.025), (0.03, 1.50, 0.030), (0.09, -0.60, 0.030),
             (0.34, -0.45, 0.070)],
    "V5": [(-0.02, -0.30, 0.025), (0.03, -1.10, 0.030), (0.09, 0.40, 0.030),
           (0.34, 0.40, 0.070)],
}  # fmt: skip
T_WAVE = 4  # index of the T wave in NORMAL_WAVES: it moves with the RR interval
WINDOW_S = (-0.35, 0.65)  # render window around each R peak


@dataclass(frozen=True)
class EcgSimulationSpec:
    duration_s: float = 1800.0
    fs: float = 360.0
    heart_rate: float = 72.0  # mean beats per minute
    hrv: float = 0.04  # relative RR modulation
    pvc_fraction: float = 0.03  # share of sinus beats replaced by PVCs
    noise_mv: float = 0.02  # white noise SD
    baseline_mv: float = 0.15  # baseline-wander amplitude
    leads: tuple[str, ...] = ("MLII", "V5")

    def __post_init__(self) -> None:
        if self.duration_s <= 0 or self.fs <= 0 or self.heart_rate <= 0:
            raise ValueError("duration_s, fs and heart_rate must be positive")
        unknown = set(self.leads) - set(NORMAL_WAVES)
        if unknown:
            raise ValueError(f"unknown simulated leads {sorted(unknown)}; use {list(NORMAL_WAVES)}")


@dataclass
class SimulatedEcg:
    signals: np.ndarray  # (n_samples, n_leads) float32, mV
    r_peaks: np.ndarray  # true R-peak sample indices (int64)
    symbols: np.ndarray  # 'N' or 'V' per beat
    spec: EcgSimulationSpec

    @property
    def n_samples(self) -> int:
        return int(self.signals.shape[0])


def beat_schedule(spec: EcgSimulationSpec, rng: np.random.Generator):
    """R-peak times (s) and symbols: sinus rhythm with HRV, some beats turned into PVCs."""
    mean_rr = 60.0 / spec.heart_rate
    n_beats = int(spec.duration_s / mean_rr * 1.2) + 8
    approx_t = np.arange(n_beats) * mean_rr
    phase = rng.uniform(0, 2 * np.pi, size=2)
    modulation = spec.hrv * (
        np.sin(2 * np.pi * 0.25 * approx_t + phase[0])
        + 0.6 * np.sin(2 * np.pi * 0.1 * approx_t + phase[1])
    )
    shocks = rng.normal(0.0, spec.hrv * 0.5, n_beats)
    # AR(1) drift of the RR interval, written as a linear filter (no Python loop).
    from scipy.signal import lfilter

    drift = lfilter([1.0], [1.0, -0.9], shocks) * np.sqrt(1 - 0.9**2)
    rr = mean_rr * np.clip(1.0 + modulation + drift, 0.6, 1.6)
    times = 0.5 + np.cumsum(rr) - rr[0]
    symbols = np.full(n_beats, "N")
    # PVC: beat k moves early to t[k-1] + coupling * rr[k]; beat k+1 stays put
    # (compensatory pause). No PVCs at the ends or back to back.
    chosen = rng.random(n_beats) < spec.pvc_fraction
    chosen[:3] = chosen[-3:] = False
    chosen[1:] &= ~chosen[:-1]
    pvc = np.flatnonzero(chosen)
    coupling = rng.uniform(0.55, 0.68, size=pvc.size)
    times[pvc] = times[pvc - 1] + coupling * rr[pvc]
    symbols[pvc] = "V"
    keep = times < spec.duration_s + WINDOW_S[0]
    return times[keep], symbols[keep], rr[keep]


def render_lead(
    lead: str,
    times: np.ndarray,
    symbols: np.ndarray,
    rr: np.ndarray,
    n_samples: int,
    fs: float,
    rng: np.random.Generator,
    block: int = 8192,
) -> np.ndarray:
    """Overlap-add every beat's waves into one lead (float64, mV)."""
    offsets = np.arange(int(np.floor(WINDOW_S[0] * fs)), int(np.ceil(WINDOW_S[1] * fs)) + 1)
    signal = np.zeros(n_samples, dtype=np.float64)
    normal = np.array(NORMAL_WAVES[lead])
    pvc = np.array(PVC_WAVES[lead])
    progress = Progress(f"render {lead}", times.size, unit="beats")
    for start in range(0, times.size, block):
        stop = min(start + block, times.size)
        t = times[start:stop]
        nearest = np.rint(t * fs).astype(np.int64)
        index = nearest[:, None] + offsets[None, :]
        relative = index / fs - t[:, None]  # seconds from the exact R time
        values = np.zeros(index.shape)
        is_pvc = symbols[start:stop] == "V"
        for kind, waves in ((~is_pvc, normal), (is_pvc, pvc)):
            rows = np.flatnonzero(kind)
            if rows.size == 0:
                continue
            gain = 1.0 + 0.05 * rng.standard_normal((rows.size, len(waves)))
            for w, (centre, amplitude, width) in enumerate(waves):
                centre = np.full(rows.size, centre)
                if waves is normal and w == T_WAVE:  # QT shortens with the RR (Bazett)
                    centre = centre * np.sqrt(rr[start:stop][rows])
                shift = relative[rows] - centre[:, None]
                values[rows] += (amplitude * gain[:, w])[:, None] * np.exp(
                    -0.5 * (shift / width) ** 2
                )
        inside = (index >= 0) & (index < n_samples)
        signal += np.bincount(index[inside], weights=values[inside], minlength=n_samples)
        progress.update(stop - start)
    return signal


def add_noise(
    signal: np.ndarray, spec: EcgSimulationSpec, rng: np.random.Generator
) -> np.ndarray:
    """Baseline wander (respiration and slow drift), white noise and 60 Hz hum."""
    t = np.arange(signal.size) / spec.fs
    phases = rng.uniform(0, 2 * np.pi, size=3)
    wander = spec.baseline_mv * (
        np.sin(2 * np.pi * 0.22 * t + phases[0])
        + 0.7 * np.sin(2 * np.pi * 0.05 * t + phases[1])
        + 0.4 * np.sin(2 * np.pi * 0.013 * t + phases[2])
    )
    hum = 0.5 * spec.noise_mv * np.sin(2 * np.pi * 60.0 * t)
    return signal + wander + hum + rng.normal(0.0, spec.noise_mv, signal.size)


def simulate_ecg(spec: EcgSimulationSpec, seed: int) -> SimulatedEcg:
    """The recording of ``spec``; the same seed gives the same samples."""
    rng = np.random.default_rng(seed)
    times, symbols, rr = beat_schedule(spec, rng)
    n_samples = round(spec.duration_s * spec.fs)
    signals = np.empty((n_samples, len(spec.leads)), dtype=np.float32)
    for column, lead in enumerate(spec.leads):
        lead_rng = np.random.default_rng([seed, column])
        clean = render_lead(lead, times, symbols, rr, n_samples, spec.fs, lead_rng)
        signals[:, column] = add_noise(clean, spec, lead_rng)
    r_peaks = np.rint(times * spec.fs).astype(np.int64)
    inside = r_peaks < n_samples
    return SimulatedEcg(signals, r_peaks[inside], symbols[inside], spec)


def write_csv(sim: SimulatedEcg, path: str | Path, decimals: int = 3) -> None:
    """CSV with a header: ``time`` (s) and one column per lead (mV).

    pyarrow writes the shortest text of each value, so values rounded to
    ``decimals`` come out short (a 20 h, two-lead recording is ~0.6 GB).
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    time = np.round(np.arange(sim.n_samples) / sim.spec.fs, 4)
    columns = {"time": time}
    for column, lead in enumerate(sim.spec.leads):
        columns[lead] = np.round(sim.signals[:, column].astype(np.float64), decimals)
    table = pa.table(columns)
    with open(path, "wb") as handle:  # a plain header line: pyarrow would quote the names
        handle.write((",".join(columns) + "\n").encode())
        options = pacsv.WriteOptions(include_header=False, quoting_style="none")
        pacsv.write_csv(table, handle, write_options=options)


def write_annotations(sim: SimulatedEcg, path: str | Path) -> None:
    """Reference beats as TSV: sample, time_s, symbol (N normal, V PVC)."""
    import pandas as pd

    pd.DataFrame(
        {
            "sample": sim.r_peaks,
            "time_s": np.round(sim.r_peaks / sim.spec.fs, 4),
            "symbol": sim.symbols,
        }
    ).to_csv(path, sep="\t", index=False)


def summarize(sim: SimulatedEcg) -> dict:
    return {
        "n_samples": sim.n_samples,
        "duration_s": sim.n_samples / sim.spec.fs,
        "n_beats": int(sim.r_peaks.size),
        "n_pvc": int(np.sum(sim.symbols == "V")),
        "spec": asdict(sim.spec),
    }


def simulate_step(ctx) -> dict:
    """Snakemake step: ``params.simulation`` -> CSV, reference annotations, sample sheet."""
    from warpbio.io import atomic_write

    settings = dict(ctx.params.simulation)
    settings["leads"] = tuple(settings.get("leads", EcgSimulationSpec.leads))
    spec = EcgSimulationSpec(**settings)
    sim = simulate_ecg(spec, seed=int(ctx.seed))
    stats = summarize(sim)
    log.info("simulated %s", stats)
    with atomic_write(ctx.output.csv) as tmp:
        write_csv(sim, tmp)
    with atomic_write(ctx.output.annotations) as tmp:
        write_annotations(sim, tmp)
    return {"summary": stats}
