"""Fused kernels of the Evoformer's gating and triangle multiplication.

:func:`sigmoid_gate` is ``value * sigmoid(gate) (* mask)`` in one pass, and
:func:`triangle_multiplication_fused` computes exactly the update that
:class:`~warpbio.fold.model.evoformer.TriangleMultiplication` returns (Suppl.
Alg. 11/12) with fewer passes over the [N, N, c] tensors:

1. layer norm of the pair (torch);
2. ONE GEMM of it with the five projections' weights side by side
   (left/right projection, left/right gate, output gate; concatenated once and
   cached on the module until a weight changes);
3. an epilogue kernel: bias, sigmoid gates and pair mask, writing left/right
   straight into the channel-first layout of the batched matmul (no permute
   copies), and the output gate's bias in place;
4. the per-channel matmul (cuBLAS);
5. a kernel for the center layer norm that reads the channel-first product and
   writes channel-last (the permute fused into the norm);
6. the output projection GEMM, then :func:`sigmoid_gate` with the output gate.

Every Triton kernel has a PyTorch twin of the same maths (``*_torch``), which
runs anywhere. Dispatch: Triton when the tensor is on CUDA and ``triton``
imports, the twin otherwise, and always the twin inside ``torch.compile``
(inductor fuses the twin's elementwise chain into kernels of its own).
:func:`kernel_backend` forces one side; forced Triton on CPU tensors needs the
Triton interpreter (``TRITON_INTERPRET=1`` set before ``triton`` is first
imported), which is how the tests compare the kernels with their twins.

Triton is imported lazily: CPU-only installs without it use the twins. Only
long-stable Triton APIs are used (loads, stores, sums, sigmoid, rsqrt).
Compute is float32 whatever the storage dtype (float32 or bfloat16).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as nnf

if TYPE_CHECKING:
    from warpbio.fold.model.evoformer import TriangleMultiplication
    from warpbio.fold.model.primitives import LayerNorm

BACKENDS = ("auto", "triton", "torch")
# the five Linear modules whose weights form the one input GEMM, in column order
PROJECTIONS = ("left_projection", "right_projection", "left_gate", "right_gate", "gating_linear")

_backend = "auto"
_kernels: dict | None = None


@contextlib.contextmanager
def kernel_backend(name: str) -> Iterator[None]:
    """Force the kernels' side inside the block: ``"triton"`` (any device; CPU
    tensors only under the Triton interpreter), ``"torch"`` (the twins) or
    ``"auto"`` (the default: Triton on CUDA when it imports)."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"kernel backend {name!r}: use one of {BACKENDS}")
    previous, _backend = _backend, name
    try:
        yield
    finally:
        _backend = previous


@functools.cache
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def use_triton(tensor: torch.Tensor, custom_op: bool = False) -> bool:
    """Whether the kernels on ``tensor`` run through Triton (see the module doc).
    Under ``torch.compile`` only a ``custom_op`` (opaque to the tracer) does."""
    if torch.compiler.is_compiling() and not custom_op:
        return False
    if _backend != "auto":
        return _backend == "triton"
    return tensor.is_cuda and triton_available()


# --------------------------------------------------------------------------
# sigmoid gate
# --------------------------------------------------------------------------


def sigmoid_gate(
    value: torch.Tensor, gate: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``value * sigmoid(gate) (* mask[..., None])`` in ``value``'s dtype, computed
    in float32. ``gate`` has ``value``'s shape (views are fine); ``mask`` has
    ``value.shape[:-1]``."""
    if gate.shape != value.shape:
        raise ValueError(f"gate shape {tuple(gate.shape)} != value shape {tuple(value.shape)}")
    if mask is not None and mask.shape != value.shape[:-1]:
        raise ValueError(f"mask shape {tuple(mask.shape)} != {tuple(value.shape[:-1])}")
    if use_triton(value):
        return sigmoid_gate_triton(value, gate, mask)
    return sigmoid_gate_torch(value, gate, mask)


def sigmoid_gate_torch(value, gate, mask=None):
    out = value.float() * torch.sigmoid(gate.float())
    if mask is not None:
        out = out * mask[..., None].float()
    return out.to(value.dtype)


def _rows(x: torch.Tensor) -> torch.Tensor:
    """x as [rows, channels] with unit channel stride (a view when strides allow)."""
    rows = x.reshape(-1, x.shape[-1])
    return rows if rows.stride(-1) == 1 else rows.contiguous()


def sigmoid_gate_triton(value, gate, mask=None):
    kernels = _get_kernels()
    values, gates = _rows(value), _rows(gate)
    rows, channels = values.shape
    out = torch.empty(rows, channels, dtype=value.dtype, device=value.device)
    if rows:
        block_c = min(128, _next_power_of_2(channels))
        grid = (_cdiv(rows, 32), _cdiv(channels, block_c))
        flat_mask = mask.reshape(-1).contiguous() if mask is not None else values
        kernels["sigmoid_gate"][grid](
            values, gates, flat_mask, out, rows, channels, values.stride(0), gates.stride(0),
            has_mask=mask is not None, block_r=32, block_c=block_c,
        )  # fmt: skip
    return out.reshape(value.shape)


# --------------------------------------------------------------------------
# triangle multiplication
# --------------------------------------------------------------------------


def concatenated_projections(module: TriangleMultiplication) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights [Cz, 4 Ci + Cz], bias [4 Ci + Cz]) of :data:`PROJECTIONS` side by side.

    Cached on the module, keyed on every parameter's storage and version, so a
    weight load (``copy_`` bumps the version) or a move to another device
    rebuilds it. Inside ``torch.compile`` it is concatenated in the graph
    (storage pointers cannot be traced).
    """
    linears = [getattr(module, name) for name in PROJECTIONS]
    params = [p for linear in linears for p in (linear.weights, linear.bias)]
    if torch.compiler.is_compiling():
        return _concatenate(linears)
    key = tuple((p.data_ptr(), p._version) for p in params)
    cached = module.__dict__.get("_fused_projections")
    if cached is None or cached[0] != key:
        with torch.no_grad():
            cached = (key, *_concatenate(linears))
        module.__dict__["_fused_projections"] = cached
    return cached[1], cached[2]


def _concatenate(linears):
    weights = torch.cat([linear.weights for linear in linears], dim=1)
    return weights, torch.cat([linear.bias for linear in linears])


def gated_projections(
    proj: torch.Tensor, bias: torch.Tensor, mask: torch.Tensor, num_intermediate: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Epilogue of the input GEMM ``proj`` [M, 4 Ci + Cz] (M = N * N positions).

    Returns left and right = mask * (projection + bias) * sigmoid(gate + bias),
    each [Ci, M] (channel-first), and the output gate logits (+ bias) [M, Cz].
    The Triton kernel adds the gate bias into ``proj`` in place and returns a
    view of it.
    """
    if use_triton(proj):
        return gated_projections_triton(proj, bias, mask, num_intermediate)
    return gated_projections_torch(proj, bias, mask, num_intermediate)


def gated_projections_torch(proj, bias, mask, num_intermediate):
    ci = num_intermediate
    column = mask.reshape(-1, 1).float()

    def part(index):  # the index-th block of Ci columns, bias added, float32
        cols = slice(index * ci, (index + 1) * ci)
        return proj[:, cols].float() + bias[cols].float()

    left = column * part(0) * torch.sigmoid(part(2))
    right = column * part(1) * torch.sigmoid(part(3))
    gate = (proj[:, 4 * ci :].float() + bias[4 * ci :].float()).to(proj.dtype)
    return left.t().contiguous().to(proj.dtype), right.t().contiguous().to(proj.dtype), gate


def gated_projections_triton(proj, bias, mask, num_intermediate):
    kernels = _get_kernels()
    ci = num_intermediate
    rows, width = proj.shape
    num_gate = width - 4 * ci
    if proj.stride(1) != 1:
        proj = proj.contiguous()
    left = torch.empty(ci, rows, dtype=proj.dtype, device=proj.device)
    right = torch.empty_like(left)
    if rows:
        block_c = min(32, _next_power_of_2(max(ci, num_gate)))
        grid = (_cdiv(rows, 64), _cdiv(ci, block_c) + _cdiv(num_gate, block_c))
        kernels["gated_projections"][grid](
            proj, bias.contiguous(), mask.reshape(-1).contiguous(), left, right,
            rows, proj.stride(0), ci, num_gate, block_m=64, block_c=block_c,
        )  # fmt: skip
    return left, right, proj[:, 4 * ci :]


def center_layer_norm(
    prod: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, eps: float
) -> torch.Tensor:
    """Layer norm over the channels of the channel-first product ``prod`` [Ci, M];
    returns [M, Ci] (channel-last) in ``prod``'s dtype."""
    if use_triton(prod):
        return center_layer_norm_triton(prod, scale, offset, eps)
    return center_layer_norm_torch(prod, scale, offset, eps)


def center_layer_norm_torch(prod, scale, offset, eps):
    channels = prod.shape[0]
    out = nnf.layer_norm(prod.t().float(), (channels,), scale.float(), offset.float(), eps)
    return out.to(prod.dtype)


def center_layer_norm_triton(prod, scale, offset, eps):
    kernels = _get_kernels()
    prod = prod.contiguous()
    channels, rows = prod.shape
    out = torch.empty(rows, channels, dtype=prod.dtype, device=prod.device)
    if rows:
        block_c = _next_power_of_2(channels)
        block_m = max(8, min(64, 4096 // block_c))  # a [block_m, block_c] tile in registers
        kernels["center_layer_norm"][(_cdiv(rows, block_m),)](
            prod, scale.contiguous(), offset.contiguous(), out, rows, channels, eps,
            block_m=block_m, block_c=block_c,
        )  # fmt: skip
    return out


def triangle_multiplication_fused(
    module: TriangleMultiplication, pair: torch.Tensor, pair_mask: torch.Tensor
) -> torch.Tensor:
    """``module.forward(pair, pair_mask)`` (outgoing or incoming, as ``module.outgoing``
    says) through one input GEMM, the fused epilogue and the fused center norm."""
    n, n_other, cz = pair.shape
    ci = module.center_layer_norm.scale.shape[0]
    act = module.layer_norm_input(pair).reshape(n * n_other, cz)
    weights, bias = concatenated_projections(module)
    proj = torch.matmul(act, weights)
    left, right, gate = gated_projections(proj, bias, pair_mask, ci)
    left, right = left.view(ci, n, n_other), right.view(ci, n, n_other)
    # outgoing 'ikc,jkc->ijc', incoming 'kjc,kic->ijc': transposed views, no copies
    if module.outgoing:
        prod = torch.matmul(left, right.transpose(1, 2))
    else:
        prod = torch.matmul(right.transpose(1, 2), left)
    norm: LayerNorm = module.center_layer_norm
    normed = center_layer_norm(prod.reshape(ci, -1), norm.scale, norm.offset, norm.eps)
    projection = module.output_projection
    out = torch.addmm(projection.bias, normed, projection.weights)
    return sigmoid_gate(out, gate).view(n, n_other, cz)


# --------------------------------------------------------------------------
# Triton kernels (built on first use)
# --------------------------------------------------------------------------


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _next_power_of_2(x: int) -> int:
    return 1 << max(0, x - 1).bit_length()


def _get_kernels() -> dict:
    global _kernels
    if _kernels is None:
        _kernels = _build_kernels()
    return _kernels


def _build_kernels() -> dict:
    import triton
    import triton.language as tl

    @triton.jit
    def sigmoid_gate_kernel(
        value_ptr, gate_ptr, mask_ptr, out_ptr, rows, channels, value_stride, gate_stride,
        has_mask: tl.constexpr, block_r: tl.constexpr, block_c: tl.constexpr,
    ):  # fmt: skip
        r = tl.program_id(0) * block_r + tl.arange(0, block_r)
        c = tl.program_id(1) * block_c + tl.arange(0, block_c)
        inside = (r < rows)[:, None] & (c < channels)[None, :]
        r64 = r.to(tl.int64)[:, None]
        value = tl.load(value_ptr + r64 * value_stride + c[None, :], mask=inside, other=0.0)
        gate = tl.load(gate_ptr + r64 * gate_stride + c[None, :], mask=inside, other=0.0)
        out = value.to(tl.float32) * tl.sigmoid(gate.to(tl.float32))
        if has_mask:
            keep = tl.load(mask_ptr + r, mask=r < rows, other=0.0).to(tl.float32)
            out = out * keep[:, None]
        tl.store(out_ptr + r64 * channels + c[None, :], out.to(out_ptr.dtype.element_ty), inside)

    @triton.jit
    def gated_projections_kernel(
        proj_ptr, bias_ptr, mask_ptr, left_ptr, right_ptr, rows, proj_stride, ci, num_gate,
        block_m: tl.constexpr, block_c: tl.constexpr,
    ):  # fmt: skip
        # program axis 1: the first cdiv(ci, block_c) blocks make left/right
        # channels, the others add the output gate's bias in place
        m = tl.program_id(0) * block_m + tl.arange(0, block_m)
        m64 = m.to(tl.int64)[:, None]
        m_inside = (m < rows)[:, None]
        lr_blocks = tl.cdiv(ci, block_c)
        block = tl.program_id(1)
        if block < lr_blocks:
            c = block * block_c + tl.arange(0, block_c)
            c_inside = c < ci
            inside = m_inside & c_inside[None, :]
            row = proj_ptr + m64 * proj_stride + c[None, :]
            keep = tl.load(mask_ptr + m, mask=m < rows, other=0.0).to(tl.float32)[:, None]
            b_lp = tl.load(bias_ptr + c, mask=c_inside, other=0.0).to(tl.float32)[None, :]
            b_rp = tl.load(bias_ptr + ci + c, mask=c_inside, other=0.0).to(tl.float32)[None, :]
            b_lg = tl.load(bias_ptr + 2 * ci + c, mask=c_inside, other=0.0).to(tl.float32)
            b_rg = tl.load(bias_ptr + 3 * ci + c, mask=c_inside, other=0.0).to(tl.float32)
            lp = tl.load(row, mask=inside, other=0.0).to(tl.float32) + b_lp
            rp = tl.load(row + ci, mask=inside, other=0.0).to(tl.float32) + b_rp
            lg = tl.load(row + 2 * ci, mask=inside, other=0.0).to(tl.float32) + b_lg[None, :]
            rg = tl.load(row + 3 * ci, mask=inside, other=0.0).to(tl.float32) + b_rg[None, :]
            left = keep * lp * tl.sigmoid(lg)
            right = keep * rp * tl.sigmoid(rg)
            # channel-first [ci, rows]: each channel's positions are contiguous
            out = c.to(tl.int64)[None, :] * rows + m64
            tl.store(left_ptr + out, left.to(left_ptr.dtype.element_ty), mask=inside)
            tl.store(right_ptr + out, right.to(right_ptr.dtype.element_ty), mask=inside)
        else:
            c = (block - lr_blocks) * block_c + tl.arange(0, block_c)
            c_inside = c < num_gate
            inside = m_inside & c_inside[None, :]
            gate_ptr = proj_ptr + m64 * proj_stride + 4 * ci + c[None, :]
            b_gate = tl.load(bias_ptr + 4 * ci + c, mask=c_inside, other=0.0).to(tl.float32)
            gate = tl.load(gate_ptr, mask=inside, other=0.0).to(tl.float32) + b_gate[None, :]
            tl.store(gate_ptr, gate.to(proj_ptr.dtype.element_ty), mask=inside)

    @triton.jit
    def center_layer_norm_kernel(
        prod_ptr, scale_ptr, offset_ptr, out_ptr, rows, channels, eps,
        block_m: tl.constexpr, block_c: tl.constexpr,
    ):  # fmt: skip
        m = tl.program_id(0) * block_m + tl.arange(0, block_m)
        c = tl.arange(0, block_c)
        m64 = m.to(tl.int64)[:, None]
        c_inside = c < channels
        inside = (m < rows)[:, None] & c_inside[None, :]
        # read channel-first (positions contiguous), normalise, write channel-last
        x = tl.load(prod_ptr + c.to(tl.int64)[None, :] * rows + m64, mask=inside, other=0.0)
        x = x.to(tl.float32)
        mean = tl.sum(x, axis=1) / channels
        centered = tl.where(inside, x - mean[:, None], 0.0)
        var = tl.sum(centered * centered, axis=1) / channels
        scale = tl.load(scale_ptr + c, mask=c_inside, other=0.0).to(tl.float32)
        offset = tl.load(offset_ptr + c, mask=c_inside, other=0.0).to(tl.float32)
        y = centered * tl.rsqrt(var + eps)[:, None] * scale[None, :] + offset[None, :]
        out = out_ptr + m64 * channels + c[None, :]
        tl.store(out, y.to(out_ptr.dtype.element_ty), mask=inside)

    return {
        "sigmoid_gate": sigmoid_gate_kernel,
        "gated_projections": gated_projections_kernel,
        "center_layer_norm": center_layer_norm_kernel,
    }
