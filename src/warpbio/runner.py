"""Run one workflow step inside a Snakemake ``script:`` job.

Every ``workflow/scripts/*.py`` is two lines: import a step function and hand it
to :func:`run_step`.  The runner does what every job needs, in the right order:

1. log to the rule's ``log:`` file (and progress lines from the step);
2. lease the GPUs Snakemake granted (``resources.gpu``) and export
   ``CUDA_VISIBLE_DEVICES`` *before* the step can import CuPy or PyTorch;
3. call the step with a :class:`StepContext`;
4. on failure, log the traceback and remove partial outputs; an allocation
   failure (host ``MemoryError``, CuPy/PyTorch/Numba/JAX out of GPU memory)
   becomes one clear :class:`OutOfMemoryError` error, which Snakemake retries under
   ``--retries`` with the next attempt's smaller chunks (:meth:`StepContext.shrink`)
   and larger ``mem_mb``;
5. on success, write the provenance record to the output named ``provenance``.

Temporaries that a killed earlier attempt left beside the outputs (SIGKILL
skips every clean-up) are removed before the step starts.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import Any

from warpbio.device import GpuLease, array_module, lease_gpus
from warpbio.io import remove_outputs, remove_stale_temporaries
from warpbio.provenance import build_record, write_record

log = logging.getLogger("warpbio")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclass
class StepContext:
    """What a step function sees: named inputs/outputs, params, device, seed."""

    rule: str
    input: Any
    output: Any
    params: Any
    wildcards: Any
    threads: int
    backend: str
    seed: int | None
    lease: GpuLease
    config: Mapping[str, Any]
    extra_provenance: dict[str, Any] = field(default_factory=dict)
    attempt: int = 1

    @cached_property
    def xp(self) -> ModuleType:
        """NumPy or CuPy, by backend; imported on first use, after the lease."""
        return array_module(self.backend)  # type: ignore[arg-type]

    def shrink(self, size: int, minimum: int = 1) -> int:
        """``size`` halved once per retry: the chunk this attempt should use.

        Rules that pass their attempt (``resources: attempt=attempt_number``)
        get attempt 2, 3, ... after a failure, so a step that ran out of memory
        with 8192-row blocks retries with 4096, then 2048.
        """
        return max(int(minimum), int(size) >> (self.attempt - 1))


class OutOfMemoryError(RuntimeError):
    """A step ran out of host or GPU memory; a retry with smaller chunks may fit."""


_GPU_LIBRARIES = ("cupy", "cupy_backends", "torch", "numba.cuda", "jax", "jaxlib")


def _allocation_failure(error: BaseException) -> str | None:
    module = type(error).__module__ or ""
    text = str(error)
    if module.startswith(_GPU_LIBRARIES) and (
        type(error).__name__ == "OutOfMemoryError"
        or "out of memory" in text.lower()
        or "OUT_OF_MEMORY" in text
        or "RESOURCE_EXHAUSTED" in text
    ):
        return "GPU"
    if isinstance(error, MemoryError):
        return "host"
    return None


def memory_exhausted(error: BaseException) -> str | None:
    """``"GPU"`` or ``"host"`` when ``error``, or an error it was raised from, is
    an allocation failure; else None.  GPU libraries are recognised by their
    exception's module, so nothing here imports them."""
    seen: set[int] = set()
    item: BaseException | None = error
    while item is not None and id(item) not in seen:
        seen.add(id(item))
        kind = _allocation_failure(item)
        if kind:
            return kind
        item = item.__cause__ or item.__context__
    return None


def out_of_memory_message(rule: str, kind: str, attempt: int, error: BaseException) -> str:
    more = (
        "the next attempt halves the step's chunks (GPU memory does not grow with mem_mb)"
        if kind == "GPU"
        else "the next attempt asks SLURM for more memory (mem_mb grows with the attempt) "
        "and halves the step's chunks"
    )
    return (
        f"rule {rule} ran out of {kind} memory on attempt {attempt} "
        f"({type(error).__name__}: {error}). Run with --retries N (the warpbio profiles "
        f"set it): {more}. If every attempt fails, lower the rule's chunk setting "
        "(e.g. genotype.pca.block_snps) or give the job more memory."
    )


def configure_logging(log_path: str | None, level: int = logging.INFO) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(level=level, format=LOG_FORMAT, handlers=handlers, force=True)
    logging.captureWarnings(True)


def _first_log(smk) -> str | None:
    logs = list(getattr(smk, "log", []) or [])
    return str(logs[0]) if logs else None


def _param(smk, name: str, default: Any = None) -> Any:
    params = smk.params
    return getattr(params, name, default) if hasattr(params, name) else default


def lease_for_job(smk, backend: str) -> GpuLease:
    """Lease exactly the GPUs Snakemake granted this job (``resources.gpu``)."""
    granted = int(getattr(smk.resources, "gpu", 0) or 0)
    if backend != "gpu":
        # CPU jobs see no GPU, so a stray CUDA import cannot grab one.
        return lease_gpus(0)
    if granted < 1:
        raise RuntimeError(
            f"rule {smk.rule} runs on backend 'gpu' but Snakemake granted 0 GPUs; "
            "run with --resources gpu=N (N >= 1) or set the workflow's backend: cpu"
        )
    config = smk.config
    return lease_gpus(
        granted,
        pool=[str(g) for g in config.get("gpus", [])] or None,
        lock_dir=config.get("gpu_lease_dir") or None,
        timeout=float(config.get("gpu_lease_timeout", 3600)),
    )


def run_step(smk, step: Callable[[StepContext], Mapping[str, Any] | None]) -> None:
    """Run ``step`` as the body of a Snakemake job (see module docstring)."""
    started = time.time()
    attempt = int(getattr(smk.resources, "attempt", 1) or 1)
    configure_logging(_first_log(smk))
    backend = _param(smk, "backend", "cpu")
    seed = _param(smk, "seed")
    outputs = [str(p) for p in smk.output]
    log.info(
        "rule %s: backend=%s seed=%s threads=%s attempt=%s",
        smk.rule,
        backend,
        seed,
        smk.threads,
        attempt,
    )
    for stale in remove_stale_temporaries(outputs):
        log.warning("removed %s, left by a writer that was killed", stale)
    lease = GpuLease(ids=[], source="none")
    try:
        lease = lease_for_job(smk, backend)
        context = StepContext(
            rule=smk.rule,
            input=smk.input,
            output=smk.output,
            params=smk.params,
            wildcards=smk.wildcards,
            threads=smk.threads,
            backend=backend,
            seed=seed,
            lease=lease,
            config=smk.config,
            attempt=attempt,
        )
        extra = step(context) or {}
        provenance = getattr(smk.output, "provenance", None)
        if provenance is not None:
            record = build_record(
                rule=smk.rule,
                outputs=[p for p in outputs if p != str(provenance)],
                inputs=[str(p) for p in smk.input],
                params=_params_dict(smk.params),
                seed=seed,
                backend=backend,
                gpu_ids=lease.ids,
                started=started,
                attempt=attempt,
                extra={**context.extra_provenance, **dict(extra)},
            )
            write_record(provenance, record)
        log.info("rule %s done in %.2f s", smk.rule, time.time() - started)
    except BaseException as error:
        log.error("rule %s failed:\n%s", smk.rule, traceback.format_exc())
        remove_outputs(outputs)
        kind = memory_exhausted(error)
        if kind is None:
            raise
        message = out_of_memory_message(smk.rule, kind, attempt, error)
        log.error("%s", message)
        raise OutOfMemoryError(message) from error
    finally:
        lease.release()


def _params_dict(params) -> dict[str, Any]:
    items = getattr(params, "items", None)
    if callable(items):
        return {k: v for k, v in items()}
    return {}
