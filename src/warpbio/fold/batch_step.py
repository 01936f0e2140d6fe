"""Snakemake step of ``fold_predict_batch`` (``fold.schedule.mode: batch``).

One job predicts every target with every configured model: it reads the shapes of
the features files, plans the predictions over the job's devices
(:mod:`warpbio.fold.schedule`: the leased GPUs with K instances each, or the
granted CPU cores split into K pinned sets) and runs the plan
(:mod:`warpbio.fold.throughput`). It writes the same files as ``fold_predict``
(PDB, mmCIF, scores, timings and a provenance record per target and model), so the
ranking and relaxation rules do not change; the plan goes to the job's log and its
own provenance record.
"""

from __future__ import annotations

import logging
import os
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from warpbio.fold.cost import GIB, Calibration, Workload, load_calibration
from warpbio.fold.msa import read_targets
from warpbio.fold.schedule import (
    Device,
    Plan,
    TargetShape,
    cpu_device,
    gpu_devices,
    plan_targets,
    split_cores,
)
from warpbio.fold.steps import inference_options
from warpbio.fold.throughput import OUTPUT_KINDS, PredictionJob, run_plan

log = logging.getLogger(__name__)

EVOFORMER_KEY = "/evoformer/evoformer_iteration/"


def npy_shape(archive: zipfile.ZipFile, name: str) -> tuple[int, ...]:
    """Shape of one array of an .npz from its header only (no decompression of data)."""
    with archive.open(f"{name}.npy") as handle:
        version = np.lib.format.read_magic(handle)
        header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, _, _ = header(handle)
    return tuple(int(v) for v in shape)


def feature_shape(name: str, path: str | os.PathLike) -> TargetShape:
    """Residues, MSA clusters and extra MSA rows of a features file."""
    with zipfile.ZipFile(path) as archive:
        _, clusters, num_res, _ = npy_shape(archive, "msa_feat")
        extra = npy_shape(archive, "extra_msa")[1]
    return TargetShape(name=name, num_res=num_res, msa_clusters=clusters, extra_msa=extra)


def weights_depth(weights: Mapping[str, Any], model_name: str) -> int:
    """Evoformer blocks of a model: the random depth, or the npz's stacked axis."""
    if not weights["folder"]:
        return int(weights["random_depth"])
    path = Path(weights["folder"]) / f"params_{model_name}.npz"
    with zipfile.ZipFile(path) as archive:
        for entry in archive.namelist():
            if EVOFORMER_KEY in entry:
                return npy_shape(archive, entry.removesuffix(".npy"))[0]
    return 48


def granted_cores(threads: int) -> list[int]:
    """The cores this job may use: its affinity (SLURM's allocation), at most
    ``threads`` of them (Snakemake's grant on a shared node)."""
    return sorted(os.sched_getaffinity(0))[: max(1, int(threads))]


def job_devices(ctx, schedule: Mapping[str, Any], calibration: Calibration | None) -> list[Device]:
    """The leased GPUs (K instances each) or the granted CPU cores (K sets)."""
    cores = granted_cores(ctx.threads)
    if ctx.backend == "gpu":
        memory = float(schedule["gpu_memory_gb"]) * GIB or None
        devices = gpu_devices(
            ctx.lease.ids,
            int(schedule["instances_per_gpu"]),
            memory,
            calibration,
            headroom=0.9 if memory is None else 1.0,  # a given size is used as given
        )
        slots = sum(d.instances for d in devices)
        if len(cores) >= slots:  # host threads of the GPU instances on their own cores
            sets = iter(split_cores(cores, slots))
            devices = [
                Device(
                    d.name,
                    d.kind,
                    d.memory_bytes,
                    d.instances,
                    d.gpu_id,
                    tuple(next(sets) for _ in range(d.instances)),
                    d.calibration,
                )
                for d in devices
            ]
        return devices
    memory = float(schedule["host_memory_gb"]) * GIB or None
    return [cpu_device(int(schedule["cpu_instances"]), cores, memory, calibration)]


def prediction_jobs(ctx, names: Sequence[str], models: Sequence[str]) -> dict[str, PredictionJob]:
    """One job per (target, model), in the rule's output order (target-major)."""
    sequences = {t.name: t.sequence for t in read_targets(ctx.input.fasta)}
    features = dict(zip(names, ctx.input.features, strict=True))
    jobs = {}
    for index, (target, model) in enumerate((t, m) for t in names for m in models):
        name = f"{target}/{model}"
        jobs[name] = PredictionJob(
            name=name,
            target=target,
            model_name=model,
            sequence=sequences[target],
            features=str(features[target]),
            outputs={kind: str(getattr(ctx.output, kind)[index]) for kind in OUTPUT_KINDS},
        )
    return jobs


def _write_records(ctx, jobs, plan: Plan, results: Mapping[str, dict], started: float) -> None:
    """Per-prediction provenance, at fold_predict's paths."""
    from warpbio.provenance import build_record, write_record

    for index, job in enumerate(jobs.values()):
        slot = plan.slot_of(job.name)
        record = build_record(
            rule=ctx.rule,
            outputs=list(job.outputs.values()),
            inputs=[ctx.input.fasta, job.features],
            params={"inference": dict(ctx.params.inference), "model": job.model_name},
            seed=ctx.seed,
            backend=ctx.backend,
            gpu_ids=[slot.gpu_id] if slot.gpu_id is not None else [],
            started=started,
            attempt=ctx.attempt,
            extra={
                **results[job.name],
                "batch": {
                    "method": plan.method,
                    "predicted_makespan_s": round(plan.makespan_s, 3),
                    "cores": list(slot.cores),
                },
            },
        )
        write_record(ctx.output.records[index], record)


def predict_batch_step(ctx) -> dict:
    """Every target x model of the dataset in one job, over a makespan plan."""
    from warpbio.fold.inference import WeightsSpec

    started = time.time()
    schedule = dict(ctx.params.schedule)
    weights = dict(ctx.params.weights)
    names = list(ctx.params.targets)
    models = list(ctx.params.models)
    options = inference_options(ctx.params.inference)
    spec = WeightsSpec(
        folder=weights["folder"], random_depth=int(weights["random_depth"]), seed=int(ctx.seed)
    )
    jobs = prediction_jobs(ctx, names, models)
    calibration = load_calibration(schedule["calibration"]) if schedule["calibration"] else None
    devices = job_devices(ctx, schedule, calibration)
    shapes = {n: feature_shape(n, p) for n, p in zip(names, ctx.input.features, strict=True)}
    depth = max(weights_depth(weights, m) for m in models)
    template = Workload.from_options(1, 1, 1, depth, options)
    targets = [replace(shapes[job.target], name=job.name) for job in jobs.values()]
    plan = plan_targets(
        targets,
        devices,
        template,
        time_limit=float(schedule["time_limit_s"]),
        max_ilp_targets=int(schedule["max_ilp_targets"]),
    )
    log.info("%s", plan.describe())
    results = run_plan(plan, jobs, spec, options)
    _write_records(ctx, jobs, plan, results, started)
    measured = max((r["wall_seconds"] for r in results.values()), default=0.0)
    log.info(
        "%d prediction(s) in %.1f s (predicted makespan %.1f s)",
        len(results),
        time.time() - started,
        plan.makespan_s,
    )
    return {"plan": plan.to_dict(), "predictions": results, "longest_prediction_s": measured}
