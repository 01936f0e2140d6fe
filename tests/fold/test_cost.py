"""The fold cost model: memory scaling, parameter count, calibration, and the time
model's ranking of real (tiny, random-parameter) CPU runs."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

from warpbio.fold.config import InferenceOptions, ModelConfig
from warpbio.fold.cost import (
    GIB,
    Calibration,
    Measurement,
    Workload,
    activation_bytes,
    calibrate,
    default_calibration,
    layer_passes,
    live_tensor_bytes,
    load_calibration,
    parameter_count,
    prediction_flops,
    save_calibration,
)


def test_unchunked_memory_grows_as_n_cubed_chunked_as_n_squared():
    # Unchunked, the triangle-attention logits [heads, N, N, N] dominate long targets;
    # with a fixed row chunk and the fused kernel, the N^2 pair tensors do.
    n = 2048
    plain = [activation_bytes(Workload(m, 512, 1024)) for m in (n, 2 * n)]
    assert 7.0 < plain[1] / plain[0] <= 8.0
    parts = live_tensor_bytes(Workload(2 * n))
    assert max(parts, key=parts.get) == "stack:triangle_attention:intermediates"
    fast = dict(chunk_size=32, attention="sdpa", inplace=True, dtype="bfloat16")
    chunked = [activation_bytes(Workload(m, 512, 1024, **fast)) for m in (n, 2 * n)]
    assert 3.0 < chunked[1] / chunked[0] < 4.5  # N^2, with the MSA's N^1 beside it
    assert chunked[0] < plain[0] / 10
    # the pair stream: [N, N, 128] float32, a second copy without in-place
    parts = live_tensor_bytes(Workload(n, chunk_size=64))
    stack = next(k for k in parts if k.endswith(":pair") and k.startswith("stack:"))
    assert parts[stack] == 2 * n * n * 128 * 4
    parts = live_tensor_bytes(Workload(n, chunk_size=64, inplace=True))
    stack = next(k for k in parts if k.endswith(":pair") and k.startswith("stack:"))
    assert parts[stack] == n * n * 128 * 4


def test_memory_of_the_benchmark_options_at_4000_residues():
    """What tests/fold/memory_trace.py measured (fast options, chunk 64, monomer MSA):
    unchunked, the outer product's [N, N, 32 x 32] rows and the triangle updates do
    not fit an 80 GB card; chunked, the heads' logits beside the float32 pair are the
    peak, with the previous iteration's pair from the first recycle on."""
    options = InferenceOptions.fast(num_recycle=0, auto_chunk=False)
    whole = Workload.from_options(4000, 512, 1024, 48, options)
    assert activation_bytes(whole) > 80 * GIB
    chunked = replace(whole, chunk_size=64)
    parts = live_tensor_bytes(chunked)
    assert max(parts, key=parts.get) in ("heads:pair", "heads:logits")
    assert 17 * GIB < activation_bytes(chunked) < 20 * GIB
    recycled = replace(chunked, recycles=3)
    assert live_tensor_bytes(recycled)["recycled_pair"] == 4000**2 * 128 * 4
    assert activation_bytes(recycled) < 30 * GIB


def test_flops_grow_up_to_n_cubed_and_with_depth_and_recycles():
    # MSA terms (linear and quadratic in N) weigh at monomer sizes; the N^3 triangle
    # products take over for long targets
    one = prediction_flops(Workload(512, blocks=48, recycles=3))
    assert 2 < prediction_flops(Workload(1024, blocks=48, recycles=3)) / one < 8
    long = [prediction_flops(Workload(n)) for n in (4096, 8192)]
    assert 6 < long[1] / long[0] < 8
    assert prediction_flops(Workload(512, blocks=48, recycles=0)) == pytest.approx(one / 4)
    half = prediction_flops(Workload(512, blocks=24, recycles=3))
    assert 0.45 * one < half < 0.55 * one  # the extra stack and the structure module stay
    assert layer_passes(Workload(100, blocks=48, recycles=3)) == 4 * (48 + 4 + 8)


@pytest.mark.parametrize(("depth", "ptm"), [(2, True), (48, True), (3, False)])
def test_parameter_count_matches_the_model(depth, ptm):
    torch = pytest.importorskip("torch")
    from warpbio.fold.model.alphafold import AlphaFold

    config = replace(ModelConfig().with_depth(depth), ptm=ptm)
    with torch.device("meta"):
        model = AlphaFold(config)
    assert parameter_count(config, depth) == sum(p.numel() for p in model.parameters())


def test_calibration_recovers_known_constants():
    truth = Calibration(
        device="truth",
        flops_per_second=4.0e13,
        pass_seconds=2.5e-3,
        setup_seconds=1.7,
        base_bytes=1.3 * GIB,
        memory_scale=1.25,
    )
    shapes = [
        Workload(n, msa_clusters=s, extra_msa=e, blocks=b, recycles=r)
        for n, s, e, b, r in [
            (64, 128, 256, 48, 3),
            (256, 512, 1024, 48, 3),
            (512, 512, 1024, 8, 1),
            (1024, 256, 512, 48, 0),
            (150, 32, 64, 4, 2),
            (800, 512, 1024, 48, 3),
        ]
    ]
    points = [Measurement(w, truth.seconds(w), truth.peak_bytes(w)) for w in shapes]
    fitted = calibrate(points, device="gpu-test")
    for name in ("flops_per_second", "pass_seconds", "setup_seconds", "base_bytes"):
        assert getattr(fitted, name) == pytest.approx(getattr(truth, name), rel=1e-6), name
    assert fitted.memory_scale == pytest.approx(truth.memory_scale, rel=1e-6)
    assert fitted.device == "gpu-test"


def test_calibration_from_length_points_and_json_round_trip(tmp_path):
    template = Workload(1, msa_clusters=512, extra_msa=1024, blocks=48, recycles=3)
    truth = replace(default_calibration("gpu"), flops_per_second=2.2e13, setup_seconds=4.0)
    points = [(n, truth.seconds(replace(template, num_res=n)), None) for n in (100, 300, 700, 1200)]
    fitted = calibrate(points, template=template)
    # same passes everywhere: the per-pass cost folds into the setup, predictions agree
    assert fitted.pass_seconds == 0.0
    for n in (200, 1000):
        w = replace(template, num_res=n)
        assert fitted.seconds(w) == pytest.approx(truth.seconds(w), rel=1e-6)
    assert fitted.base_bytes == truth.base_bytes  # no peaks measured: memory kept
    path = tmp_path / "calibration.json"
    save_calibration(fitted, path)
    assert load_calibration(path) == fitted
    with pytest.raises(ValueError, match="at least two"):
        calibrate(points[:1], template=template)


def test_cpu_constants_scale_with_cores_and_workload_follows_options():
    cpu = default_calibration("cpu")
    four = cpu.for_cores(4)
    w = Workload(200, 64, 128, blocks=4)
    assert four.compute_seconds(w) == pytest.approx(cpu.compute_seconds(w) / 4)
    options = InferenceOptions.fast(num_recycle=1, chunk_size=16)
    fast = Workload.from_options(300, 512, 1024, 48, options)
    assert (fast.dtype, fast.attention, fast.inplace, fast.chunk_size, fast.bf16_streams) == (
        "bfloat16",
        "flash",
        True,
        16,
        True,
    )
    assert fast.recycles == 1


def random_features(n: int, s: int, e: int, recycles: int, seed: int = 0):
    from warpbio.fold import features as ft
    from warpbio.fold.msa import Msa

    rng = np.random.default_rng(seed)
    letters = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
    query = "".join(rng.choice(letters, n))
    rows = [query] + [
        "".join(np.where(rng.random(n) < 0.3, rng.choice(letters, n), list(query)))
        for _ in range(s + e)
    ]
    msa = Msa(rows, [[0] * n for _ in rows], [f"s{i}" for i in range(len(rows))])
    config = ft.FeatureConfig(max_msa_clusters=s, max_extra_msa=e, num_recycle=recycles)
    return query, ft.build_features(query, msa, config, seed)


def test_time_model_ranks_real_cpu_runs():
    """Four tiny random-parameter runs, about 2x apart, whose order is not just the
    length: more MSA rows vs more residues, deeper and recycled vs longer."""
    torch = pytest.importorskip("torch")
    from warpbio.fold.inference import WeightsSpec, run_model

    runs = [  # blocks, residues, MSA clusters, extra MSA, recycles
        (1, 24, 4, 8, 0),
        (1, 40, 64, 128, 0),
        (4, 32, 8, 16, 2),
        (1, 96, 8, 16, 0),
    ]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    measured, predicted = [], []
    calibration = default_calibration("cpu")
    try:
        for depth, n, s, e, recycles in runs:
            query, features = random_features(n, s, e, recycles)
            options = InferenceOptions(num_recycle=recycles)
            best = float("inf")
            for _ in range(2):  # the shorter of two: the machine is shared
                started = time.perf_counter()
                run_model(
                    "t", query, features, "model_1_ptm", WeightsSpec(random_depth=depth),
                    options, torch.device("cpu"),
                )  # fmt: skip
                best = min(best, time.perf_counter() - started)
            measured.append(best)
            predicted.append(calibration.seconds(Workload(n, s, e, depth, recycles)))
    finally:
        torch.set_num_threads(threads)
    assert list(np.argsort(measured)) == list(np.argsort(predicted)), (measured, predicted)
