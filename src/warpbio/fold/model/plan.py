"""The resolved run-time plan the model's forwards follow.

:class:`InferenceOptions` says what the user asked for; :class:`Plan` is what one
target runs with (the automatic chunk size resolved, the autocast dtype as a
torch dtype). ``Plan()`` is the unoptimized float32 reference path.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from warpbio.fold.config import InferenceOptions, ModelConfig
from warpbio.fold.model.chunking import TargetShapes, free_memory_bytes, pick_chunk_size

log = logging.getLogger(__name__)

AUTOCAST_DTYPES = {"float32": None, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Plan:
    chunk_size: int | None = None
    attention: str = "reference"  # or "sdpa"
    fused: bool = False
    inplace: bool = False
    autocast_dtype: torch.dtype | None = None  # None: float32 throughout
    stream_dtype: torch.dtype | None = None  # the stacks' residual streams; None: float32

    def chunks(self, size: int) -> bool:
        """Whether an axis of this size is cut into chunks."""
        return self.chunk_size is not None and self.chunk_size < size

    def autocast(self, device_type: str) -> contextlib.AbstractContextManager:
        """Autocast for the Evoformer and extra-MSA stacks (nothing in float32)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device_type, dtype=self.autocast_dtype)


REFERENCE = Plan()


def make_plan(
    options: InferenceOptions,
    config: ModelConfig,
    batch: Mapping[str, torch.Tensor],
    device: torch.device,
    free_bytes: int | None = None,
) -> Plan:
    """The plan of one target; ``free_bytes`` overrides the measured free memory."""
    dtype = AUTOCAST_DTYPES[options.precision]
    chunk_size = options.chunk_size
    if options.auto_chunk:
        shapes = TargetShapes.of_batch(batch)
        free = free_memory_bytes(device) if free_bytes is None else int(free_bytes)
        chunk_size = pick_chunk_size(shapes, config, free, options)
        log.info(
            "auto chunk: %s for %d residues, %d MSA rows, %d extra rows, %.0f MB free",
            "whole tensors" if chunk_size is None else f"chunk size {chunk_size}",
            shapes.num_res,
            shapes.num_msa,
            shapes.num_extra,
            free / 2**20,
        )
    return Plan(
        chunk_size=chunk_size,
        attention=options.attention,
        fused=options.fused,
        inplace=options.inplace,
        autocast_dtype=dtype,
        stream_dtype=dtype if options.bf16_streams else None,
    )
