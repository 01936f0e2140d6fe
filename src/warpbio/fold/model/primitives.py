"""Building blocks with AlphaFold2's parameter layout.

Every module stores its parameters under the leaf names and shapes of the
official Haiku modules (``weights`` as [in, out], attention ``query_w`` as
[in, heads, dim], ...), and modules are named like Haiku's scopes, so the
weight loader (:mod:`warpbio.fold.params`) maps npz keys to parameters by name
alone.  The arithmetic follows the reference order of operations, so float32
results agree with it to rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as nnf
from torch import nn

# Masked attention logits: bias of 1e9 per masked key, logits clipped to +-1e8
# (as the reference does), so a fully masked row gets uniform weights, not NaN.
MASK_BIAS = 1e9
LOGIT_CLIP = 1e8


class Linear(nn.Module):
    """y = x @ weights + bias, ``weights`` stored [in, out] as in Haiku."""

    def __init__(self, num_input: int, num_output: int, use_bias: bool = True):
        super().__init__()
        self.weights = nn.Parameter(torch.empty(num_input, num_output))
        self.bias = nn.Parameter(torch.zeros(num_output)) if use_bias else None
        nn.init.normal_(self.weights, std=num_input**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.matmul(x, self.weights)
        return out + self.bias if self.bias is not None else out


class LayerNorm(nn.Module):
    """Layer norm over the last axis with ``scale`` and ``offset`` (eps 1e-5)."""

    def __init__(self, num_channel: int, eps: float = 1e-5):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(num_channel))
        self.offset = nn.Parameter(torch.zeros(num_channel))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nnf.layer_norm(x, (x.shape[-1],), self.scale, self.offset, self.eps)


def chunked(
    fn: Callable[..., torch.Tensor],
    batched: Sequence[torch.Tensor],
    shared: Sequence[torch.Tensor | None] = (),
    chunk_size: int | None = None,
    dim: int = 0,
    out_dim: int | None = None,
) -> torch.Tensor:
    """Apply ``fn`` to slices of ``batched`` along ``dim`` (all at once if no chunk);
    the pieces are joined along ``out_dim`` (default ``dim``)."""
    size = batched[0].shape[dim]
    if chunk_size is None or chunk_size >= size:
        return fn(*batched, *shared)
    parts = [
        fn(*(x.narrow(dim, start, min(chunk_size, size - start)) for x in batched), *shared)
        for start in range(0, size, chunk_size)
    ]
    return torch.cat(parts, dim=dim if out_dim is None else out_dim)


def mask_bias(mask: torch.Tensor) -> torch.Tensor:
    """[B, K] key mask -> additive bias [B, 1, 1, K]."""
    return (MASK_BIAS * (mask - 1.0))[:, None, None, :]


class Attention(nn.Module):
    """Gated multi-head attention (Jumper et al. 2021, Suppl. Alg. 7, 8, 13, 14)."""

    def __init__(
        self,
        q_channel: int,
        m_channel: int,
        output_dim: int,
        num_head: int,
        key_dim: int | None = None,
        value_dim: int | None = None,
        gating: bool = True,
    ):
        super().__init__()
        key_dim = (key_dim or q_channel) // num_head
        value_dim = (value_dim or m_channel) // num_head
        self.num_head, self.key_dim = num_head, key_dim
        self.query_w = nn.Parameter(torch.randn(q_channel, num_head, key_dim) * q_channel**-0.5)
        self.key_w = nn.Parameter(torch.randn(m_channel, num_head, key_dim) * m_channel**-0.5)
        self.value_w = nn.Parameter(torch.randn(m_channel, num_head, value_dim) * m_channel**-0.5)
        if gating:
            self.gating_w = nn.Parameter(torch.zeros(q_channel, num_head, value_dim))
            self.gating_b = nn.Parameter(torch.ones(num_head, value_dim))
        else:
            self.gating_w = self.gating_b = None
        self.output_w = nn.Parameter(
            torch.randn(num_head, value_dim, output_dim) * (num_head * value_dim) ** -0.5
        )
        self.output_b = nn.Parameter(torch.zeros(output_dim))

    def forward(
        self,
        q_data: torch.Tensor,
        m_data: torch.Tensor,
        bias: torch.Tensor,
        nonbatched_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """q_data [B, Q, c], m_data [B, K, c], bias [B, 1, 1, K], nonbatched_bias [H, Q, K]."""
        q = torch.einsum("bqa,ahc->bhqc", q_data, self.query_w) * self.key_dim**-0.5
        k = torch.einsum("bka,ahc->bhkc", m_data, self.key_w)
        v = torch.einsum("bka,ahc->bhkc", m_data, self.value_w)
        logits = torch.matmul(q, k.transpose(-1, -2)) + bias
        if nonbatched_bias is not None:
            logits = logits + nonbatched_bias.unsqueeze(0)
        weights = torch.softmax(logits.clamp(-LOGIT_CLIP, LOGIT_CLIP), dim=-1)
        weighted = torch.matmul(weights, v)  # [B, H, Q, c]
        if self.gating_w is not None:
            gate = torch.einsum("bqc,chv->bhqv", q_data, self.gating_w)
            weighted = weighted * torch.sigmoid(gate + self.gating_b[:, None, :])
        return torch.einsum("bhqc,hco->bqo", weighted, self.output_w) + self.output_b


class GlobalAttention(nn.Module):
    """Global gated attention over the keys (Suppl. Alg. 19, extra-MSA columns)."""

    def __init__(self, q_channel: int, m_channel: int, output_dim: int, num_head: int):
        super().__init__()
        key_dim = q_channel // num_head
        value_dim = m_channel // num_head
        self.key_dim = key_dim
        self.query_w = nn.Parameter(torch.randn(q_channel, num_head, key_dim) * q_channel**-0.5)
        self.key_w = nn.Parameter(torch.randn(m_channel, key_dim) * m_channel**-0.5)
        self.value_w = nn.Parameter(torch.randn(m_channel, value_dim) * m_channel**-0.5)
        self.gating_w = nn.Parameter(torch.zeros(q_channel, num_head, value_dim))
        self.gating_b = nn.Parameter(torch.ones(num_head, value_dim))
        self.output_w = nn.Parameter(
            torch.randn(num_head, value_dim, output_dim) * (num_head * value_dim) ** -0.5
        )
        self.output_b = nn.Parameter(torch.zeros(output_dim))

    def forward(self, q_data: torch.Tensor, m_data: torch.Tensor, q_mask: torch.Tensor):
        """q_data, m_data [B, K, c]; q_mask [B, K]."""
        mask = q_mask.unsqueeze(-1)
        q_avg = (mask * q_data).sum(1) / (mask.sum(1) + 1e-10)
        q = torch.einsum("ba,ahc->bhc", q_avg, self.query_w) * self.key_dim**-0.5
        k = torch.matmul(m_data, self.key_w)
        v = torch.matmul(m_data, self.value_w)
        logits = torch.einsum("bhc,bkc->bhk", q, k) + MASK_BIAS * (q_mask[:, None, :] - 1.0)
        weights = torch.softmax(logits.clamp(-LOGIT_CLIP, LOGIT_CLIP), dim=-1)
        weighted = torch.einsum("bhk,bkc->bhc", weights, v)
        gate = torch.sigmoid(torch.einsum("bqc,chv->bqhv", q_data, self.gating_w) + self.gating_b)
        weighted = weighted[:, None] * gate
        return torch.einsum("bqhc,hco->bqo", weighted, self.output_w) + self.output_b
