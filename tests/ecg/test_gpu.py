"""GPU path: identical R peaks, kernels equal to their CPU twins, zero device-to-host
copies between parse and scores. Run on a CUDA machine; skipped elsewhere."""

import numpy as np
import pytest

from warpbio.device import gpu_available

from .conftest import MITDB

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not gpu_available(), reason="needs a CUDA GPU and CuPy"),
]


@pytest.fixture(scope="module")
def cp():
    import cupy

    return cupy


@pytest.fixture(scope="module")
def synthetic():
    from warpbio.ecg.simulate import EcgSimulationSpec, simulate_ecg

    return simulate_ecg(EcgSimulationSpec(duration_s=1800, pvc_fraction=0.05), seed=4)


@pytest.fixture(params=["numba", "cupy"])
def kernel_backend(request, monkeypatch):
    from warpbio.ecg import kernels

    if request.param == "numba" and not kernels._numba_cuda_works():
        pytest.skip("Numba's CUDA target does not work on this machine")
    monkeypatch.setenv("WARPBIO_ECG_KERNELS", request.param)
    return request.param


def test_kernels_equal_cpu_twins(cp, synthetic, kernel_backend):
    from warpbio.ecg.filter import filter_ecg
    from warpbio.ecg.kernels import embed_beats_kernel, nms_flags
    from warpbio.ecg.peaks import capacity_for, compact

    response = filter_ecg(synthetic.signals[:, 0].copy(), 360.0).response
    cpu = nms_flags(response, 72, 0.0)
    gpu = nms_flags(cp.asarray(response), 72, 0.0)
    np.testing.assert_array_equal(gpu.get(), cpu)
    peaks, count = compact(cpu, capacity_for(response.size, 72))
    cpu_beats = embed_beats_kernel(response, peaks, count, -90.0, 252 / 256, 256)
    gpu_beats = embed_beats_kernel(cp.asarray(response), cp.asarray(peaks), cp.asarray(count),
                                   -90.0, 252 / 256, 256)  # fmt: skip
    np.testing.assert_allclose(gpu_beats.get(), cpu_beats, rtol=0, atol=1e-6)


def test_gpu_peaks_identical_to_cpu_synthetic(cp, synthetic, kernel_backend):
    from warpbio.ecg.peaks import detect_r_peaks

    signal = synthetic.signals[:, 0].copy()
    cpu = detect_r_peaks(signal, 360.0, np).to_host()
    gpu = detect_r_peaks(cp.asarray(signal), 360.0, cp).to_host()
    np.testing.assert_array_equal(gpu, cpu)
    assert cpu.size == synthetic.r_peaks.size


@pytest.mark.skipif(not MITDB.with_suffix(".hea").exists(), reason="shared MIT-BIH data absent")
def test_gpu_peaks_identical_to_cpu_mitdb(cp, kernel_backend):
    from warpbio.ecg.io import read_wfdb_recording
    from warpbio.ecg.peaks import detect_r_peaks

    for lead in ("MLII", "V5"):
        cpu_recording = read_wfdb_recording(MITDB, lead=lead)
        gpu_recording = read_wfdb_recording(MITDB, lead=lead, xp=cp)
        cpu = detect_r_peaks(cpu_recording.signal, 360.0, np).to_host()
        gpu = detect_r_peaks(gpu_recording.signal, 360.0, cp).to_host()
        np.testing.assert_array_equal(gpu, cpu)


def test_profiler_counts_a_device_to_host_copy(cp):
    """The counter is not blind: a deliberate copy back is seen."""
    from warpbio.ecg.transfers import count_device_to_host

    data = cp.arange(1 << 20, dtype=cp.float32)
    with count_device_to_host() as seen:
        (data * 2).sum().get()
    assert seen.kernels > 0 and seen.device_to_host >= 1


def test_zero_device_to_host_copies_between_parse_and_scores(cp, synthetic, tmp_path):
    """Acceptance 4: nothing leaves the GPU from the parsed signal to the scores."""
    from warpbio.ecg.io import SheetRow
    from warpbio.ecg.pipeline import Settings, run_pipeline
    from warpbio.ecg.simulate import write_annotations, write_csv
    from warpbio.ecg.vae import VaeSettings

    write_csv(synthetic, tmp_path / "sim.csv")
    write_annotations(synthetic, tmp_path / "sim.tsv")
    row = SheetRow("sim", str(tmp_path / "sim.csv"), "csv", 360.0, "MLII",
                   str(tmp_path / "sim.tsv"))  # fmt: skip
    settings = Settings(vae=VaeSettings(epochs=10, batch_size=256))
    result = run_pipeline([row], settings, cp, seed=0, out_dir=tmp_path / "out",
                          count_transfers=True)  # fmt: skip
    seen = result.transfers
    print(f"GPU stages: {seen.kernels} kernels, {seen.device_to_host} device-to-host copies "
          f"({seen.copies[:5]}), AUROC {result.auroc['held_out']}")  # fmt: skip
    assert seen.kernels > 100
    assert seen.device_to_host == 0, seen.copies
    assert result.auroc["held_out"]["auroc"] >= 0.95
    cpu = run_pipeline([row], settings, np, seed=0, plots=False)
    np.testing.assert_array_equal(result.peaks["sim"], cpu.peaks["sim"])
    # the split is hashed from the seed: the same beats are held out on both paths
    assert (result.frame["split"] == cpu.frame["split"]).all()


def test_gpu_training_matches_cpu_split(cp):
    from warpbio.ecg.vae import VaeSettings, train_vae

    rng = np.random.default_rng(0)
    beats = rng.normal(size=(500, 256)).astype(np.float32)
    valid = np.arange(500) < 430  # a padded buffer, as the GPU pipeline has
    settings = VaeSettings(epochs=2, batch_size=64)
    cpu = train_vae(beats, valid, settings, seed=5)
    gpu = train_vae(cp.asarray(beats), cp.asarray(valid), settings, seed=5)
    assert (gpu.train.cpu() == cpu.train).all() and int(gpu.held_out.sum()) == 108
    assert np.isfinite(gpu.epoch_losses.cpu().numpy()).all()


@pytest.mark.parametrize("n_valid", [610, 100])
def test_graphed_training_equals_eager_training(cp, caplog, n_valid):
    """The CUDA-graph step replays the eager step: same weights, losses and split.
    With 100 valid rows 7 of the 9 batches are empty: skipped by the graph's IF node
    (PyTorch's, or one made through cuda-python), computed and discarded by the eager
    loop. Where either IF node can be made, it must be (no silent plain graph)."""
    import logging
    from dataclasses import replace

    import torch

    from warpbio.ecg.vae import VaeSettings, _has_conditional_nodes, train_vae

    rng = np.random.default_rng(1)
    beats = cp.asarray(rng.normal(size=(700, 256)).astype(np.float32))
    valid = cp.asarray(np.arange(700) < n_valid)  # padding rows and empty tail batches
    settings = VaeSettings(epochs=3, batch_size=64, cuda_graphs=False)
    # cuDNN's default algorithms differ run to run (eager vs eager: 2.6e-5 on an H100);
    # deterministic ones without TF32 make eager and graphed bit for bit equal there
    flags = torch.backends.cudnn.deterministic, torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.deterministic, torch.backends.cudnn.allow_tf32 = True, False
    try:
        eager = train_vae(beats, valid, settings, seed=2)
        with caplog.at_level(logging.INFO, logger="warpbio.ecg.vae"):
            graphed = train_vae(beats, valid, replace(settings, cuda_graphs=True), seed=2)
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.allow_tf32 = flags
    skipped = "empty batches skipped on the device" in caplog.text
    assert skipped == (_has_conditional_nodes(torch) or _has_cuda_python()), caplog.text
    for key, value in eager.model.state_dict().items():
        other = graphed.model.state_dict()[key]
        assert torch_close(value, other), key
    np.testing.assert_allclose(eager.epoch_losses.cpu().numpy(),
                               graphed.epoch_losses.cpu().numpy(), rtol=1e-5)  # fmt: skip
    assert (eager.train == graphed.train).all()


def _has_cuda_python() -> bool:
    import importlib.util

    return importlib.util.find_spec("cuda") is not None


def torch_close(a, b) -> bool:
    return bool((a - b).abs().max() <= 1e-5 * (1.0 + a.abs().max()))


def test_driver_if_graph_runs_its_body_only_below_the_limit(cp):
    """The IF node made through the driver API: the captured PyTorch body runs where
    offset < limit on the device, and not otherwise; no host read of either."""
    import torch

    if not _has_cuda_python():
        pytest.skip("no cuda-python (cuda.bindings)")
    from warpbio.ecg._graph_if import DriverIfGraph

    counter = torch.zeros(4, device="cuda")
    offset = torch.zeros((), dtype=torch.long, device="cuda")
    limit = torch.full((), 3, dtype=torch.long, device="cuda")
    counter.add_(0.0)  # warm the kernel before the capture
    body = torch.cuda.CUDAGraph(keep_graph=True)
    with torch.cuda.graph(body):
        counter.add_(1.0)
    graph = DriverIfGraph(body.raw_cuda_graph(), offset, limit)
    for step in range(6):
        offset.fill_(step)
        graph.replay()
    torch.cuda.synchronize()
    assert counter.tolist() == [3.0, 3.0, 3.0, 3.0]
