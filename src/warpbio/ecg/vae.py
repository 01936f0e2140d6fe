"""Convolutional VAE of beats (PyTorch), trained on a seeded 75% of them.

Beats reach PyTorch through DLPack: on the GPU the CuPy beat buffer becomes a
CUDA tensor without a copy, on the CPU the NumPy array a CPU tensor.

The GPU path never asks the host how many beats there are (that would be a
device-to-host copy): it works on the fixed-capacity beat buffer with a
``valid`` mask. The split ranks seeded keys of the valid rows on the device;
each epoch sorts fresh keys so the training rows come first in random order,
and walks batches over the largest possible number of training rows, each row
weighted 1 if it is a training row and 0 otherwise. Batches past the real
number of training rows carry no weight and their optimizer step is gated off on
the device (:class:`FlatAdam`), so they change nothing. On the CPU the counts
are free to read and the loop stops at the last real batch; otherwise the two
paths are the same code. The split, the batch order and the latent noise are
hashed from (seed, epoch, rank among the valid rows) rather than drawn from a
random stream, so padding rows change nothing at all: a padded buffer walked to
the bound trains bit for bit like the compacted beats (tested on the CPU), and
the GPU's split is the CPU's.

Anomaly score per beat: the reconstruction error (mean squared error of the
decoded latent mean) or the negative ELBO (squared error plus the KL term),
both deterministic (no sampling at scoring time).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SCORES = ("reconstruction", "elbo")


@dataclass(frozen=True)
class VaeSettings:
    latent_dim: int = 2
    channels: tuple[int, ...] = (16, 32, 64)
    epochs: int = 20
    batch_size: int = 256
    learning_rate: float = 2e-3
    beta: float = 0.5  # weight of the KL term
    train_fraction: float = 0.75
    score: str = "elbo"  # elbo | reconstruction
    compile: bool = False  # torch.compile the model (GPU runs)
    # GPU: replay one captured training step per batch (bit-identical to eager with
    # deterministic cuDNN: tests/ecg/test_gpu.py::test_graphed_training_equals_eager_training)
    cuda_graphs: bool = True

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise ValueError(f"score {self.score!r} is not one of {', '.join(SCORES)}")

    @classmethod
    def from_config(cls, values: dict) -> VaeSettings:
        values = dict(values)
        if "channels" in values:
            values["channels"] = tuple(values["channels"])
        return cls(**values)


def _torch():
    import torch

    return torch


def build_model(length: int, settings: VaeSettings):
    """The VAE module; the class is made here so importing this file needs no torch."""
    torch = _torch()
    nn = torch.nn

    class BeatVae(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            layers, previous = [], 1
            for width in settings.channels:
                layers += [nn.Conv1d(previous, width, 5, stride=2, padding=2), nn.GELU()]
                previous = width
            self.encoder = nn.Sequential(*layers, nn.Flatten())
            self.reduced = length // 2 ** len(settings.channels)
            flat = previous * self.reduced
            self.to_latent = nn.Linear(flat, 2 * settings.latent_dim)
            self.from_latent = nn.Linear(settings.latent_dim, flat)
            layers = []
            widths = list(reversed(settings.channels))
            for index, width in enumerate(widths):
                out = widths[index + 1] if index + 1 < len(widths) else 1
                layers.append(nn.ConvTranspose1d(width, out, 4, stride=2, padding=1))
                if out != 1:
                    layers.append(nn.GELU())
            self.decoder = nn.Sequential(*layers)

        def encode(self, x):
            mean, log_var = self.to_latent(self.encoder(x[:, None, :])).chunk(2, dim=1)
            return mean, log_var.clamp(-12.0, 8.0)

        def decode(self, z):
            hidden = self.from_latent(z).view(z.shape[0], settings.channels[-1], self.reduced)
            return self.decoder(torch.nn.functional.gelu(hidden))[:, 0, :]

    if length % 2 ** len(settings.channels):
        raise ValueError(
            f"beat length {length} must be divisible by 2^{len(settings.channels)} "
            "(one halving per encoder layer)"
        )
    return BeatVae()


def per_beat_terms(model, x, noise=None):
    """Squared error and KL term per beat; with ``noise`` the latent is sampled."""
    torch = _torch()
    mean, log_var = model.encode(x)
    z = mean if noise is None else mean + torch.exp(0.5 * log_var) * noise
    reconstruction = model.decode(z)
    squared_error = ((reconstruction - x) ** 2).sum(dim=1)
    kl = -0.5 * (1.0 + log_var - mean**2 - log_var.exp()).sum(dim=1)
    return squared_error, kl, mean


def as_tensor(array):
    """NumPy -> CPU tensor, CuPy -> CUDA tensor, both without copying (DLPack)."""
    torch = _torch()
    if isinstance(array, np.ndarray):
        return torch.from_numpy(array)
    return torch.from_dlpack(array)


@dataclass
class TrainedVae:
    model: Any
    settings: VaeSettings
    train: Any  # (rows,) bool tensor: the training split
    held_out: Any  # (rows,) bool tensor: valid beats not trained on
    epoch_losses: Any  # (epochs,) tensor on the device: mean loss per training beat
    seconds: float
    length: int

    def config(self) -> dict:
        """The model's settings and training record, for the JSON beside the weights."""
        return {
            "architecture": "convolutional VAE (Conv1d encoder, ConvTranspose1d decoder)",
            "beat_length": self.length,
            **asdict(self.settings),
            "epoch_losses": [float(v) for v in self.epoch_losses.detach().cpu().tolist()],
            "n_train": int(self.train.sum()),
            "n_held_out": int(self.held_out.sum()),
        }  # the training time goes to the provenance record: reruns give the same file


def _wrap64(value: int) -> int:
    """A Python int as the signed 64-bit integer with the same bits."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def hashed_uniform(seed: int, stream: int, index):
    """Uniform [0, 1) keys from (seed, stream, index) by the SplitMix64 finalizer.

    A counter-based generator: a row's key depends on its index alone, not on
    how many rows precede it in a buffer, and integer arithmetic makes it
    bit-identical on the CPU and the GPU. Logical shifts are arithmetic shifts
    with the sign bits masked off.
    """
    z = index.long() + _wrap64((seed * 0x9E3779B97F4A7C15) ^ (stream * 0xD1B54A32D192ED03))
    z = (z ^ ((z >> 30) & ((1 << 34) - 1))) * _wrap64(0xBF58476D1CE4E5B9)
    z = (z ^ ((z >> 27) & ((1 << 37) - 1))) * _wrap64(0x94D049BB133111EB)
    z = z ^ ((z >> 31) & ((1 << 33) - 1))
    return ((z >> 11) & ((1 << 53) - 1)).double() / float(1 << 53)


def split_rows(valid, fraction: float, seed: int):
    """Seeded split of the valid rows: (train, held_out) masks, counts kept on the device.

    Keys are hashed from each valid row's rank among the valid rows, so the split
    is the same with or without padding rows, and on the CPU and the GPU.
    """
    torch = _torch()
    rows = valid.shape[0]
    keys = hashed_uniform(seed, 0, torch.cumsum(valid.long(), 0) - 1)
    order = torch.argsort(torch.where(valid, keys, 2.0))
    rank = torch.empty_like(order)
    rank[order] = torch.arange(rows, device=valid.device)
    n_train = torch.floor(valid.sum() * fraction).long()
    train = rank < n_train
    return train, valid & ~train, n_train


def hashed_normal(seed: int, stream: int, index):
    """Standard normal values from (seed, stream, index): Box-Muller on hashed uniforms."""
    torch = _torch()
    u1 = hashed_uniform(seed, stream, 2 * index)
    u2 = hashed_uniform(seed, stream, 2 * index + 1)
    return torch.sqrt(-2.0 * torch.log1p(-u1)) * torch.cos(2.0 * math.pi * u2)


class FlatAdam:
    """Adam over one flat buffer holding every parameter; ``active`` gates each step.

    ``step(active)`` with ``active`` a 0-d tensor on the device: 1 is a plain Adam
    step, 0 changes nothing (moments, step count and weights stay bit for bit),
    so the GPU's empty tail batches are exact no-ops without the host looking at
    the device. One buffer keeps a step at a dozen kernels whatever the layer count.
    """

    def __init__(self, model, lr: float, betas=(0.9, 0.999), eps: float = 1e-8) -> None:
        torch = _torch()
        self.params = list(model.parameters())
        self.flat = torch.cat([p.detach().reshape(-1) for p in self.params])
        offset = 0
        for param in self.params:  # parameters become views of the flat buffer
            param.data = self.flat[offset : offset + param.numel()].view_as(param)
            offset += param.numel()
        self.m = torch.zeros_like(self.flat)
        self.v = torch.zeros_like(self.flat)
        self.t = torch.zeros((), device=self.flat.device)
        self.lr, self.betas, self.eps = lr, betas, eps

    def zero_grad(self) -> None:
        for param in self.params:
            param.grad = None

    def step(self, active) -> None:
        torch = _torch()
        beta1, beta2 = self.betas
        grad = torch.cat([p.grad.reshape(-1) for p in self.params])
        self.t += active
        self.m += active * (1.0 - beta1) * (grad - self.m)
        self.v += active * (1.0 - beta2) * (grad * grad - self.v)
        t = self.t.clamp(min=1.0)
        m_hat = self.m / (1.0 - beta1**t)
        v_hat = self.v / (1.0 - beta2**t)
        self.flat -= (active * self.lr) * m_hat / (v_hat.sqrt() + self.eps)


class GraphedBatches:
    """A training step captured once as a CUDA graph and replayed for every batch.

    The VAE is small, so an eager step is mostly kernel launches (~4 ms for a
    few hundred launches against well under 1 ms of GPU work). The graph reads
    the batch's rows from a static copy of the epoch's order at a device-side
    offset, so a replay needs one ``fill_`` and no host look at the device. The
    order is padded to whole batches with row 0 at weight 0: the same no-op rows
    as the eager loop's empty tail. Warm-up steps before the capture have weight
    0 everywhere, so they change no weight, moment or step count.

    The step sits in an IF node on ``offset < n_train``, evaluated on the device at
    each replay: batches past the last training beat (3/4 of them on a day of ECG,
    whose beat buffer is sized for 300 bpm) skip their kernels instead of computing
    and discarding. PyTorch 2.13 captures into IF nodes itself; on older builds the
    node is made through CUDA's driver API (:mod:`warpbio.ecg._graph_if`), and
    where neither works the plain graph runs every batch. Skipped batches were
    no-ops either way, so the model is the same; only the time differs.
    """

    def __init__(self, batch_step, rows: int, batch: int, n_batches: int, n_train, settings):
        torch = _torch()
        device = n_train.device
        self.batch, self.n_batches = batch, n_batches
        self.order = torch.zeros(n_batches * batch, dtype=torch.long, device=device)
        self.noise = torch.zeros(rows, settings.latent_dim, device=device)
        self.offset = torch.zeros((), dtype=torch.long, device=device)
        self.no_weight = torch.zeros((), dtype=torch.bool, device=device)
        within = torch.arange(batch, device=device)

        def replayed_step() -> None:
            position = self.offset + within
            rows_now = self.order[position]
            weight = ((position < n_train) & ~self.no_weight).float()
            batch_step(rows_now, self.noise[rows_now], weight)

        # the graph holds device addresses, not tensors: keep everything it reads alive
        self._within, self._step = within, replayed_step
        self.no_weight.fill_(True)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up (cuDNN/cuBLAS set-up) off the capture
            for _ in range(3):
                replayed_step()
        torch.cuda.current_stream().wait_stream(side)
        self.graph, self.conditional = self._capture(replayed_step, n_train)
        self.no_weight.fill_(False)
        log.info("VAE training: one CUDA graph per batch%s",
                 f", empty batches skipped on the device ({self.conditional})"
                 if self.conditional else "")  # fmt: skip

    def _capture(self, replayed_step, n_train):
        """(graph, how its IF node was made: "torch", "driver" or "" for none)."""
        torch = _torch()
        if _has_conditional_nodes(torch):
            try:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    self._has_rows = self.offset < n_train  # recomputed at every replay
                    graph.begin_capture_to_if_node(self._has_rows)
                    replayed_step()
                    graph.end_capture_to_conditional_node()
                return graph, "torch"
            except RuntimeError as error:  # a build without working conditional nodes
                log.warning("PyTorch's CUDA-graph IF node failed (%s)", error)
        try:  # PyTorch's graph as the body of an IF node made through the driver API
            from warpbio.ecg._graph_if import DriverIfGraph

            self._body = torch.cuda.CUDAGraph(keep_graph=True)
            with torch.cuda.graph(self._body):
                replayed_step()
            return DriverIfGraph(self._body.raw_cuda_graph(), self.offset, n_train), "driver"
        except Exception as error:
            log.warning("CUDA-graph IF node through the driver API failed (%s: %s); "
                        "plain graph", type(error).__name__, error)  # fmt: skip
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            replayed_step()
        return graph, ""

    def run_epoch(self, order, noise) -> None:
        # training rows come first in the order; rows past the batches' reach have weight 0
        length = min(order.shape[0], self.order.shape[0])
        self.order[:length].copy_(order[:length])
        self.order[length:].zero_()
        self.noise.copy_(noise)
        for index in range(self.n_batches):
            self.offset.fill_(index * self.batch)
            self.graph.replay()


def _has_conditional_nodes(torch) -> bool:
    """CUDA-graph IF nodes: PyTorch's API for them and CUDA 12.4 or later."""
    if not hasattr(torch.cuda.CUDAGraph, "begin_capture_to_if_node"):
        return False
    major, minor = (int(part) for part in (torch.version.cuda or "0.0").split(".")[:2])
    return (major, minor) >= (12, 4)


def train_vae(
    beats,
    valid,
    settings: VaeSettings,
    seed: int,
    threads: int = 1,
    host_counts: bool | None = None,
) -> TrainedVae:
    """Fit the VAE on a seeded ``train_fraction`` of the valid beats.

    ``beats`` (rows, length) and ``valid`` (rows,) are NumPy or CuPy; both are
    viewed as tensors through DLPack. ``host_counts`` (default: on the CPU) lets
    the loop read the number of training beats; without it (the GPU) every epoch
    walks batches up to the largest possible count and the empty ones are no-ops.
    Both give the same model: the split, the batch order and the latent noise are
    hashed from (seed, epoch, beat), never drawn from a stream. Deterministic on
    the CPU for a seed and thread count.
    """
    torch = _torch()
    x = as_tensor(beats).float()
    valid = as_tensor(valid.astype("uint8")).bool()  # DLPack: uint8 travels everywhere
    device = x.device
    host_counts = device.type == "cpu" if host_counts is None else host_counts
    if device.type == "cpu":
        torch.set_num_threads(max(int(threads), 1))
    torch.manual_seed(seed)  # weight init, made on the CPU: identical on every device
    model = build_model(x.shape[1], settings).to(device)
    train, held_out, n_train = split_rows(valid, settings.train_fraction, seed)
    rank = torch.cumsum(valid.long(), 0) - 1  # a beat's index among the valid rows
    bound = int(n_train) if host_counts else math.floor(x.shape[0] * settings.train_fraction)
    batch = settings.batch_size
    n_batches = max(math.ceil(bound / batch), 1)
    optimizer = FlatAdam(model, settings.learning_rate)
    step_model = torch.compile(model) if settings.compile else model
    latent = torch.arange(settings.latent_dim, device=device)
    losses = torch.zeros(settings.epochs, device=device)
    total = torch.zeros((), device=device)

    def batch_step(rows, noise, weight) -> None:
        """One Adam step on a batch; rows of weight 0 (and empty batches) change nothing."""
        squared_error, kl = per_beat_terms(step_model, x[rows], noise)[:2]
        per_beat = (squared_error + settings.beta * kl) * weight
        used = weight.sum()
        loss = per_beat.sum() / used.clamp(min=1.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step((used > 0).float())  # an empty tail batch changes nothing
        total.add_(per_beat.detach().sum())

    graphed = None
    if device.type == "cuda" and settings.cuda_graphs and not settings.compile:
        graphed = GraphedBatches(batch_step, x.shape[0], batch, n_batches, n_train, settings)
    started = time.time()
    model.train()
    for epoch in range(settings.epochs):
        keys = hashed_uniform(seed, epoch + 1, rank)
        order = torch.argsort(torch.where(train, keys, 2.0))
        # the epoch's latent noise for every row at once (few kernels per batch after)
        noise_index = rank[:, None] * settings.latent_dim + latent[None, :]
        epoch_noise = hashed_normal(seed, 1_000_000 + epoch, noise_index).float()
        total.zero_()
        if graphed is not None:
            graphed.run_epoch(order, epoch_noise)
        else:
            for index in range(n_batches):
                rows = order[index * batch : (index + 1) * batch]
                position = torch.arange(rows.shape[0], device=device) + index * batch
                batch_step(rows, epoch_noise[rows], (position < n_train).float())
        losses[epoch] = total / n_train.clamp(min=1)
        log.info("VAE epoch %d/%d (%.1f s)", epoch + 1, settings.epochs, time.time() - started)
    model.eval()
    return TrainedVae(model, settings, train, held_out, losses, time.time() - started, x.shape[1])


def score_beats(model, beats, settings: VaeSettings, chunk: int | None = None):
    """Anomaly score and latent mean per row (tensors on the beats' device).

    Chunks of 16,384 rows on the GPU, 1,024 on the CPU (where larger batches run
    slower per row); fixed per device, so CPU scores repeat bit for bit.
    """
    torch = _torch()
    x = as_tensor(beats).float()
    chunk = chunk or (1024 if x.device.type == "cpu" else 16384)
    scores, latents = [], []
    with torch.no_grad():
        for start in range(0, x.shape[0], chunk):
            squared_error, kl, mean = per_beat_terms(model, x[start : start + chunk])
            if settings.score == "reconstruction":
                scores.append(squared_error / x.shape[1])
            else:
                scores.append(squared_error + kl)
            latents.append(mean)
    return torch.cat(scores), torch.cat(latents)


def latent_2d(latent, rows):
    """2-D view of the latent means: the means themselves, or their top-2 PCs.

    ``rows`` (bool) chooses the beats that define the PCs (the held-out ones).
    """
    torch = _torch()
    if latent.shape[1] <= 2:
        return latent
    weight = rows.float()[:, None]
    centre = (latent * weight).sum(0) / weight.sum().clamp(min=1.0)
    centred = (latent - centre) * weight
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    axes = vh[:2].T
    signs = torch.sign(axes[torch.argmax(axes.abs(), dim=0), torch.arange(2)])
    return (latent - centre) @ (axes * torch.where(signs == 0, 1.0, signs))


def save_model(trained: TrainedVae, path) -> None:
    """The weights and settings; the same bytes for the same model. (torch.save to a
    path names the zip's records after the file, so a temporary name would differ
    from run to run: it saves to memory, then writes the bytes.)"""
    import io

    torch = _torch()
    state = {key: value.detach().cpu() for key, value in trained.model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save({"state_dict": state, "settings": asdict(trained.settings),
                "length": trained.length}, buffer)  # fmt: skip
    Path(path).write_bytes(buffer.getvalue())


def load_model(path, device: str = "cpu"):
    """(model, settings) from a file written by :func:`save_model`."""
    torch = _torch()
    saved = torch.load(path, map_location="cpu", weights_only=True)
    settings = VaeSettings.from_config(saved["settings"])
    model = build_model(int(saved["length"]), settings)
    model.load_state_dict(saved["state_dict"])
    return model.to(device).eval(), settings


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties)."""
    from scipy.stats import rankdata

    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
