"""The fold throughput scheduler (ILP vs brute force, memory, errors, determinism,
greedy fallback) and the executor (spawned CPU workers pinned to core sets)."""

from __future__ import annotations

import itertools
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from warpbio.fold import schedule as sched
from warpbio.fold.cost import GIB, Calibration, Workload
from warpbio.fold.schedule import (
    Device,
    ScheduleError,
    TargetShape,
    cpu_device,
    gpu_devices,
    makespan,
    memory_ok,
    plan_targets,
    predict_costs,
    split_cores,
)

# A GPU where launch overhead weighs (short targets gain from concurrent instances)
GPU = Calibration("test-gpu", 2.0e13, 0.02, 1.0, 1.0 * GIB, 1.0, 0, "float32")
TEMPLATE = Workload(1, msa_clusters=128, extra_msa=256, blocks=8, recycles=1)


def targets(lengths, prefix="t"):
    return [TargetShape(f"{prefix}{i}", int(n), 128, 256) for i, n in enumerate(lengths)]


def brute_force(costs):
    """Minimum makespan over every memory-feasible assignment."""
    slots = [slot.name for _, slot in costs.slots()]
    best = float("inf")
    for choice in itertools.product(slots, repeat=len(costs.targets)):
        assignment = {t.name: s for t, s in zip(costs.targets, choice, strict=True)}
        device_of = {slot.name: d for d, slot in costs.slots()}
        if not all(costs.fits(t, device_of[s]) for t, s in assignment.items()):
            continue
        if memory_ok(costs, assignment):
            best = min(best, makespan(costs, assignment))
    return best


def mixed_devices():
    """Two GPUs of different memory, two instances each."""
    return [
        *gpu_devices(["0"], 2, 12 * GIB, GPU, headroom=1.0),
        *gpu_devices(["1"], 2, 24 * GIB, GPU, headroom=1.0),
    ]


# seeds 3, 5 and 11: the greedy LPT plan is worse than the optimum
@pytest.mark.parametrize(
    ("seed", "greedy_optimal"), [(0, True), (3, False), (5, False), (11, False)]
)
def test_ilp_finds_the_brute_force_optimum(seed, greedy_optimal):
    rng = np.random.default_rng(seed)
    shapes = targets(rng.integers(40, 700, 6))
    devices = mixed_devices()
    plan = plan_targets(shapes, devices, TEMPLATE, time_limit=20)
    costs = predict_costs(shapes, devices, TEMPLATE)
    optimum = brute_force(costs)
    assert plan.method == "ilp" and plan.ilp_makespan_s is not None
    assert plan.makespan_s == pytest.approx(optimum, rel=1e-6)
    assert (plan.greedy_makespan_s <= optimum * (1 + 1e-9)) == greedy_optimal
    assert plan.greedy_makespan_s >= optimum * (1 - 1e-9)
    assignment = {t: p["slot"] for t, p in plan.predictions.items()}
    assert makespan(costs, assignment) == pytest.approx(plan.makespan_s)
    assert sorted(t for p in plan.slots for t in p.targets) == sorted(t.name for t in shapes)


def test_cpu_core_sets_of_unequal_size_brute_force():
    shapes = targets([60, 90, 120, 150, 200])
    device = cpu_device(2, cores=[0, 1, 2], memory_bytes=64 * GIB)
    assert device.core_sets == ((0, 1), (2,))
    plan = plan_targets(shapes, [device], TEMPLATE)
    costs = predict_costs(shapes, [device], TEMPLATE)
    assert plan.makespan_s == pytest.approx(brute_force(costs), rel=1e-6)
    by_slot = {p.slot.name: p for p in plan.slots}
    assert by_slot["cpu/0"].slot.cores == (0, 1) and by_slot["cpu/1"].slot.cores == (2,)
    # the two-core set takes the larger share of the work
    assert by_slot["cpu/0"].predicted_seconds >= by_slot["cpu/1"].predicted_seconds * 0.5


def test_memory_of_concurrent_instances_fits_the_device():
    # each long target alone needs more than half of the GPU: never two at once
    shapes = targets([900, 900, 900, 60, 60, 60])
    costs_probe = predict_costs(shapes, gpu_devices(["0"], 1, 1e15, GPU, 1.0), TEMPLATE)
    big = costs_probe.peak["t0", "gpu0"]
    device = gpu_devices(["0"], 3, 1.6 * big, GPU, headroom=1.0)
    plan = plan_targets(shapes, device, TEMPLATE)
    costs = predict_costs(shapes, device, TEMPLATE)
    assignment = {t: p["slot"] for t, p in plan.predictions.items()}
    assert memory_ok(costs, assignment)
    assert len({assignment[f"t{i}"] for i in range(3)}) == 1  # the long ones queue on one slot
    assert sum(p.peak_bytes for p in plan.slots) <= device[0].memory_bytes
    # without the memory limit they would spread over the instances
    roomy = plan_targets(shapes, gpu_devices(["0"], 3, 1e15, GPU, 1.0), TEMPLATE)
    spread = {p["slot"] for t, p in roomy.predictions.items() if t in ("t0", "t1", "t2")}
    assert len(spread) > 1 and roomy.makespan_s < plan.makespan_s


def test_a_target_too_large_for_every_device_is_named():
    shapes = [*targets([100, 200]), TargetShape("huge_one", 3000, 512, 1024)]
    with pytest.raises(ScheduleError, match=r"target huge_one \(3000 residues\).* GiB"):
        plan_targets(shapes, mixed_devices(), TEMPLATE)


def test_same_input_same_plan():
    rng = np.random.default_rng(7)
    shapes = targets(rng.integers(50, 800, 14))
    first = plan_targets(shapes, mixed_devices(), TEMPLATE, time_limit=20)
    second = plan_targets(shapes, mixed_devices(), TEMPLATE, time_limit=20)
    assert json.dumps(first.to_dict(), sort_keys=True) == json.dumps(
        second.to_dict(), sort_keys=True
    )
    greedy = sched.greedy_assignment(predict_costs(shapes, mixed_devices(), TEMPLATE))
    assert greedy == sched.greedy_assignment(predict_costs(shapes, mixed_devices(), TEMPLATE))


def test_greedy_plan_for_many_targets_and_when_the_ilp_times_out(monkeypatch, caplog):
    rng = np.random.default_rng(3)
    shapes = targets(rng.integers(50, 800, 12))
    caplog.set_level("INFO", logger="warpbio.fold.schedule")
    many = plan_targets(shapes, mixed_devices(), TEMPLATE, max_ilp_targets=5)
    assert many.method == "greedy" and many.ilp_makespan_s is None
    assert "12 targets > max_ilp_targets 5" in many.note and "greedy LPT" in caplog.text
    costs = predict_costs(shapes, mixed_devices(), TEMPLATE)
    lower_bound = sum(costs.compute[t.name, "gpu0"] for t in shapes) / 2
    assert many.makespan_s >= lower_bound
    assert memory_ok(costs, {t: p["slot"] for t, p in many.predictions.items()})

    def timed_out(costs, time_limit):
        return None, f"the ILP found no proven optimum within {time_limit:g} s (Not Solved)"

    monkeypatch.setattr(sched, "ilp_assignment", timed_out)
    fallback = plan_targets(shapes, mixed_devices(), TEMPLATE, time_limit=0.5)
    assert fallback.method == "greedy" and "within 0.5 s" in fallback.note
    assert fallback.makespan_s == pytest.approx(many.makespan_s)
    assert "greedy" in fallback.describe() and "ILP not run" in fallback.describe()


def test_greedy_plan_without_a_cbc_solver(monkeypatch):
    import pulp

    for solver in (pulp.PULP_CBC_CMD, pulp.COIN_CMD):
        monkeypatch.setattr(solver, "available", lambda self: False)
    plan = plan_targets(targets([100, 300, 500]), mixed_devices(), TEMPLATE)
    assert plan.method == "greedy" and plan.note.startswith("no CBC solver")


def test_split_cores_and_device_checks():
    assert split_cores([5, 1, 3, 2, 4], 2) == ((1, 2, 3), (4, 5))
    assert split_cores(range(8), 4) == ((0, 1), (2, 3), (4, 5), (6, 7))
    with pytest.raises(ValueError, match="cannot split 2 core"):
        split_cores([0, 1], 3)
    with pytest.raises(ValueError, match="core sets"):
        Device("cpu", "cpu", 1e9, instances=2, core_sets=((0,),))
    assert cpu_device(8, cores=[0, 1], memory_bytes=1e9).instances == 2


# --------------------------------------------------------------------------
# Executor: spawned workers on CPU core sets
# --------------------------------------------------------------------------


def write_targets(folder: Path, lengths):
    from fold.test_cost import random_features
    from warpbio.fold.features import save_features
    from warpbio.fold.throughput import PredictionJob

    jobs, shapes = {}, []
    for index, n in enumerate(lengths):
        name = f"p{index}"
        query, features = random_features(n, 4, 8, 1, seed=index)
        path = folder / f"{name}.npz"
        save_features(path, features)
        outputs = {
            kind: str(folder / name / file)
            for kind, file in (
                ("pdb", "unrelaxed.pdb"),
                ("cif", "unrelaxed.cif"),
                ("json", "scores.json"),
                ("timings", "timings.json"),
            )
        }
        jobs[name] = PredictionJob(name, name, "model_1_ptm", query, str(path), outputs)
        shapes.append(TargetShape(name, n, 4, 8))
    return jobs, shapes


def cpu_plan(shapes):
    cores = sorted(os.sched_getaffinity(0))[:2]
    device = cpu_device(2, cores=cores, memory_bytes=16 * GIB)
    return plan_targets(shapes, [device], Workload(1, 4, 8, blocks=1, recycles=1))


def test_executor_outputs_equal_a_direct_run(tmp_path):
    torch = pytest.importorskip("torch")
    from warpbio.fold.config import InferenceOptions
    from warpbio.fold.features import load_features
    from warpbio.fold.inference import WeightsSpec, run_model
    from warpbio.fold.outputs import to_json, to_pdb
    from warpbio.fold.throughput import run_plan

    jobs, shapes = write_targets(tmp_path, [20, 28, 12])
    plan = cpu_plan(shapes)
    spec, options = WeightsSpec(random_depth=1, seed=3), InferenceOptions(num_recycle=1)
    results = run_plan(plan, jobs, spec, options)
    assert set(results) == set(jobs)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' single-core sets: same arithmetic order
    try:
        for name, job in jobs.items():
            slot = plan.slot_of(name)
            assert results[name]["slot"] == slot.name
            assert results[name]["cores"] == list(slot.cores)
            direct = run_model(
                job.target, job.sequence, load_features(job.features), job.model_name,
                spec, options, torch.device("cpu"),
            )  # fmt: skip
            assert Path(job.outputs["pdb"]).read_text() == to_pdb(direct)
            assert Path(job.outputs["json"]).read_text() == to_json(direct)
            assert json.loads(Path(job.outputs["timings"]).read_text())["target"] == name
    finally:
        torch.set_num_threads(threads)


def test_a_failing_target_fails_the_batch_by_name_and_leaves_no_files(tmp_path):
    from warpbio.fold.config import InferenceOptions
    from warpbio.fold.inference import WeightsSpec
    from warpbio.fold.throughput import BatchError, run_plan

    jobs, shapes = write_targets(tmp_path, [16, 24, 12])
    Path(jobs["p1"].features).write_bytes(b"not an npz")
    plan = cpu_plan(shapes)
    with pytest.raises(BatchError, match=r"target p1 \(model_1_ptm\) failed on slot cpu/"):
        run_plan(plan, jobs, WeightsSpec(random_depth=1), InferenceOptions(num_recycle=0))
    for path in jobs["p1"].outputs.values():
        assert not Path(path).exists()
    leftovers = [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]
    assert not leftovers


def test_a_finished_batch_terminates_no_worker_and_keeps_every_log_line(
    tmp_path, monkeypatch, caplog
):
    """Workers that sent "exit" are joined, not terminated: a SIGTERM while a worker's
    log-queue feeder held the queue's write lock lost its "done in" line and hung
    run_plan for good (the fold_predict_batch timeout of make test)."""
    import multiprocessing.process

    from warpbio.fold.config import InferenceOptions
    from warpbio.fold.inference import WeightsSpec
    from warpbio.fold.throughput import run_plan

    terminated = []
    terminate = multiprocessing.process.BaseProcess.terminate

    def recording_terminate(process):
        terminated.append(process.name)
        terminate(process)

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "terminate", recording_terminate)
    caplog.set_level(logging.INFO)
    jobs, shapes = write_targets(tmp_path, [16, 12])
    run_plan(cpu_plan(shapes), jobs, WeightsSpec(random_depth=1), InferenceOptions(num_recycle=0))
    assert terminated == []
    for name in jobs:
        assert f"{name} done in" in caplog.text


@pytest.mark.gpu
def test_gpu_slots_see_only_their_gpu_and_match_the_cpu(tmp_path):
    """Two instances on GPU 0 (and one on GPU 1 when there is one); float32 on CUDA
    agrees with the CPU run to the printed precision."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU and PyTorch-CUDA")
    from warpbio.fold.config import InferenceOptions
    from warpbio.fold.features import load_features
    from warpbio.fold.inference import WeightsSpec, run_model
    from warpbio.fold.throughput import run_plan

    ids = [str(i) for i in range(min(2, torch.cuda.device_count()))]
    devices = gpu_devices(ids, 2, {i: 8.0 * GIB for i in ids}, headroom=1.0)
    jobs, shapes = write_targets(tmp_path, [24, 40, 16, 32])
    plan = plan_targets(shapes, devices, Workload(1, 4, 8, blocks=1, recycles=1))
    spec, options = WeightsSpec(random_depth=1, seed=3), InferenceOptions(num_recycle=1)
    results = run_plan(plan, jobs, spec, options)
    for name, job in jobs.items():
        slot = plan.slot_of(name)
        assert results[name]["cuda_visible_devices"] == slot.gpu_id
        assert results[name]["peak_memory_mb"]["gpu_peak_allocated"] > 0
        direct = run_model(
            job.target, job.sequence, load_features(job.features), job.model_name,
            spec, options, torch.device("cpu"),
        )  # fmt: skip
        scores = json.loads(Path(job.outputs["json"]).read_text())
        assert np.allclose(scores["plddt"], direct.plddt, atol=0.06)  # + rounding to 0.01


def test_batch_step_reads_shapes_and_depth_from_file_headers(tmp_path):
    torch = pytest.importorskip("torch")
    from fold.test_cost import random_features
    from warpbio.fold.batch_step import feature_shape, weights_depth
    from warpbio.fold.config import ModelConfig
    from warpbio.fold.features import save_features
    from warpbio.fold.model.alphafold import AlphaFold
    from warpbio.fold.params import export_params

    _, features = random_features(30, 6, 10, 2)
    save_features(tmp_path / "f.npz", features)
    assert feature_shape("x", tmp_path / "f.npz") == TargetShape("x", 30, 6, 10)
    torch.manual_seed(0)
    np.savez(
        tmp_path / "params_model_1.npz", **export_params(AlphaFold(ModelConfig().with_depth(2)))
    )
    assert weights_depth({"folder": str(tmp_path), "random_depth": 4}, "model_1") == 2
    assert weights_depth({"folder": "", "random_depth": 4}, "model_1") == 4
