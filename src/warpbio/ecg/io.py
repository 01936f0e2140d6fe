"""ECG recordings in: CSV, WFDB and EDF/EDF+, one lead each; sample sheets.

Every reader returns a :class:`Recording` whose signal is float32 on the
backend's array module. On a GPU a CSV is parsed there: with cuDF when it is
importable, else the file's bytes go to the device and our kernel converts the
cells (:mod:`warpbio.ecg.csv_kernels`; ``WARPBIO_ECG_CSV_PARSER=pyarrow`` turns it
off). Otherwise parsing happens on the host (pyarrow's multi-threaded CSV reader,
``wfdb``, ``pyedflib``) and the selected lead then goes to the device in ONE
host-to-device copy. Every problem found in a file stops with :class:`EcgInputError`, whose
one-line message names the file, the problem and the fix.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

FORMATS = ("csv", "wfdb", "edf")
SHEET_COLUMNS = ("recording", "path", "format", "fs", "lead", "annotations")
TIME_NAMES = ("time", "t", "time_s", "times", "seconds", "sec", "elapsed time", "timestamp")
FS_LIMITS = (50.0, 20_000.0)  # Hz a QRS detector can work with
FS_TOLERANCE = 0.01  # relative mismatch allowed between a given fs and the time column
# Beats per AAMI class N; every other beat symbol is an anomaly for the scores.
NORMAL_SYMBOLS = frozenset("NLRej")
BEAT_SYMBOLS = frozenset("NLRBAaJSVrFejnE/fQ?")
_NUMBER = r"^\s*[-+]?((\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|nan|inf|infinity)\s*$"


class EcgInputError(ValueError):
    """A recording or sample sheet that cannot be used; one line: file, problem, fix."""


@dataclass
class Annotations:
    """Reference beats: sample index and symbol (MIT-BIH codes) of each."""

    samples: np.ndarray
    symbols: np.ndarray

    def beats_only(self) -> Annotations:
        keep = np.isin(self.symbols, list(BEAT_SYMBOLS))
        return Annotations(self.samples[keep], self.symbols[keep])


@dataclass
class Recording:
    name: str
    signal: Any  # (n_samples,) float32, NumPy or CuPy
    fs: float
    lead: str
    path: str
    annotations: Annotations | None = None
    meta: dict = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        return int(self.signal.shape[0])

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.fs


@dataclass
class SheetRow:
    """One recording of a sample sheet (paths resolved against the sheet's folder)."""

    recording: str
    path: str
    format: str
    fs: float | None = None
    lead: str | int | None = None
    annotations: str | None = None

    def input_files(self) -> list[str]:
        """Files the recording is read from (for Snakemake inputs and existence checks)."""
        files = [wfdb_record_path(self.path) + ".hea"] if self.format == "wfdb" else [self.path]
        if self.annotations and self.format != "wfdb":
            files.append(self.annotations)
        return files


# --------------------------------------------------------------------------
# Sample sheets
# --------------------------------------------------------------------------


def infer_format(path: str) -> str | None:
    suffix = Path(path).suffix.lower()
    return {".csv": "csv", ".txt": "csv", ".hea": "wfdb", ".dat": "wfdb", ".edf": "edf"}.get(
        suffix, "wfdb" if not suffix else None
    )


def _lead_value(raw: str) -> str | int | None:
    raw = raw.strip()
    if not raw:
        return None
    return int(raw) if re.fullmatch(r"\d+", raw) else raw


def read_sample_sheet(path: str | Path, check_files: bool = True) -> list[SheetRow]:
    """Recordings of a TSV sample sheet: recording, path, format, fs, lead, annotations.

    Only ``recording`` and ``path`` are required; ``format`` is inferred from the
    suffix, ``fs`` from the file where it has one, ``lead`` defaults to the first
    signal. Relative paths start at the sheet's folder.
    """
    import pandas as pd

    sheet = Path(path)
    if not sheet.is_file():
        raise EcgInputError(f"{sheet}: sample sheet not found; give the path of a TSV file")
    table = pd.read_csv(sheet, sep="\t", dtype=str, keep_default_na=False, comment="#")
    table.columns = [str(c).strip().lower() for c in table.columns]
    missing = [name for name in ("recording", "path") if name not in table.columns]
    if missing:
        raise EcgInputError(
            f"{sheet}: sample sheet lacks column(s) {', '.join(missing)}; it needs a "
            f"tab-separated header with recording and path (optional: format, fs, lead, "
            f"annotations)"
        )
    unknown = sorted(set(table.columns) - set(SHEET_COLUMNS))
    if unknown:
        raise EcgInputError(
            f"{sheet}: unknown sample-sheet column(s) {', '.join(unknown)}; "
            f"known: {', '.join(SHEET_COLUMNS)}"
        )
    if table.empty:
        raise EcgInputError(f"{sheet}: sample sheet lists no recording; add one row per recording")
    rows = []
    for number, record in enumerate(table.to_dict("records"), start=2):
        rows.append(_sheet_row(sheet, number, record, check_files))
    names = [row.recording for row in rows]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise EcgInputError(
            f"{sheet}: recording id(s) {', '.join(duplicated)} appear more than once; "
            "give every row its own id"
        )
    return rows


def _sheet_row(sheet: Path, line: int, record: dict, check_files: bool) -> SheetRow:
    where = f"{sheet} line {line}"
    name = record["recording"].strip()
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise EcgInputError(
            f"{where}: recording id {name!r} must be letters, digits, '_', '.' or '-' "
            "(it names output files)"
        )
    raw_path = record["path"].strip()
    if not raw_path:
        raise EcgInputError(f"{where}: empty path; give the recording's file")
    resolved = raw_path if Path(raw_path).is_absolute() else str(sheet.parent / raw_path)
    fmt = (record.get("format") or "").strip().lower() or infer_format(resolved)
    if fmt not in FORMATS:
        raise EcgInputError(
            f"{where}: format {fmt or record.get('format')!r} of {raw_path} is not one of "
            f"{', '.join(FORMATS)}; set the format column"
        )
    fs_text = (record.get("fs") or "").strip()
    fs = None
    if fs_text:
        try:
            fs = float(fs_text)
        except ValueError:
            raise EcgInputError(
                f"{where}: fs {fs_text!r} is not a number; give the sampling rate in Hz"
            ) from None
        check_fs(fs, where)
    annotations = (record.get("annotations") or "").strip() or None
    if annotations and fmt != "wfdb" and not Path(annotations).is_absolute():
        annotations = str(sheet.parent / annotations)
    row = SheetRow(name, resolved, fmt, fs, _lead_value(record.get("lead") or ""), annotations)
    if check_files:
        for file in row.input_files():
            if not Path(file).exists():
                raise EcgInputError(f"{where}: file {file} does not exist; fix the path")
        if fmt == "wfdb":
            check_wfdb_files(row.path)
    return row


def check_fs(fs: float, where: str) -> None:
    if not np.isfinite(fs) or not FS_LIMITS[0] <= fs <= FS_LIMITS[1]:
        raise EcgInputError(
            f"{where}: sampling rate {fs:g} Hz is outside {FS_LIMITS[0]:g}-{FS_LIMITS[1]:g} Hz; "
            "give the rate in Hz (samples per second)"
        )


# --------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------


@dataclass
class CsvLayout:
    delimiter: str
    header: bool
    names: list[str]


def sniff_csv(path: str | Path) -> CsvLayout:
    """Delimiter and header of a CSV from its first line."""
    with open(path, "rb") as handle:
        first = handle.readline().decode("utf-8", errors="replace").strip("\r\n")
    if not first.strip():
        raise EcgInputError(f"{path}: empty file or empty first line; expected CSV samples")
    delimiter = max((",", "\t", ";"), key=first.count) if any(
        d in first for d in (",", "\t", ";")
    ) else ","
    fields = [f.strip().strip('"') for f in first.split(delimiter)]
    header = any(not re.match(_NUMBER, f, flags=re.I) for f in fields)
    names = fields if header else [f"column{i + 1}" for i in range(len(fields))]
    return CsvLayout(delimiter, header, names)


def _column_index(names: list[str], wanted: str | int | None, what: str, path) -> int:
    if wanted is None:
        return 0
    if isinstance(wanted, int) or (isinstance(wanted, str) and wanted.isdigit()):
        index = int(wanted)
        if not 0 <= index < len(names):
            raise EcgInputError(
                f"{path}: {what} index {index} is out of range; the file has {len(names)} "
                f"columns (0-{len(names) - 1}): {', '.join(names)}"
            )
        return index
    folded = [name.lower() for name in names]
    if str(wanted).lower() not in folded:
        raise EcgInputError(
            f"{path}: no {what} named {wanted!r}; columns: {', '.join(names)} "
            "(or give a 0-based index)"
        )
    return folded.index(str(wanted).lower())


def read_csv_columns(path: str | Path, layout: CsvLayout, columns: dict[str, int]) -> dict:
    """Selected columns as NumPy arrays (float64 time, float32 leads) with pyarrow."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    keys = {f"c{index}": key for key, index in columns.items()}
    names = [f"c{i}" for i in range(len(layout.names))]
    types = {f"c{i}": (pa.float64() if key == "time" else pa.float32()) for key, i in
             columns.items()}  # fmt: skip
    try:
        table = pacsv.read_csv(
            str(path),
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=int(layout.header)),
            parse_options=pacsv.ParseOptions(delimiter=layout.delimiter),
            convert_options=pacsv.ConvertOptions(
                column_types=types,
                include_columns=list(keys),
                null_values=[""],  # only empty cells; 'NA' and the like are errors
                quoted_strings_can_be_null=True,
            ),
        )
    except pa.ArrowInvalid as error:
        raise _csv_error(path, layout, columns, error) from None
    arrays = {}
    for column_name, key in keys.items():
        chunked = table.column(column_name)
        label = layout.names[columns[key]]
        if chunked.null_count:
            row = int(np.flatnonzero(chunked.is_null().to_numpy(zero_copy_only=False))[0])
            raise EcgInputError(
                f"{path}: empty cell in row {row + 1} (line {row + 1 + layout.header}), "
                f"column {label!r}; fill it or remove the row"
            )
        values = chunked.to_numpy()
        finite = np.isfinite(values)
        if not finite.all():
            row = int(np.flatnonzero(~finite)[0])
            raise EcgInputError(
                f"{path}: non-finite value {values[row]} in row {row + 1} "
                f"(line {row + 1 + layout.header}), column {label!r}; replace it with a number"
            )
        arrays[key] = values
    return arrays


def _csv_error(path, layout: CsvLayout, columns: dict[str, int], error) -> EcgInputError:
    """Turn pyarrow's message into one naming the row and column of the first bad cell."""
    text = str(error)
    if "conversion error" not in text:
        first = text.splitlines()[0]
        return EcgInputError(f"{path}: not a rectangular CSV ({first}); fix the file")
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    names = [f"c{i}" for i in range(len(layout.names))]
    strings = pacsv.read_csv(
        str(path),
        read_options=pacsv.ReadOptions(column_names=names, skip_rows=int(layout.header)),
        parse_options=pacsv.ParseOptions(delimiter=layout.delimiter),
        convert_options=pacsv.ConvertOptions(
            column_types={f"c{i}": pa.string() for i in columns.values()},
            include_columns=[f"c{i}" for i in columns.values()],
        ),
    )
    for index in columns.values():
        column = strings.column(f"c{index}")
        numeric = pc.match_substring_regex(column, _NUMBER, ignore_case=True)
        numeric = pc.or_kleene(numeric, pc.equal(pc.utf8_trim_whitespace(column), ""))
        bad = np.flatnonzero(~numeric.to_numpy(zero_copy_only=False))
        if bad.size:
            row = int(bad[0])
            return EcgInputError(
                f"{path}: cell {column[row].as_py()!r} in row {row + 1} (line "
                f"{row + 1 + layout.header}), column {layout.names[index]!r} is not a number; "
                "fix the cell (plain numbers, '.' as decimal point, no units)"
            )
    return EcgInputError(f"{path}: {text.splitlines()[0]}; fix the file")


def fs_from_time(time, path) -> float:
    """Rate from a time column (NumPy or CuPy: only scalars come back to the host)."""
    if time.shape[0] < 2:
        raise EcgInputError(f"{path}: one sample only; a recording needs at least one beat")
    if not bool((time[1:] > time[:-1]).all()):
        time = time.get() if hasattr(time, "get") else time
        row = int(np.flatnonzero(np.diff(time) <= 0)[0]) + 2
        raise EcgInputError(
            f"{path}: time column does not increase at row {row}; sort the rows by time"
        )
    return float((time.shape[0] - 1) / (float(time[-1]) - float(time[0])))


def resolve_fs(given: float | None, from_file: float | None, path, source: str) -> float:
    """The sampling rate to use; a given rate must agree with the file's own."""
    if given is None and from_file is None:
        raise EcgInputError(
            f"{path}: missing sampling rate: the file has no time column; "
            "set fs (Hz) in the sample sheet"
        )
    if given is not None and from_file is not None:
        if abs(from_file / given - 1.0) > FS_TOLERANCE:
            raise EcgInputError(
                f"{path}: wrong sampling rate: fs = {given:g} Hz but the {source} gives "
                f"{from_file:.6g} Hz; correct fs in the sample sheet (or leave it empty)"
            )
        return float(given)
    fs = float(given if given is not None else from_file)
    check_fs(fs, str(path))
    return fs


def read_csv_recording(
    path: str | Path,
    fs: float | None = None,
    lead: str | int | None = None,
    time_column: str | int | None = "auto",
    xp: ModuleType = np,
    name: str | None = None,
) -> Recording:
    """One lead of a CSV: optional header, optional time column, any delimiter of , ; tab."""
    path = Path(path)
    layout = sniff_csv(path)
    time_index = None
    if time_column == "auto":
        folded = [n.lower() for n in layout.names]
        hits = [i for i, n in enumerate(folded) if layout.header and n in TIME_NAMES]
        time_index = hits[0] if hits else None
    elif time_column is not None:
        time_index = _column_index(layout.names, time_column, "time column", path)
    signal_columns = [i for i in range(len(layout.names)) if i != time_index]
    if not signal_columns:
        raise EcgInputError(f"{path}: only a time column; the file needs at least one lead column")
    if lead is None:
        lead_index = signal_columns[0]
    else:
        lead_index = _column_index(layout.names, lead, "lead", path)
        if lead_index == time_index:
            raise EcgInputError(f"{path}: lead {lead!r} is the time column; choose a signal column")
    columns = {"lead": lead_index} | ({"time": time_index} if time_index is not None else {})
    arrays, parser = _read_csv_arrays(path, layout, columns, xp)
    from_time = None
    if "time" in arrays:
        from_time = fs_from_time(arrays.pop("time"), path)
    rate = resolve_fs(fs, from_time, path, "time column")
    signal = arrays["lead"]
    log.info("%s: %d samples of lead %r at %g Hz (%s)", path, signal.shape[0],
             layout.names[lead_index], rate, parser)  # fmt: skip
    return Recording(
        name=name or path.stem,
        # host parsers: the one host-to-device copy (device parsers: already there)
        signal=xp.asarray(signal, dtype=xp.float32),
        fs=rate,
        lead=layout.names[lead_index],
        path=str(path),
        meta={"parser": parser, "header": layout.header},
    )


def _read_csv_arrays(path, layout: CsvLayout, columns: dict[str, int], xp) -> tuple[dict, str]:
    """The selected columns and the parser that read them: cuDF when importable, else
    our device parser on a GPU (pyarrow for files outside its grammar), else pyarrow."""
    import os

    if xp is not np:
        cudf = _cudf()
        if cudf is not None:
            return _read_with_cudf(cudf, path, layout, columns), "cuDF"
        if os.environ.get("WARPBIO_ECG_CSV_PARSER", "auto").lower() != "pyarrow":
            arrays = _read_on_device(path, layout, columns)
            if arrays is not None:
                return arrays, "device"
    return read_csv_columns(path, layout, columns), "pyarrow"


def _read_on_device(path, layout: CsvLayout, columns: dict[str, int]) -> dict | None:
    """Bytes to the GPU, cells converted there (:mod:`warpbio.ecg.csv_kernels`); None
    when a row is outside the parser's grammar (pyarrow then parses or reports it)."""
    from warpbio.ecg.csv_kernels import file_to_device, parse_rows

    offset = 0
    if layout.header:
        with open(path, "rb") as handle:
            offset = len(handle.readline())
    data = file_to_device(path, offset)
    lead, time, bad = parse_rows(data, len(layout.names), layout.delimiter, columns["lead"],
                                 columns.get("time", -1))  # fmt: skip
    del data
    if bad >= 0:
        log.info("%s: line %d is outside the device parser's grammar; parsing with pyarrow",
                 path, bad + 1 + layout.header)  # fmt: skip
        return None
    return {"lead": lead} | ({"time": time} if time is not None else {})


def _cudf():
    try:
        import cudf
    except Exception:  # cuDF is optional (RAPIDS env only)
        return None
    return cudf


def _read_with_cudf(cudf, path, layout: CsvLayout, columns: dict[str, int]) -> dict:
    """cuDF parses on the GPU; columns come out as CuPy arrays, already on the device."""
    names = [f"c{i}" for i in range(len(layout.names))]
    wanted = {f"c{index}": key for key, index in columns.items()}
    frame = cudf.read_csv(
        str(path),
        sep=layout.delimiter,
        header=None,
        names=names,
        skiprows=int(layout.header),
        usecols=list(wanted),
        dtype={name: "float64" if key == "time" else "float32" for name, key in wanted.items()},
    )
    arrays = {}
    for column_name, key in wanted.items():
        column = frame[column_name]
        if column.isna().any():  # unparsable cells become nulls: let pyarrow name the cell
            return read_csv_columns(path, layout, columns)
        arrays[key] = column.to_cupy()
    return arrays


# --------------------------------------------------------------------------
# WFDB
# --------------------------------------------------------------------------


def wfdb_record_path(path: str | Path) -> str:
    """Record path without suffix: ``data/100.hea`` and ``data/100`` both give ``data/100``."""
    text = str(path)
    for suffix in (".hea", ".dat"):
        if text.endswith(suffix):
            return text[: -len(suffix)]
    return text


def check_wfdb_files(path: str | Path) -> None:
    """The header exists and every signal file it names sits beside it."""
    import wfdb

    record = wfdb_record_path(path)
    header = Path(record + ".hea")
    if not header.is_file():
        raise EcgInputError(f"{header}: WFDB header not found; give the record's .hea path")
    try:
        info = wfdb.rdheader(record)
    except Exception as error:
        raise EcgInputError(
            f"{header}: not a readable WFDB header ({error}); fix the file"
        ) from None
    for file_name in sorted(set(info.file_name or [])):
        data = header.parent / file_name
        if not data.is_file():
            raise EcgInputError(
                f"{header}: the header names signal file {file_name}, which is missing; "
                f"put {file_name} beside the header"
            )


def read_wfdb_recording(
    path: str | Path,
    fs: float | None = None,
    lead: str | int | None = None,
    annotations: str | None = None,
    xp: ModuleType = np,
    name: str | None = None,
) -> Recording:
    """One lead of a WFDB record (``.hea`` + its ``.dat``), with its annotator if named."""
    import wfdb

    record = wfdb_record_path(path)
    check_wfdb_files(record)
    header = wfdb.rdheader(record)
    index = _column_index(list(header.sig_name), lead, "lead", record + ".hea")
    rate = resolve_fs(fs, float(header.fs), record + ".hea", "WFDB header")
    data = wfdb.rdrecord(record, channels=[index], physical=True)
    signal = np.asarray(data.p_signal[:, 0], dtype=np.float32)
    if not np.all(np.isfinite(signal)):
        bad = int(np.flatnonzero(~np.isfinite(signal))[0])
        raise EcgInputError(
            f"{record}.dat: lead {header.sig_name[index]!r} has a missing sample at {bad}; "
            "fill the gap before analysis"
        )
    notes = None
    if annotations:
        try:
            ann = wfdb.rdann(record, annotations)
        except FileNotFoundError:
            raise EcgInputError(
                f"{record}.{annotations}: annotation file not found; fix the annotations column"
            ) from None
        notes = Annotations(np.asarray(ann.sample, np.int64), np.asarray(ann.symbol)).beats_only()
    return Recording(
        name=name or Path(record).name,
        signal=xp.asarray(signal),
        fs=rate,
        lead=header.sig_name[index],
        path=record,
        annotations=notes,
        meta={"parser": "wfdb"},
    )


# --------------------------------------------------------------------------
# EDF / EDF+
# --------------------------------------------------------------------------


def read_edf_recording(
    path: str | Path,
    fs: float | None = None,
    lead: str | int | None = None,
    xp: ModuleType = np,
    name: str | None = None,
) -> Recording:
    """One signal of an EDF or EDF+ file, in physical units."""
    import pyedflib

    path = Path(path)
    try:
        reader = pyedflib.EdfReader(str(path))
    except OSError as error:
        raise EcgInputError(
            f"{path}: not a readable EDF/EDF+ file ({error}); fix the file"
        ) from None
    try:
        labels = [label.strip() for label in reader.getSignalLabels()]
        index = _column_index(labels, lead, "lead", path)
        rate = resolve_fs(fs, float(reader.getSampleFrequency(index)), path, "EDF header")
        signal = np.asarray(reader.readSignal(index), dtype=np.float32)
    finally:
        reader.close()
    return Recording(
        name=name or path.stem,
        signal=xp.asarray(signal),
        fs=rate,
        lead=labels[index],
        path=str(path),
        meta={"parser": "pyedflib"},
    )


# --------------------------------------------------------------------------
# Annotations and dispatch
# --------------------------------------------------------------------------


def read_annotation_table(path: str | Path, fs: float) -> Annotations:
    """Reference beats from a TSV with ``symbol`` and ``sample`` (or ``time_s``) columns."""
    import pandas as pd

    table = pd.read_csv(path, sep="\t")
    if "symbol" not in table.columns or not {"sample", "time_s"} & set(table.columns):
        raise EcgInputError(
            f"{path}: annotation table needs columns symbol and sample (or time_s); "
            f"it has {', '.join(map(str, table.columns))}"
        )
    samples = (
        table["sample"].to_numpy(np.int64)
        if "sample" in table.columns
        else np.rint(table["time_s"].to_numpy(float) * fs).astype(np.int64)
    )
    return Annotations(samples, table["symbol"].astype(str).to_numpy()).beats_only()


def read_recording(row: SheetRow, xp: ModuleType = np) -> Recording:
    """The recording of one sample-sheet row, on ``xp``'s device."""
    if row.format == "csv":
        recording = read_csv_recording(row.path, row.fs, row.lead, xp=xp, name=row.recording)
    elif row.format == "wfdb":
        recording = read_wfdb_recording(
            row.path, row.fs, row.lead, row.annotations, xp=xp, name=row.recording
        )
    elif row.format == "edf":
        recording = read_edf_recording(row.path, row.fs, row.lead, xp=xp, name=row.recording)
    else:  # read_sample_sheet already refused it
        raise EcgInputError(f"{row.path}: unknown format {row.format!r}; use one of {FORMATS}")
    if row.annotations and row.format != "wfdb":
        recording.annotations = read_annotation_table(row.annotations, recording.fs)
    return recording


def check_length(recording: Recording, beat_window_s: float) -> None:
    """A recording must hold at least one beat window."""
    if recording.duration_s < beat_window_s:
        raise EcgInputError(
            f"{recording.path}: recording is {recording.duration_s:.3g} s long "
            f"({recording.n_samples} samples at {recording.fs:g} Hz), shorter than one beat "
            f"window ({beat_window_s:g} s); give a longer recording"
        )


def sheet_rows_from_config(rows: Sequence[dict]) -> list[SheetRow]:
    return [SheetRow(**row) for row in rows]
