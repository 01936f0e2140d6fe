"""The device CSV parser: its CPU twin against pyarrow, its grammar's edges, and the GPU
kernel against the twin (on a CUDA machine)."""

import io

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from warpbio.device import gpu_available
from warpbio.ecg.csv_kernels import parse_rows


def cells(rng, n: int) -> list[str]:
    """Numbers written the ways ECG exports write them, plus 7-digit mantissas with
    exponents (the float32 cases nearest to rounding ties)."""
    x = rng.standard_normal(n) * rng.choice([1e-4, 1e-2, 1.0, 10.0, 1000.0], n)
    styles = [lambda v: f"{v:.3f}", lambda v: f"{v:.6g}", lambda v: f"{v:.2e}",
              lambda v: f"{v:.0f}", lambda v: f"{v:+.4f}",
              lambda v: f"{v:.7g}".rstrip("0")]  # fmt: skip
    written = [styles[k](v) for k, v in zip(rng.integers(0, len(styles), n), x, strict=True)]
    mantissas, exponents = rng.integers(1, 1 << 24, n), rng.integers(-10, 11, n)
    return written + [f"{m}e{e}" for m, e in zip(mantissas, exponents, strict=True)]


def csv_bytes(time: list[str], lead: list[str]) -> bytes:
    return "".join(f"{t},{v},x\n" for t, v in zip(time, lead, strict=True)).encode()


def pyarrow_columns(data: bytes):
    table = pacsv.read_csv(
        io.BytesIO(data),
        read_options=pacsv.ReadOptions(column_names=["time", "lead", "other"]),
        convert_options=pacsv.ConvertOptions(
            column_types={"time": pa.float64(), "lead": pa.float32()},
            include_columns=["time", "lead"],
        ),
    )
    return table.column("lead").to_numpy(), table.column("time").to_numpy()


def twin(data: bytes, n_fields=3, delimiter=",", lead_field=1, time_field=0):
    return parse_rows(np.frombuffer(data, np.uint8), n_fields, delimiter, lead_field, time_field)


def in_grammar(cell: str) -> bool:
    _, _, bad = twin(f"0,{cell},x\n".encode())
    return bad < 0


def test_cpu_twin_equals_pyarrow_bit_for_bit():
    rng = np.random.default_rng(3)
    lead_cells = [c for c in cells(rng, 20_000) if in_grammar(c)]
    assert len(lead_cells) > 30_000  # most of the 40,000 cells are in the grammar
    time_cells = [f"{i / 360:.4f}" for i in range(len(lead_cells))]
    data = csv_bytes(time_cells, lead_cells)
    lead, time, bad = twin(data)
    expected_lead, expected_time = pyarrow_columns(data)
    assert bad == -1
    np.testing.assert_array_equal(lead.view(np.uint32), expected_lead.view(np.uint32))
    np.testing.assert_array_equal(time.view(np.uint64), expected_time.view(np.uint64))


@pytest.mark.parametrize(
    ("cell", "accepted"),
    [("-0.024", True), ("+1", True), ("1.", True), (".5", True), ("1.5e+3", True),
     ("-0", True), ("16777215", True), ("16777216", False), ("0.16777216", False),
     ("1e11", False), ("", False), ("1e", False), (" 1", False), ("1 ", False),
     ("nan", False), ("inf", False), ('"1"', False), ("0.5mV", False), ("-", False)],
)  # fmt: skip
def test_grammar_takes_exact_cases_and_leaves_the_rest_to_pyarrow(cell, accepted):
    assert in_grammar(cell) is accepted
    if accepted:
        lead, _, _ = twin(f"0,{cell},x\n".encode())
        expected, _ = pyarrow_columns(f"0,{cell},x\n".encode())
        assert lead.view(np.uint32)[0] == expected.view(np.uint32)[0]


@pytest.mark.parametrize(
    ("text", "rows", "bad"),
    [
        (b"0,1,x\r\n1,2,x\r\n", 2, -1),  # CRLF
        (b"0,1,x\n1,2,x", 2, -1),  # no newline at the end
        (b"0,1,x\n\n1,2,x\n", 3, 1),  # a blank line: pyarrow skips it, we defer
        (b"0,1,x\n1,2\n", 2, 1),  # a short row
        (b"0,1,x\n1,2,x,y\n", 2, 1),  # a long row
        (b"0,1,\"a,b\"\n", 1, 0),  # quotes
        (b"", 0, -1),
    ],
)
def test_rows_and_first_row_outside_the_grammar(text, rows, bad):
    lead, time, first_bad = twin(text)
    assert lead.shape[0] == rows and first_bad == bad
    if bad < 0 and rows:
        np.testing.assert_array_equal(lead, [1.0, 2.0][:rows])
        np.testing.assert_array_equal(time, [0.0, 1.0][:rows])


def test_without_a_time_column():
    lead, time, bad = parse_rows(np.frombuffer(b"1.5\n-2\n", np.uint8), 1, ",", 0)
    assert time is None and bad == -1
    np.testing.assert_array_equal(lead, [1.5, -2.0])


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="needs a CUDA GPU and CuPy")
def test_gpu_kernel_equals_cpu_twin(tmp_path):
    import cupy as cp

    from warpbio.ecg.csv_kernels import file_to_device

    rng = np.random.default_rng(5)
    lead_cells = cells(rng, 50_000)  # in and out of the grammar
    data = csv_bytes([f"{i / 360:.4f}" for i in range(len(lead_cells))], lead_cells)
    path = tmp_path / "cells.csv"
    path.write_bytes(b"time,lead,other\n" + data)
    on_device = file_to_device(path, offset=16, chunk_bytes=1 << 16, workers=3)
    np.testing.assert_array_equal(on_device.get(), np.frombuffer(data, np.uint8))
    lead, time, bad = parse_rows(on_device, 3, ",", 1, 0)
    twin_lead, twin_time, twin_bad = twin(data)
    assert bad == twin_bad >= 0  # some cells are outside the grammar
    good = [in_grammar(c) for c in lead_cells]
    lead_cells = [c for c, ok in zip(lead_cells, good, strict=True) if ok]
    data = csv_bytes([f"{i / 360:.4f}" for i in range(len(lead_cells))], lead_cells)
    lead, time, bad = parse_rows(cp.asarray(np.frombuffer(data, np.uint8)), 3, ",", 1, 0)
    twin_lead, twin_time, twin_bad = twin(data)
    assert bad == twin_bad == -1
    np.testing.assert_array_equal(lead.get().view(np.uint32), twin_lead.view(np.uint32))
    np.testing.assert_array_equal(time.get().view(np.uint64), twin_time.view(np.uint64))
