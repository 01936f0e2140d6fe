"""ECG benchmark: a 20 h recording as a ~0.6 GB CSV, parse -> R peaks -> beats -> VAE
(20 epochs) -> scores -> files and plots, on the GPU, on the CPU path, and against CPU
peers (wfdb's XQRS; neurokit2.ecg_peaks when installed) on the same recording.

Run on the GPU machine from the repository root:

    PYTHONPATH=src python3 benchmarks/ecg.py --out ecg-results.json

Needs numpy, scipy, pandas, matplotlib, numba, pyarrow, torch (CUDA) and cupy for the
GPU path; wfdb for the XQRS peer (pure Python wheel; carry it if absent); neurokit2 is
optional. The script lists what it finds first and skips what cannot run, saying why.

Sections (each prints as it goes; the summary table comes last):
1. data: the seeded synthetic recording (time + MLII + V5 at 360 Hz, 3% PVCs) is
   written once to --csv and reused;
2. ceiling: device-to-device copy bandwidth, for the R-peak stages' memory floor;
3. GPU: a cold run (JIT, cuFFT plans), a warm timed run, and a run under the CUDA
   profiler that counts device-to-host copies between parse and scores (must be 0);
4. CPU path: the same pipeline on NumPy/Numba/PyTorch-CPU with --threads threads
   (--cpu-epochs N trains N epochs and scales the training time to --epochs;
   --skip-cpu skips it); each path trains with its own batch size (GPU --batch-size
   4096, CPU --cpu-batch-size 256), the same epochs over the same beats;
5. peers: XQRS and neurokit2 on the first --peer-hours of lead MLII (timed, scaled to
   the whole recording by samples/s, agreement with our peaks at 150 ms); --skip-peers.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

NEEDED = {
    "numpy": "everything", "scipy": "CPU FFT", "pandas": "tables", "matplotlib": "plots",
    "numba": "CPU kernels (and CUDA kernels)", "pyarrow": "CSV parsing", "torch": "VAE",
    "cupy": "GPU path", "wfdb": "XQRS peer", "neurokit2": "neurokit2 peer (optional)",
}  # fmt: skip
STAGES = ("parse", "filter", "peaks", "beats", "train", "score", "results to host", "write",
          "plots", "end to end")  # fmt: skip


def check_dependencies() -> dict[str, str | None]:
    found = {}
    for name, purpose in NEEDED.items():
        try:
            module = importlib.import_module(name)
            found[name] = getattr(module, "__version__", "?")
        except Exception as error:  # missing or broken
            found[name] = None
            print(f"  {name:10s} MISSING ({purpose}): {type(error).__name__}: {error}")
            continue
        print(f"  {name:10s} {found[name]}")
    if found.get("torch"):
        import torch

        print(f"  torch CUDA: {torch.cuda.is_available()} ({torch.version.cuda})")
    if found.get("numba"):
        from warpbio.ecg.kernels import gpu_kernel_backend

        try:
            print(f"  GPU kernels: {gpu_kernel_backend()}")
        except Exception as error:
            print(f"  GPU kernels: unavailable ({error})")
    return found


def make_recording(args) -> Path:
    from warpbio.ecg.simulate import EcgSimulationSpec, simulate_ecg, write_annotations, write_csv

    path = Path(args.csv)
    notes = path.with_suffix(".annotations.tsv")
    if path.exists() and notes.exists():
        print(f"data: reusing {path} ({path.stat().st_size / 1e6:.0f} MB)", flush=True)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    sim = simulate_ecg(EcgSimulationSpec(duration_s=args.hours * 3600, fs=360.0), seed=0)
    simulated = time.perf_counter() - started
    write_csv(sim, path)
    write_annotations(sim, notes)
    print(f"data: {sim.n_samples:,} samples x 2 leads simulated in {simulated:.1f} s, "
          f"CSV {path.stat().st_size / 1e6:.0f} MB written in "
          f"{time.perf_counter() - started - simulated:.1f} s", flush=True)  # fmt: skip
    return path


def copy_bandwidth() -> float:
    import cupy as cp

    source = cp.random.random(1 << 28, dtype=cp.float32)  # 1 GiB
    target = cp.empty_like(source)
    target[...] = source
    cp.cuda.Device().synchronize()
    started = time.perf_counter()
    for _ in range(5):
        target[...] = source
    cp.cuda.Device().synchronize()
    return 5 * 2 * source.nbytes / (time.perf_counter() - started)


def settings_for(args, epochs: int, gpu: bool):
    """Each path with the batch size that suits it: large on the GPU, ~256 rows on the CPU
    (PyTorch's CPU convolutions slow down per row beyond that)."""
    from warpbio.ecg.pipeline import Settings
    from warpbio.ecg.vae import VaeSettings

    batch = args.batch_size if gpu else args.cpu_batch_size
    rate = args.learning_rate if gpu else args.cpu_learning_rate
    vae = VaeSettings(epochs=epochs, batch_size=batch, learning_rate=rate,
                      compile=args.compile and gpu,
                      cuda_graphs=args.cuda_graphs and gpu)  # fmt: skip
    return Settings(vae=vae)


def sheet_row(path: Path):
    from warpbio.ecg.io import SheetRow

    return SheetRow("bench", str(path), "csv", 360.0, "MLII",
                    str(path.with_suffix(".annotations.tsv")))  # fmt: skip


def run(xp, args, path: Path, out: Path, epochs: int, count_transfers: bool = False):
    from warpbio.ecg.pipeline import run_pipeline

    return run_pipeline([sheet_row(path)], settings_for(args, epochs, xp is not np), xp, seed=0,
                        out_dir=out, threads=args.threads,
                        count_transfers=count_transfers)  # fmt: skip


def gpu_section(args, path: Path, report: dict) -> dict | None:
    import cupy as cp

    out = Path(args.workdir) / "gpu"
    started = time.perf_counter()
    cold = run(cp, args, path, out, args.epochs)
    print(f"GPU cold run: {time.perf_counter() - started:.1f} s (JIT, cuFFT plans, cuDNN)")
    warm = run(cp, args, path, out, args.epochs)
    print(f"GPU warm: {json.dumps({k: round(v, 4) for k, v in warm.seconds.items()})}")
    print(f"GPU figures, seconds each in its process: {_rounded(warm.figures)}")
    print(f"GPU AUROC: {warm.auroc['held_out']}", flush=True)
    counted = run(cp, args, path, out, args.epochs, count_transfers=True)
    transfers = counted.transfers
    print(f"GPU device-to-host copies between parse and scores: {transfers.device_to_host} "
          f"({transfers.kernels} kernels profiled; copies: {transfers.copies[:5]})")  # fmt: skip
    report["gpu"] = {
        "seconds": warm.seconds, "cold_end_to_end": cold.seconds["end to end"],
        "auroc": warm.auroc, "device_to_host_copies": transfers.device_to_host,
        "device_to_host_bytes": transfers.device_to_host_bytes,
        "profiled_kernels": transfers.kernels, "samples": warm.samples,
        "beats": len(warm.frame), "figure_seconds": warm.figures,
    }  # fmt: skip
    return {"result": warm}


def _rounded(seconds: dict) -> str:
    return json.dumps({k: round(v, 3) for k, v in seconds.items()})


def cpu_section(args, path: Path, report: dict):
    from warpbio.ecg.beats import embed_beats
    from warpbio.ecg.peaks import detect_r_peaks

    # warm-up: load the Numba kernels (compiled once, then from their cache)
    warm = np.sin(np.arange(36_000, dtype=np.float32) / 20.0)
    embed_beats(detect_r_peaks(warm, 360.0, np), np)
    epochs = args.cpu_epochs or args.epochs
    result = run(np, args, path, Path(args.workdir) / "cpu", epochs)
    seconds = dict(result.seconds)
    if epochs != args.epochs:  # scale the measured training to the full epoch count
        scaled = seconds["train"] * args.epochs / epochs
        seconds["end to end"] += scaled - seconds["train"]
        seconds["train"] = scaled
        print(f"CPU: trained {epochs} epochs, training time scaled to {args.epochs}")
    rounded = {k: round(v, 3) for k, v in seconds.items()}
    print(f"CPU ({args.threads} threads): {json.dumps(rounded)}")
    print(f"CPU figures, seconds each in its process: {_rounded(result.figures)}")
    print(f"CPU AUROC: {result.auroc['held_out']}", flush=True)
    report["cpu"] = {"seconds": seconds, "auroc": result.auroc, "epochs_run": epochs,
                     "threads": args.threads}  # fmt: skip
    return result


def peers_section(args, path: Path, ours: np.ndarray, report: dict) -> None:
    from warpbio.ecg.io import read_csv_recording
    from warpbio.ecg.peaks import detection_scores

    signal = read_csv_recording(path, fs=360.0, lead="MLII").signal
    n = min(int(args.peer_hours * 3600 * 360), signal.size)
    prefix = signal[:n].astype(np.float64)
    ours_prefix = ours[ours < n]
    report["peers"] = {}
    peers = {}
    try:
        from wfdb.processing import XQRS

        def xqrs():
            detector = XQRS(sig=prefix, fs=360.0)
            detector.detect(verbose=False)
            return np.asarray(detector.qrs_inds)

        peers["wfdb XQRS"] = xqrs
    except ImportError:
        print("peer wfdb XQRS skipped: pip install wfdb")
    try:
        import neurokit2 as nk

        peers["neurokit2 ecg_peaks"] = lambda: np.asarray(
            nk.ecg_peaks(prefix, sampling_rate=360)[1]["ECG_R_Peaks"]
        )
    except ImportError:
        print("peer neurokit2 skipped: pip install neurokit2")
    for name, detect in peers.items():
        started = time.perf_counter()
        found = detect()
        seconds = time.perf_counter() - started
        agreement = detection_scores(ours_prefix, found, 360.0)
        rate = n / seconds
        report["peers"][name] = {
            "samples": n, "seconds": seconds, "samples_per_s": rate,
            "whole_recording_s": signal.size / rate,
            "agreement_with_ours": {k: agreement[k] for k in ("sensitivity",
                                    "positive_predictivity")},
        }  # fmt: skip
        print(f"peer {name}: {n:,} samples in {seconds:.2f} s ({rate:.3g} samples/s); "
              f"agreement with ours: {report['peers'][name]['agreement_with_ours']}",
              flush=True)  # fmt: skip


def table(report: dict, bandwidth: float | None) -> None:
    gpu = report.get("gpu", {}).get("seconds", {})
    cpu = report.get("cpu", {}).get("seconds", {})
    samples = report.get("gpu", {}).get("samples") or report.get("samples", 0)
    print("\n| stage | GPU s | GPU samples/s | CPU s | CPU samples/s | CPU/GPU | GPU floor |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    floors = {"filter": 12, "peaks": 5}  # bytes per sample a stage must move at least
    rows = [*STAGES[:3], "R-peak stages", *STAGES[3:]]
    for stage in rows:
        if stage == "R-peak stages":
            g = gpu.get("filter", 0) + gpu.get("peaks", 0) if gpu else None
            c = cpu.get("filter", 0) + cpu.get("peaks", 0) if cpu else None
            floor_bytes = sum(floors.values())
        else:
            g, c = gpu.get(stage), cpu.get(stage)
            floor_bytes = floors.get(stage)
        cells = [stage]
        for value in (g, c):
            cells += [f"{value:.4f}" if value else "-",
                      f"{samples / value:.3g}" if value else "-"]  # fmt: skip
        cells.append(f"{c / g:.1f}x" if g and c else "-")
        moved = floor_bytes * samples if floor_bytes else 0
        floor = moved / bandwidth / g if (moved and bandwidth and g) else None
        cells.append(f"{floor:.0%}" if floor else "-")
        print("| " + " | ".join(cells) + " |")
    for name, peer in report.get("peers", {}).items():
        rpeak = gpu.get("filter", 0) + gpu.get("peaks", 0)
        ratio = f"{peer['whole_recording_s'] / rpeak:.0f}x slower than GPU R peaks" if rpeak else ""
        print(f"| {name} (R peaks only) | - | - | {peer['whole_recording_s']:.1f} "
              f"(scaled) | {peer['samples_per_s']:.3g} | {ratio} | - |")  # fmt: skip
    if "gpu" in report:
        g = report["gpu"]
        print(f"\nGPU end to end {gpu['end to end']:.2f} s (target <= 20 s, {args_epochs(report)} "
              f"epochs); R-peak stages {samples / (gpu['filter'] + gpu['peaks']):.3g} samples/s "
              f"(target >= 1e9); device-to-host copies {g['device_to_host_copies']} (target 0)")
    if gpu and cpu:
        print(f"CPU path / GPU end to end: {cpu['end to end'] / gpu['end to end']:.1f}x "
              "(target >= 20x)")


def args_epochs(report: dict) -> int:
    return report.get("epochs", 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", default="/tmp/warpbio-ecg/ecg-20h.csv")
    parser.add_argument("--workdir", default="/tmp/warpbio-ecg/runs")
    parser.add_argument("--hours", type=float, default=20.0)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--learning-rate", type=float, default=4e-3)
    parser.add_argument("--cpu-batch-size", type=int, default=256)
    parser.add_argument("--cpu-learning-rate", type=float, default=2e-3)
    parser.add_argument("--compile", action="store_true", help="torch.compile the VAE")
    parser.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=True,
                        help="GPU training through one captured CUDA-graph step")  # fmt: skip
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--cpu-epochs", type=int, default=0,
                        help="CPU path: train this many epochs and scale to --epochs")
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument("--skip-gpu", action="store_true")
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument("--peer-hours", type=float, default=1.0)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    import logging

    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", level=logging.WARNING)
    logging.getLogger("warpbio.ecg.vae").setLevel(logging.INFO)  # graph mode, epoch times

    print("dependencies:")
    found = check_dependencies()
    report: dict = {"args": vars(args), "versions": found, "epochs": args.epochs}
    path = make_recording(args)
    gpu_ok = not args.skip_gpu and found.get("cupy") and found.get("torch")
    bandwidth = None
    ours = None
    if gpu_ok:
        import torch

        gpu_ok = torch.cuda.is_available()
    if gpu_ok:
        bandwidth = copy_bandwidth()
        report["copy_bytes_per_s"] = bandwidth
        print(f"device copy bandwidth: {bandwidth / 1e9:.0f} GB/s", flush=True)
        gpu = gpu_section(args, path, report)
        ours = gpu["result"].peaks["bench"]
    else:
        print("GPU path skipped (--skip-gpu, or no CuPy / CUDA PyTorch)")
    if not args.skip_cpu:
        result = cpu_section(args, path, report)
        report["samples"] = result.samples
        if ours is not None:
            same = np.array_equal(ours, result.peaks["bench"])
            report["gpu_cpu_identical_peaks"] = bool(same)
            differing = np.setxor1d(ours, result.peaks["bench"]).size
            report["gpu_cpu_peaks_differing"] = int(differing)
            print(f"GPU and CPU R peaks identical: {same} ({differing} of {ours.size} differ; "
                  "cuFFT and scipy.fft round differently)")  # fmt: skip
        ours = result.peaks["bench"] if ours is None else ours
    if not args.skip_peers and ours is not None:
        peers_section(args, path, ours, report)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2, default=str) + "\n")
    table(report, bandwidth)


if __name__ == "__main__":
    main()
