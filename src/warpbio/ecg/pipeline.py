"""ECG workflow steps (Snakemake) and the zero-copy end-to-end pipeline.

Rules: ``segment_step`` (parse -> filter -> R peaks -> beats, one recording,
data on the device throughout), ``train_step`` (VAE on the pooled beats of all
recordings), ``score_step`` (per-beat scores, 2-D latent, AUROC) and
``plots_step``. :func:`run_pipeline` chains the same functions in one process
for the benchmark: after parsing, nothing returns to the host until the
scores exist (checked with :mod:`warpbio.ecg.transfers`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

from warpbio.ecg.beats import Beats, BeatSettings, beat_labels, embed_beats
from warpbio.ecg.filter import FilterSettings, filter_ecg
from warpbio.ecg.io import (
    NORMAL_SYMBOLS,
    EcgInputError,
    Recording,
    SheetRow,
    check_length,
    read_recording,
)
from warpbio.ecg.peaks import Peaks, PeakSettings, detection_scores, find_peaks
from warpbio.ecg.vae import VaeSettings, auroc, latent_2d, score_beats, train_vae
from warpbio.io import atomic_write

log = logging.getLogger(__name__)

EXCERPT_S = 10.0
MIN_BEATS = 8  # fewer cannot be split 75/25 into a training and a held-out set


@dataclass
class Settings:
    """Every tunable of the ECG stages (the ``ecg`` config section minus I/O)."""

    filter: FilterSettings = field(default_factory=FilterSettings)
    peaks: PeakSettings = field(default_factory=PeakSettings)
    beats: BeatSettings = field(default_factory=BeatSettings)
    vae: VaeSettings = field(default_factory=VaeSettings)
    label_tolerance_s: float = 0.15

    @classmethod
    def from_config(cls, section: dict) -> Settings:
        return cls(
            filter=FilterSettings(**section.get("filter", {})),
            peaks=PeakSettings(**section.get("peaks", {})),
            beats=BeatSettings(**section.get("beats", {})),
            vae=VaeSettings.from_config(section.get("vae", {})),
            label_tolerance_s=float(section.get("label_tolerance_s", 0.15)),
        )


def anomaly_flags(symbols) -> np.ndarray:
    """1 for an abnormal reference beat, 0 for a normal one, -1 where there is none."""
    symbols = np.asarray(symbols, dtype=object)
    flags = np.where(np.isin(symbols, list(NORMAL_SYMBOLS)), 0, 1)
    return np.where((symbols == "") | pd.isna(symbols), -1, flags).astype(np.int8)


# --------------------------------------------------------------------------
# Segmentation of one recording: parse -> filter -> peaks -> beats
# --------------------------------------------------------------------------


@dataclass
class Segmented:
    recording: Recording
    peaks: Peaks
    beats: Beats


def segment(recording: Recording, settings: Settings, xp: ModuleType, workers: int = 1):
    """Filter, R peaks and beat vectors of a recording on its device (no host copies)."""
    check_length(recording, settings.beats.window_s)
    filtered = filter_ecg(recording.signal, recording.fs, xp, settings.filter, workers)
    peaks = find_peaks(filtered.response, recording.fs, xp, settings.peaks, filtered.filtered)
    beats = embed_beats(peaks, xp, settings.beats)
    return Segmented(recording, peaks, beats)


def beat_table(segmented: Segmented, settings: Settings) -> tuple[np.ndarray, pd.DataFrame]:
    """Host copies of one recording's beats and their table (sample, time, RR, label)."""
    vectors, columns = segmented.beats.to_host()
    recording = segmented.recording
    if vectors.shape[0] == 0:
        raise EcgInputError(
            f"{recording.path}: no complete beat found in lead {recording.lead!r} "
            f"({recording.duration_s:.1f} s); check the lead, the sampling rate and the "
            "ecg.filter/ecg.peaks settings"
        )
    symbols = beat_labels(
        columns["sample"], recording.annotations, recording.fs, settings.label_tolerance_s
    )
    table = pd.DataFrame(
        {
            "recording": recording.name,
            "beat": np.arange(vectors.shape[0]),
            "sample": columns["sample"],
            "time_s": np.round(columns["time_s"], 6),
            "rr_previous_s": np.round(columns["rr_previous_s"], 6),
            "rr_next_s": np.round(columns["rr_next_s"], 6),
            "symbol": symbols,
        }
    )
    return vectors, table


def signal_excerpt(segmented: Segmented, table: pd.DataFrame) -> dict:
    """A 10 s stretch for the report, centred on the first labelled anomaly if any."""
    recording = segmented.recording
    fs = recording.fs
    length = min(int(EXCERPT_S * fs), recording.n_samples)
    flagged = table["sample"].to_numpy()[anomaly_flags(table["symbol"]) == 1]
    centre = int(flagged[0]) if flagged.size else length // 2
    start = int(np.clip(centre - length // 2, 0, recording.n_samples - length))
    window = slice(start, start + length)
    from warpbio.ecg.peaks import host

    peaks = segmented.peaks.to_host()
    inside = (peaks >= start) & (peaks < start + length)
    labels = beat_labels(peaks[inside], recording.annotations, fs, 0.15)
    return {
        "recording": recording.name,
        "lead": recording.lead,
        "fs": fs,
        "start": start,
        "raw": host(recording.signal[window]),
        "filtered": host(segmented.peaks.filtered[window]),
        "peaks": peaks[inside],
        "anomaly": anomaly_flags(labels),
    }


def write_tsv(frame: pd.DataFrame, path) -> None:
    """Tab-separated, missing values as NA, in the bytes Arrow's CSV writer gives.

    Arrow's compute functions format the cells and join them into lines (9x pandas'
    writer on a day of beats), with no need for the CSV writer's ``null_string``
    (missing from older Arrows, the GPU image's among them). Pandas' writer where
    Arrow cannot take a column (mixed-type object columns) or a cell needs quotes.
    """
    import pyarrow as pa

    with atomic_write(path) as tmp, open(tmp, "wb") as handle:
        handle.write(("\t".join(map(str, frame.columns)) + "\n").encode())
        try:
            lines = _tsv_lines(pa.Table.from_pandas(frame, preserve_index=False))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            lines = None
        if lines is None:
            frame.to_csv(handle, sep="\t", index=False, header=False, na_rep="NA")
        else:
            handle.write(lines)


def _tsv_lines(table) -> memoryview | None:
    """Every row of ``table`` as ``cell\\tcell...\\n`` (None where a cell needs quotes)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if table.num_rows == 0:
        return memoryview(b"")
    text = pa.large_string()
    cells = []
    for column in table.columns:
        column = pc.cast(column, text)  # NaN and pd.NA are nulls here
        if pc.any(pc.match_substring_regex(column, "[\t\n\r\"]")).as_py():
            return None
        cells.append(pc.fill_null(column, "NA"))
    joined = pc.binary_join_element_wise(*cells, pa.scalar("\t", text))
    lines = pc.binary_join_element_wise(joined, pa.scalar("", text), pa.scalar("\n", text))
    lines = lines.combine_chunks() if isinstance(lines, pa.ChunkedArray) else lines
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)
    first, last = offsets[lines.offset], offsets[lines.offset + len(lines)]
    return memoryview(lines.buffers()[2])[first:last]


def write_json(payload: dict, path) -> None:
    with atomic_write(path) as tmp:
        Path(tmp).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def write_npy(array: np.ndarray, path) -> None:
    with atomic_write(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array)


def write_segmentation(segmented: Segmented, settings: Settings, paths: dict, beats=None) -> dict:
    """Peak table, beats, beat table and excerpt of one recording; returns its summary.

    ``beats``: the (vectors, table) of :func:`beat_table` when already on the host.
    """
    recording = segmented.recording
    peaks = segmented.peaks.to_host()
    vectors, table = beats if beats is not None else beat_table(segmented, settings)
    write_tsv(pd.DataFrame({"sample": peaks, "time_s": np.round(peaks / recording.fs, 6)}),
              paths["peaks"])  # fmt: skip
    write_npy(vectors, paths["beats"])
    write_tsv(table, paths["table"])
    excerpt = signal_excerpt(segmented, table)
    with atomic_write(paths["excerpt"]) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **{k: np.asarray(v) for k, v in excerpt.items()})
    summary = {
        "recording": recording.name,
        "lead": recording.lead,
        "fs": recording.fs,
        "n_samples": recording.n_samples,
        "r_peaks": int(peaks.size),
        "beats": int(vectors.shape[0]),
        "parser": recording.meta.get("parser"),
    }
    if recording.annotations is not None:
        summary["detection"] = detection_scores(
            recording.annotations.samples, peaks, recording.fs, settings.label_tolerance_s
        )
        log.info("R peaks vs reference beats: %s", summary["detection"])
    return summary


def segment_step(ctx) -> dict:
    """Snakemake step: one sample-sheet row -> peaks, beats, beat table, excerpt."""
    settings = Settings.from_config(ctx.params.settings)
    row = SheetRow(**ctx.params.recording)
    recording = read_recording(row, ctx.xp)
    segmented = segment(recording, settings, ctx.xp, workers=ctx.threads)
    summary = write_segmentation(segmented, settings, dict(ctx.output.items()))
    log.info("segmented %s", summary)
    return {"summary": summary}


# --------------------------------------------------------------------------
# Training and scoring on the pooled beats
# --------------------------------------------------------------------------


def read_pooled(beat_files, table_files) -> tuple[np.ndarray, pd.DataFrame]:
    vectors = np.concatenate([np.load(path) for path in beat_files])
    table = pd.concat(
        [pd.read_csv(path, sep="\t", keep_default_na=False, dtype={"symbol": str})
         for path in table_files], ignore_index=True,
    )  # fmt: skip
    return vectors, table


def _device_name(xp: ModuleType) -> str:
    return "cpu" if xp is np else "cuda"


def check_beat_count(n_beats: int) -> None:
    if n_beats < MIN_BEATS:
        raise EcgInputError(
            f"only {n_beats} beats in all recordings; the VAE needs at least {MIN_BEATS} "
            "(75% to train on, 25% to score); give longer recordings"
        )


def train_step(ctx) -> dict:
    """Snakemake step: pooled beats -> VAE weights, their config JSON and the split."""
    from warpbio.ecg.vae import save_model

    settings = VaeSettings.from_config(ctx.params.vae)
    vectors, table = read_pooled(ctx.input.beats, ctx.input.tables)
    check_beat_count(vectors.shape[0])
    xp = ctx.xp
    beats = xp.asarray(vectors)  # one host-to-device copy on the GPU
    trained = train_vae(beats, xp.ones(beats.shape[0], dtype=bool), settings, int(ctx.seed),
                        ctx.threads)  # fmt: skip
    with atomic_write(ctx.output.model) as tmp:
        save_model(trained, tmp)
    config = trained.config() | {"seed": int(ctx.seed), "backend": ctx.backend}
    write_json(config, ctx.output.config)
    train = trained.train.detach().cpu().numpy()
    split = table[["recording", "beat"]].assign(split=np.where(train, "train", "held_out"))
    write_tsv(split, ctx.output.split)
    log.info("VAE trained on %d beats in %.1f s", config["n_train"], trained.seconds)
    training = {k: config[k] for k in ("n_train", "n_held_out")}
    return {"training": training | {"train_seconds": round(trained.seconds, 3)}}


def score_table(table, split, scores, latent) -> pd.DataFrame:
    frame = table.copy()
    frame["split"] = split
    frame["anomaly"] = pd.array(anomaly_flags(frame["symbol"]), dtype="Int8")
    frame.loc[frame["anomaly"] == -1, "anomaly"] = pd.NA
    frame["score"] = scores
    frame["z1"], frame["z2"] = latent[:, 0], latent[:, 1]
    return frame


def auroc_summary(frame: pd.DataFrame, score_name: str) -> dict:
    """AUROC of the scores on held-out (and all) labelled beats; null without labels."""
    summary: dict[str, Any] = {"score": score_name}
    for name, rows in (("held_out", frame["split"] == "held_out"), ("all", frame.index >= 0)):
        labelled = rows & frame["anomaly"].notna()
        anomalous = frame.loc[labelled, "anomaly"].astype(int).to_numpy() == 1
        value = auroc(frame.loc[labelled, "score"].to_numpy(), anomalous)
        summary[name] = {
            "auroc": None if np.isnan(value) else round(value, 6),
            "beats": int(labelled.sum()),
            "anomalies": int(anomalous.sum()),
        }
    return summary


def score_step(ctx) -> dict:
    """Snakemake step: VAE + beats -> per-beat scores TSV and AUROC JSON."""
    from warpbio.ecg.vae import as_tensor, load_model

    xp = ctx.xp
    model, settings = load_model(ctx.input.model, _device_name(xp))
    vectors, table = read_pooled(ctx.input.beats, ctx.input.tables)
    split = pd.read_csv(ctx.input.split, sep="\t")
    if len(split) != len(table) or not (split["beat"].to_numpy() == table["beat"]).all():
        raise EcgInputError(f"{ctx.input.split}: split does not match the beats; rerun training")
    scores, latent = score_beats(model, xp.asarray(vectors), settings)
    held_out = as_tensor(xp.asarray((split["split"] == "held_out").to_numpy(np.uint8))).bool()
    latent = latent_2d(latent, held_out.to(latent.device))
    frame = score_table(table, split["split"].to_numpy(), scores.cpu().numpy(),
                        latent.cpu().numpy())  # fmt: skip
    write_tsv(frame, ctx.output.scores)
    summary = auroc_summary(frame, settings.score)
    write_json(summary, ctx.output.auroc)
    log.info("anomaly-score AUROC: %s", summary)
    return {"auroc": summary}


def plots_step(ctx) -> None:
    """Snakemake step: the four report figures (side by side with 2+ threads)."""
    frame = pd.read_csv(ctx.input.scores, sep="\t", keep_default_na=True)
    vectors = np.concatenate([np.load(path) for path in ctx.input.beats])
    excerpts = [dict(np.load(path, allow_pickle=False)) for path in ctx.input.excerpts]
    auroc_value = json.loads(Path(ctx.input.auroc).read_text())["held_out"]["auroc"]
    window = (ctx.params.beats.get("before_s", 0.25), ctx.params.beats.get("after_s", 0.45))
    jobs = plot_jobs(frame, vectors, excerpts, auroc_value, window, dict(ctx.output.items()))
    workers = plot_workers(ctx.threads)
    try:
        draw(jobs, workers)
    finally:
        if workers is not None:
            workers.close()


def plot_workers(threads: int):
    """Plotting processes for ``threads`` cores (one per figure, at most 4), or None
    for one core (then the figures are drawn in this process)."""
    from warpbio.ecg.plots import PlotWorkers

    workers = min(int(threads), 4)
    return PlotWorkers(workers) if workers >= 2 else None


def plot_jobs(frame, vectors, excerpts, auroc_value, window, paths: dict) -> list[tuple]:
    """The four figures as (function, *arguments) jobs, their arguments small."""
    from warpbio.ecg import plots

    anomaly = frame["anomaly"].fillna(-1).astype(int).to_numpy()
    scores = frame["score"].to_numpy()
    held = (frame["split"] == "held_out").to_numpy()
    for excerpt in excerpts:
        for key in ("recording", "lead"):
            excerpt[key] = str(excerpt[key])
        excerpt["fs"] = float(excerpt["fs"])
        excerpt["start"] = int(excerpt["start"])
    latent = frame[["z1", "z2"]].to_numpy()[held]
    return [
        (plots.plot_signal, excerpts, paths["signal"]),
        (plots.plot_beats, plots.beat_overlay_groups(vectors, anomaly, scores), paths["beats"],
         window),
        (plots.plot_latent, latent, scores[held], anomaly[held], paths["latent"]),
        (plots.plot_scores, scores[held], anomaly[held], paths["scores"], auroc_value),
    ]  # fmt: skip


def draw(jobs: list[tuple], workers=None) -> list[float]:
    """Draw the jobs here, or through ``workers`` (waits for all of them); returns
    each figure's drawing seconds (none when the workers fell back to this process)."""
    from warpbio.ecg.plots import draw_here, wait_all

    if workers is None:
        return draw_here(jobs)
    return wait_all(workers.draw(jobs))


# --------------------------------------------------------------------------
# End to end in one process (benchmark, zero-copy test)
# --------------------------------------------------------------------------


def _synchronize(xp: ModuleType) -> None:
    if xp is not np:
        xp.cuda.get_current_stream().synchronize()


@dataclass
class PipelineResult:
    seconds: dict[str, float]
    frame: pd.DataFrame
    auroc: dict
    samples: int
    transfers: Any = None  # TransferCount of the device stages (GPU with count_transfers)
    peaks: dict[str, np.ndarray] = field(default_factory=dict)
    figures: dict[str, float] = field(default_factory=dict)  # drawing seconds of each


def run_pipeline(
    rows: list[SheetRow],
    settings: Settings,
    xp: ModuleType,
    seed: int,
    out_dir: str | Path | None = None,
    threads: int = 1,
    count_transfers: bool = False,
    plots: bool = True,
) -> PipelineResult:
    """Parse -> filter -> peaks -> beats -> VAE -> scores (-> files, plots), timed.

    With ``count_transfers`` (GPU only) every stage after parsing runs under the
    CUDA profiler and ``result.transfers.device_to_host`` counts the copies.
    """
    from contextlib import nullcontext

    from warpbio.ecg.transfers import count_device_to_host

    seconds: dict[str, float] = {}
    figures: dict[str, float] = {}

    def clock(name, started):
        _synchronize(xp)
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started

    begin = time.perf_counter()
    # plotting processes start now, in the background, to be warm by the end
    workers = plot_workers(threads) if plots and out_dir is not None else None
    with workers if workers is not None else nullcontext():
        recordings = []
        for row in rows:
            started = time.perf_counter()
            recordings.append(read_recording(row, xp))
            clock("parse", started)
        counter = count_device_to_host() if count_transfers and xp is not np else nullcontext()
        with counter as transfers:
            segmented = []
            for recording in recordings:
                check_length(recording, settings.beats.window_s)
                started = time.perf_counter()
                filtered = filter_ecg(recording.signal, recording.fs, xp, settings.filter, threads)
                clock("filter", started)
                started = time.perf_counter()
                peaks = find_peaks(filtered.response, recording.fs, xp, settings.peaks,
                                   filtered.filtered)  # fmt: skip
                clock("peaks", started)
                started = time.perf_counter()
                beats = embed_beats(peaks, xp, settings.beats)
                segmented.append(Segmented(recording, peaks, beats))
                clock("beats", started)
            started = time.perf_counter()
            vectors = xp.concatenate([s.beats.vectors for s in segmented])
            valid = xp.concatenate([s.beats.valid for s in segmented])
            trained = train_vae(vectors, valid, settings.vae, seed, threads)
            clock("train", started)
            started = time.perf_counter()
            scores, latent = score_beats(trained.model, vectors, settings.vae)
            latent = latent_2d(latent, trained.held_out)
            clock("score", started)
        started = time.perf_counter()
        valid_host = valid.get() if hasattr(valid, "get") else valid
        tables, beat_vectors = [], []
        for item in segmented:
            part, table = beat_table(item, settings)
            beat_vectors.append(part)
            tables.append(table)
        table = pd.concat(tables, ignore_index=True)
        held_out = trained.held_out.cpu().numpy()[valid_host]
        split = np.where(held_out, "held_out", "train")
        frame = score_table(table, split, scores.cpu().numpy()[valid_host],
                            latent.cpu().numpy()[valid_host])  # fmt: skip
        summary = auroc_summary(frame, settings.vae.score)
        clock("results to host", started)
        if out_dir is not None:
            out = Path(out_dir)
            pending = None
            if plots:  # figures first: they draw in their processes during the writes
                started = time.perf_counter()
                excerpts = [signal_excerpt(item, t) for item, t in zip(segmented, tables,
                                                                       strict=True)]  # fmt: skip
                paths = {name: out / f"plots/{name}.png" for name in
                         ("signal", "beats", "latent", "scores")}  # fmt: skip
                window = (settings.beats.before_s, settings.beats.after_s)
                jobs = plot_jobs(frame, np.concatenate(beat_vectors), excerpts,
                                 summary["held_out"]["auroc"], window, paths)  # fmt: skip
                pending = workers.draw(jobs) if workers is not None else None
                clock("plots", started)
            started = time.perf_counter()
            for item, part, table_part in zip(segmented, beat_vectors, tables, strict=True):
                name = item.recording.name
                kinds = (("peaks", "tsv"), ("beats", "npy"), ("table", "tsv"), ("excerpt", "npz"))
                paths = {key: out / f"{key}/{name}.{ext}" for key, ext in kinds}
                write_segmentation(item, settings, paths, (part, table_part))
            write_tsv(frame, out / "scores/beats.tsv")
            write_json(summary, out / "scores/auroc.json")
            clock("write", started)
            if plots:  # what the figures take beyond the writes
                from warpbio.ecg.plots import wait_all

                started = time.perf_counter()
                drawn = draw(jobs) if pending is None else wait_all(pending)
                clock("plots", started)
                figures = {job[0].__name__: t for job, t in zip(jobs, drawn, strict=False)}
        result = PipelineResult(
            seconds=seconds,
            frame=frame,
            auroc=summary,
            samples=sum(r.n_samples for r in recordings),
            transfers=transfers if count_transfers and xp is not np else None,
            peaks={item.recording.name: item.peaks.to_host() for item in segmented},
            figures=figures,
        )
    seconds["end to end"] = time.perf_counter() - begin  # the plotting processes' exit too
    return result


def settings_record(settings: Settings) -> dict:
    return asdict(settings)
