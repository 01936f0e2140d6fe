"""ECG readers: CSV layouts, WFDB, EDF, sample sheets, and one clear error per bad input."""

import numpy as np
import pytest

from warpbio.device import gpu_available
from warpbio.ecg.io import (
    EcgInputError,
    SheetRow,
    check_length,
    read_csv_recording,
    read_edf_recording,
    read_recording,
    read_sample_sheet,
    read_wfdb_recording,
)

from .conftest import MITDB

FS = 250.0


@pytest.fixture(params=["host", pytest.param("device", marks=pytest.mark.gpu)])
def xp(request):
    """CSV readers on the host (pyarrow) and, on a GPU, the device parser."""
    if request.param == "host":
        return np
    if not gpu_available():
        pytest.skip("needs a CUDA GPU and CuPy")
    import cupy

    return cupy


def host(array):
    return array.get() if hasattr(array, "get") else array


@pytest.fixture
def leads():
    rng = np.random.default_rng(0)
    return np.round(rng.normal(size=(500, 2)), 3).astype(np.float32)


def write(path, text):
    path.write_text(text)
    return path


def test_csv_header_time_column_and_lead_by_name(tmp_path, leads, xp):
    rows = [f"{i / FS:.4f},{a:.3f},{b:.3f}" for i, (a, b) in enumerate(leads)]
    path = write(tmp_path / "a.csv", "time,MLII,V5\n" + "\n".join(rows) + "\n")
    recording = read_csv_recording(path, lead="v5", xp=xp)  # names match case-insensitively
    np.testing.assert_array_equal(host(recording.signal), leads[:, 1])
    assert recording.fs == pytest.approx(FS, rel=1e-6) and recording.lead == "V5"
    assert recording.meta["parser"] == ("pyarrow" if xp is np else "device")
    assert read_csv_recording(path, fs=FS, xp=xp).lead == "MLII"  # first signal, not the time


def test_csv_with_long_numbers_reads_the_same_through_pyarrow(tmp_path, leads, xp):
    """17-digit cells are outside the device parser's grammar: pyarrow takes the file."""
    rows = [f"{i / FS:.4f},{float(a)!r}" for i, a in enumerate(leads[:, 0])]
    path = write(tmp_path / "long.csv", "time,MLII\n" + "\n".join(rows) + "\n")
    recording = read_csv_recording(path, xp=xp)
    np.testing.assert_array_equal(host(recording.signal), leads[:, 0])
    assert recording.meta["parser"] == "pyarrow"


def test_csv_without_header_multi_column_by_index(tmp_path, leads, xp):
    rows = [f"{a};{b}" for a, b in leads]
    path = write(tmp_path / "b.csv", "\n".join(rows) + "\n")
    recording = read_csv_recording(path, fs=FS, lead=1, xp=xp)
    np.testing.assert_array_equal(host(recording.signal), leads[:, 1])
    assert recording.meta["header"] is False and recording.signal.dtype == np.float32


def test_csv_single_column_with_header_no_time(tmp_path, leads, xp):
    path = write(tmp_path / "c.csv", "ecg\n" + "\n".join(str(v) for v in leads[:, 0]) + "\n")
    recording = read_csv_recording(path, fs=FS, xp=xp)
    np.testing.assert_array_equal(host(recording.signal), leads[:, 0])


def test_csv_tab_separated_time_column_without_header(tmp_path, leads, xp):
    rows = [f"{i / FS}\t{a}" for i, a in enumerate(leads[:, 0])]
    path = write(tmp_path / "d.tsv", "\n".join(rows) + "\n")
    recording = read_csv_recording(path, lead=1, time_column=0, xp=xp)
    assert recording.fs == pytest.approx(FS)
    np.testing.assert_array_equal(host(recording.signal), leads[:, 0])


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("0.5mV", "cell '0.5mV' in row 3 (line 4), column 'MLII' is not a number"),
        ("", "empty cell in row 3 (line 4), column 'MLII'"),
        ("nan", "non-finite value nan in row 3 (line 4), column 'MLII'"),
    ],
)
def test_csv_bad_cell_names_row_and_column(tmp_path, cell, expected, xp):
    path = write(tmp_path / "bad.csv", f"MLII,V5\n0.1,1\n0.2,2\n{cell},3\n0.4,4\n")
    with pytest.raises(EcgInputError, match=r"bad\.csv") as error:
        read_csv_recording(path, fs=FS, xp=xp)
    assert expected in str(error.value)


def test_csv_wrong_and_missing_sampling_rate(tmp_path, leads, xp):
    rows = [f"{i / FS:.5f},{a}" for i, a in enumerate(leads[:, 0])]
    path = write(tmp_path / "t.csv", "time,ecg\n" + "\n".join(rows) + "\n")
    with pytest.raises(EcgInputError, match="wrong sampling rate: fs = 360 Hz but the time"):
        read_csv_recording(path, fs=360.0, xp=xp)
    unsorted = write(tmp_path / "s.csv", "time,ecg\n" + "\n".join(rows[:3] + rows[5:] + rows[3:5]))
    with pytest.raises(EcgInputError, match="time column does not increase at row 499"):
        read_csv_recording(unsorted, xp=xp)
    plain = write(tmp_path / "p.csv", "\n".join(str(v) for v in leads[:, 0]) + "\n")
    with pytest.raises(EcgInputError, match=r"missing sampling rate.*set fs"):
        read_csv_recording(plain)
    with pytest.raises(EcgInputError, match="outside 50-20000 Hz"):
        read_csv_recording(plain, fs=5.0)


def test_csv_unknown_lead_lists_columns(tmp_path, leads):
    path = write(tmp_path / "u.csv", "MLII,V5\n" + "\n".join(f"{a},{b}" for a, b in leads))
    with pytest.raises(EcgInputError, match="no lead named 'V1'; columns: MLII, V5"):
        read_csv_recording(path, fs=FS, lead="V1")


def test_recording_shorter_than_one_beat(tmp_path):
    path = write(tmp_path / "short.csv", "ecg\n" + "\n".join(["0.1"] * 100) + "\n")
    recording = read_csv_recording(path, fs=FS)  # 0.4 s
    with pytest.raises(EcgInputError, match=r"0\.4 s long .* shorter than one beat window"):
        check_length(recording, 0.7)


@pytest.mark.skipif(not MITDB.with_suffix(".hea").exists(), reason="shared MIT-BIH data absent")
def test_wfdb_record_100_matches_wfdb():
    import wfdb

    recording = read_wfdb_recording(MITDB, lead="MLII", annotations="atr")
    expected = wfdb.rdrecord(str(MITDB), channels=[0]).p_signal[:, 0].astype(np.float32)
    np.testing.assert_array_equal(recording.signal, expected)
    assert recording.fs == 360 and recording.n_samples == 650000
    assert recording.annotations.samples.size == 2273  # beat labels only (no rhythm '+')
    assert read_wfdb_recording(str(MITDB) + ".hea", lead=1).lead == "V5"


def test_wfdb_written_record_and_missing_data_file(tmp_path):
    import wfdb

    signal = np.sin(np.linspace(0, 20, 2000))[:, None] * np.array([[1.0, -0.5]])
    wfdb.wrsamp("rec", fs=500, units=["mV", "mV"], sig_name=["I", "II"], p_signal=signal,
                fmt=["16", "16"], write_dir=str(tmp_path))  # fmt: skip
    recording = read_wfdb_recording(tmp_path / "rec", lead="II")
    np.testing.assert_allclose(recording.signal, signal[:, 1], atol=1e-3)
    with pytest.raises(EcgInputError, match="wrong sampling rate: fs = 360 Hz but the WFDB"):
        read_wfdb_recording(tmp_path / "rec", fs=360.0)
    (tmp_path / "rec.dat").unlink()
    with pytest.raises(EcgInputError, match=r"names signal file rec\.dat, which is missing"):
        read_wfdb_recording(tmp_path / "rec.hea")


def test_edf_written_with_pyedflib(tmp_path):
    import pyedflib

    fs = 256
    signals = np.stack([np.sin(np.arange(fs * 4) / 10.0), np.cos(np.arange(fs * 4) / 7.0)])
    path = tmp_path / "x.edf"
    headers = [
        {"label": label, "dimension": "mV", "sample_frequency": fs, "physical_min": -2.0,
         "physical_max": 2.0, "digital_min": -32768, "digital_max": 32767}
        for label in ("ECG I", "ECG II")
    ]  # fmt: skip
    with pyedflib.EdfWriter(str(path), 2, file_type=pyedflib.FILETYPE_EDFPLUS) as writer:
        writer.setSignalHeaders(headers)
        writer.writeSamples(list(signals))
    recording = read_edf_recording(path, lead="ecg ii")
    assert recording.fs == fs and recording.lead == "ECG II"
    np.testing.assert_allclose(recording.signal, signals[1], atol=1e-4)
    with pytest.raises(EcgInputError, match="wrong sampling rate"):
        read_edf_recording(path, fs=500.0)


def test_sample_sheet_resolves_paths_and_reads_each_format(tmp_path, leads):
    (tmp_path / "data").mkdir()
    write(tmp_path / "data/a.csv", "MLII\n" + "\n".join(str(v) for v in leads[:, 0]))
    write(tmp_path / "data/a.beats.tsv", "sample\tsymbol\n10\tN\n200\tV\n")
    sheet = write(
        tmp_path / "samples.tsv",
        "recording\tpath\tformat\tfs\tlead\tannotations\n"
        "first\tdata/a.csv\t\t250\tMLII\tdata/a.beats.tsv\n",
    )
    rows = read_sample_sheet(sheet)
    assert rows == [SheetRow("first", str(tmp_path / "data/a.csv"), "csv", 250.0, "MLII",
                             str(tmp_path / "data/a.beats.tsv"))]  # fmt: skip
    recording = read_recording(rows[0])
    assert recording.annotations.symbols.tolist() == ["N", "V"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("recording\tfile\nx\ty.csv\n", "lacks column\\(s\\) path"),
        ("recording\tpath\nx y\ta.csv\n", "recording id 'x y' must be letters"),
        ("recording\tpath\nx\tmissing.csv\n", "file .*missing.csv does not exist"),
        ("recording\tpath\tformat\nx\ta.csv\tmp3\n", "format 'mp3' of a.csv is not one of"),
        ("recording\tpath\tfs\nx\ta.csv\tfast\n", "fs 'fast' is not a number"),
        ("recording\tpath\nx\ta.csv\nx\ta.csv\n", "recording id\\(s\\) x appear more than once"),
        ("recording\tpath\nx\tnodata.hea\n", "names signal file nodata.dat, which is missing"),
    ],
)
def test_sample_sheet_errors(tmp_path, body, expected):
    write(tmp_path / "a.csv", "1\n2\n")
    write(tmp_path / "nodata.hea", "nodata 1 360 1000\nnodata.dat 16 200 16 0 0 0 0 MLII\n")
    sheet = write(tmp_path / "samples.tsv", body)
    with pytest.raises(EcgInputError, match=expected):
        read_sample_sheet(sheet)


def test_write_tsv_equals_arrow_csv_writer(tmp_path):
    """The compute-joined lines are the bytes of Arrow's CSV writer (NaN and pd.NA as
    NA), read back by pandas to the same frame; a cell that needs quotes goes through
    pandas' writer."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    from pyarrow import csv

    from warpbio.ecg.pipeline import write_tsv

    frame = pd.DataFrame({"sample": [3, 9, 12], "score": [0.5, np.nan, 1e-7],
                          "flag": pd.array([1, None, 0], dtype="Int8"), "symbol": ["N", "V", "N"],
                          "z": np.float32([0.1, -2.5, 3.0])})  # fmt: skip
    write_tsv(frame, tmp_path / "ours.tsv")
    text = (tmp_path / "ours.tsv").read_text()
    assert text.splitlines()[2] == "9\tNA\tNA\tV\t-2.5"
    back = pd.read_csv(tmp_path / "ours.tsv", sep="\t")
    assert back["sample"].tolist() == [3, 9, 12] and back["symbol"].tolist() == ["N", "V", "N"]
    np.testing.assert_allclose(back["score"], frame["score"])
    np.testing.assert_allclose(back["z"], frame["z"], rtol=1e-6)
    try:
        options = csv.WriteOptions(include_header=False, delimiter="\t", null_string="NA",
                                   quoting_style="none")  # fmt: skip
    except TypeError:  # an Arrow too old to compare with
        options = None
    if options is not None:
        import io

        buffer = io.BytesIO()
        csv.write_csv(pa.Table.from_pandas(frame, preserve_index=False), buffer, options)
        assert text.encode() == ("\t".join(frame.columns) + "\n").encode() + buffer.getvalue()
    write_tsv(frame.iloc[:0], tmp_path / "empty.tsv")
    assert (tmp_path / "empty.tsv").read_text() == "\t".join(frame.columns) + "\n"
    quoted = pd.DataFrame({"note": ["a\tb", "c"], "n": [1, 2]})
    write_tsv(quoted, tmp_path / "quoted.tsv")
    assert pd.read_csv(tmp_path / "quoted.tsv", sep="\t")["note"].tolist() == ["a\tb", "c"]
    write_tsv(pd.DataFrame({"only": [1, 2]}), tmp_path / "one.tsv")
    assert (tmp_path / "one.tsv").read_text() == "only\n1\n2\n"
