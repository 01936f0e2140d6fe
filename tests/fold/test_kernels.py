"""Fused triangle multiplication and sigmoid gate (warpbio.fold.model.kernels):
the PyTorch twins against the reference module, the Triton kernels against the
twins (Triton interpreter on the CPU, natively on a GPU), the weight cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from fold import kernel_cases  # noqa: E402
from fold.kernel_cases import pair_inputs, perturbed_module  # noqa: E402
from warpbio.fold.model import kernels  # noqa: E402

HERE = Path(__file__).resolve().parent
CPU = torch.device("cpu")


@pytest.mark.parametrize("outgoing", [True, False])
@pytest.mark.parametrize("n", [13, 37])
def test_twin_matches_reference_module(outgoing, n):
    module = perturbed_module(outgoing, pair_channel=24, num_intermediate=20)
    pair, mask = pair_inputs(n, 24, CPU)
    with torch.no_grad(), kernels.kernel_backend("torch"):
        fused = kernels.triangle_multiplication_fused(module, pair, mask)
        reference = module(pair, mask)
    assert fused.shape == reference.shape == pair.shape
    assert fused.dtype == torch.float32
    scale = reference.abs().max().item()
    assert scale > 0.1  # the mask leaves a real update to compare
    torch.testing.assert_close(fused, reference, atol=1e-5, rtol=1e-5)


def test_twin_follows_the_pair_mask():
    """Masked positions must not feed the update: changing the pair there changes
    nothing on the real block (the row/column of padded residues)."""
    module = perturbed_module(True, 24, 20)
    pair, mask = pair_inputs(16, 24, CPU)
    seq_mask = torch.ones(16)
    seq_mask[-3:] = 0
    mask = seq_mask[:, None] * seq_mask[None, :]
    changed = pair.clone()
    changed[-3:] += 5.0
    changed[:, -3:] -= 5.0
    with torch.no_grad(), kernels.kernel_backend("torch"):
        a = kernels.triangle_multiplication_fused(module, pair, mask)
        b = kernels.triangle_multiplication_fused(module, changed, mask)
    torch.testing.assert_close(a[:13, :13], b[:13, :13], atol=1e-6, rtol=0)


def test_sigmoid_gate_twin_with_and_without_mask():
    value = torch.randn(4, 6, 10)
    gate = torch.randn(4, 6, 20)[..., ::2]  # non-contiguous
    mask = (torch.rand(4, 6) > 0.5).float()
    expected = value * torch.sigmoid(gate)
    torch.testing.assert_close(kernels.sigmoid_gate(value, gate), expected)
    torch.testing.assert_close(kernels.sigmoid_gate(value, gate, mask), expected * mask[..., None])


def test_sigmoid_gate_bfloat16_computes_in_float32():
    value = torch.randn(3, 5, 64)
    gate = torch.randn(3, 5, 64)
    mask = (torch.rand(3, 5) > 0.3).float()
    out = kernels.sigmoid_gate(value.bfloat16(), gate.bfloat16(), mask)
    assert out.dtype == torch.bfloat16
    exact = value.bfloat16().float() * torch.sigmoid(gate.bfloat16().float()) * mask[..., None]
    # one rounding of the float32 result, not one per operation
    assert torch.equal(out, exact.bfloat16())


def test_sigmoid_gate_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="gate shape"):
        kernels.sigmoid_gate(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="mask shape"):
        kernels.sigmoid_gate(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3))


def test_weight_cache_follows_in_place_changes():
    module = perturbed_module(False, 24, 20)
    pair, mask = pair_inputs(13, 24, CPU)
    first, _ = kernels.concatenated_projections(module)
    again, _ = kernels.concatenated_projections(module)
    assert again is first  # cached
    with torch.no_grad():
        module.right_gate.weights.mul_(-1.0)  # what a weight load's copy_ does to _version
        module.gating_linear.bias.add_(1.0)
    weights, bias = kernels.concatenated_projections(module)
    assert weights is not first
    torch.testing.assert_close(weights[:, 60:80], module.right_gate.weights)
    torch.testing.assert_close(bias[80:], module.gating_linear.bias)
    with torch.no_grad(), kernels.kernel_backend("torch"):
        fused = kernels.triangle_multiplication_fused(module, pair, mask)
        reference = module(pair, mask)
    torch.testing.assert_close(fused, reference, atol=1e-5, rtol=1e-5)


def test_backend_choice():
    cpu = torch.zeros(1)
    assert not kernels.use_triton(cpu)  # twins on the CPU by default
    with kernels.kernel_backend("triton"):
        assert kernels.use_triton(cpu)
        with kernels.kernel_backend("torch"):
            assert not kernels.use_triton(cpu)
        assert kernels.use_triton(cpu)
    with pytest.raises(ValueError, match="kernel backend"), kernels.kernel_backend("cuda"):
        pass


def test_fused_module_compiles_as_one_graph():
    """Inside torch.compile the twins run (inductor fuses them itself) and the
    weight concatenation is traced, not cached: no graph break."""
    module = perturbed_module(False, 24, 20)
    pair, mask = pair_inputs(13, 24, CPU)

    def update(pair, mask):
        return kernels.triangle_multiplication_fused(module, pair, mask)

    compiled = torch.compile(update, fullgraph=True, dynamic=False, backend="aot_eager")
    with torch.no_grad(), kernels.kernel_backend("triton"):  # compile takes the twins anyway
        fused = compiled(pair, mask)
        reference = module(pair, mask)
    torch.testing.assert_close(fused, reference, atol=1e-5, rtol=1e-5)
    assert "_fused_projections" not in module.__dict__


def test_triton_kernels_match_twins_under_interpreter():
    """kernel_cases.py's tests in a fresh process with TRITON_INTERPRET=1 (it must be
    set before triton is imported, which this process may already have done)."""
    pytest.importorskip("triton", reason="triton is not installed (the test extra has it)")
    env = dict(os.environ, TRITON_INTERPRET="1")
    paths = [str(HERE.parent), *sys.path]  # `fold.` test helpers and warpbio as imported here
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs"]
    result = subprocess.run(
        [*command, str(HERE / "kernel_cases.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "22 passed" in output and "skipped" not in output, output


# -------- native Triton on a GPU --------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU and PyTorch-CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("outgoing", [True, False])
@pytest.mark.parametrize("n", [13, 200])
def test_cuda_kernels_match_twins(dtype, outgoing, n):
    pytest.importorskip("triton", reason="triton is not installed")
    cuda = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False
    kernel_cases.check_sigmoid_gate(cuda, dtype)
    kernel_cases.check_gated_projections(cuda, dtype, n=n)
    kernel_cases.check_center_layer_norm(cuda, dtype, n=n)
    kernel_cases.check_triangle_multiplication(cuda, outgoing, n=n, cz=128, ci=128, dtype=dtype)
    kernel_cases.check_gated_attention(cuda, dtype, q_len=n)
    kernel_cases.check_gated_attention(cuda, dtype, q_len=n, heads=8, head_dim=8)
    assert kernels.use_triton(torch.zeros(1, device=cuda))
