"""Report figures: signal with R peaks, beat overlays, latent space, scores and ROC."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from warpbio.io import atomic_write

NORMAL_COLOUR, ANOMALY_COLOUR, UNKNOWN_COLOUR = "#4c72b0", "#c44e52", "#999999"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _margins(fig, left=0.8, right=0.2, bottom=0.6, top=0.4, wgap=0.5, hgap=0.9) -> None:
    """Fixed margins and gaps between panels, in inches. tight_layout() would measure
    every label in an extra layout pass (about a third of a figure's time)."""
    width, height = fig.get_size_inches()
    rows, cols = fig.axes[0].get_subplotspec().get_gridspec().get_geometry()
    panel_width = (width - left - right - (cols - 1) * wgap) / cols
    panel_height = (height - top - bottom - (rows - 1) * hgap) / rows
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height,
                        top=1 - top / height, wspace=wgap / panel_width,
                        hspace=hgap / panel_height)  # fmt: skip


def _save(fig, path) -> None:
    plt = _pyplot()
    with atomic_write(path) as tmp:
        # light zlib compression: files ~20% larger, encoding several times faster
        fig.savefig(tmp, dpi=110, format="png", pil_kwargs={"compress_level": 1})
    plt.close(fig)


def plot_signal(excerpts: list[dict], path: str | Path) -> None:
    """Per recording: raw and band-passed excerpt, detected R peaks marked by label."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(excerpts), 1, figsize=(12, 2.8 * len(excerpts)), squeeze=False)
    for axis, excerpt in zip(axes[:, 0], excerpts, strict=True):
        time = excerpt["start"] / excerpt["fs"] + np.arange(excerpt["raw"].size) / excerpt["fs"]
        axis.plot(time, excerpt["raw"], color="#bbbbbb", lw=0.8, label="raw")
        axis.plot(time, excerpt["filtered"], color="black", lw=0.8, label="band-passed")
        peaks = excerpt["peaks"] - excerpt["start"]
        anomalous = excerpt["anomaly"] == 1
        for mask, colour, name in (
            (~anomalous, NORMAL_COLOUR, "R peak"),
            (anomalous, ANOMALY_COLOUR, "R peak (labelled anomaly)"),
        ):
            if mask.any():
                axis.plot(time[peaks[mask]], excerpt["filtered"][peaks[mask]], "v",
                          color=colour, ms=7, label=name)  # fmt: skip
        axis.set(title=f"{excerpt['recording']} (lead {excerpt['lead']})", xlabel="time (s)",
                 ylabel="mV")  # fmt: skip
        axis.legend(loc="upper right", fontsize=8, ncol=4)
    _margins(fig, top=0.35, hgap=0.75)
    _save(fig, path)


def beat_overlay_groups(
    beats: np.ndarray, anomaly: np.ndarray, scores: np.ndarray, limit: int = 200
) -> list[dict]:
    """The overlay's two groups (normal; labelled anomalies, else the top-scored 2%):
    up to ``limit`` beats drawn at random, the mean of all and the count. Picked here,
    so a plotting process gets kilobytes instead of the beat matrix."""
    rng = np.random.default_rng(0)
    labelled = np.any(anomaly >= 0)
    flagged = anomaly == 1 if labelled else scores >= np.quantile(scores, 0.98)
    groups = []
    for mask, colour, title in (
        (~flagged & (anomaly != -1) if labelled else ~flagged, NORMAL_COLOUR, "normal"),
        (flagged, ANOMALY_COLOUR, "labelled anomalies" if labelled else "top 2% scores"),
    ):
        rows = np.flatnonzero(mask)
        shown = rng.choice(rows, size=min(rows.size, limit), replace=False) if rows.size else rows
        mean = beats[rows].mean(0) if rows.size else None
        groups.append({"shown": beats[shown], "mean": mean, "count": int(rows.size),
                       "colour": colour, "title": title})  # fmt: skip
    return groups


def plot_beats(groups: list[dict], path, fs_window) -> None:
    """Overlay of the groups of :func:`beat_overlay_groups`, side by side."""
    plt = _pyplot()
    from matplotlib.collections import LineCollection

    length = groups[0]["shown"].shape[1]
    time = np.linspace(-fs_window[0], fs_window[1], length, endpoint=False)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for axis, group in zip(axes, groups, strict=True):
        shown = group["shown"]
        # one LineCollection instead of a Line2D per beat: 4x faster to draw
        lines = np.stack([np.broadcast_to(time, shown.shape), shown], -1)
        axis.add_collection(LineCollection(lines, colors=group["colour"], alpha=0.08,
                                           linewidths=0.8))  # fmt: skip
        axis.autoscale_view()
        if group["mean"] is not None:
            axis.plot(time, group["mean"], color="black", lw=1.5, label="mean")
            axis.legend(loc="upper right")
        axis.set(title=f"{group['title']} ({group['count']:,} beats)",
                 xlabel="time from R peak (s)")  # fmt: skip
    axes[0].set_ylabel("normalized amplitude")
    _margins(fig, wgap=0.25)
    _save(fig, path)


SCORE_LEVELS = 64  # colour levels of the latent plot's score panel
MARKER_SIZE = 2.5  # points; about the area of scatter(s=6)


def plot_latent(latent: np.ndarray, scores: np.ndarray, anomaly: np.ndarray, path) -> None:
    """Held-out beats in the 2-D latent space, coloured by score and by label.

    Points are drawn as markers of one colour per call (Agg stamps one rasterized
    marker), not as a scatter with a colour per point, which draws ~5x slower; the
    score panel quantizes the colour map to ``SCORE_LEVELS`` log-spaced levels,
    drawn lowest first so the highest scores lie on top."""
    plt = _pyplot()
    labelled = np.any(anomaly >= 0)
    fig, axes = plt.subplots(1, 2 if labelled else 1, figsize=(12 if labelled else 6, 5),
                             squeeze=False)  # fmt: skip
    norm = _log_norm(scores)
    _score_levels(axes[0, 0], latent, scores, norm)
    mappable = plt.cm.ScalarMappable(norm=norm, cmap=plt.get_cmap("viridis", SCORE_LEVELS))
    fig.colorbar(mappable, ax=axes[0, 0], label="anomaly score")
    axes[0, 0].set(title="latent space by anomaly score", xlabel="z1", ylabel="z2")
    if labelled:
        for value, colour, name in ((-1, UNKNOWN_COLOUR, "unlabelled"), (0, NORMAL_COLOUR,
                                    "normal"), (1, ANOMALY_COLOUR, "anomaly")):  # fmt: skip
            mask = anomaly == value
            if mask.any():
                axes[0, 1].plot(latent[mask, 0], latent[mask, 1], "o", ms=MARKER_SIZE, ls="none",
                                color=colour, label=f"{name} ({mask.sum():,})")  # fmt: skip
        # a fixed corner: "best" tests every point against each candidate place
        axes[0, 1].legend(loc="upper right", markerscale=2)
        axes[0, 1].set(title="latent space by reference label", xlabel="z1", ylabel="z2")
    _margins(fig, wgap=0.9)
    _save(fig, path)


def _score_levels(axis, latent: np.ndarray, scores: np.ndarray, norm) -> None:
    plt = _pyplot()
    colours = plt.get_cmap("viridis", SCORE_LEVELS)
    if norm is None:  # no positive score: one colour
        levels = np.zeros(scores.size, dtype=int)
    else:
        scaled = np.ma.filled(norm(np.clip(scores, norm.vmin, norm.vmax)), 0.0)
        levels = np.minimum((scaled * SCORE_LEVELS).astype(int), SCORE_LEVELS - 1)
    for level in np.unique(levels):
        mask = levels == level
        axis.plot(latent[mask, 0], latent[mask, 1], "o", ms=MARKER_SIZE, color=colours(level),
                  ls="none")  # fmt: skip


def _log_norm(scores: np.ndarray):
    from matplotlib.colors import LogNorm

    positive = scores[scores > 0]
    if positive.size == 0:
        return None
    return LogNorm(vmin=max(np.quantile(positive, 0.01), 1e-12), vmax=positive.max())


def roc_curve(scores: np.ndarray, positive: np.ndarray):
    """False- and true-positive rates over all thresholds (highest score first)."""
    order = np.argsort(-scores, kind="stable")
    hits = positive[order].astype(np.float64)
    tpr = np.concatenate([[0.0], np.cumsum(hits) / max(hits.sum(), 1.0)])
    fpr = np.concatenate([[0.0], np.cumsum(1.0 - hits) / max((1.0 - hits).sum(), 1.0)])
    return fpr, tpr


def plot_scores(scores: np.ndarray, anomaly: np.ndarray, path, auroc: float | None) -> None:
    """Score histogram (by label when labels exist) and the ROC curve."""
    plt = _pyplot()
    labelled = np.any(anomaly == 1) and np.any(anomaly == 0)
    fig, axes = plt.subplots(1, 2 if labelled else 1, figsize=(12 if labelled else 6, 4),
                             squeeze=False)  # fmt: skip
    bins = np.logspace(np.log10(max(scores[scores > 0].min(), 1e-9)), np.log10(scores.max()), 60)
    if labelled:
        for value, colour, name in ((0, NORMAL_COLOUR, "normal"), (1, ANOMALY_COLOUR, "anomaly")):
            # one filled step outline per class instead of 60 bar patches
            axes[0, 0].hist(scores[anomaly == value], bins=bins, color=colour, alpha=0.7,
                            label=name, histtype="stepfilled")  # fmt: skip
        axes[0, 0].legend()
        fpr, tpr = roc_curve(scores[anomaly >= 0], anomaly[anomaly >= 0] == 1)
        axes[0, 1].plot(fpr, tpr, color=ANOMALY_COLOUR, lw=2)
        axes[0, 1].plot([0, 1], [0, 1], color="#999999", ls="--")
        axes[0, 1].set(title=f"ROC on held-out beats (AUROC {auroc:.4f})",
                       xlabel="false-positive rate", ylabel="true-positive rate")  # fmt: skip
    else:
        axes[0, 0].hist(scores, bins=bins, color=NORMAL_COLOUR, histtype="stepfilled")
    axes[0, 0].set(xscale="log", yscale="log", title="anomaly scores of held-out beats",
                   xlabel="score", ylabel="beats")  # fmt: skip
    _margins(fig, wgap=0.8)
    _save(fig, path)


# --------------------------------------------------------------------------
# Drawing the figures side by side
# --------------------------------------------------------------------------


class PlotWorkers:
    """Processes that draw the report figures side by side.

    Matplotlib holds the GIL while it draws, so threads would take turns; separate
    processes do not. Each is a fresh ``python -m warpbio.ecg._plot_server`` (no CUDA
    context or library threads inherited, and, unlike multiprocessing's spawn or
    forkserver, no re-run of the calling script), which imports pyplot once and then
    draws (function, *args) jobs sent as pickles over its stdin. They are started
    from a background thread while the earlier stages run, so the start costs the
    pipeline nothing.
    """

    def __init__(self, workers: int) -> None:
        import queue
        import threading

        self.workers = workers
        self.idle: queue.Queue = queue.Queue()
        self.servers: list = []
        self.threads = None
        self._error: BaseException | None = None
        self._starting = threading.Thread(target=self._start, daemon=True)
        self._starting.start()

    def _start(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        try:
            for _ in range(self.workers):
                self.servers.append(_start_server())
            for server in self.servers:
                _expect_ready(server)
                self.idle.put(server)
            self.threads = ThreadPoolExecutor(self.workers, thread_name_prefix="plots")
        except BaseException as error:  # reported (and drawn in process) by draw()
            self._error = error
            self._stop_servers()

    def draw(self, jobs: list[tuple]) -> list:
        """Submit (function, *args) jobs; returns their futures, each giving the seconds
        its figure took to draw (or runs them here when the processes could not start)."""
        self._starting.join()
        if self.threads is None:
            import logging

            logging.getLogger(__name__).warning(
                "plotting processes unavailable (%s); drawing in this process", self._error
            )
            draw_here(jobs)
            return []
        return [self.threads.submit(self._run, job) for job in jobs]

    def _run(self, job: tuple) -> float:
        server = self.idle.get()
        try:
            return _request(server, job)
        finally:
            self.idle.put(server)

    def _stop_servers(self) -> None:
        for server in self.servers:
            with contextlib.suppress(OSError):
                server.stdin.close()  # end of input: the server exits
        for server in self.servers:
            try:
                server.wait(timeout=30)
            except Exception:
                server.kill()
        self.servers = []

    def close(self) -> None:
        self._starting.join()
        if self.threads is not None:
            self.threads.shutdown(wait=True)
        self._stop_servers()

    def __enter__(self) -> PlotWorkers:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _start_server():
    import os
    import subprocess
    import sys

    import warpbio

    package_root = str(Path(warpbio.__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    env["MPLBACKEND"] = "Agg"
    return subprocess.Popen(
        [sys.executable, "-m", "warpbio.ecg._plot_server"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
    )  # fmt: skip


def _expect_ready(server) -> None:
    status, detail = _receive(server)
    if status != "ready":
        raise RuntimeError(f"plotting process did not start: {detail}")


def _request(server, job: tuple) -> float:
    """Send one job to a server and wait for it; returns the seconds it took to draw,
    or raises its failure here."""
    import pickle

    payload = pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
    server.stdin.write(len(payload).to_bytes(8, "little") + payload)
    server.stdin.flush()
    status, detail = _receive(server)
    if status != "done":
        name = getattr(job[0], "__name__", job[0])
        raise RuntimeError(f"figure {name} failed in its plotting process:\n{detail}")
    return detail


def _receive(server) -> tuple:
    import pickle

    header = server.stdout.read(8)
    if len(header) < 8:
        return "died", f"the plotting process exited (code {server.poll()})"
    return pickle.loads(server.stdout.read(int.from_bytes(header, "little")))


def draw_here(jobs: list[tuple]) -> list[float]:
    """Draw (function, *args) jobs one after another in this process; returns the
    seconds of each."""
    import time

    seconds = []
    for function, *args in jobs:
        started = time.perf_counter()
        function(*args)
        seconds.append(time.perf_counter() - started)
    return seconds


def wait_all(futures: list) -> list[float]:
    """Wait for every figure and return their drawing seconds; the first failure is
    raised (after all have finished)."""
    errors = [future.exception() for future in futures]
    for error in errors:
        if error is not None:
            raise error
    return [future.result() for future in futures]
