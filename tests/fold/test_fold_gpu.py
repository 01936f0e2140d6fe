"""The fold engine on CUDA in float32 agrees with the CPU run (same code).
Run on a GPU machine; skipped elsewhere."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU and PyTorch-CUDA"),
]


def random_features(n=64, s=16, e=32, recycles=2, seed=0):
    from warpbio.fold import features as ft
    from warpbio.fold.msa import Msa

    rng = np.random.default_rng(seed)
    letters = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
    query = "".join(rng.choice(letters, n))
    rows = [query] + ["".join(np.where(rng.random(n) < 0.3, rng.choice(letters, n), list(query)))
                      for _ in range(s + e)]  # fmt: skip
    msa = Msa(rows, [[0] * n for _ in rows], [f"s{i}" for i in range(len(rows))])
    config = ft.FeatureConfig(max_msa_clusters=s, max_extra_msa=e, num_recycle=recycles)
    return query, ft.build_features(query, msa, config, seed)


@pytest.mark.parametrize("chunk_size", [None, 7])
def test_cuda_float32_matches_cpu(chunk_size):
    from warpbio.fold.config import InferenceOptions
    from warpbio.fold.inference import WeightsSpec, run_model

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    query, features = random_features()
    spec = WeightsSpec(random_depth=4, seed=1)
    options = InferenceOptions(num_recycle=2, chunk_size=chunk_size)
    cpu = run_model("t", query, features, "model_1_ptm", spec, options, torch.device("cpu"))
    gpu = run_model("t", query, features, "model_1_ptm", spec, options, torch.device("cuda"))
    error = np.abs(gpu.atom_positions - cpu.atom_positions).max()
    print("max atom difference GPU vs CPU (A):", error, "GPU timings:", gpu.timings)
    assert error < 0.05
    np.testing.assert_allclose(gpu.plddt, cpu.plddt, atol=0.05)
    np.testing.assert_allclose(gpu.pae, cpu.pae, atol=0.05)
    assert gpu.peak_memory["gpu_peak_allocated"] > 0


def test_cuda_full_depth_runs_a_long_target():
    """48 blocks, 400 residues, 3 recycles on the GPU: finishes, finite, timed."""
    from warpbio.fold.config import InferenceOptions
    from warpbio.fold.inference import WeightsSpec, run_model

    query, features = random_features(n=400, s=64, e=256, recycles=3)
    spec = WeightsSpec(random_depth=48, seed=0)
    prediction = run_model(
        "t", query, features, "model_1_ptm", spec, InferenceOptions(), torch.device("cuda")
    )
    print("400 aa, 48 blocks, 3 recycles:", prediction.timings, prediction.peak_memory)
    assert np.isfinite(prediction.atom_positions).all()
