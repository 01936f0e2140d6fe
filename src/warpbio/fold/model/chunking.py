"""Chunked evaluation and the automatic chunk size.

:func:`chunked` runs a row-wise function over slices of its inputs and writes
each slice's result into one preallocated output (no ``torch.cat``: the parts
and the joined copy never live at the same time). :func:`pick_chunk_size`
chooses the largest chunk whose predicted peak (the cost model's, from the
target's shapes and the run options) fits in a share of the free memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import torch

from warpbio.fold.config import InferenceOptions, ModelConfig

log = logging.getLogger(__name__)

# Share of the free memory the predicted peak may take (the rest: allocator slack;
# measured peaks were 41-93% of the prediction on an H100, 256-4,000 residues).
FREE_FRACTION = 0.85


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


def predicted_peak_bytes(
    chunk: int | None, shapes: TargetShapes, config: ModelConfig, options: InferenceOptions
) -> float:
    """The cost model's peak for this target with ``options`` at this chunk size
    (:func:`warpbio.fold.cost.activation_bytes`: its live tensors by phase), less
    the float32 parameters: they are loaded before the free memory is measured."""
    from warpbio.fold.cost import Workload, activation_bytes, parameter_count

    blocks = config.evoformer_num_block
    workload = Workload.from_options(
        shapes.num_res, shapes.num_msa, shapes.num_extra, blocks, replace(options, chunk_size=chunk)
    )
    resident = 4.0 * parameter_count(config, blocks)
    return activation_bytes(workload, config) - resident


def pick_chunk_size(
    shapes: TargetShapes,
    config: ModelConfig,
    free_bytes: int,
    options: InferenceOptions,
    fraction: float = FREE_FRACTION,
) -> int | None:
    """Largest chunk (None = whole tensors) whose predicted peak fits ``fraction`` of
    the free memory. The prediction was an upper bound on every peak measured on an
    H100 from 256 to 4,000 residues, with and without chunking."""
    budget = fraction * free_bytes

    def fits(chunk: int | None) -> bool:
        return predicted_peak_bytes(chunk, shapes, config, options) <= budget

    if fits(None):
        return None
    low, high = 1, max(shapes.num_res, shapes.num_msa, shapes.num_extra)
    if not fits(low):
        log.warning("even chunk size 1 may not fit in %.0f MB free", free_bytes / 2**20)
        return 1
    while low < high:  # largest chunk that fits; the peak grows with the chunk
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
