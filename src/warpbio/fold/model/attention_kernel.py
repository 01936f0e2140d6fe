"""Gated attention with pair bias in one pass (flash-style Triton kernel).

AlphaFold2's attentions (Suppl. Alg. 7, 8, 13, 14) add to the logits a key-mask
bias per batch row and, for MSA-row and triangle attention, a pair bias shared
by every batch row. Handing that to a fused scaled-dot-product kernel means
materialising the sum as a [B, H, Q, K] float mask (the largest tensor of the
block: 4 GB in bfloat16 for the triangle attention of 1,024 residues) and
reading it back. :func:`gated_attention` instead reads the [H, Q, K] pair bias
and the [B, K] key bias tile by tile inside an online-softmax loop (Dao et al.
2022), clips the logits as the reference does, and multiplies the output by
the sigmoid gate in the epilogue. Nothing of size B x H x Q x K is written.

Layout: q, k, v and the gate are [B, L, H, D] (views of a projection GEMM's
output, any strides with unit stride on D) and the output is [B, Q, H, D], so
the output projection is one plain GEMM without permutes.

:func:`gated_attention_torch` is the CPU twin (the reference's arithmetic, in
float32); the Triton kernel runs on CUDA tensors, or on the CPU under the
Triton interpreter in the tests. On CUDA the kernel is a ``torch.library``
custom op, so ``torch.compile`` keeps it as one opaque call.
"""

from __future__ import annotations

import functools

import torch

from warpbio.fold.model import kernels

# Masked attention logits: bias of 1e9 per masked key, logits clipped to +-1e8
# (as the reference does), so a fully masked row gets uniform weights, not NaN.
MASK_BIAS = 1e9
LOGIT_CLIP = 1e8


def gated_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_bias: torch.Tensor,
    pair_bias: torch.Tensor | None = None,
    gate: torch.Tensor | None = None,
    gate_bias: torch.Tensor | None = None,
    scale: float = 1.0,
) -> torch.Tensor:
    """softmax(clip(scale q.k + key_bias + pair_bias)) v * sigmoid(gate + gate_bias).

    q [B, Q, H, D], k and v [B, K, H, D], key_bias [B, K] (additive, e.g.
    1e9 * (mask - 1)), pair_bias [H, Q, K] (shared by the batch), gate
    [B, Q, H, D] logits and gate_bias [H, D]. Returns [B, Q, H, D] in v's dtype.
    """
    if kernels.use_triton(q, custom_op=True):
        return torch.ops.warpbio.gated_attention(
            q, k, v, key_bias, pair_bias, gate, gate_bias, float(scale)
        )
    return gated_attention_torch(q, k, v, key_bias, pair_bias, gate, gate_bias, scale)


def gated_attention_torch(q, k, v, key_bias, pair_bias=None, gate=None, gate_bias=None, scale=1.0):
    """The twin: the reference's order of operations in float32."""
    dtype = v.dtype
    q, k, v = (t.float().transpose(1, 2) for t in (q, k, v))  # [B, H, L, D]
    logits = torch.matmul(q * scale, k.transpose(-1, -2)) + key_bias.float()[:, None, None, :]
    if pair_bias is not None:
        logits = logits + pair_bias.float().unsqueeze(0)
    weights = torch.softmax(logits.clamp(-LOGIT_CLIP, LOGIT_CLIP), dim=-1)
    out = torch.matmul(weights, v).transpose(1, 2)  # [B, Q, H, D]
    if gate is not None:
        logit = gate.float() if gate_bias is None else gate.float() + gate_bias.float()
        out = out * torch.sigmoid(logit)
    return out.to(dtype).contiguous()


def _unit_last(x: torch.Tensor | None) -> torch.Tensor | None:
    return x if x is None or x.stride(-1) == 1 else x.contiguous()


@torch.library.custom_op("warpbio::gated_attention", mutates_args=())
def _gated_attention_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_bias: torch.Tensor,
    pair_bias: torch.Tensor | None,
    gate: torch.Tensor | None,
    gate_bias: torch.Tensor | None,
    scale: float,
) -> torch.Tensor:
    return gated_attention_triton(q, k, v, key_bias, pair_bias, gate, gate_bias, scale)


@_gated_attention_op.register_fake
def _(q, k, v, key_bias, pair_bias, gate, gate_bias, scale):
    return q.new_empty(q.shape, dtype=v.dtype)


def gated_attention_triton(q, k, v, key_bias, pair_bias=None, gate=None, gate_bias=None, scale=1.0):
    batch, q_len, heads, head_dim = q.shape
    k_len = k.shape[1]
    q, k, v, gate = (_unit_last(t) for t in (q, k, v, gate))
    key_bias = key_bias.contiguous()
    pair_bias = _unit_last(pair_bias)
    out = torch.empty(batch, q_len, heads, head_dim, dtype=v.dtype, device=v.device)
    if out.numel() == 0:
        return out
    gate_bias = None if gate_bias is None else gate_bias.contiguous()
    block_d = max(16, kernels._next_power_of_2(head_dim))  # tl.dot needs >= 16
    block_m = 128 if q_len >= 128 else 64
    block_n = 64
    dummy = key_bias  # a valid pointer for the unused operands
    bias_strides = (pair_bias.stride(0), pair_bias.stride(1)) if pair_bias is not None else (0, 0)
    gate_strides = gate.stride()[:3] if gate is not None else (0, 0, 0)
    grid = (-(-q_len // block_m), batch * heads)
    # float32 in: float32 products, as the twin. The CPU interpreter's dot of
    # bfloat16 tiles is wrong (Triton 3.x), so there the tiles go up to float32.
    ieee = q.dtype == torch.float32 or not q.is_cuda
    _kernel()[grid](
        q, k, v, key_bias,
        dummy if pair_bias is None else pair_bias,
        dummy if gate is None else gate,
        dummy if gate_bias is None else gate_bias,
        out, q_len, k_len, heads, head_dim, float(scale),
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], key_bias.stride(0),
        *bias_strides, *gate_strides,
        has_bias=pair_bias is not None, has_gate=gate is not None,
        has_gate_bias=gate_bias is not None, ieee=ieee,
        dot_precision="ieee" if ieee else "tf32",
        block_m=block_m, block_n=block_n, block_d=block_d,
        num_warps=4, num_stages=2,
    )  # fmt: skip
    return out


@functools.cache
def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def gated_attention_kernel(
        q_ptr, k_ptr, v_ptr, key_bias_ptr, pair_bias_ptr, gate_ptr, gate_bias_ptr, out_ptr,
        q_len, k_len, heads, head_dim, scale,
        sq_b, sq_m, sq_h, sk_b, sk_n, sk_h, sv_b, sv_n, sv_h, skb_b,
        sp_h, sp_m, sg_b, sg_m, sg_h,
        has_bias: tl.constexpr, has_gate: tl.constexpr, has_gate_bias: tl.constexpr,
        ieee: tl.constexpr, dot_precision: tl.constexpr,
        block_m: tl.constexpr, block_n: tl.constexpr, block_d: tl.constexpr,
    ):  # fmt: skip
        batch_head = tl.program_id(1)
        b = (batch_head // heads).to(tl.int64)
        h = batch_head % heads
        m = tl.program_id(0) * block_m + tl.arange(0, block_m)
        d = tl.arange(0, block_d)
        m_in = m < q_len
        d_in = d < head_dim
        m64 = m.to(tl.int64)
        q_rows = q_ptr + b * sq_b + h * sq_h + m64[:, None] * sq_m + d[None, :]
        q = tl.load(q_rows, mask=m_in[:, None] & d_in[None, :], other=0.0)
        if ieee:  # float32 products (float32 inputs, or the CPU interpreter)
            q = q.to(tl.float32)
        acc = tl.zeros((block_m, block_d), dtype=tl.float32)
        row_max = tl.full((block_m,), float("-inf"), dtype=tl.float32)
        row_sum = tl.zeros((block_m,), dtype=tl.float32)
        for start in range(0, k_len, block_n):
            n = start + tl.arange(0, block_n)
            n_in = n < k_len
            n64 = n.to(tl.int64)
            kv_mask = n_in[:, None] & d_in[None, :]
            k = tl.load(
                k_ptr + b * sk_b + h * sk_h + n64[:, None] * sk_n + d[None, :],
                mask=kv_mask,
                other=0.0,
            )
            if ieee:
                k = k.to(tl.float32)
            s = tl.dot(q, tl.trans(k), input_precision=dot_precision) * scale
            key_bias = tl.load(key_bias_ptr + b * skb_b + n, mask=n_in, other=0.0)
            s += key_bias.to(tl.float32)[None, :]
            if has_bias:
                bias = tl.load(
                    pair_bias_ptr + h * sp_h + m64[:, None] * sp_m + n[None, :],
                    mask=m_in[:, None] & n_in[None, :],
                    other=0.0,
                )
                s += bias.to(tl.float32)
            s = tl.minimum(tl.maximum(s, -1e8), 1e8)  # LOGIT_CLIP
            s = tl.where(n_in[None, :], s, float("-inf"))
            new_max = tl.maximum(row_max, tl.max(s, axis=1))
            alpha = tl.exp(row_max - new_max)
            p = tl.exp(s - new_max[:, None])
            row_sum = row_sum * alpha + tl.sum(p, axis=1)
            v = tl.load(
                v_ptr + b * sv_b + h * sv_h + n64[:, None] * sv_n + d[None, :],
                mask=kv_mask,
                other=0.0,
            )
            if ieee:
                pv = tl.dot(p, v.to(tl.float32), input_precision="ieee")
            else:
                pv = tl.dot(p.to(v.dtype), v)
            acc = acc * alpha[:, None] + pv
            row_max = new_max
        out = acc / row_sum[:, None]
        io_mask = m_in[:, None] & d_in[None, :]
        if has_gate:
            gate_rows = gate_ptr + b * sg_b + h * sg_h + m64[:, None] * sg_m + d[None, :]
            logit = tl.load(gate_rows, mask=io_mask, other=0.0).to(tl.float32)
            if has_gate_bias:
                gb = tl.load(gate_bias_ptr + h * head_dim + d, mask=d_in, other=0.0)
                logit += gb.to(tl.float32)[None, :]
            out = out * tl.sigmoid(logit)
        out_rows = out_ptr + ((b * q_len + m64[:, None]) * heads + h) * head_dim + d[None, :]
        tl.store(out_rows, out.to(out_ptr.dtype.element_ty), mask=io_mask)

    return gated_attention_kernel
