"""The synthetic ECG: seeded, labelled PVCs that come early with a compensatory pause."""

import numpy as np
import pandas as pd

from warpbio.ecg.io import read_annotation_table, read_csv_recording
from warpbio.ecg.simulate import (
    EcgSimulationSpec,
    simulate_ecg,
    write_annotations,
    write_csv,
)


def test_seeded_and_pvcs_are_premature_with_compensatory_pause():
    spec = EcgSimulationSpec(duration_s=600, pvc_fraction=0.05)
    sim = simulate_ecg(spec, seed=2)
    again = simulate_ecg(spec, seed=2)
    np.testing.assert_array_equal(sim.signals, again.signals)
    assert not np.array_equal(simulate_ecg(spec, seed=3).signals, sim.signals)
    assert sim.signals.shape == (216000, 2) and sim.signals.dtype == np.float32
    pvc = np.flatnonzero(sim.symbols == "V")
    assert 0.03 < pvc.size / sim.symbols.size < 0.07
    rr = np.diff(sim.r_peaks) / spec.fs
    coupling, pause = rr[pvc - 1], rr[pvc]
    normal_rr = np.median(rr)
    assert np.all(coupling < 0.75 * normal_rr)  # premature
    np.testing.assert_allclose((coupling + pause) / (2 * normal_rr), 1.0, atol=0.25)


def test_csv_and_annotations_round_trip(tmp_path):
    sim = simulate_ecg(EcgSimulationSpec(duration_s=20, fs=250), seed=0)
    write_csv(sim, tmp_path / "sim.csv")
    write_annotations(sim, tmp_path / "sim.tsv")
    assert (tmp_path / "sim.csv").read_text().splitlines()[0] == "time,MLII,V5"
    recording = read_csv_recording(tmp_path / "sim.csv", fs=250.0, lead="V5")
    np.testing.assert_allclose(recording.signal, sim.signals[:, 1], atol=5e-4)
    notes = read_annotation_table(tmp_path / "sim.tsv", 250.0)
    np.testing.assert_array_equal(notes.samples, sim.r_peaks)
    assert set(pd.read_csv(tmp_path / "sim.tsv", sep="\t")["symbol"]) <= {"N", "V"}
