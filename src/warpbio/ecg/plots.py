"""Report figures: signal with R peaks, beat overlays, latent space, scores and ROC."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from warpbio.io import atomic_write

NORMAL_COLOUR, ANOMALY_COLOUR, UNKNOWN_COLOUR = "#4c72b0", "#c44e52", "#999999"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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
    fig.tight_layout()
    _save(fig, path)


def plot_beats(beats: np.ndarray, anomaly: np.ndarray, scores: np.ndarray, path, fs_window):
    """Overlay of normal and anomalous beats (labelled, else the top-scored 2%)."""
    plt = _pyplot()
    from matplotlib.collections import LineCollection

    rng = np.random.default_rng(0)
    labelled = np.any(anomaly >= 0)
    flagged = anomaly == 1 if labelled else scores >= np.quantile(scores, 0.98)
    time = np.linspace(-fs_window[0], fs_window[1], beats.shape[1], endpoint=False)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    groups = (
        (~flagged & (anomaly != -1) if labelled else ~flagged, NORMAL_COLOUR, "normal"),
        (flagged, ANOMALY_COLOUR, "labelled anomalies" if labelled else "top 2% scores"),
    )
    for axis, (mask, colour, title) in zip(axes, groups, strict=True):
        rows = np.flatnonzero(mask)
        shown = rng.choice(rows, size=min(rows.size, 200), replace=False) if rows.size else rows
        # one LineCollection instead of a Line2D per beat: 4x faster to draw
        lines = np.stack([np.broadcast_to(time, (shown.size, time.size)), beats[shown]], -1)
        axis.add_collection(LineCollection(lines, colors=colour, alpha=0.08, linewidths=0.8))
        axis.autoscale_view()
        if rows.size:
            axis.plot(time, beats[rows].mean(0), color="black", lw=1.5, label="mean")
            axis.legend(loc="upper right")
        axis.set(title=f"{title} ({rows.size:,} beats)", xlabel="time from R peak (s)")
    axes[0].set_ylabel("normalized amplitude")
    fig.tight_layout()
    _save(fig, path)


def plot_latent(latent: np.ndarray, scores: np.ndarray, anomaly: np.ndarray, path) -> None:
    """Held-out beats in the 2-D latent space, coloured by score and by label."""
    plt = _pyplot()
    labelled = np.any(anomaly >= 0)
    fig, axes = plt.subplots(1, 2 if labelled else 1, figsize=(12 if labelled else 6, 5),
                             squeeze=False)  # fmt: skip
    order = np.argsort(scores)
    points = axes[0, 0].scatter(latent[order, 0], latent[order, 1], c=scores[order], s=6,
                                cmap="viridis", norm=_log_norm(scores))  # fmt: skip
    fig.colorbar(points, ax=axes[0, 0], label="anomaly score")
    axes[0, 0].set(title="latent space by anomaly score", xlabel="z1", ylabel="z2")
    if labelled:
        for value, colour, name in ((-1, UNKNOWN_COLOUR, "unlabelled"), (0, NORMAL_COLOUR,
                                    "normal"), (1, ANOMALY_COLOUR, "anomaly")):  # fmt: skip
            mask = anomaly == value
            if mask.any():
                axes[0, 1].scatter(latent[mask, 0], latent[mask, 1], s=6, color=colour,
                                   label=f"{name} ({mask.sum():,})")  # fmt: skip
        axes[0, 1].legend(loc="best", markerscale=3)
        axes[0, 1].set(title="latent space by reference label", xlabel="z1", ylabel="z2")
    fig.tight_layout()
    _save(fig, path)


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
            axes[0, 0].hist(scores[anomaly == value], bins=bins, color=colour, alpha=0.7,
                            label=name)  # fmt: skip
        axes[0, 0].legend()
        fpr, tpr = roc_curve(scores[anomaly >= 0], anomaly[anomaly >= 0] == 1)
        axes[0, 1].plot(fpr, tpr, color=ANOMALY_COLOUR, lw=2)
        axes[0, 1].plot([0, 1], [0, 1], color="#999999", ls="--")
        axes[0, 1].set(title=f"ROC on held-out beats (AUROC {auroc:.4f})",
                       xlabel="false-positive rate", ylabel="true-positive rate")  # fmt: skip
    else:
        axes[0, 0].hist(scores, bins=bins, color=NORMAL_COLOUR)
    axes[0, 0].set(xscale="log", yscale="log", title="anomaly scores of held-out beats",
                   xlabel="score", ylabel="beats")  # fmt: skip
    fig.tight_layout()
    _save(fig, path)
