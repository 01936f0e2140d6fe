"""The ECG workflow through Snakemake: sample sheets, bad input, no partial outputs."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED_DATA, run_snakemake, write_config

pytestmark = pytest.mark.workflow

MITDB = SHARED_DATA / "ecg" / "mitdb" / "100"


def ecg_only(dataset: str, sheet, epochs: int = 2) -> dict:
    return {
        "singlecell": {"enabled": False},
        "genotype": {"enabled": False},
        "ecg": {"dataset": dataset, "source": "sheet", "samples": str(sheet),
                "vae": {"epochs": epochs}},
    }  # fmt: skip


@pytest.mark.skipif(not MITDB.with_suffix(".hea").exists(), reason="shared MIT-BIH data absent")
def test_sheet_with_wfdb_and_edf_recordings(tmp_path):
    import pyedflib
    import wfdb

    v5 = wfdb.rdrecord(str(MITDB), channels=[1], sampto=360 * 120).p_signal[:, 0]
    edf = tmp_path / "v5.edf"
    header = {"label": "V5", "dimension": "mV", "sample_frequency": 360, "physical_min": -5.0,
              "physical_max": 5.0, "digital_min": -32768, "digital_max": 32767}  # fmt: skip
    with pyedflib.EdfWriter(str(edf), 1, file_type=pyedflib.FILETYPE_EDFPLUS) as writer:
        writer.setSignalHeaders([header])
        writer.writeSamples([v5])
    sheet = tmp_path / "samples.tsv"
    sheet.write_text(
        "recording\tpath\tformat\tfs\tlead\tannotations\n"
        f"r100\t{MITDB}\twfdb\t\tMLII\tatr\n"
        "v5\tv5.edf\t\t360\tV5\t\n"
    )
    configfile = write_config(tmp_path, ecg_only("mitdb", sheet))
    run_snakemake(tmp_path, "--cores", "2", "--configfile", str(configfile))
    results = tmp_path / "results/ecg/mitdb"
    peaks = pd.read_csv(results / "peaks/r100.tsv", sep="\t")
    assert list(peaks.columns) == ["sample", "time_s"] and 2260 <= len(peaks) <= 2290
    np.testing.assert_allclose(peaks["time_s"], peaks["sample"] / 360, atol=1e-6)
    provenance = json.loads((results / "provenance/segment_r100.provenance.json").read_text())
    detection = provenance["extra"]["summary"]["detection"]
    assert detection["sensitivity"] >= 0.995 and detection["positive_predictivity"] >= 0.995
    scores = pd.read_csv(results / "scores/beats.tsv", sep="\t")
    assert set(scores["recording"]) == {"r100", "v5"}
    assert scores.loc[scores["recording"] == "v5", "anomaly"].isna().all()  # no labels
    assert (scores["split"] == "held_out").mean() == pytest.approx(0.25, abs=0.01)
    auroc = json.loads((results / "scores/auroc.json").read_text())
    assert auroc["held_out"]["anomalies"] > 0 and 0 <= auroc["held_out"]["auroc"] <= 1
    model = json.loads((results / "model/vae.json").read_text())
    assert model["epochs"] == 2 and len(model["epoch_losses"]) == 2
    for name in ("signal", "beats", "latent", "scores"):
        assert (results / f"plots/{name}.png").stat().st_size > 10_000


def test_bad_csv_cell_fails_the_job_and_leaves_no_output(tmp_path):
    lines = ["time,ecg"] + [f"{i / 250:.4f},{np.sin(i / 10):.3f}" for i in range(2500)]
    lines[1001] = "4.0000,1.2.3"
    (tmp_path / "bad.csv").write_text("\n".join(lines) + "\n")
    sheet = tmp_path / "samples.tsv"
    sheet.write_text("recording\tpath\tfs\nbad\tbad.csv\t250\n")
    configfile = write_config(tmp_path, ecg_only("bad", sheet))
    done = run_snakemake(tmp_path, "--cores", "1", "--configfile", str(configfile),
                         check=False)  # fmt: skip
    assert done.returncode != 0
    log = (tmp_path / "logs/ecg/segment/bad/bad.log").read_text()
    assert "cell '1.2.3' in row 1001 (line 1002), column 'ecg' is not a number" in log
    produced = [p for p in (tmp_path / "results").rglob("*") if p.is_file()]
    assert produced == [], produced


def test_wfdb_header_without_data_fails_before_any_job(tmp_path):
    (tmp_path / "rec.hea").write_text("rec 1 360 1000\nrec.dat 16 200 16 0 0 0 0 MLII\n")
    sheet = tmp_path / "samples.tsv"
    sheet.write_text("recording\tpath\nrec\trec.hea\n")
    configfile = write_config(tmp_path, ecg_only("nodata", sheet))
    done = run_snakemake(tmp_path, "--cores", "1", "--configfile", str(configfile),
                         check=False)  # fmt: skip
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode != 0 and len(lines) == 1, lines
    assert "names signal file rec.dat, which is missing; put rec.dat beside the header" in lines[0]
    assert not (tmp_path / "results").exists() and not (tmp_path / "logs").exists()
