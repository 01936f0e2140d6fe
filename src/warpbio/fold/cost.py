"""Predicted peak memory and wall time of one AlphaFold2 prediction.

An analytic model from the architecture (:class:`~warpbio.fold.config.ModelConfig`):

- time: the matrix-multiply FLOPs of the Evoformer, extra-MSA stack, structure
  module and heads, over an effective FLOP rate, plus a cost per layer pass
  (kernel launches, Python; what dominates short targets on a GPU) and a fixed
  cost per prediction (model build, weights, host-to-device copies);
- memory: parameters, the features of every recycle (``predict`` moves them all to
  the device first), the tensors that live through a block (pair, MSA, extra MSA,
  the recycled pair, the previous iteration's outputs) and the largest transient of
  any module (attention logits, triangle-multiplication projections, outer-product
  rows, transitions), chunking taken into account.

The constants of a device (:class:`Calibration`: effective FLOP/s, pass and setup
seconds, base memory and a memory scale) are fitted by :func:`calibrate` from
measured points (least squares on relative errors) and saved as JSON. The defaults
are order-of-magnitude guesses: calibrate on the device that runs the targets
(``benchmarks/fold.py --calibrate PATH``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from warpbio.fold.config import InferenceOptions, ModelConfig

log = logging.getLogger(__name__)

DTYPE_BYTES = {"float32": 4, "bfloat16": 2}
MSA_FEAT_BYTES = 49 * 4 + 4 + 4 + 8  # msa_feat, msa_mask, bert_mask, true_msa (int64)
EXTRA_FEAT_BYTES = 8 + 3 * 4  # extra_msa (int64), has_deletion, deletion_value, mask
GIB = 2**30


@dataclass(frozen=True)
class Workload:
    """One prediction's shape: residues, MSA sizes, depth, recycles and run options."""

    num_res: int
    msa_clusters: int = 512
    extra_msa: int = 1024
    blocks: int = 48
    recycles: int = 3
    chunk_size: int | None = None
    dtype: str = "float32"
    attention: str = "reference"  # "sdpa"/"flash": fused kernels, fewer logits kept
    inplace: bool = False  # residual updates in place (no second pair copy)
    bf16_streams: bool = False  # pair/MSA residual streams in bfloat16 inside the stacks

    def __post_init__(self) -> None:
        if self.dtype not in DTYPE_BYTES:
            raise ValueError(f"dtype {self.dtype!r}: use one of {tuple(DTYPE_BYTES)}")
        if min(self.num_res, self.msa_clusters, self.extra_msa, self.blocks) < 1:
            raise ValueError(f"workload {self}: sizes must be positive")

    @property
    def iterations(self) -> int:
        return self.recycles + 1

    @classmethod
    def from_options(
        cls,
        num_res: int,
        msa_clusters: int,
        extra_msa: int,
        blocks: int,
        options: InferenceOptions,
    ) -> Workload:
        """The workload of ``options``; ``auto_chunk`` counts as no chunk (an upper
        bound on memory: the engine only ever chunks more to fit)."""
        return cls(
            num_res=num_res,
            msa_clusters=msa_clusters,
            extra_msa=extra_msa,
            blocks=blocks,
            recycles=options.num_recycle,
            chunk_size=options.chunk_size,
            dtype=options.precision,
            attention=options.attention,
            inplace=options.inplace,
            bf16_streams=options.bf16_streams,
        )


# --------------------------------------------------------------------------
# FLOPs (2 per multiply-add; matrix products only)
# --------------------------------------------------------------------------


def attention_flops(batch: int, length: int, channel: int) -> float:
    """Gated attention over ``length`` keys for ``batch`` rows: q, k, v, gate and
    output projections (heads x head dim = channel) plus logits and weighted sum."""
    return 10.0 * batch * length * channel**2 + 4.0 * batch * length**2 * channel


def pair_stack_flops(n: int, config: ModelConfig) -> float:
    """Triangle multiplications, triangle attentions and pair transition."""
    z, t, f = config.pair_channel, config.triangle_multiplication_channel, config.transition_factor
    n2 = float(n) * n
    multiplication = 2 * n2 * (4 * z * t + z * z + t * z) + 2.0 * n2 * n * t
    attention = attention_flops(n, n, z) + 2.0 * n2 * z * config.triangle_attention_num_head
    transition = 4.0 * n2 * z * z * f
    return 2 * multiplication + 2 * attention + transition


def msa_stack_flops(n: int, rows: int, channel: int, extra: bool, config: ModelConfig) -> float:
    """Row attention with pair bias, column (global) attention, transition and the
    outer-product mean of one MSA stack block over ``rows`` sequences."""
    z, o, f = config.pair_channel, config.outer_product_channel, config.transition_factor
    cells = float(rows) * n
    row = attention_flops(rows, n, channel) + 2.0 * n * n * z * config.msa_row_num_head
    if extra:  # global attention: one query per column
        head_dim = channel // config.msa_column_num_head
        column = 6.0 * cells * channel**2 + 4.0 * cells * head_dim
    else:
        column = attention_flops(n, rows, channel)
    transition = 4.0 * cells * channel**2 * f
    outer = 4.0 * cells * channel * o + 2.0 * n * n * rows * o * o + 2.0 * n * n * o * o * z
    return row + column + transition + outer


def structure_flops(n: int, config: ModelConfig) -> float:
    """Structure module (IPA layers with their pair terms) and the output heads."""
    s = config.structure
    c, z = config.seq_channel, config.pair_channel
    n2 = float(n) * n
    ipa_points = s.num_head * (2 * s.num_point_qk + s.num_point_v) * 3
    ipa = (
        2.0 * n * c * s.num_head * (3 * s.num_scalar_qk)  # scalar q, k, v
        + 2.0 * n * c * ipa_points
        + 2.0 * n2 * s.num_head * (s.num_scalar_qk + s.num_point_qk * 3 + s.num_scalar_v)
        + 2.0 * n2 * s.num_head * (z + s.num_point_v * 3 + 1)  # pair bias and pair values
        + 2.0 * n * s.num_head * (z + s.num_scalar_v + s.num_point_v * 4) * c
        + 2.0 * n * c * c * s.num_layer_in_transition
    )
    heads = 2.0 * n2 * z * (config.distogram_num_bins + config.pae_num_bins * config.ptm)
    return s.num_layer * ipa + heads


def prediction_flops(workload: Workload, config: ModelConfig | None = None) -> float:
    """FLOPs of one prediction (every recycle)."""
    cfg = config or ModelConfig()
    n = workload.num_res
    evoformer = msa_stack_flops(n, workload.msa_clusters, cfg.msa_channel, False, cfg)
    extra = msa_stack_flops(n, workload.extra_msa, cfg.extra_msa_channel, True, cfg)
    pair = pair_stack_flops(n, cfg)
    iteration = (
        workload.blocks * (evoformer + pair)
        + cfg.extra_msa_stack_num_block * (extra + pair)
        + structure_flops(n, cfg)
    )
    return workload.iterations * iteration


def layer_passes(workload: Workload, config: ModelConfig | None = None) -> int:
    """Blocks and structure layers run by one prediction: the launch-bound part."""
    cfg = config or ModelConfig()
    per_iteration = workload.blocks + cfg.extra_msa_stack_num_block + cfg.structure.num_layer
    return workload.iterations * per_iteration


# --------------------------------------------------------------------------
# Parameters and memory
# --------------------------------------------------------------------------


def _attention_params(channel: int) -> int:
    return 5 * channel**2 + 2 * channel  # q, k, v, gate, output (+ gate and output biases)


def stack_block_params(config: ModelConfig, extra: bool) -> int:
    """Parameters of one Evoformer block (``extra=False``) or extra-MSA block."""
    c = config.extra_msa_channel if extra else config.msa_channel
    z, t, o, f = (
        config.pair_channel,
        config.triangle_multiplication_channel,
        config.outer_product_channel,
        config.transition_factor,
    )
    row = 2 * c + 2 * z + z * config.msa_row_num_head + _attention_params(c)
    if extra:
        head_dim = c // config.msa_column_num_head
        column = 2 * c + 3 * c * c + 2 * c * head_dim + 2 * c
    else:
        column = 2 * c + _attention_params(c)

    def transition(channel: int) -> int:
        return 2 * channel + 2 * f * channel**2 + (f + 1) * channel

    outer = 2 * c + 2 * (c * o + o) + o * o * z + z
    multiplication = 2 * z + 4 * (z * t + t) + 2 * t + (t * z + z) + (z * z + z)
    triangle_attention = 2 * z + z * config.triangle_attention_num_head + _attention_params(z)
    return (
        row
        + column
        + transition(c)
        + outer
        + 2 * multiplication
        + 2 * triangle_attention
        + transition(z)
    )


# Embedders, structure module and heads of the monomer model (counted from the
# module tree; they do not depend on the depth). The test checks it.
OTHER_PARAMS = {True: 2_264_986, False: 2_264_986 - 128 * 64 - 64}


def parameter_count(config: ModelConfig, blocks: int) -> int:
    return (
        blocks * stack_block_params(config, extra=False)
        + config.extra_msa_stack_num_block * stack_block_params(config, extra=True)
        + OTHER_PARAMS[config.ptm]
    )


def live_tensor_bytes(workload: Workload, config: ModelConfig | None = None) -> dict[str, float]:
    """Bytes of the tensors that make up the peak, by name: the persistent ones, then
    those of the phase with the largest total (``phase:part``); :func:`activation_bytes`
    sums them. Measured per tensor with tests/fold/memory_trace.py (a CPU run's live
    storages, extrapolated in N): under autocast a module's update is float32 (its
    bias add promotes), so each full-size update is [N, N, z] float32 whatever the
    stream's dtype."""
    cfg = config or ModelConfig()
    n, s, z = workload.num_res, workload.msa_clusters, cfg.pair_channel
    a, w = DTYPE_BYTES[workload.dtype], 4
    n2 = float(n) * n
    features = (
        workload.iterations * n * (s * MSA_FEAT_BYTES + workload.extra_msa * EXTRA_FEAT_BYTES)
    )
    persistent = {
        "parameters": parameter_count(cfg, workload.blocks) * (w + (a if a < w else 0)),
        "features": float(features),
        # the first iteration's previous pair is a broadcast zero (no memory)
        "recycled_pair": n2 * z * w if workload.recycles > 0 else 0.0,
    }
    phases = {
        "embedding": _embedding_phase(workload, cfg),
        **{f"stack:{k}": v for k, v in _stack_phases(workload, cfg).items()},
        "structure": _structure_phase(workload, cfg),
        "heads": _heads_phase(workload, cfg),
    }
    largest = max(phases, key=lambda name: sum(phases[name].values()))
    return {**persistent, **{f"{largest}:{k}": v for k, v in phases[largest].items()}}


def _chunks(workload: Workload, dimension: int) -> bool:
    """Whether an axis of this size is cut into chunks (as :meth:`Plan.chunks`)."""
    return workload.chunk_size is not None and workload.chunk_size < dimension


def _rows(workload: Workload, dimension: int) -> int:
    """Rows of one chunk over an axis of this size."""
    return min(workload.chunk_size or dimension, dimension)


def _embedding_phase(workload: Workload, cfg: ModelConfig) -> dict[str, float]:
    """Input embedding (float32): the pair is built in row chunks; one chunk holds the
    pair rows, the linear outputs and the relative-position one-hot (int64, then
    float32, 65 classes)."""
    n, w, z = workload.num_res, 4, cfg.pair_channel
    classes = 2 * cfg.max_relative_feature + 1
    rows = _rows(workload, n) * float(n)
    return {
        "pair": float(n) * n * z * w,
        "msa": 2.0 * workload.msa_clusters * n * cfg.msa_channel * w,
        "chunk": rows * (3 * z * w + classes * (8 + w) + cfg.prev_pos_num_bins * w),
    }


def _stack_phases(workload: Workload, cfg: ModelConfig) -> dict[str, dict[str, float]]:
    """Each Evoformer / extra-MSA module at its peak: the streams, its full-size
    float32 update and its own intermediates (chunked where the engine chunks)."""
    n, s, e = workload.num_res, workload.msa_clusters, workload.extra_msa
    c, ce, z = cfg.msa_channel, cfg.extra_msa_channel, cfg.pair_channel
    t, o, f = cfg.triangle_multiplication_channel, cfg.outer_product_channel, cfg.transition_factor
    a, w = DTYPE_BYTES[workload.dtype], 4
    r = 2 if workload.bf16_streams else w  # the stacks' residual streams
    n2 = float(n) * n
    chunked = _chunks(workload, n)
    # logits, clamped, softmax on the reference path; SDPA's float mask; none with
    # the flash kernel on a GPU (its CPU twin makes them: CPU memory is not planned)
    logit_copies = {"sdpa": 1, "flash": 0}.get(workload.attention, 3)

    def attention(batch: int, length: int, channel: int, heads: int) -> float:
        per_chunk = _rows(workload, batch)
        logits = logit_copies * heads * per_chunk * float(length) ** 2 * a
        return float(batch) * length * channel * r + logits + 5.0 * per_chunk * length * channel * a

    pair_rows = _rows(workload, n) * float(n)
    if chunked:  # the shared operand whole, channel-first; each row block's own parts
        multiplication = n2 * t * a + pair_rows * (z * a + 4 * t * w + 2 * z * w)
    else:  # the fused kernel: five projections, left/right, product and its norm
        multiplication = n2 * (4 * t + z) * a + 4 * n2 * t * a
    transients = {
        "triangle_multiplication": multiplication,
        "triangle_attention": attention(n, n, z, cfg.triangle_attention_num_head)
        + cfg.triangle_attention_num_head * n2 * a,
        "pair_transition": pair_rows * (z * r + 2 * f * z * a),
        "outer_product_mean": 3.0 * s * n * max(c, o) * a
        + pair_rows * (2 * o * o * a + z * w)
        + n2 * w,
        "msa_row_attention": n2 * z * r
        + cfg.msa_row_num_head * n2 * a
        + attention(s, n, c, cfg.msa_row_num_head),
        "msa_column_attention": attention(n, s, c, cfg.msa_column_num_head),
        "msa_transition": float(s) * n * c * r + 2.0 * _rows(workload, s) * n * f * c * a,
        "extra_row_attention": n2 * z * r
        + cfg.msa_row_num_head * n2 * a
        + attention(e, n, ce, cfg.msa_row_num_head),
    }
    msa_updates = {"msa_row_attention", "msa_column_attention", "msa_transition"}
    streams = {
        "pair": n2 * z * r * (1 if workload.inplace else 2),
        "msa": float(s) * n * c * r,
        "extra_msa": float(e) * n * ce * r,
    }
    return {
        name: {
            **streams,
            "update": float(s) * n * c * w if name in msa_updates else n2 * z * w,
            "intermediates": value,
        }
        for name, value in transients.items()
    }


def _structure_phase(workload: Workload, cfg: ModelConfig) -> dict[str, float]:
    """Structure module (float32): the pair and MSA representations, and the
    invariant point attention's point distances [h, q, k, p, 3] (two copies), its
    logits and the normalized pair, per chunk of query rows when chunked."""
    n, w, st = workload.num_res, 4, cfg.structure
    chunked = _chunks(workload, n)
    rows = _rows(workload, n) * float(n)
    per_query_row = st.num_head * (2 * 3 * st.num_point_qk + 4) * w + cfg.pair_channel * w
    return {
        "pair": float(n) * n * cfg.pair_channel * w,
        "msa": float(workload.msa_clusters) * n * cfg.msa_channel * w,
        "normalized_pair": 0.0 if chunked else float(n) * n * cfg.pair_channel * w,
        "attention": rows * per_query_row,
    }


def _heads_phase(workload: Workload, cfg: ModelConfig) -> dict[str, float]:
    """Output heads: distogram and PAE logits beside the representations, with the
    expectations over the bins (softmax and weighted bins) in 256-row chunks."""
    n, w = workload.num_res, 4
    bins = cfg.distogram_num_bins
    pae = cfg.pae_num_bins * cfg.ptm
    return {
        "pair": float(n) * n * cfg.pair_channel * w,
        "msa": float(workload.msa_clusters) * n * (cfg.msa_channel + cfg.masked_msa_num_output) * w,
        "logits": float(n) * n * max(2 * bins, bins + pae) * w,
        "expectations": 2.0 * min(256, n) * n * max(pae, 1) * w,
    }


def activation_bytes(workload: Workload, config: ModelConfig | None = None) -> float:
    """Analytic peak bytes of one prediction (before calibration)."""
    return float(sum(live_tensor_bytes(workload, config).values()))


# --------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """Per-device constants of the cost model.

    ``cores`` is the number of CPU threads the constants were measured with (0 for
    a GPU); :meth:`for_cores` scales the FLOP rate to another core set.
    """

    device: str = "uncalibrated"
    flops_per_second: float = 1e11
    pass_seconds: float = 0.0
    setup_seconds: float = 0.0
    base_bytes: float = 0.0
    memory_scale: float = 1.0
    cores: int = 0
    dtype: str = "float32"

    def seconds(self, workload: Workload, config: ModelConfig | None = None) -> float:
        return (
            self.setup_seconds
            + self.pass_seconds * layer_passes(workload, config)
            + prediction_flops(workload, config) / self.flops_per_second
        )

    def compute_seconds(self, workload: Workload, config: ModelConfig | None = None) -> float:
        """The FLOP-bound part only: what instances sharing one device contend for."""
        return prediction_flops(workload, config) / self.flops_per_second

    def peak_bytes(self, workload: Workload, config: ModelConfig | None = None) -> float:
        return self.base_bytes + self.memory_scale * activation_bytes(workload, config)

    def for_cores(self, cores: int) -> Calibration:
        """The CPU constants for ``cores`` threads (FLOP rate linear in cores)."""
        if self.cores <= 0:
            return self
        return replace(
            self, flops_per_second=self.flops_per_second * cores / self.cores, cores=cores
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


# Uncalibrated starting points (order of magnitude): an H100-class GPU and one
# core of a recent x86 CPU. Calibrate before trusting a plan's absolute times.
DEFAULT_GPU = {
    "float32": Calibration("default-gpu", 2.0e13, 2.0e-3, 3.0, 1.5 * GIB, 1.0, 0, "float32"),
    "bfloat16": Calibration("default-gpu", 8.0e13, 2.0e-3, 3.0, 1.5 * GIB, 1.0, 0, "bfloat16"),
}
DEFAULT_CPU = Calibration("default-cpu", 3.0e10, 1.0e-3, 1.0, 0.5 * GIB, 1.0, 1, "float32")


def default_calibration(kind: str, dtype: str = "float32") -> Calibration:
    return DEFAULT_GPU[dtype] if kind == "gpu" else replace(DEFAULT_CPU, dtype=dtype)


@dataclass(frozen=True)
class Measurement:
    """One measured prediction; ``peak_bytes`` None when it was not measured."""

    workload: Workload
    seconds: float
    peak_bytes: float | None = None


def _as_measurement(point, template: Workload) -> Measurement:
    if isinstance(point, Measurement):
        return point
    shape, seconds, peak = point
    workload = shape if isinstance(shape, Workload) else replace(template, num_res=int(shape))
    return Measurement(workload, float(seconds), None if peak is None else float(peak))


def _relative_nnls(columns: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Non-negative least squares on relative errors (short and long runs weigh alike)."""
    from scipy.optimize import nnls

    weights = 1.0 / values
    scale = np.abs(columns).max(axis=0)
    scale[scale == 0] = 1.0
    solution, _ = nnls(columns / scale * weights[:, None], np.ones_like(values))
    return solution / scale


def calibrate(
    points: Iterable,
    *,
    device: str = "calibrated",
    cores: int = 0,
    template: Workload | None = None,
    config: ModelConfig | None = None,
    start: Calibration | None = None,
) -> Calibration:
    """Fit the device constants to measured points.

    ``points`` are :class:`Measurement` or ``(num_res or Workload, seconds,
    peak_bytes or None)`` tuples; a bare ``num_res`` takes the other sizes from
    ``template``. Time: ``seconds = setup + passes * pass_s + FLOPs / rate``;
    when every point has the same number of layer passes, setup and per-pass costs
    cannot be told apart and all of it goes to setup. Memory: ``peak = base +
    scale * analytic bytes`` from the points that have a peak; without any, the
    memory constants of ``start`` are kept.
    """
    base = template or Workload(num_res=1)
    measured = [_as_measurement(p, base) for p in points]
    if len(measured) < 2:
        raise ValueError("calibrate needs at least two measured points")
    seconds = np.array([m.seconds for m in measured])
    flops = np.array([prediction_flops(m.workload, config) for m in measured])
    passes = np.array([layer_passes(m.workload, config) for m in measured], dtype=float)
    identifiable = np.ptp(passes) > 0
    columns = [np.ones_like(seconds), flops] + ([passes] if identifiable else [])
    fit = _relative_nnls(np.stack(columns, axis=1), seconds)
    if fit[1] <= 0:
        raise ValueError(
            "calibration: the time does not grow with the FLOP count over these points; "
            "measure targets of clearly different lengths"
        )
    start = start or default_calibration("gpu" if cores == 0 else "cpu")
    result = replace(
        start,
        device=device,
        cores=cores,
        setup_seconds=float(fit[0]),
        flops_per_second=float(1.0 / fit[1]),
        pass_seconds=float(fit[2]) if identifiable else 0.0,
        dtype=measured[0].workload.dtype,
    )
    if sum(m.peak_bytes is not None for m in measured) >= 2:
        result = calibrate_memory(measured, result, config)
    log.info("calibration %s: %s", device, result)
    return result


def calibrate_memory(
    points: Iterable[Measurement], start: Calibration, config: ModelConfig | None = None
) -> Calibration:
    """``start`` with base memory and memory scale fitted to the points' peaks."""
    with_peak = [m for m in points if m.peak_bytes is not None]
    if len(with_peak) < 2:
        raise ValueError("calibrate_memory needs at least two points with a measured peak")
    peaks = np.array([m.peak_bytes for m in with_peak])
    model = np.array([activation_bytes(m.workload, config) for m in with_peak])
    memory = _relative_nnls(np.stack([np.ones_like(peaks), model], axis=1), peaks)
    return replace(start, base_bytes=float(memory[0]), memory_scale=float(memory[1]))


def save_calibration(calibration: Calibration, path: str | os.PathLike) -> None:
    from warpbio.io import atomic_write

    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(calibration.to_dict(), indent=1) + "\n")


def load_calibration(path: str | os.PathLike) -> Calibration:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"calibration file '{path}' is not readable JSON ({error})") from None
    return Calibration.from_dict(data)
