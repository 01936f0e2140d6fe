"""Run the model on one target's features: weights (official npz or a seeded
random model), device placement, recycling, timings and peak memory.

The same code runs on CPU and CUDA in float32; nothing here is CPU-only.
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from warpbio.fold.config import InferenceOptions, ModelConfig, model_config
from warpbio.fold.features import recycle_batch
from warpbio.fold.model.alphafold import AlphaFold, to_host
from warpbio.fold.model.buckets import bucket_length, compile_model, crop_outputs, pad_batch
from warpbio.fold.model.plan import make_plan
from warpbio.fold.outputs import Prediction
from warpbio.fold.params import WeightsError, load_params, stacked_blocks
from warpbio.hostmem import retain_freed_memory
from warpbio.progress import Progress

log = logging.getLogger(__name__)

INT_FEATURES = ("aatype", "residue_index", "extra_msa", "true_msa")


@dataclass(frozen=True)
class WeightsSpec:
    """Where a model's parameters come from.

    ``folder`` holds the official ``params_<model>.npz`` files; empty means a
    seeded random model of ``random_depth`` Evoformer blocks (demo, tests).
    """

    folder: str = ""
    random_depth: int = 4
    seed: int = 0

    @property
    def is_random(self) -> bool:
        return not self.folder

    def path(self, model_name: str) -> Path:
        return Path(self.folder) / f"params_{model_name}.npz"


def build_model(model_name: str, weights: WeightsSpec) -> tuple[AlphaFold, bool]:
    """(model with parameters loaded, whether they are real trained weights)."""
    config = model_config(model_name)
    if weights.is_random:
        torch.manual_seed(weights.seed)
        model = AlphaFold(config.with_depth(weights.random_depth))
        log.warning(
            "%s: RANDOM parameters (seed %d), not a real prediction", model_name, weights.seed
        )
        return model.eval(), False
    path = weights.path(model_name)
    if not path.exists():
        raise WeightsError(
            f"weights file '{path}' for {model_name} does not exist; put the official "
            f"params_{model_name}.npz in fold.weights.folder (nothing is downloaded)"
        )
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    depth = stacked_blocks(arrays)
    model = AlphaFold(config.with_depth(depth) if depth != config.evoformer_num_block else config)
    load_params(model, arrays)
    if depth != ModelConfig().evoformer_num_block:
        log.warning("%s: the weights have %d Evoformer blocks (official: 48)", path, depth)
    return model.eval(), True


def to_device(features: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in features.items():
        tensor = torch.as_tensor(np.asarray(value))
        if key in INT_FEATURES:
            tensor = tensor.long()
        elif tensor.is_floating_point():
            tensor = tensor.float()
        out[key] = tensor.to(device)
    return out


def peak_host_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024**2 if sys.platform == "darwin" else peak / 1024


def predict(
    model: AlphaFold,
    features: dict[str, np.ndarray],
    options: InferenceOptions,
    device: torch.device,
    free_bytes: int | None = None,
) -> dict:
    """Run the recycling loop; returns host NumPy outputs and timings.

    ``free_bytes`` overrides the measured free memory of ``auto_chunk``."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    model = compile_model(model.to(device), options)
    available = int(features["msa_feat"].shape[0])
    # length buckets: padded, masked residues, so that one compiled graph serves many targets
    num_res = int(features["aatype"].shape[0])
    length = bucket_length(num_res, options.length_buckets, options.length_multiple)
    if options.retain_host_memory and device.type == "cpu":
        retain_freed_memory()
    # offload: the batches wait on the host (pinned on CUDA) until their recycle
    staging = torch.device("cpu") if options.offload else device
    batches = [
        pad_batch(to_device(recycle_batch(features, r), staging), length)
        for r in range(min(available, options.num_recycle + 1))
    ]
    if options.offload:
        batches = [to_host(batch) for batch in batches]
    timings["to_device"] = time.perf_counter() - started
    plan = make_plan(options, model.config, batches[0], device, free_bytes)
    if options.auto_chunk:  # a fact of this run's free memory, like the timings
        timings["auto_chunk_size"] = float(plan.chunk_size or 0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    blocks = model.config.evoformer_num_block
    progress = Progress("Evoformer blocks", (options.num_recycle + 1) * blocks, unit="blocks")
    recycle_times: list[float] = []
    tick = [time.perf_counter()]

    def on_recycle(index: int, _out: dict) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        now = time.perf_counter()
        recycle_times.append(now - tick[0])
        tick[0] = now
        log.info("recycle %d done in %.2f s", index, recycle_times[-1])

    out = model.predict(
        lambda r: batches[r % len(batches)],
        options,
        on_recycle=on_recycle,
        on_block=lambda _index: progress.update(),
        plan=plan,
    )
    out = crop_outputs(out, num_res) if length != num_res else out
    timings["inference"] = sum(recycle_times)
    for index, seconds in enumerate(recycle_times):
        timings[f"recycle_{index}"] = seconds
    memory = {"host_peak_rss": peak_host_mb()}
    if device.type == "cuda":
        memory["gpu_peak_allocated"] = torch.cuda.max_memory_allocated(device) / 1024**2
    result = {
        "atom_positions": out["structure_module"]["final_atom_positions"].float().cpu().numpy(),
        "atom_mask": out["structure_module"]["final_atom_mask"].float().cpu().numpy(),
        "plddt": out["plddt"].float().cpu().numpy(),
        "mean_plddt": float(out["mean_plddt"]),
        "recycles_run": int(out["recycles"]),
        "timings": timings,
        "peak_memory": memory,
    }
    if "ptm" in out:
        result["ptm"] = float(out["ptm"])
        result["pae"] = out["predicted_aligned_error"].float().cpu().numpy()
        result["max_pae"] = float(out["max_predicted_aligned_error"])
    return result


def run_model(
    target: str,
    sequence: str,
    features: dict[str, np.ndarray],
    model_name: str,
    weights: WeightsSpec,
    options: InferenceOptions,
    device: torch.device,
) -> Prediction:
    """Weights -> model -> prediction for one target and one model."""
    started = time.perf_counter()
    model, real = build_model(model_name, weights)
    load_time = time.perf_counter() - started
    result = predict(model, features, options, device)
    timings = {"load_weights": load_time, **result["timings"]}
    return Prediction(
        target=target,
        model_name=model_name,
        sequence=sequence,
        atom_positions=result["atom_positions"],
        atom_mask=result["atom_mask"],
        plddt=result["plddt"],
        ptm=result.get("ptm"),
        pae=result.get("pae"),
        max_pae=result.get("max_pae"),
        real_prediction=real,
        timings=timings,
        peak_memory=result["peak_memory"],
        extra={
            "num_recycle": options.num_recycle,
            "recycles_run": result["recycles_run"],
            "evoformer_blocks": model.config.evoformer_num_block,
            "device": str(device),
            "msa_clusters": int(features["msa_feat"].shape[1]),
            "extra_msa": int(features["extra_msa"].shape[1]),
        },
    )
