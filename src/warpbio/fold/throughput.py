"""Run a :class:`~warpbio.fold.schedule.Plan`: one worker process per slot.

Workers start from the ``spawn`` context (a fresh interpreter: no CUDA state or
locks inherited from the parent). Before the worker imports PyTorch, a GPU slot
gets ``CUDA_VISIBLE_DEVICES=<its GPU id>`` (set in the parent around the start, so
it holds from the child's first instruction, and again in the child) and a CPU
slot is pinned to its core set (``os.sched_setaffinity``) with as many PyTorch
threads as cores. Each worker runs its targets in order through
:func:`warpbio.fold.inference.run_model` and writes every target's files
atomically; a failing target stops the batch with its name, and neither its
files nor those of targets still running remain.

Callers that start this from a script must guard the script's body with
``if __name__ == "__main__":`` (spawn re-imports the main module in each child).
"""

from __future__ import annotations

import logging
import logging.handlers
import multiprocessing
import os
import queue as queue_module
import threading
import time
import traceback
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from warpbio.fold.config import InferenceOptions
from warpbio.fold.schedule import Plan, Slot
from warpbio.io import atomic_write, remove_outputs, remove_stale_temporaries

log = logging.getLogger(__name__)

OUTPUT_KINDS = ("pdb", "cif", "json", "timings")

# A worker that sent "exit" is still flushing its queues (its feeder threads send what
# it put, the log record of its last target among them) and shutting down; this long
# it may take before it is terminated.
EXIT_GRACE_SECONDS = 60.0


class BatchError(RuntimeError):
    """A target of the batch failed; the message names it."""


@dataclass(frozen=True)
class PredictionJob:
    """One model's prediction of one target and where its files go."""

    name: str  # unique in the batch; the plan's target name
    target: str
    model_name: str
    sequence: str
    features: str  # features .npz path
    outputs: Mapping[str, str]  # pdb, cif, json, timings -> path


def write_prediction(prediction, outputs: Mapping[str, str]) -> None:
    """PDB, mmCIF, scores and timings, each atomically; all or none of them."""
    from warpbio.fold.outputs import to_json, to_mmcif, to_pdb, to_timings_json

    texts = {
        "pdb": to_pdb(prediction),
        "cif": to_mmcif(prediction),
        "json": to_json(prediction),
        "timings": to_timings_json(prediction),
    }
    written = []
    try:
        for kind in OUTPUT_KINDS:
            with atomic_write(outputs[kind]) as tmp:
                tmp.write_text(texts[kind])
            written.append(outputs[kind])
    except BaseException:
        remove_outputs(written)
        raise


def pin_slot(slot: Slot) -> None:
    """Device visibility and core affinity of this process (before torch loads)."""
    if slot.gpu_id is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = slot.gpu_id
        os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    else:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    if slot.cores:
        os.sched_setaffinity(0, slot.cores)
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[name] = str(len(slot.cores))


@contextmanager
def _child_environment(slot: Slot):
    """The parent's environment as the child should start with it."""
    names = ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    saved = {name: os.environ.get(name) for name in names}
    os.environ["CUDA_VISIBLE_DEVICES"] = slot.gpu_id if slot.gpu_id is not None else ""
    if slot.cores:
        for name in names[1:]:
            os.environ[name] = str(len(slot.cores))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class _SlotPrefix(logging.Filter):
    def __init__(self, slot: str):
        super().__init__()
        self.slot = slot

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = f"[{self.slot}] {record.msg}"
        return True


def _summary(job: PredictionJob, prediction, seconds: float) -> dict:
    return {
        "target": job.target,
        "model": job.model_name,
        "mean_plddt": prediction.mean_plddt,
        "ptm": prediction.ptm,
        "real_prediction": prediction.real_prediction,
        "wall_seconds": round(seconds, 3),
        "cores": sorted(os.sched_getaffinity(0)),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        "timings_s": prediction.timings,
        "peak_memory_mb": prediction.peak_memory,
    }


def worker_main(slot, jobs, weights, options, messages, log_queue, level) -> None:
    """Entry point of a slot's process (spawn): pin, then run ``jobs`` in order."""
    pin_slot(slot)
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(log_queue)]
    root.setLevel(level)
    root.handlers[0].addFilter(_SlotPrefix(slot.name))
    try:
        import torch

        from warpbio.fold.features import load_features
        from warpbio.fold.inference import run_model

        if slot.gpu_id is not None:
            device = torch.device("cuda")
            if not torch.cuda.is_available():
                raise RuntimeError(f"slot {slot.name}: GPU {slot.gpu_id} is not usable by torch")
        else:
            device = torch.device("cpu")
            torch.set_num_threads(max(1, len(slot.cores) or torch.get_num_threads()))
        cores = sorted(os.sched_getaffinity(0))
        log.info("slot %s on %s, cores %s, %d job(s)", slot.name, device, cores, len(jobs))
    except BaseException:
        messages.put(("failed", slot.name, "", traceback.format_exc()))
        return
    for job in jobs:
        messages.put(("start", slot.name, job.name, None))
        started = time.perf_counter()
        try:
            features = load_features(job.features)
            prediction = run_model(
                job.target, job.sequence, features, job.model_name, weights, options, device
            )
            write_prediction(prediction, job.outputs)
        except BaseException:
            messages.put(("failed", slot.name, job.name, traceback.format_exc()))
            return
        elapsed = time.perf_counter() - started
        log.info("%s done in %.2f s (mean pLDDT %.2f)", job.name, elapsed, prediction.mean_plddt)
        messages.put(("done", slot.name, job.name, _summary(job, prediction, elapsed)))
    messages.put(("exit", slot.name, None, None))


def run_plan(
    plan: Plan,
    jobs: Mapping[str, PredictionJob],
    weights,
    options: InferenceOptions,
    poll_seconds: float = 0.5,
) -> dict[str, dict]:
    """Run every slot of ``plan`` in its own process; returns job name -> summary
    (with the slot, the predicted and the measured seconds)."""
    missing = sorted({t for p in plan.slots for t in p.targets} - set(jobs))
    if missing:
        raise ValueError(f"plan names targets without a job: {missing}")
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    log_queue = context.Queue()
    handlers = list(logging.getLogger().handlers)
    stop_logs = threading.Event()
    # Not a QueueListener: its stop() puts a sentinel on the queue, which takes the
    # queue's inter-process write lock; a worker terminated while its feeder thread
    # held that lock leaves it held for good, and stop() then hangs forever.
    listener = threading.Thread(
        target=_forward_logs, args=(log_queue, handlers, stop_logs), daemon=True
    )
    listener.start()
    workers = {}
    try:
        for slot_plan in plan.slots:
            if not slot_plan.targets:
                continue
            slot = slot_plan.slot
            args = (
                slot,
                [jobs[name] for name in slot_plan.targets],
                weights,
                options,
                messages,
                log_queue,
                logging.getLogger().getEffectiveLevel(),
            )
            process = context.Process(target=worker_main, args=args, name=f"fold-{slot.name}")
            with _child_environment(slot):
                process.start()
            workers[slot.name] = process
        results = _collect(plan, jobs, workers, messages, poll_seconds)
        # Every worker said "exit", but its "exit" can arrive before its last log
        # records have left it (one feeder thread per queue): let it finish rather
        # than terminate it inside the log queue's write lock (the lost "done in" line
        # and the hang of the fold_predict_batch test).
        for process in workers.values():
            process.join(EXIT_GRACE_SECONDS)
        return results
    finally:
        for process in workers.values():
            if process.is_alive():
                process.terminate()
            process.join()
        stop_logs.set()
        listener.join(timeout=10.0)  # bounded: a killed writer may leave half a record


def _forward_logs(log_queue, handlers: list[logging.Handler], stop: threading.Event) -> None:
    """The workers' log records to this process's handlers, until ``stop`` is set and
    the queue is empty (the workers have exited by then: all they wrote is there)."""
    while True:
        try:
            record = log_queue.get(timeout=0.1)
        except queue_module.Empty:
            if stop.is_set():
                return
            continue
        except Exception:  # a pipe that a terminated writer left corrupt: stop reading
            return
        for handler in handlers:
            if record.levelno >= handler.level:
                handler.handle(record)


def _collect(plan, jobs, workers, messages, poll_seconds) -> dict[str, dict]:
    running: dict[str, str] = {}  # slot -> job in progress
    finished: set[str] = set()
    results: dict[str, dict] = {}
    order = {p.slot.name: p.targets for p in plan.slots}
    while len(finished) < len(workers):
        try:
            kind, slot, name, payload = messages.get(timeout=poll_seconds)
        except queue_module.Empty:
            # A dead worker's messages are all in the pipe before it exits (the queue's
            # feeder is joined at exit), so nothing more will come from it.
            for slot, process in workers.items():
                if slot not in finished and not process.is_alive():
                    detail = f"worker exited with code {process.exitcode} (killed?)"
                    pending = [t for t in order[slot] if t not in results]
                    name = running.get(slot) or (pending[0] if pending else "")
                    _fail(jobs, workers, running, slot, name, detail)
            continue
        if kind == "start":
            running[slot] = name
        elif kind == "done":
            running.pop(slot, None)
            results[name] = {
                **payload,
                "slot": slot,
                "predicted_seconds": plan.predictions.get(name, {}).get("predicted_seconds"),
            }
        elif kind == "exit":
            finished.add(slot)
        elif kind == "failed":
            _fail(jobs, workers, running, slot, name, payload)
    return results


def _fail(jobs, workers, running, slot, name, detail) -> None:
    """Stop every worker, remove the files of the failed and unfinished targets."""
    for process in workers.values():
        if process.is_alive():
            process.terminate()
    for process in workers.values():
        process.join()
    unfinished = {name, *running.values()} - {""}
    for job_name in unfinished:
        remove_outputs(list(jobs[job_name].outputs.values()))
    for job in jobs.values():
        remove_stale_temporaries(list(job.outputs.values()))
    log.error("fold batch: %s failed on slot %s:\n%s", name or "a worker", slot, detail)
    last = str(detail).strip().splitlines()[-1] if str(detail).strip() else "unknown error"
    if name:
        job = jobs[name]
        raise BatchError(f"target {job.target} ({job.model_name}) failed on slot {slot}: {last}")
    raise BatchError(f"fold batch: slot {slot} failed before its first target: {last}")
