"""Building blocks with AlphaFold2's parameter layout.

Every module stores its parameters under the leaf names and shapes of the
official Haiku modules (``weights`` as [in, out], attention ``query_w`` as
[in, heads, dim], ...), and modules are named like Haiku's scopes, so the
weight loader (:mod:`warpbio.fold.params`) maps npz keys to parameters by name
alone.  The arithmetic follows the reference order of operations, so float32
results agree with it to rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as nnf
from torch import nn

from warpbio.fold.model.attention_kernel import LOGIT_CLIP, MASK_BIAS, gated_attention
from warpbio.fold.model.kernels import sigmoid_gate
from warpbio.fold.model.plan import REFERENCE, Plan

__all__ = ["LOGIT_CLIP", "MASK_BIAS"]  # re-exported: the mask constants live with the kernel


class Linear(nn.Module):
    """y = x @ weights + bias, ``weights`` stored [in, out] as in Haiku."""

    def __init__(self, num_input: int, num_output: int, use_bias: bool = True):
        super().__init__()
        self.weights = nn.Parameter(torch.empty(num_input, num_output))
        self.bias = nn.Parameter(torch.zeros(num_output)) if use_bias else None
        nn.init.normal_(self.weights, std=num_input**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.matmul(x, self.weights)
        if self.bias is None:
            return out
        if not torch.is_grad_enabled() and out.dtype == torch.promote_types(
            out.dtype, self.bias.dtype
        ):
            return out.add_(self.bias)  # the same sum without a second copy of the output
        return out + self.bias


class LayerNorm(nn.Module):
    """Layer norm over the last axis with ``scale`` and ``offset`` (eps 1e-5)."""

    def __init__(self, num_channel: int, eps: float = 1e-5):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(num_channel))
        self.offset = nn.Parameter(torch.zeros(num_channel))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32 and torch.is_autocast_enabled(x.device.type):
            # autocast would upcast a low-precision input and write float32; the
            # kernel already computes in float32, so read and write x's dtype
            with torch.autocast(x.device.type, enabled=False):
                scale, offset = self.scale.to(x.dtype), self.offset.to(x.dtype)
                return nnf.layer_norm(x, (x.shape[-1],), scale, offset, self.eps)
        return nnf.layer_norm(x, (x.shape[-1],), self.scale, self.offset, self.eps)


def concatenated(owner: nn.Module, name: str, params: Sequence[torch.Tensor]) -> torch.Tensor:
    """The parameters flattened to [in, -1] (vectors as they are) and joined along
    the last axis, kept on ``owner`` under ``name`` until one of them is replaced,
    moved or changed in place (id, data pointer, version counter). Inference
    only: with autograd on, and inside ``torch.compile`` (storage pointers are
    not traceable), it is rebuilt at every call."""

    def build() -> torch.Tensor:
        return torch.cat([p.flatten(1) if p.dim() > 1 else p for p in params], dim=-1)

    if torch.is_grad_enabled() or torch.compiler.is_compiling():
        return build()  # traced: the concatenation is part of the graph
    key = tuple((id(p), p.data_ptr(), p._version, p.dtype) for p in params)
    cache = owner.__dict__.setdefault("_concatenated", {})
    if name not in cache or cache[name][0] != key:
        cache[name] = (key, build())
    return cache[name][1]


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
        plan: Plan = REFERENCE,
    ) -> torch.Tensor:
        """q_data [B, Q, c], m_data [B, K, c], bias [B, 1, 1, K], nonbatched_bias [H, Q, K]."""
        if plan.attention == "flash":
            return self._flash(q_data, m_data, bias, nonbatched_bias, plan)
        if plan.fused and q_data is m_data and self.gating_w is not None:
            q, k, v, gate = self._fused_projections(q_data)
        else:
            q = torch.einsum("bqa,ahc->bhqc", q_data, self.query_w)
            k = torch.einsum("bka,ahc->bhkc", m_data, self.key_w)
            v = torch.einsum("bka,ahc->bhkc", m_data, self.value_w)
            gate = None
        if plan.attention == "sdpa":
            weighted = self._sdpa(q, k, v, bias, nonbatched_bias)
        else:
            q = q * self.key_dim**-0.5
            weighted = self._reference(q, k, v, bias, nonbatched_bias, plan.inplace)
        if gate is not None:
            weighted = sigmoid_gate(weighted, gate)
        elif self.gating_w is not None:
            gate = torch.einsum("bqc,chv->bhqv", q_data, self.gating_w)
            weighted = weighted * torch.sigmoid(gate + self.gating_b[:, None, :])
        return torch.einsum("bhqc,hco->bqo", weighted, self.output_w) + self.output_b

    @staticmethod
    def _reference(q, k, v, bias, nonbatched_bias, inplace: bool) -> torch.Tensor:
        """Softmax attention as the reference computes it: [B, H, Q, c]."""
        logits = torch.matmul(q, k.transpose(-1, -2))
        if inplace:  # same sums in the same order, without the extra logits copies
            logits += bias
            if nonbatched_bias is not None:
                logits += nonbatched_bias.unsqueeze(0)
            weights = torch.softmax(logits.clamp_(-LOGIT_CLIP, LOGIT_CLIP), dim=-1)
        else:
            logits = logits + bias
            if nonbatched_bias is not None:
                logits = logits + nonbatched_bias.unsqueeze(0)
            weights = torch.softmax(logits.clamp(-LOGIT_CLIP, LOGIT_CLIP), dim=-1)
        return torch.matmul(weights, v)

    def _sdpa(self, q, k, v, bias, nonbatched_bias) -> torch.Tensor:
        """The reference's attention through PyTorch's fused kernel. The float mask
        (key mask bias + pair bias) has the chunk's size. A row whose keys are all
        masked gets uniform weights in the reference (logits clipped to -1e8):
        here its query and mask are zeroed, which gives the same uniform weights."""
        mask = bias.to(q.dtype)
        if nonbatched_bias is not None:
            mask = mask + nonbatched_bias.to(q.dtype).unsqueeze(0)
        all_masked = bias.amax(dim=-1, keepdim=True) <= -0.5 * MASK_BIAS  # [B, 1, 1, 1]
        q = q.masked_fill(all_masked, 0.0)
        if mask is bias:  # not a copy yet: keep the caller's bias intact
            mask = mask.masked_fill(all_masked, 0.0)
        else:
            mask.masked_fill_(all_masked, 0.0)
        return nnf.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.key_dim**-0.5)

    def _flash(self, q_data, m_data, bias, nonbatched_bias, plan: Plan) -> torch.Tensor:
        """:func:`gated_attention`: projections as [B, L, H, c] views, the pair bias
        read tile by tile, the gate applied in the kernel; one output GEMM."""
        b, q_len = q_data.shape[0], q_data.shape[1]
        if plan.fused and q_data is m_data:
            gating = ("gating_w",) if self.gating_w is not None else ()
            names = ("query_w", "key_w", "value_w", *gating)
            q, k, v, *gate = self._joint_projections(q_data, names)
            gate = gate[0] if gate else None
        else:
            q = torch.einsum("bqa,ahc->bqhc", q_data, self.query_w)
            k = torch.einsum("bka,ahc->bkhc", m_data, self.key_w)
            v = torch.einsum("bka,ahc->bkhc", m_data, self.value_w)
            gating = self.gating_w is not None
            gate = torch.einsum("bqc,chv->bqhv", q_data, self.gating_w) if gating else None
        key_bias = bias.reshape(b, bias.shape[-1])
        out = gated_attention(
            q, k, v, key_bias, nonbatched_bias, gate, self.gating_b, self.key_dim**-0.5
        )
        output_w = self.output_w.flatten(0, 1)  # [H * c, out]
        return torch.matmul(out.reshape(b, q_len, -1), output_w) + self.output_b

    def _fused_projections(self, x: torch.Tensor):
        """q, k, v, gate (+ gating bias), each [B, H, Q, c], from one GEMM."""
        names = ("query_w", "key_w", "value_w", "gating_w")
        q, k, v, gate = (p.transpose(1, 2) for p in self._joint_projections(x, names))
        return q, k, v, gate + self.gating_b[:, None, :]

    def _joint_projections(self, x: torch.Tensor, names: Sequence[str]) -> list[torch.Tensor]:
        """The named [in, H, c] projections of x from one GEMM of their concatenated
        weights (cached as "qkvg" / "qkv"), each a [B, L, H, c] view of its output."""
        key = "".join(n[0] for n in names)
        weights = concatenated(self, key, [getattr(self, n) for n in names])
        parts = torch.matmul(x, weights).split([getattr(self, n)[0].numel() for n in names], -1)
        return [p.unflatten(-1, (self.num_head, -1)) for p in parts]


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

    def forward(
        self,
        q_data: torch.Tensor,
        m_data: torch.Tensor,
        q_mask: torch.Tensor,
        plan: Plan = REFERENCE,
    ) -> torch.Tensor:
        """q_data, m_data [B, K, c]; q_mask [B, K]."""
        mask = q_mask.unsqueeze(-1)
        q_avg = (mask * q_data).sum(1) / (mask.sum(1) + 1e-10)
        q = torch.einsum("ba,ahc->bhc", q_avg, self.query_w) * self.key_dim**-0.5
        if plan.fused and q_data is m_data:  # key, value and gating: one GEMM
            weights = concatenated(self, "kvg", [self.key_w, self.value_w, self.gating_w])
            sizes = [self.key_w.shape[1], self.value_w.shape[1], self.gating_w[0].numel()]
            k, v, gate = torch.matmul(m_data, weights).split(sizes, dim=-1)
            gate = gate.unflatten(-1, self.gating_w.shape[1:])
        else:
            k = torch.matmul(m_data, self.key_w)
            v = torch.matmul(m_data, self.value_w)
            gate = torch.einsum("bqc,chv->bqhv", q_data, self.gating_w)
        logits = torch.einsum("bhc,bkc->bhk", q, k) + MASK_BIAS * (q_mask[:, None, :] - 1.0)
        weights = torch.softmax(logits.clamp(-LOGIT_CLIP, LOGIT_CLIP), dim=-1)
        weighted = torch.einsum("bhk,bkc->bhc", weights, v)
        weighted = weighted[:, None] * torch.sigmoid(gate + self.gating_b)
        return torch.einsum("bqhc,hco->bqo", weighted, self.output_w) + self.output_b
