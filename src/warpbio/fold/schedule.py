"""Length-aware assignment of fold targets to devices and instance slots.

Each device (a GPU, or the host's CPU cores) runs up to K concurrent instances
(slots); a slot runs its targets one after another. The plan minimises the
predicted makespan under this model (:mod:`warpbio.fold.cost` predicts each
target's time and peak memory):

- a slot finishes after the sum of its targets' predicted times;
- the instances of one GPU share its arithmetic: the FLOP-bound part of every
  target on the GPU adds up (so several instances only help where launch latency
  and host work, not FLOPs, bound the time: short targets);
- the instances on one device run concurrently, so the sum over its slots of the
  largest peak memory in each slot must fit the device's memory. CPU slots own
  disjoint core sets and share the host memory.

The assignment is an integer program (PuLP with its bundled CBC); when it has more
targets than ``max_ilp_targets`` or CBC does not prove optimality within the time
limit, the plan is the greedy longest-processing-time one (logged). Both predicted
makespans are reported. Same input, same plan.
"""

from __future__ import annotations

import itertools
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from warpbio.fold.config import ModelConfig
from warpbio.fold.cost import GIB, Calibration, Workload, default_calibration

log = logging.getLogger(__name__)


class ScheduleError(ValueError):
    """A target list that no plan can run (e.g. a target larger than every device)."""


@dataclass(frozen=True)
class TargetShape:
    """What the cost model needs to know about a target."""

    name: str
    num_res: int
    msa_clusters: int = 512
    extra_msa: int = 1024


@dataclass(frozen=True)
class Slot:
    """One instance: a GPU id (or none: CPU) and the cores it is pinned to."""

    device: str
    index: int
    gpu_id: str | None = None
    cores: tuple[int, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.device}/{self.index}"


@dataclass(frozen=True)
class Device:
    """A GPU (``gpu_id``, free memory) or the CPU (``core_sets``, host memory)."""

    name: str
    kind: str  # "gpu" | "cpu"
    memory_bytes: float
    instances: int = 1
    gpu_id: str | None = None
    core_sets: tuple[tuple[int, ...], ...] = ()
    calibration: Calibration | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("gpu", "cpu"):
            raise ValueError(f"device {self.name}: kind {self.kind!r} is not gpu or cpu")
        if self.instances < 1:
            raise ValueError(f"device {self.name}: instances must be >= 1")
        if self.kind == "cpu" and len(self.core_sets) != self.instances:
            raise ValueError(
                f"device {self.name}: {self.instances} instance(s) need as many core sets "
                f"(got {len(self.core_sets)})"
            )

    @property
    def slots(self) -> list[Slot]:
        cores = self.core_sets or ((),) * self.instances
        return [Slot(self.name, k, self.gpu_id, tuple(cores[k])) for k in range(self.instances)]

    def constants(self, slot: Slot, dtype: str) -> Calibration:
        calibration = self.calibration or default_calibration(self.kind, dtype)
        return calibration.for_cores(len(slot.cores)) if self.kind == "cpu" else calibration

    @property
    def shares_compute(self) -> bool:
        """Instances of a GPU share its arithmetic; CPU slots own their cores."""
        return self.kind == "gpu" and self.instances > 1


def split_cores(cores: Sequence[int], parts: int) -> tuple[tuple[int, ...], ...]:
    """``parts`` disjoint, contiguous, near-equal core sets (sorted, deterministic)."""
    ordered = sorted(set(int(c) for c in cores))
    if not 1 <= parts <= len(ordered):
        raise ValueError(f"cannot split {len(ordered)} core(s) into {parts} set(s)")
    size, extra = divmod(len(ordered), parts)
    sets, start = [], 0
    for index in range(parts):
        stop = start + size + (1 if index < extra else 0)
        sets.append(tuple(ordered[start:stop]))
        start = stop
    return tuple(sets)


def cpu_device(
    instances: int,
    cores: Sequence[int] | None = None,
    memory_bytes: float | None = None,
    calibration: Calibration | None = None,
) -> Device:
    """The host as one device: the granted cores split into ``instances`` sets."""
    granted = sorted(cores if cores is not None else os.sched_getaffinity(0))
    instances = min(instances, len(granted))
    if memory_bytes is None:
        import psutil

        memory_bytes = float(psutil.virtual_memory().available)
    return Device(
        name="cpu",
        kind="cpu",
        memory_bytes=memory_bytes,
        instances=instances,
        core_sets=split_cores(granted, instances),
        calibration=calibration,
    )


def gpu_free_memory(gpu_ids: Sequence[str]) -> dict[str, float]:
    """Free bytes of each GPU id (index or UUID) from nvidia-smi; no CUDA import."""
    from warpbio.device import query_nvidia_smi

    rows = query_nvidia_smi(["index", "uuid", "memory.free"])
    free = {}
    for row in rows:
        for key in (row["index"], row["uuid"]):
            free[key] = float(row["memory.free"].split()[0]) * 2**20
    missing = [g for g in gpu_ids if g not in free]
    if missing:
        raise ScheduleError(
            f"nvidia-smi reports no free memory for GPU(s) {missing}; set "
            "fold.schedule.gpu_memory_gb to the memory each GPU may use"
        )
    return {g: free[g] for g in gpu_ids}


def gpu_devices(
    gpu_ids: Sequence[str],
    instances: int,
    memory_bytes: Mapping[str, float] | float | None = None,
    calibration: Calibration | None = None,
    headroom: float = 0.9,
) -> list[Device]:
    """One device per GPU id; memory from nvidia-smi unless given. ``headroom`` keeps
    a margin for the caching allocator's fragmentation."""
    if memory_bytes is None:
        memory_bytes = gpu_free_memory(gpu_ids)
    devices = []
    for gpu_id in gpu_ids:
        memory = memory_bytes if isinstance(memory_bytes, float | int) else memory_bytes[gpu_id]
        devices.append(
            Device(
                name=f"gpu{gpu_id}",
                kind="gpu",
                memory_bytes=float(memory) * headroom,
                instances=instances,
                gpu_id=str(gpu_id),
                calibration=calibration,
            )
        )
    return devices


# --------------------------------------------------------------------------
# Costs of every (target, slot) pair
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Costs:
    """Predicted seconds per (target, slot), FLOP-bound seconds and peak bytes per
    (target, device); pairs whose peak exceeds the device's memory are absent."""

    targets: tuple[TargetShape, ...]
    devices: tuple[Device, ...]
    seconds: dict[tuple[str, str], float]
    compute: dict[tuple[str, str], float]
    peak: dict[tuple[str, str], float]

    def slots(self) -> list[tuple[Device, Slot]]:
        return [(device, slot) for device in self.devices for slot in device.slots]

    def fits(self, target: str, device: Device) -> bool:
        return self.peak[target, device.name] <= device.memory_bytes


def predict_costs(
    targets: Sequence[TargetShape],
    devices: Sequence[Device],
    template: Workload,
    config: ModelConfig | None = None,
) -> Costs:
    """Cost model over every pair; raises for a target that fits no device."""
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise ScheduleError("target names must be unique in a plan")
    if not devices:
        raise ScheduleError("no devices to plan on")
    seconds, compute, peak = {}, {}, {}
    for target in targets:
        workload = replace(
            template,
            num_res=target.num_res,
            msa_clusters=target.msa_clusters,
            extra_msa=target.extra_msa,
        )
        for device in devices:
            slots = device.slots
            constants = device.constants(slots[0], template.dtype)
            peak[target.name, device.name] = constants.peak_bytes(workload, config)
            compute[target.name, device.name] = constants.compute_seconds(workload, config)
            for slot in slots:
                seconds[target.name, slot.name] = device.constants(slot, template.dtype).seconds(
                    workload, config
                )
    costs = Costs(tuple(targets), tuple(devices), seconds, compute, peak)
    for target in targets:
        if not any(costs.fits(target.name, d) for d in devices):
            largest = max(devices, key=lambda d: d.memory_bytes)
            need = peak[target.name, largest.name]
            raise ScheduleError(
                f"target {target.name} ({target.num_res} residues) needs a predicted "
                f"{need / GIB:.1f} GiB at its peak, more than any device has (largest: "
                f"{largest.name} with {largest.memory_bytes / GIB:.1f} GiB usable); "
                "chunk the model (fold.chunk_size), use fewer MSA rows or a larger device"
            )
    return costs


# --------------------------------------------------------------------------
# Plans
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class SlotPlan:
    slot: Slot
    targets: tuple[str, ...]
    predicted_seconds: float
    peak_bytes: float


@dataclass(frozen=True)
class Plan:
    """Targets per slot, in run order, with the predicted makespans of both methods."""

    slots: tuple[SlotPlan, ...]
    method: str  # "ilp" | "greedy"
    makespan_s: float
    greedy_makespan_s: float
    ilp_makespan_s: float | None
    note: str = ""
    predictions: dict[str, dict] = field(default_factory=dict)

    def slot_of(self, target: str) -> Slot:
        for plan in self.slots:
            if target in plan.targets:
                return plan.slot
        raise KeyError(target)

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "note": self.note,
            "predicted_makespan_s": round(self.makespan_s, 3),
            "greedy_makespan_s": round(self.greedy_makespan_s, 3),
            "ilp_makespan_s": None
            if self.ilp_makespan_s is None
            else round(self.ilp_makespan_s, 3),
            "slots": [
                {
                    "slot": p.slot.name,
                    "gpu_id": p.slot.gpu_id,
                    "cores": list(p.slot.cores),
                    "targets": list(p.targets),
                    "predicted_seconds": round(p.predicted_seconds, 3),
                    "peak_gib": round(p.peak_bytes / GIB, 3),
                }
                for p in self.slots
            ],
            "predictions": self.predictions,
        }

    def describe(self) -> str:
        ilp = "not run" if self.ilp_makespan_s is None else f"{self.ilp_makespan_s:.1f} s"
        note = f"; {self.note}" if self.note else ""
        lines = [
            f"plan ({self.method}): predicted makespan {self.makespan_s:.1f} s "
            f"(ILP {ilp}, greedy {self.greedy_makespan_s:.1f} s){note}"
        ]
        for p in self.slots:
            cores = f" cores {_ranges(p.slot.cores)}" if p.slot.cores else ""
            lines.append(
                f"  {p.slot.name}{cores}: {len(p.targets)} target(s), "
                f"{p.predicted_seconds:.1f} s, peak {p.peak_bytes / GIB:.2f} GiB: "
                + ", ".join(p.targets)
            )
        return "\n".join(lines)


def _ranges(cores: Sequence[int]) -> str:
    return f"{cores[0]}-{cores[-1]}" if len(cores) > 1 else str(cores[0])


Assignment = dict[str, str]  # target name -> slot name


def makespan(costs: Costs, assignment: Assignment) -> float:
    """Predicted makespan of an assignment (the model of the module docstring)."""
    slot_load: dict[str, float] = {}
    device_load: dict[str, float] = {}
    device_of = {slot.name: device for device, slot in costs.slots()}
    for target, slot in assignment.items():
        device = device_of[slot]
        slot_load[slot] = slot_load.get(slot, 0.0) + costs.seconds[target, slot]
        if device.shares_compute:
            key = device.name
            device_load[key] = device_load.get(key, 0.0) + costs.compute[target, key]
    return max([*slot_load.values(), *device_load.values(), 0.0])


def memory_ok(costs: Costs, assignment: Assignment) -> bool:
    """Every device holds the largest target of each of its slots at once."""
    peaks: dict[str, float] = {}
    device_of = {slot.name: device for device, slot in costs.slots()}
    for target, slot in assignment.items():
        device = device_of[slot]
        peaks[slot] = max(peaks.get(slot, 0.0), costs.peak[target, device.name])
    for device in costs.devices:
        if sum(peaks.get(s.name, 0.0) for s in device.slots) > device.memory_bytes:
            return False
    return True


def _order(costs: Costs) -> list[TargetShape]:
    """Longest first (by the best slot's time), names breaking ties."""

    def best(target: TargetShape) -> float:
        return min(
            costs.seconds[target.name, slot.name]
            for device, slot in costs.slots()
            if costs.fits(target.name, device)
        )

    return sorted(costs.targets, key=lambda t: (-best(t), t.name))


def greedy_assignment(costs: Costs) -> Assignment:
    """Longest processing time first: each target to the slot where it finishes
    earliest (slot and shared-device load) with the memory constraint kept."""
    slot_load = {slot.name: 0.0 for _, slot in costs.slots()}
    slot_peak = {slot.name: 0.0 for _, slot in costs.slots()}
    device_load = {device.name: 0.0 for device in costs.devices}
    assignment: Assignment = {}
    for target in _order(costs):
        best: tuple[float, int] | None = None
        choice = None
        for rank, (device, slot) in enumerate(costs.slots()):
            need = costs.peak[target.name, device.name]
            if need > device.memory_bytes:
                continue
            others = sum(slot_peak[s.name] for s in device.slots if s.name != slot.name)
            if others + max(slot_peak[slot.name], need) > device.memory_bytes:
                continue
            finish = slot_load[slot.name] + costs.seconds[target.name, slot.name]
            if device.shares_compute:
                finish = max(
                    finish, device_load[device.name] + costs.compute[target.name, device.name]
                )
            key = (round(finish, 9), rank)
            if best is None or key < best:
                best, choice = key, (device, slot)
        if choice is None:
            raise ScheduleError(
                f"target {target.name}: no slot has memory left for its predicted "
                f"{costs.peak[target.name, costs.devices[0].name] / GIB:.1f} GiB beside the "
                "targets already placed; lower fold.schedule.instances_per_gpu"
            )
        device, slot = choice
        assignment[target.name] = slot.name
        slot_load[slot.name] += costs.seconds[target.name, slot.name]
        slot_peak[slot.name] = max(slot_peak[slot.name], costs.peak[target.name, device.name])
        device_load[device.name] += costs.compute[target.name, device.name]
    return assignment


def ilp_assignment(costs: Costs, time_limit: float) -> tuple[Assignment | None, str]:
    """Minimum-makespan assignment by CBC; (None, why) unless proven optimal."""
    with warnings.catch_warnings():
        # PuLP 3.3 warns of its 4.0 API (pyproject keeps pulp < 4)
        warnings.simplefilter("ignore", DeprecationWarning)
        return _solve_ilp(costs, time_limit)


def _solve_ilp(costs: Costs, time_limit: float) -> tuple[Assignment | None, str]:
    import pulp

    problem = pulp.LpProblem("fold_makespan", pulp.LpMinimize)
    span = pulp.LpVariable("makespan", lowBound=0)
    problem += span
    pairs = [
        (target.name, device, slot)
        for target in costs.targets
        for device, slot in costs.slots()
        if costs.fits(target.name, device)
    ]
    x = {
        (t, slot.name): pulp.LpVariable(f"x_{i}", cat="Binary")
        for i, (t, _device, slot) in enumerate(pairs)
    }
    for target in costs.targets:
        problem += pulp.lpSum(x[t, s] for (t, s) in x if t == target.name) == 1
    for device in costs.devices:
        slots = device.slots
        loads = []
        for slot in slots:
            load = pulp.lpSum(
                costs.seconds[t, s] * var for (t, s), var in x.items() if s == slot.name
            )
            problem += load <= span
            loads.append(load)
        if device.kind == "gpu":  # identical slots: ordering them by load breaks symmetry
            for first, second in itertools.pairwise(loads):
                problem += first >= second
        if device.shares_compute:
            problem += (
                pulp.lpSum(
                    costs.compute[t, device.name] * var
                    for (t, s), var in x.items()
                    if s in {slot.name for slot in slots}
                )
                <= span
            )
        if len(slots) > 1:
            peaks = []
            for k, slot in enumerate(slots):
                peak = pulp.LpVariable(f"peak_{device.name}_{k}", lowBound=0)
                for (t, s), var in x.items():
                    if s == slot.name:
                        problem += peak >= costs.peak[t, device.name] / GIB * var
                peaks.append(peak)
            problem += pulp.lpSum(peaks) <= device.memory_bytes / GIB
    solver = _cbc(pulp, time_limit)
    if solver is None:
        return None, "no CBC solver (PuLP's bundled one or a cbc binary on PATH)"
    problem.solve(solver)
    if problem.sol_status != pulp.LpSolutionOptimal:
        why = (
            f"the ILP found no proven optimum within {time_limit:g} s "
            f"({pulp.LpSolution[problem.sol_status]})"
        )
        return None, why
    assignment = {
        t: s for (t, s), var in x.items() if var.value() is not None and var.value() > 0.5
    }
    return assignment, ""


def _cbc(pulp, time_limit: float):
    """PuLP's bundled CBC (pip wheels), else a ``cbc`` on PATH (conda-forge's pulp
    ships none and depends on coin-or-cbc); single-threaded for determinism."""
    for kind in (pulp.PULP_CBC_CMD, pulp.COIN_CMD):
        solver = kind(msg=False, timeLimit=time_limit, threads=1)
        if solver.available():
            return solver
    return None


def _slot_plans(costs: Costs, assignment: Assignment) -> tuple[SlotPlan, ...]:
    plans = []
    for device, slot in costs.slots():
        mine = [t for t in costs.targets if assignment[t.name] == slot.name]
        mine.sort(key=lambda t: (-costs.seconds[t.name, slot.name], t.name))
        plans.append(
            SlotPlan(
                slot=slot,
                targets=tuple(t.name for t in mine),
                predicted_seconds=sum(costs.seconds[t.name, slot.name] for t in mine),
                peak_bytes=max((costs.peak[t.name, device.name] for t in mine), default=0.0),
            )
        )
    return tuple(plans)


def plan_targets(
    targets: Sequence[TargetShape],
    devices: Sequence[Device],
    template: Workload,
    *,
    time_limit: float = 30.0,
    max_ilp_targets: int = 64,
    config: ModelConfig | None = None,
) -> Plan:
    """The plan of the module docstring: ILP when small enough, else greedy LPT."""
    costs = predict_costs(targets, devices, template, config)
    greedy = greedy_assignment(costs)
    greedy_span = makespan(costs, greedy)
    ilp, ilp_span, note = None, None, ""
    if len(targets) > max_ilp_targets:
        note = f"{len(targets)} targets > max_ilp_targets {max_ilp_targets}: greedy LPT plan"
    else:
        ilp, why = ilp_assignment(costs, time_limit)
        if ilp is None:
            note = f"{why}: greedy LPT plan"
        else:
            ilp_span = makespan(costs, ilp)
    if note:
        log.info("fold schedule: %s", note)
    use_ilp = ilp is not None and ilp_span <= greedy_span
    assignment = ilp if use_ilp else greedy
    device_of = {slot.name: device.name for device, slot in costs.slots()}
    predictions = {
        t.name: {
            "slot": assignment[t.name],
            "predicted_seconds": round(costs.seconds[t.name, assignment[t.name]], 3),
            "predicted_peak_gib": round(costs.peak[t.name, device_of[assignment[t.name]]] / GIB, 3),
        }
        for t in targets
    }
    return Plan(
        slots=_slot_plans(costs, assignment),
        method="ilp" if use_ilp else "greedy",
        makespan_s=ilp_span if use_ilp else greedy_span,
        greedy_makespan_s=greedy_span,
        ilp_makespan_s=ilp_span,
        note=note,
        predictions=predictions,
    )
