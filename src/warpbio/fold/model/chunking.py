"""Chunked evaluation and the automatic chunk size.

:func:`chunked` runs a row-wise function over slices of its inputs and writes
each slice's result into one preallocated output (no ``torch.cat``: the parts
and the joined copy never live at the same time). :func:`pick_chunk_size`
chooses the largest chunk whose biggest per-chunk intermediate fits in a share
of the free memory, from the target's shapes alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from warpbio.fold.config import ModelConfig

log = logging.getLogger(__name__)

# Share of the memory left after the full-size activations that one chunk's
# intermediates may take (the rest is allocator slack and short-lived copies).
FREE_FRACTION = 0.5
# Live copies of the attention logits per chunk: logits, clipped logits and
# weights on the reference path; the float mask and the kernel's work with SDPA;
# none with the flash kernel on CUDA, but its CPU twin makes the logits (one counted).
LOGIT_COPIES = {"reference": 3, "sdpa": 2, "flash": 1}
# Full-size pair / MSA tensors alive at once inside one block (residual stream,
# normalized input, projections, update): a rough upper count.
PAIR_COPIES, MSA_COPIES = 8, 6


def chunked(
    fn: Callable[..., torch.Tensor],
    batched: Sequence[torch.Tensor],
    shared: Sequence[torch.Tensor | None] = (),
    chunk_size: int | None = None,
    dim: int = 0,
    out_dim: int | None = None,
) -> torch.Tensor:
    """``fn`` over slices of ``batched`` along ``dim`` (all at once without a chunk);
    the results fill one output along ``out_dim`` (default ``dim``), which must
    have the same extent as the inputs' ``dim``. The last slice is the remainder."""
    size = batched[0].shape[dim]
    if chunk_size is None or chunk_size >= size:
        return fn(*batched, *shared)
    out_dim = dim if out_dim is None else out_dim
    out = None
    for start in range(0, size, chunk_size):
        length = min(chunk_size, size - start)
        part = fn(*(x.narrow(dim, start, length) for x in batched), *shared)
        if out is None:
            shape = list(part.shape)
            shape[out_dim] = size
            out = part.new_empty(shape)
        out.narrow(out_dim, start, length).copy_(part)
        del part
    return out


@dataclass(frozen=True)
class TargetShapes:
    num_res: int
    num_msa: int
    num_extra: int

    @classmethod
    def of_batch(cls, batch: Mapping[str, torch.Tensor]) -> TargetShapes:
        return cls(
            num_res=int(batch["aatype"].shape[0]),
            num_msa=int(batch["msa_feat"].shape[0]),
            num_extra=int(batch["extra_msa"].shape[0]),
        )


def _per_row_costs(
    shapes: TargetShapes, config: ModelConfig, dtype_bytes: int, attention: str
) -> list[tuple[int, int]]:
    """(rows the op is chunked over, bytes of its intermediates per row) per op."""
    n, s, e = shapes.num_res, shapes.num_msa, shapes.num_extra
    copies = LOGIT_COPIES[attention]
    # the reference kernel's logits are float32 (mask bias promotes them)
    logit = (4 if attention == "reference" else dtype_bytes) * copies
    f, b = config.transition_factor, dtype_bytes
    c_opm = config.outer_product_channel
    return [
        (s, config.msa_row_num_head * n * n * logit),  # MSA row attention
        (e, config.msa_row_num_head * n * n * logit),  # extra-MSA row attention
        (n, config.msa_column_num_head * s * s * logit),  # MSA column attention
        (n, 3 * e * config.extra_msa_channel * b),  # global column attention
        (n, config.triangle_attention_num_head * n * n * logit),  # triangle attention
        (s, n * f * config.msa_channel * b),  # MSA transition hidden
        (e, n * f * config.extra_msa_channel * b),  # extra-MSA transition hidden
        (n, n * f * config.pair_channel * b),  # pair transition hidden
        (n, n * (c_opm * c_opm + config.pair_channel) * b),  # outer product mean
        (n, 3 * n * config.triangle_multiplication_channel * b),  # triangle products
    ]


def chunk_bytes(
    chunk: int | None,
    shapes: TargetShapes,
    config: ModelConfig,
    dtype_bytes: int = 4,
    attention: str = "reference",
) -> int:
    """Bytes of the largest per-chunk intermediate at this chunk size (None: whole)."""
    costs = _per_row_costs(shapes, config, dtype_bytes, attention)
    return max((rows if chunk is None else min(chunk, rows)) * per_row for rows, per_row in costs)


def working_set_bytes(shapes: TargetShapes, config: ModelConfig) -> int:
    """Full-size activations that do not shrink with the chunk (float32)."""
    n = shapes.num_res
    pair = n * n * config.pair_channel * 4
    msa = shapes.num_msa * n * config.msa_channel * 4
    extra = shapes.num_extra * n * config.extra_msa_channel * 4
    return PAIR_COPIES * pair + MSA_COPIES * max(msa, extra)


def pick_chunk_size(
    shapes: TargetShapes,
    config: ModelConfig,
    free_bytes: int,
    dtype_bytes: int = 4,
    attention: str = "reference",
    fraction: float = FREE_FRACTION,
) -> int | None:
    """Largest chunk (None = whole tensors) whose biggest intermediate fits in
    ``fraction`` of the free memory left after the full-size activations."""
    budget = fraction * max(free_bytes - working_set_bytes(shapes, config), 0)

    def fits(chunk: int | None) -> bool:
        return chunk_bytes(chunk, shapes, config, dtype_bytes, attention) <= budget

    if fits(None):
        return None
    low, high = 1, max(shapes.num_res, shapes.num_msa, shapes.num_extra)
    if not fits(low):
        log.warning("even chunk size 1 may not fit in %.0f MB free", free_bytes / 2**20)
        return 1
    while low < high:  # largest chunk that fits; cost grows with the chunk
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return low


def free_memory_bytes(device: torch.device) -> int:
    """Free device memory: CUDA's free plus PyTorch's cached-but-unused blocks;
    the host's available memory on CPU."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + cached)
    import psutil

    return int(psutil.virtual_memory().available)
