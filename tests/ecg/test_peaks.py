"""R peaks: MIT-BIH record 100 against its reference beats; kernels against NumPy."""

import numpy as np
import pytest

from warpbio.ecg.filter import FilterSettings, filter_ecg, next_fast_length
from warpbio.ecg.kernels import embed_beats_kernel, nms_flags
from warpbio.ecg.peaks import (
    PeakSettings,
    capacity_for,
    compact,
    detect_r_peaks,
    detection_scores,
    match_beats,
)

from .conftest import MITDB

needs_mitdb = pytest.mark.skipif(
    not MITDB.with_suffix(".hea").exists(), reason="shared MIT-BIH data absent"
)


@needs_mitdb
def test_mitdb_100_mlii_sensitivity_and_positive_predictivity():
    """Acceptance 1: Se and +P >= 99.5% at 150 ms against the .atr beat labels."""
    from wfdb.processing import compare_annotations

    from warpbio.ecg.io import read_wfdb_recording

    recording = read_wfdb_recording(MITDB, lead="MLII", annotations="atr")
    detected = detect_r_peaks(recording.signal, recording.fs).to_host()
    reference = recording.annotations.samples
    comparison = compare_annotations(reference, detected, int(0.15 * recording.fs))
    print(f"record 100 MLII: Se {comparison.sensitivity:.5f} +P "
          f"{comparison.positive_predictivity:.5f} ({detected.size} peaks)")  # fmt: skip
    assert comparison.sensitivity >= 0.995 and comparison.positive_predictivity >= 0.995
    ours = detection_scores(reference, detected, recording.fs)
    assert ours["true_positives"] == comparison.tp  # our matcher counts as wfdb's does
    # the same peaks when the lead is recorded upside down (automatic polarity)
    np.testing.assert_array_equal(detect_r_peaks(-recording.signal, recording.fs).to_host(),
                                  detected)  # fmt: skip


def window_max_reference(y, half, floor):
    """NumPy reference of the NMS flags: strict on the left, ties to the leftmost."""
    n = y.size
    flags = np.zeros(n, dtype=np.uint8)
    for i in range(n):
        left = y[max(i - half, 0) : i]
        right = y[i + 1 : i + half + 1]
        flags[i] = y[i] > floor and np.all(left < y[i]) and np.all(right <= y[i])
    return flags


def test_nms_cpu_twin_matches_numpy_reference_with_ties():
    rng = np.random.default_rng(1)
    y = np.round(rng.normal(size=3000), 1).astype(np.float32)  # many exact ties
    y[100:110] = 5.0  # a plateau: one peak, at its left end
    flags = nms_flags(y, 7, 0.0)
    np.testing.assert_array_equal(flags, window_max_reference(y, 7, 0.0))
    assert flags[100] == 1 and flags[101:110].sum() == 0


def test_compact_fixed_capacity_and_count():
    flags = np.zeros(50, dtype=np.uint8)
    flags[[3, 9, 30, 49]] = 1
    samples, count = compact(flags, capacity_for(50, 5), np)
    assert int(count) == 4 and samples.shape == (9,)
    np.testing.assert_array_equal(samples, [3, 9, 30, 49, -1, -1, -1, -1, -1])


def test_filter_is_linear_and_zero_phase():
    fs = 360.0
    impulse = np.zeros(4000, dtype=np.float32)
    impulse[2000] = 1.0
    settings = FilterSettings(polarity="positive")
    out = filter_ecg(impulse, fs, np, settings)
    # zero phase: the impulse response is symmetric about the impulse
    np.testing.assert_allclose(out.response[1990:2000], out.response[2010:2000:-1], atol=1e-6)
    assert int(np.argmax(out.response)) == 2000
    assert next_fast_length(1000) == 1000 and next_fast_length(1001) == 1024


def test_embed_kernel_interpolates_linearly():
    y = np.arange(100, dtype=np.float32) * 2.0
    peaks = np.array([20, 50, -1], dtype=np.int64)
    out = embed_beats_kernel(y, peaks, np.int64(2), -5.0, 0.5, 8)
    np.testing.assert_allclose(out[0], 2.0 * (15 + 0.5 * np.arange(8)))
    np.testing.assert_allclose(out[1], 2.0 * (45 + 0.5 * np.arange(8)))
    assert not out[2].any()


def test_synthetic_recording_peaks_and_matcher():
    from warpbio.ecg.simulate import EcgSimulationSpec, simulate_ecg

    sim = simulate_ecg(EcgSimulationSpec(duration_s=300, pvc_fraction=0.05), seed=3)
    detected = detect_r_peaks(sim.signals[:, 0].copy(), sim.spec.fs, np,
                              peak_settings=PeakSettings()).to_host()  # fmt: skip
    scores = detection_scores(sim.r_peaks, detected, sim.spec.fs)
    assert scores["sensitivity"] == 1.0 and scores["positive_predictivity"] == 1.0
    match, tp = match_beats(np.array([10, 100, 200]), np.array([12, 150, 205, 400]), 10)
    assert tp == 2 and match.tolist() == [0, -1, 2, -1]
