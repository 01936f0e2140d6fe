"""Fused gating kernels: plain-PyTorch versions.

The agreed interface of the Triton kernels (branch fold-kernels), which replace
this file at merge; the engine calls only these two functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from warpbio.fold.model.evoformer import TriangleMultiplication


def sigmoid_gate(
    value: torch.Tensor, gate: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """value * sigmoid(gate) (* mask[..., None]); value and gate of one shape."""
    out = value * torch.sigmoid(gate)
    return out if mask is None else out * mask[..., None]


def triangle_multiplication_fused(
    module: TriangleMultiplication, pair: torch.Tensor, pair_mask: torch.Tensor
) -> torch.Tensor:
    """What ``module.forward(pair, pair_mask)`` returns (the update), with the five
    input projections as one GEMM and the gates through :func:`sigmoid_gate`."""
    from warpbio.fold.model.plan import Plan

    return module.update(pair, pair_mask, Plan(fused=True))
