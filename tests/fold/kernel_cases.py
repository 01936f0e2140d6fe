"""The fold Triton kernels against their PyTorch twins (test-only helper).

The ``check_*`` functions run one kernel both ways on ``device`` and assert
agreement. ``test_kernels.py`` calls them on CUDA (GPU machines) and runs this
file's own tests in a subprocess with ``TRITON_INTERPRET=1`` (the interpreter
must be switched on before ``triton`` is first imported, so not in the main
pytest process). The file's name keeps plain ``pytest`` runs from collecting it.

Under the interpreter a float32 -> bfloat16 cast truncates (the GPU rounds to
nearest), so bfloat16 results may differ from the twin's by one bfloat16 step.
"""

from __future__ import annotations

import os

import pytest
import torch

from warpbio.fold.model import kernels
from warpbio.fold.model.evoformer import TriangleMultiplication

BF16_STEP = 2.0**-7  # relative spacing of bfloat16 numbers


def perturbed_module(outgoing: bool, pair_channel: int, num_intermediate: int, seed: int = 0):
    """A TriangleMultiplication whose biases, norms and gates are all non-trivial."""
    torch.manual_seed(seed)
    module = TriangleMultiplication(pair_channel, num_intermediate, outgoing)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(0.2 * torch.randn_like(param))
    return module.eval()


def pair_inputs(n: int, channels: int, device, seed: int = 1):
    """Random pair activations and a pair mask with masked rows, columns and holes."""
    generator = torch.Generator().manual_seed(seed)
    pair = torch.randn(n, n, channels, generator=generator)
    seq_mask = torch.ones(n)
    seq_mask[-3:] = 0  # padded residues
    mask = seq_mask[:, None] * seq_mask[None, :] * (torch.rand(n, n, generator=generator) > 0.1)
    return pair.to(device), mask.float().to(device)


def both(fn, *args):
    """(Triton result, twin result) of one kernel entry point."""
    with kernels.kernel_backend("triton"):
        fused = fn(*args)
    with kernels.kernel_backend("torch"):
        twin = fn(*args)
    return fused, twin


def assert_close(fused, twin, dtype=torch.float32, atol=1e-5):
    fused, twin = torch.atleast_1d(fused), torch.atleast_1d(twin)
    assert fused.dtype == twin.dtype == dtype
    assert fused.shape == twin.shape
    if dtype == torch.bfloat16:
        bound = BF16_STEP * twin.float().abs() + atol
    else:
        bound = torch.full_like(twin, atol)
    excess = ((fused.float() - twin.float()).abs() - bound).max().item()
    assert excess <= 0, f"differs by {excess:.3g} beyond the bound"


def check_sigmoid_gate(device, dtype=torch.float32, with_mask=True):
    generator = torch.Generator().manual_seed(2)
    value = torch.randn(5, 7, 45, generator=generator)
    wide = torch.randn(5, 7, 90, generator=generator)
    gate = wide[..., 45:]  # a strided view, as the fused module passes it
    mask = (torch.rand(5, 7, generator=generator) > 0.4).float() if with_mask else None
    args = [value.to(device, dtype), gate.to(device, dtype)]
    args.append(mask.to(device) if with_mask else None)
    fused, twin = both(kernels.sigmoid_gate, *args)
    assert_close(fused, twin, dtype, atol=1e-6)
    if with_mask:
        assert (fused[mask == 0] == 0).all()


def check_gated_projections(device, dtype=torch.float32, ci=20, cz=24, n=13):
    generator = torch.Generator().manual_seed(3)
    proj = torch.randn(n * n, 4 * ci + cz, generator=generator).to(device, dtype)
    bias = torch.randn(4 * ci + cz, generator=generator).to(device)
    _, mask = pair_inputs(n, cz, device)
    # the Triton kernel adds the gate bias into its input in place: give each side a copy
    with kernels.kernel_backend("triton"):
        fused = kernels.gated_projections(proj.clone(), bias, mask, ci)
    with kernels.kernel_backend("torch"):
        twin = kernels.gated_projections(proj.clone(), bias, mask, ci)
    for name, a, b in zip(("left", "right", "gate"), fused, twin, strict=True):
        assert a.shape == b.shape, name
        assert_close(a, b, dtype, atol=1e-6)
    assert fused[0].shape == (ci, n * n) and fused[0].is_contiguous()


def check_center_layer_norm(device, dtype=torch.float32, ci=20, n=13):
    generator = torch.Generator().manual_seed(4)
    prod = (3 * torch.randn(ci, n * n, generator=generator) + 1).to(device, dtype)
    scale = (1 + 0.3 * torch.randn(ci, generator=generator)).to(device)
    offset = (0.3 * torch.randn(ci, generator=generator)).to(device)
    fused, twin = both(kernels.center_layer_norm, prod, scale, offset, 1e-5)
    assert fused.shape == (n * n, ci)
    assert_close(fused, twin, dtype, atol=1e-5)


def check_triangle_multiplication(device, outgoing, n=13, cz=24, ci=20, dtype=torch.float32):
    module = perturbed_module(outgoing, cz, ci).to(device)
    pair, mask = pair_inputs(n, cz, device)
    with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, dtype == torch.bfloat16):
        fused, twin = both(kernels.triangle_multiplication_fused, module, pair, mask)
        reference = module(pair, mask)
    # bfloat16: intermediates are rounded in other places than the twin's (and
    # truncated under the interpreter), so the bound scales with the update
    atol = 1e-5 if dtype == torch.float32 else 2e-2 * twin.abs().max().item()
    assert_close(fused, twin, dtype, atol=atol)
    # under autocast the update stays bfloat16 (the reference's bias adds promote
    # to float32); it goes into the float32 residual stream either way
    error = (fused.float() - reference.float()).abs().max().item()
    scale = reference.abs().max().item()
    assert error <= (1e-5 if dtype == torch.float32 else 2e-2) * max(scale, 1.0), (error, scale)


def attention_inputs(device, dtype, batch=3, q_len=37, heads=4, head_dim=32, seed=5):
    """Views of one projection output as the fused module passes them, a key bias
    with holes and one fully masked row, a pair bias and gate logits."""
    generator = torch.Generator().manual_seed(seed)
    proj = torch.randn(batch, q_len, 4 * heads * head_dim, generator=generator)
    q, k, v, gate = (
        p.unflatten(-1, (heads, head_dim)) for p in proj.to(device, dtype).chunk(4, -1)
    )
    keep = (torch.rand(batch, q_len, generator=generator) > 0.2).float()
    keep[1] = 0  # a batch row whose keys are all masked: uniform weights
    key_bias = (1e9 * (keep - 1)).to(device)
    pair_bias = torch.randn(heads, q_len, q_len, generator=generator).to(device, dtype)
    gate_bias = torch.randn(heads, head_dim, generator=generator).to(device)
    return q, k, v, key_bias, pair_bias, gate, gate_bias


def check_gated_attention(device, dtype=torch.float32, **shape):
    """The Triton kernel against its twin, with and without pair bias and gate."""
    from warpbio.fold.model import attention_kernel

    q, k, v, key_bias, pair_bias, gate, gate_bias = attention_inputs(device, dtype, **shape)
    scale = q.shape[-1] ** -0.5
    for bias, g, gb in ((pair_bias, gate, gate_bias), (None, None, None), (pair_bias, gate, None)):
        args = (q, k, v, key_bias, bias, g, gb, scale)
        fused, twin = both(attention_kernel.gated_attention, *args)
        assert fused.shape == q.shape and fused.is_contiguous()
        # bfloat16: the kernel rounds the softmax weights to bfloat16 before the
        # product with v (as flash attention does); the twin keeps float32
        assert_close(fused, twin, dtype, atol=1e-5 if dtype == torch.float32 else 2e-2)


# -------- run under the interpreter (see the module docstring) --------

interpreted = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1", reason="needs TRITON_INTERPRET=1 (subprocess)"
)
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _needs_triton():
    pytest.importorskip("triton", reason="triton is not installed")


@interpreted
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_mask", [True, False])
def test_sigmoid_gate_interpreted(dtype, with_mask):
    check_sigmoid_gate(CPU, dtype, with_mask)


@interpreted
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gated_projections_interpreted(dtype):
    check_gated_projections(CPU, dtype)


@interpreted
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_center_layer_norm_interpreted(dtype):
    check_center_layer_norm(CPU, dtype)


@interpreted
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n", [13, 40])
@pytest.mark.parametrize("outgoing", [True, False])
def test_triangle_multiplication_interpreted(outgoing, n, dtype):
    check_triangle_multiplication(CPU, outgoing, n=n, dtype=dtype)


@interpreted
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "shape",
    [dict(), dict(q_len=70, heads=8, head_dim=8), dict(batch=2, q_len=130, heads=2, head_dim=16)],
    ids=["37x32", "70x8", "130x16"],
)
def test_gated_attention_interpreted(dtype, shape):
    check_gated_attention(CPU, dtype, **shape)
